"""The contract every algorithm keeps, and the two ways to run it over tasks.

An algorithm is three pure functions over dicts of tensors:

- ``init(model_params) -> meta_params``: what the outer loop learns (Meta-SGD
  adds per-parameter learning rates; most algorithms learn the params as is);
- ``task_grad(meta_params, task) -> (grads, metrics)``: the meta-gradient of
  one task and its scalar metrics;
- ``adapt(meta_params, support_x, support_y, steps) -> task_params``: the
  inner loop (or, for metric-based learners, the support set's prototypes or
  memory), used at meta-test and to generate models;
- ``predict(task_params, x) -> prediction``: the adapted model on new inputs
  (logits for classification; a particle ensemble's predictive distribution
  for Bayesian MAML);
- optionally ``score(meta_params, task, steps) -> metrics``: how well the
  learner does on a new task after adapting, when that is not "adapt, then
  predict the query set" (RL^2 plays a trial; its adaptation is a hidden
  state, so it has no ``adapt`` or ``predict``);
- optionally ``task_of(step, index) -> (step, index)``: whose seed draws the
  task of a step's index-th gradient, for an outer loop that revisits tasks
  (RL^2's PPO epochs); by default each step draws new ones.

``meta_gradients`` runs ``task_grad`` over a batch of tasks and returns every
tensor with a leading task dimension, so callers can shard, drop and average
tasks without knowing the algorithm.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, NamedTuple

import torch
from torch.func import vmap

from distmeta.models.normalization import support_statistics

Params = dict[str, torch.Tensor]

SUPPORT = "support:"  # task-params entries that summarise a support set (prototypes, memory), not weights


def label_slots(labels: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """One-hot labels over ``len(labels)`` slots, a static bound on the class count (vmappable)."""
    return (labels.unsqueeze(1) == torch.arange(len(labels), device=labels.device)).to(dtype)


def without_support(task_params: Params) -> Params:
    """The model's own parameters of adapted task params."""
    return {k: v for k, v in task_params.items() if not k.startswith(SUPPORT)}


class Algorithm(NamedTuple):
    name: str
    init: Callable[[Params], Params]
    task_grad: Callable
    adapt: Callable | None
    predict: Callable | None
    score: Callable | None = None
    task_of: Callable | None = None


def with_support_statistics(model, task_params: Params, support_x) -> Params:
    """Adapted params plus the batch-norm statistics of the support set passing through them."""
    return {**task_params, **support_statistics(model, without_support(task_params), support_x)}


def adapt_to_support(algorithm: Algorithm, model, meta_params: Params, support_x, support_y, steps: int,
                     batch_norm: str = "transductive") -> Params:
    """``algorithm.adapt``, plus with ``batch_norm="frozen"`` the support set's batch-norm statistics
    (``models.normalization``), so that the adapted model answers each input on its own."""
    task_params = algorithm.adapt(meta_params, support_x, support_y, steps)
    return with_support_statistics(model, task_params, support_x) if batch_norm == "frozen" else task_params


def frozen_batch_norm(algorithm: Algorithm, model, tasks_spec) -> Algorithm:
    """``algorithm`` meta-trained as its generated models answer: its query loss (``query_loss_grad``)
    with every query normalised by the support set's batch-norm statistics at the adapted parameters,
    differentiated through them. Its ``adapt`` is unchanged: evaluation chooses the statistics."""

    def adapt(meta_params, support_x, support_y):
        return with_support_statistics(model, algorithm.adapt(meta_params, support_x, support_y), support_x)

    return algorithm._replace(task_grad=query_loss_grad(adapt, algorithm.predict, tasks_spec))


def meta_gradients(algorithm: Algorithm, meta_params: Params, tasks, execution: str = "vmap"):
    """Per-task meta-gradients and metrics for a batch of tasks.

    >>> grads, metrics = meta_gradients(maml, meta_params, batch)  # doctest: +SKIP
    >>> grads["0.weight"].shape  # (tasks, 40, 1)                  # doctest: +SKIP
    """
    if execution == "vmap":
        return vmap(algorithm.task_grad, in_dims=(None, 0), randomness="same")(meta_params, tasks)
    if execution == "loop":
        with plain_autograd():
            results = [algorithm.task_grad(meta_params, tasks.index(i)) for i in range(tasks.num_tasks)]
        return tuple({k: torch.stack([r[part][k] for r in results]) for k in results[0][part]} for part in (0, 1))
    raise ValueError(f"execution must be 'vmap' or 'loop', got {execution!r}")


_PLAIN_AUTOGRAD = contextvars.ContextVar("plain_autograd", default=False)


@contextlib.contextmanager
def plain_autograd():
    """Make ``grad`` use torch.autograd: the loop path's faster twin of torch.func.grad.

    Outside vmap, torch.func's per-op wrapping costs time and buys nothing;
    the plain autograd tape computes the same derivatives.
    """
    token = _PLAIN_AUTOGRAD.set(True)
    try:
        yield
    finally:
        _PLAIN_AUTOGRAD.reset(token)


def grad(fn, has_aux: bool = False):
    """``torch.func.grad(fn, has_aux)`` over a params dict, the first argument.

    Under ``plain_autograd`` the same gradient comes from ``torch.autograd``:
    at the outermost level the params become leaves and the result carries no
    graph; inside another ``grad`` (params already require grad) the result
    keeps its graph, so outer levels differentiate through it.
    """
    if not _PLAIN_AUTOGRAD.get():
        return torch.func.grad(fn, has_aux=has_aux)

    def wrapped(params, *args):
        outermost = not any(v.requires_grad for v in params.values())
        with torch.enable_grad():
            if outermost:
                params = {k: v.detach().requires_grad_() for k, v in params.items()}
            out = fn(params, *args)
            value, aux = out if has_aux else (out, None)
            grads = torch.autograd.grad(value, tuple(params.values()), create_graph=not outermost, allow_unused=True)
        grads = {k: torch.zeros_like(p) if g is None else g for (k, p), g in zip(params.items(), grads)}
        return (grads, aux) if has_aux else grads

    return wrapped


def sgd_steps(apply, loss, params: Params, x, y, lr, steps: int, first_order: bool = False) -> Params:
    """``steps`` full-batch SGD steps on ``loss(apply(params, x), y)``.

    Differentiable in ``params`` (and in ``lr``), so an outer ``grad``
    backpropagates through every step. ``first_order`` stops the gradient at
    each inner gradient: the outer gradient then skips second derivatives.
    ``lr`` is a float or a dict of per-parameter tensors (Meta-SGD).
    """

    def inner_loss(p):
        return loss(apply(p, x), y)

    for _ in range(steps):
        grads = grad(inner_loss)(params)
        if first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        params = {k: p - _lr(lr, k) * grads[k] for k, p in params.items()}
    return params


def _lr(lr, name):
    return lr[name] if isinstance(lr, dict) else lr


def query_loss_grad(adapt, predict, tasks_spec):
    """``task_grad`` of a learner scored on the query set after adapting to the support set.

    The meta-gradient of MAML, Meta-SGD, ProtoNets and Matching Networks: the
    gradient of the query loss with respect to the meta-parameters, through
    ``adapt`` (inner SGD steps, or the prototypes / memory of the support set).
    """

    def query_loss(meta_params, task):
        task_params = adapt(meta_params, task.support_x, task.support_y)
        return scored(tasks_spec, predict(task_params, task.query_x), task.query_y)

    def task_grad(meta_params, task):
        return grad(query_loss, has_aux=True)(meta_params, task)

    return task_grad


def scored(tasks_spec, prediction, target):
    """(loss, metrics): the differentiable loss, and it with the task's metrics, detached."""
    value = tasks_spec.loss(prediction, target)
    metrics = {"loss": value, **tasks_spec.metrics(prediction, target)}
    return value, {k: v.detach() for k, v in metrics.items()}
