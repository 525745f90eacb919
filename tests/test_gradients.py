"""Meta-gradients against finite differences and closed forms."""

import contextlib

import pytest
import torch
from torch.func import grad

from distmeta.algorithms import fomaml, maml, meta_gradients, metasgd, plain_autograd, pretrain, reptile, sgd_steps
from distmeta.algorithms.metasgd import PREFIX


def _query_loss_after(apply, loss, params, task, lr, steps):
    adapted = sgd_steps(apply, loss, params, task.support_x, task.support_y, lr, steps)
    return loss(apply(adapted, task.query_x), task.query_y)


def _finite_difference(fn, params, eps=1e-6):
    """Central differences of a scalar function of a params dict, entry by entry."""
    result = {}
    for name, value in params.items():
        g = torch.zeros_like(value)
        for i in range(value.numel()):
            bumped = [dict(params), dict(params)]
            for sign, p in zip((1, -1), bumped):
                v = value.clone().view(-1)
                v[i] += sign * eps
                p[name] = v.view_as(value)
            g.view(-1)[i] = (fn(bumped[0]) - fn(bumped[1])) / (2 * eps)
        result[name] = g
    return result


def _relative_error(a: dict, b: dict) -> float:
    num = sum(((a[k] - b[k]) ** 2).sum() for k in a).sqrt()
    den = sum((b[k] ** 2).sum() for k in b).sqrt()
    return (num / den).item()


@pytest.mark.parametrize("autograd", [False, True], ids=["torch.func", "plain autograd"])
@pytest.mark.parametrize("steps", [1, 3])
def test_maml_second_order_matches_finite_differences(tiny, steps, autograd):
    tasks, apply, params, batch = tiny
    task = batch.index(0)
    algo = maml(apply, tasks, inner_lr=0.05, inner_steps=steps)
    with plain_autograd() if autograd else contextlib.nullcontext():
        grads, _ = algo.task_grad(params, task)
    numeric = _finite_difference(lambda p: _query_loss_after(apply, tasks.loss, p, task, 0.05, steps).item(), params)
    assert _relative_error(grads, numeric) < 1e-4
    # The second-order term matters here: the first-order gradient is measurably different.
    first_order, _ = fomaml(apply, tasks, 0.05, steps).task_grad(params, task)
    assert _relative_error(first_order, numeric) > 1e-3


@pytest.mark.parametrize("steps", [1, 3])
def test_fomaml_is_maml_without_second_order_term(tiny, steps):
    tasks, apply, params, batch = tiny
    task = batch.index(1)
    # First order by hand: adapt with no graph, then the plain gradient at the adapted point.
    with torch.no_grad():
        adapted = sgd_steps(apply, tasks.loss, params, task.support_x, task.support_y, 0.05, steps)
    expected = grad(lambda p: tasks.loss(apply(p, task.query_x), task.query_y))(adapted)
    grads, _ = fomaml(apply, tasks, 0.05, steps).task_grad(params, task)
    for k in params:
        torch.testing.assert_close(grads[k], expected[k], rtol=1e-10, atol=1e-12)


def test_metasgd_with_frozen_rates_equals_maml(tiny):
    tasks, apply, params, batch = tiny
    algo = metasgd(apply, tasks, inner_lr=0.05, inner_steps=2)
    meta_params = algo.init(params)
    grads, _ = algo.task_grad(meta_params, batch.index(0))
    expected, _ = maml(apply, tasks, 0.05, 2).task_grad(params, batch.index(0))
    for k in params:
        torch.testing.assert_close(grads[k], expected[k], rtol=1e-10, atol=1e-12)
    # The learned rates get a gradient too, and it is the right one.
    rates_fn = lambda r: _query_loss_after(apply, tasks.loss, params, batch.index(0),
                                           {k[len(PREFIX):]: v for k, v in r.items()}, 2).item()
    rates = {k: v for k, v in meta_params.items() if k.startswith(PREFIX)}
    numeric = _finite_difference(rates_fn, rates)
    assert _relative_error({k: grads[k] for k in rates}, numeric) < 1e-4


def test_reptile_one_step_closed_form(tiny):
    tasks, apply, params, batch = tiny
    task = batch.index(2)
    grads, _ = reptile(apply, tasks, inner_lr=0.05, inner_steps=1).task_grad(params, task)
    support_grad = grad(lambda p: tasks.loss(apply(p, task.support_x), task.support_y))(params)
    for k in params:
        torch.testing.assert_close(grads[k], 0.05 * support_grad[k], rtol=1e-10, atol=1e-12)


def test_pretrain_gradient_is_joint_loss_gradient(tiny):
    tasks, apply, params, batch = tiny
    task = batch.index(0)
    x = torch.cat([task.support_x, task.query_x])
    y = torch.cat([task.support_y, task.query_y])
    numeric = _finite_difference(lambda p: tasks.loss(apply(p, x), y).item(), params)
    grads, _ = pretrain(apply, tasks, 0.05, 1).task_grad(params, task)
    assert _relative_error(grads, numeric) < 1e-6


@pytest.mark.parametrize("make", [maml, fomaml, metasgd, reptile, pretrain])
def test_vmap_equals_loop(make, tiny):
    tasks, apply, params, batch = tiny
    # float32, as in training
    params = {k: v.float() for k, v in params.items()}
    batch = type(batch)(*(t.float() for t in batch))
    algo = make(apply, tasks, 0.05, 3)
    meta_params = algo.init(params)
    vmapped = meta_gradients(algo, meta_params, batch, "vmap")
    looped = meta_gradients(algo, meta_params, batch, "loop")
    for part_v, part_l in zip(vmapped, looped):
        assert part_v.keys() == part_l.keys()
        for k in part_v:
            assert part_v[k].shape[0] == batch.num_tasks
            torch.testing.assert_close(part_v[k], part_l[k], rtol=1e-5, atol=1e-6)


def test_frozen_batch_norm_meta_gradient_matches_finite_differences():
    """Queries normalised by the support set's statistics at the adapted parameters, differentiated through
    the statistics too (float64, second-order MAML on a tiny Conv4); vmap and the loop agree."""
    from distmeta.algorithms.base import frozen_batch_norm
    from distmeta.models import Conv4, apply_fn, init_params
    from distmeta.models.normalization import support_statistics
    from distmeta.tasks import RandomEpisodes, task_seeds

    tasks = RandomEpisodes(ways=2, shots=2, queries=2, image_shape=(1, 16, 16))
    model = Conv4(channels=1, filters=2, outputs=2, image_size=16).double()
    apply, params = apply_fn(model), {k: v.double() for k, v in init_params(model, 0).items()}
    batch = tasks.sample_batch(task_seeds(0, 0, 0, 3))
    batch = type(batch)(*(t.double() if t.is_floating_point() else t for t in batch))
    algo = frozen_batch_norm(maml(apply, tasks, inner_lr=0.1, inner_steps=1), model, tasks)
    task = batch.index(0)
    grads, _ = algo.task_grad(params, task)

    def frozen_query_loss(p):
        adapted = sgd_steps(apply, tasks.loss, p, task.support_x, task.support_y, 0.1, 1)
        stats = support_statistics(model, adapted, task.support_x)
        return tasks.loss(apply({**adapted, **stats}, task.query_x), task.query_y).item()

    assert _relative_error(grads, _finite_difference(frozen_query_loss, params)) < 1e-6
    transductive, _ = maml(apply, tasks, 0.1, 1).task_grad(params, task)
    assert _relative_error(transductive, grads) > 1e-3  # the statistics change the gradient measurably
    vmapped, _ = meta_gradients(algo, params, batch, "vmap")
    looped, _ = meta_gradients(algo, params, batch, "loop")
    assert _relative_error(vmapped, looped) < 1e-10
