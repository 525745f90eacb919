"""Tasks, seeding, the outer optimizer and aggregation."""

import math

import pytest
import torch

from distmeta.models import Conv4, MLP, init_params
from distmeta.optim import adam, aggregate, flatten, flatten_tasks, sgd, unflatten
from distmeta.tasks import TEST, TRAIN, VALIDATION, Sinusoid, task_seed, task_seeds


def test_sinusoid_task_is_a_pure_function_of_its_seed():
    tasks = Sinusoid(shots=5, queries=7)
    a, b = tasks.sample(123), tasks.sample(123)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert a.support_x.shape == (5, 1) and a.query_x.shape == (7, 1)
    assert not torch.equal(tasks.sample(124).support_x, a.support_x)


def test_sinusoid_matches_the_maml_distribution():
    tasks = Sinusoid(shots=10, queries=10)
    curves = torch.tensor([tasks.curve(s) for s in range(2000)])
    amplitude, phase = curves[:, 0], curves[:, 1]
    assert 0.1 <= amplitude.min() and amplitude.max() <= 5.0
    assert 0.0 <= phase.min() and phase.max() <= math.pi
    assert abs(amplitude.mean().item() - 2.55) < 0.1  # mean of U[0.1, 5]
    assert abs(phase.mean().item() - math.pi / 2) < 0.1
    batch = tasks.sample_batch(list(range(200)))
    xs = torch.cat([batch.support_x.flatten(), batch.query_x.flatten()])
    assert -5 <= xs.min() and xs.max() <= 5 and abs(xs.mean().item()) < 0.2
    # y really is A sin(x - phi) for the task's own curve
    task = tasks.sample(7)
    torch.testing.assert_close(task.support_y, tasks.target(7, task.support_x).float())


def test_task_seeds_are_distinct_across_splits_steps_and_indices():
    seeds = {task_seed(0, split, step, i) for split in (TRAIN, VALIDATION, TEST) for step in range(20) for i in range(25)}
    assert len(seeds) == 3 * 20 * 25
    assert task_seeds(0, TRAIN, 3, 4) == [task_seed(0, TRAIN, 3, i) for i in range(4)]
    assert task_seed(1, TRAIN, 0, 0) != task_seed(0, TRAIN, 0, 0)


def test_init_params_is_seeded_and_models_hold_no_buffers():
    assert all(torch.equal(a, b) for a, b in zip(init_params(MLP(), 3).values(), init_params(MLP(), 3).values()))
    assert not torch.equal(init_params(MLP(), 3)["0.weight"], init_params(MLP(), 4)["0.weight"])
    params = init_params(Conv4(outputs=5), 0)
    assert params["5.weight"].shape == (5, 64)  # 28 -> 14 -> 7 -> 3 -> 1 after four pools


def test_adam_matches_torch_optim_adam():
    torch.manual_seed(0)
    start = torch.randn(10)
    grads = [torch.randn(10) for _ in range(5)]
    reference = start.clone().requires_grad_(True)
    torch_adam = torch.optim.Adam([reference], lr=0.01)
    opt = adam(0.01)
    params, state = start.clone(), opt.init(start)
    for g in grads:
        reference.grad = g.clone()
        torch_adam.step()
        params, state = opt.update(g, state, params)
    torch.testing.assert_close(params, reference.detach(), rtol=1e-6, atol=1e-7)
    assert state["count"].item() == 5


def test_sgd_step():
    params, state = sgd(0.5).update(torch.ones(3), sgd(0.5).init(torch.zeros(3)), torch.zeros(3))
    assert torch.equal(params, torch.full((3,), -0.5))


def test_aggregate_drops_non_finite_tasks():
    grads = torch.tensor([[1.0, 2.0], [float("nan"), 0.0], [3.0, 4.0], [float("inf"), 1.0]])
    mean, kept = aggregate(grads)
    assert torch.equal(mean, torch.tensor([2.0, 3.0]))
    assert kept.tolist() == [True, False, True, False]
    mean, kept = aggregate(torch.full((2, 3), float("nan")))
    assert torch.equal(mean, torch.zeros(3)) and not kept.any()


def test_flatten_roundtrip_and_task_matrix():
    params = init_params(MLP(1, [5], 1), 0)
    flat, spec = flatten(params)
    assert flat.shape == (sum(v.numel() for v in params.values()),)
    for k, v in unflatten(flat, spec).items():
        assert torch.equal(v, params[k])
    per_task = {k: torch.stack([v, 2 * v]) for k, v in params.items()}
    matrix = flatten_tasks(per_task, spec)
    assert torch.equal(matrix[0], flat) and torch.equal(matrix[1], 2 * flat)


def test_robust_aggregates():
    grads = torch.tensor([[1.0], [2.0], [3.0], [4.0], [100.0], [float("nan")]])
    assert aggregate(grads, "median")[0].item() == 3.0
    trimmed, kept = aggregate(torch.cat([grads[:5]] * 2), "trimmed_mean", trim=0.1)  # drops one low, one high
    assert trimmed.item() == pytest.approx((1 + 2 * 2 + 3 * 2 + 4 * 2 + 100) / 8)
    assert aggregate(grads, "mean")[0].item() == pytest.approx(22.0)
