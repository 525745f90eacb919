"""ProtoNets and Matching Networks against direct hand computations."""

import math

import pytest
import torch

from distmeta.algorithms import matchingnet, meta_gradients, protonet
from distmeta.models import MLP, Conv4, apply_fn, init_params
from distmeta.tasks import RandomEpisodes, Task, task_seeds
from distmeta.tasks.classification import ClassificationLoss

WAYS, SHOTS, QUERIES = 3, 2, 2


@pytest.fixture
def episode():
    """A float64 MLP embedding (4 -> 5) and one 3-way 2-shot task with 2 queries per class."""
    gen = torch.Generator().manual_seed(0)
    model = MLP(4, [6], 5).double()
    params = {k: v.double() for k, v in init_params(model, seed=2).items()}
    labels = torch.arange(WAYS).repeat_interleave(SHOTS)
    task = Task(torch.randn(WAYS * SHOTS, 4, generator=gen, dtype=torch.float64), labels,
                torch.randn(WAYS * QUERIES, 4, generator=gen, dtype=torch.float64), torch.arange(WAYS).repeat_interleave(QUERIES))
    return apply_fn(model), params, task


def hand_protonet_loss(apply, params, task):
    """Prototypes as per-class means and a softmax over -||q - c||^2, written out element by element."""
    support, query = apply(params, task.support_x), apply(params, task.query_x)
    prototypes = [torch.stack([support[i] for i in range(len(support)) if task.support_y[i] == c]).mean(0) for c in range(WAYS)]
    losses = []
    for q, label in zip(query, task.query_y):
        logits = torch.stack([-sum((q[d] - p[d]) ** 2 for d in range(len(q))) for p in prototypes])
        losses.append(-(logits[label] - torch.log(torch.exp(logits).sum())))
    return torch.stack(losses).mean()


def hand_matching_loss(apply, params, task):
    """P(y|x) = sum_i softmax_i(cos(f(x), f(x_i))) [y_i = y], NLL of the true class."""
    support, query = apply(params, task.support_x), apply(params, task.query_x)
    losses = []
    for q, label in zip(query, task.query_y):
        cosines = torch.stack([torch.dot(q, s) / (q.norm() * s.norm()) for s in support])
        weights = torch.exp(cosines) / torch.exp(cosines).sum()
        losses.append(-torch.log(sum(w for w, y in zip(weights, task.support_y) if y == label)))
    return torch.stack(losses).mean()


def bump(params, name, index, h):
    value = params[name].clone()
    value[index] += h
    return {**params, name: value}


@pytest.mark.parametrize("make, hand", [(protonet, hand_protonet_loss), (matchingnet, hand_matching_loss)])
def test_loss_and_gradient_match_hand_computation(episode, make, hand):
    apply, params, task = episode
    algorithm = make(apply, ClassificationLoss())
    grads, metrics = algorithm.task_grad(params, task)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    expected = hand(apply, leaves, task)
    expected_grads = torch.autograd.grad(expected, list(leaves.values()))
    assert metrics["loss"].item() == pytest.approx(expected.item(), rel=1e-12)
    for (name, g), e in zip(grads.items(), expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12, msg=name)
    # and the gradient against central finite differences, one weight at a time
    for name in ("0.weight", "2.bias"):
        for index in [(0, 0), (1, 2)] if name == "0.weight" else [(0,), (3,)]:
            numeric = (hand(apply, bump(params, name, index, 1e-6), task)
                       - hand(apply, bump(params, name, index, -1e-6), task)) / 2e-6
            assert grads[name][index].item() == pytest.approx(numeric.item(), rel=1e-5, abs=1e-8)


def test_protonet_prediction_is_nearest_prototype(episode):
    apply, params, task = episode
    algorithm = protonet(apply, ClassificationLoss())
    task_params = algorithm.adapt(params, task.support_x, task.support_y)
    logits = algorithm.predict(task_params, task.query_x)
    # 6 label slots (the support size), of which classes 3..5 are absent
    assert logits.shape == (WAYS * QUERIES, WAYS * SHOTS) and torch.isinf(logits[:, WAYS:]).all()
    support, query = apply(params, task.support_x), apply(params, task.query_x)
    means = torch.stack([support[task.support_y == c].mean(0) for c in range(WAYS)])
    assert torch.equal(logits.argmax(1), torch.cdist(query, means).argmin(1))


def test_matching_probabilities_sum_to_one(episode):
    apply, params, task = episode
    algorithm = matchingnet(apply, ClassificationLoss())
    log_probs = algorithm.predict(algorithm.adapt(params, task.support_x, task.support_y), task.query_x)
    assert torch.allclose(log_probs[:, :WAYS].exp().sum(1), torch.ones(WAYS * QUERIES, dtype=torch.float64))


@pytest.mark.parametrize("make", [protonet, matchingnet])
def test_vmap_equals_loop_on_conv4(make):
    tasks = RandomEpisodes(ways=5, shots=2, queries=3)
    model = Conv4(1, 8, None, 28).double()
    algorithm = make(apply_fn(model), tasks)
    params = {k: v.double() for k, v in init_params(model, seed=0).items()}
    batch = tasks.sample_batch(task_seeds(0, 0, 0, 3))
    batch = Task(batch.support_x.double(), batch.support_y, batch.query_x.double(), batch.query_y)
    vmapped, looped = (meta_gradients(algorithm, params, batch, execution) for execution in ("vmap", "loop"))
    for name in params:
        torch.testing.assert_close(vmapped[0][name], looped[0][name], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(vmapped[1]["loss"], looped[1]["loss"])
    assert torch.isfinite(vmapped[1]["loss"]).all() and math.isclose(vmapped[1]["loss"].mean().item(), math.log(5), rel_tol=0.5)
