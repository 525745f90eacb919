"""The outer loop's math over one flat float32 buffer of meta-parameters.

Optimizers are pairs of pure functions, ``init(params) -> state`` and
``update(grad, state, params) -> (new_params, new_state)``, whose state is a
dict of tensors, so a checkpoint is a file of tensors and nothing else.

>>> opt = adam(lr=1e-3)
>>> state = opt.init(torch.zeros(3))
>>> params, state = opt.update(torch.ones(3), state, torch.zeros(3))
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch


class Optimizer(NamedTuple):
    init: Callable
    update: Callable


def constant(count: int) -> float:
    return 1.0


def cosine(total_steps: int):
    """Learning-rate factor decaying from 1 to 0 along half a cosine over ``total_steps``."""

    def factor(count: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(count, total_steps) / total_steps))

    return factor


def sgd(lr: float, schedule=constant) -> Optimizer:
    def init(params):
        return {"count": torch.zeros((), dtype=torch.int64)}

    def update(grad, state, params):
        count = state["count"] + 1
        return params - lr * schedule(count.item() - 1) * grad, {"count": count}

    return Optimizer(init, update)


def adam(lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, schedule=constant) -> Optimizer:
    """Adam (Kingma & Ba, 2015) with bias correction, as torch.optim.Adam.

    ``schedule(step)`` scales the learning rate of update ``step`` (0-based).
    """

    def init(params):
        zeros = torch.zeros_like(params)
        return {"count": torch.zeros((), dtype=torch.int64), "mu": zeros, "nu": zeros.clone()}

    def update(grad, state, params):
        count = state["count"] + 1
        mu = b1 * state["mu"] + (1 - b1) * grad
        nu = b2 * state["nu"] + (1 - b2) * grad * grad
        mu_hat = mu / (1 - b1 ** count.item())
        nu_hat = nu / (1 - b2 ** count.item())
        step_lr = lr * schedule(count.item() - 1)
        return params - step_lr * mu_hat / (nu_hat.sqrt() + eps), {"count": count, "mu": mu, "nu": nu}

    return Optimizer(init, update)


def refreshing(optimizer: Optimizer, every: int) -> Optimizer:
    """``optimizer`` over params laid out as [policy, behaviour copy], the copy set to the policy after every
    ``every``-th update: RL^2's PPO, whose behaviour policy gets zero gradients, which leave it unchanged
    under SGD and Adam alike (zero moments, zero step). It counts updates: a step that dropped every task
    applies none, and so moves the refresh one step past its iteration's start (alike in every process)."""

    def update(grad, state, params):
        params, state = optimizer.update(grad, state, params)
        if state["count"].item() % every == 0:
            half = len(params) // 2
            params = torch.cat([params[:half], params[:half]])
        return params, state

    return Optimizer(optimizer.init, update)


def make_optimizer(name: str, lr: float, schedule: str = "constant", total_steps: int = 1) -> Optimizer:
    factor = cosine(total_steps) if schedule == "cosine" else constant
    return {"adam": adam, "sgd": sgd}[name](lr, schedule=factor)


def aggregate(task_grads: torch.Tensor, how: str = "mean", trim: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine per-task gradients ``(T, P)`` over the finite tasks.

    ``how``: ``mean``; ``trimmed_mean`` (per coordinate, the mean without the
    ``trim`` fraction of highest and of lowest values, robust to outlier
    tasks); or ``median`` (per coordinate). Returns the aggregate and a
    boolean mask of the tasks kept. A task with any non-finite entry is
    dropped rather than allowed to poison the parameters; when every task is
    dropped the aggregate is zero.
    """
    kept = torch.isfinite(task_grads).all(dim=1)
    finite = task_grads[kept]
    if finite.shape[0] == 0:
        return torch.zeros(task_grads.shape[1], dtype=task_grads.dtype), kept
    if how == "mean":
        return finite.mean(dim=0), kept
    if how == "median":
        return finite.quantile(0.5, dim=0), kept  # the mean of the two middle values for even counts
    if how == "trimmed_mean":
        cut = int(trim * finite.shape[0])
        ordered = finite.sort(dim=0).values
        return ordered[cut : finite.shape[0] - cut].mean(dim=0), kept
    raise ValueError(f"unknown aggregate {how!r}")


class FlatSpec(NamedTuple):
    """Names and shapes that map a flat buffer to a params dict."""

    names: tuple
    shapes: tuple

    @property
    def sizes(self) -> list[int]:
        return [int(torch.Size(s).numel()) for s in self.shapes]


def flatten(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, FlatSpec]:
    spec = FlatSpec(tuple(params), tuple(tuple(v.shape) for v in params.values()))
    return torch.cat([v.reshape(-1) for v in params.values()]).float(), spec


def unflatten(flat: torch.Tensor, spec: FlatSpec) -> dict[str, torch.Tensor]:
    """Views into ``flat`` shaped as the params (no copy)."""
    parts = torch.split(flat, spec.sizes)
    return {n: p.view(s) for n, p, s in zip(spec.names, parts, spec.shapes)}


def flatten_tasks(grads: dict[str, torch.Tensor], spec: FlatSpec) -> torch.Tensor:
    """Per-task gradients ``{name: (T, ...)}`` as one ``(T, P)`` matrix."""
    tasks = next(iter(grads.values())).shape[0]
    return torch.cat([grads[n].reshape(tasks, -1) for n in spec.names], dim=1)
