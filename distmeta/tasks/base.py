"""What every task distribution shares: the task tuple and seeding."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

# Seed streams: training, validation and test tasks never coincide.
TRAIN, VALIDATION, TEST = 0, 1, 2


def batched(cls):
    """Give a NamedTuple of tensors what a batch of tasks offers, whatever its fields:
    ``num_tasks`` (the leading task dimension), ``index(i)`` and ``to(device)``."""
    cls.num_tasks = property(lambda self: self[0].shape[0])
    cls.index = lambda self, i: type(self)(*(t[i] for t in self))  # task i, or a sub-batch for a slice
    cls.to = lambda self, device: type(self)(*(t.to(device) for t in self))
    return cls


@batched
class Task(NamedTuple):
    """A support set to adapt on and a query set to score the adaptation.

    A single task has tensors shaped ``(K, ...)``; a batch of tasks adds a
    leading task dimension, ``(T, K, ...)``.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor


def stack(tasks: list):
    """Stack single tasks (any NamedTuple of tensors) into a batch with a leading task dimension."""
    return type(tasks[0])(*(torch.stack(parts) for parts in zip(*tasks)))


def task_seed(seed: int, split: int, step: int, index: int) -> int:
    """The seed of task ``index`` of meta-step ``step`` in a run.

    Depends on nothing else, so any process that draws the task draws the
    same one: this is what makes sharded and retried meta-steps exact.
    """
    return int(np.random.SeedSequence([seed, split, step, index]).generate_state(1, np.uint64)[0] >> 1)


def task_seeds(seed: int, split: int, step: int, count: int) -> list[int]:
    return [task_seed(seed, split, step, i) for i in range(count)]


def draw_index(probabilities: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The index drawn from ``probabilities`` (last dim) with the uniform ``u`` (their other dims): inverse CDF,
    so a pure function of ``u`` (environments draw every random number with the task) and vmappable."""
    index = (torch.cumsum(probabilities, -1) < u.unsqueeze(-1)).sum(-1)
    return index.clamp(max=probabilities.shape[-1] - 1)


def draw(probabilities: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``draw_index`` as a one-hot vector."""
    index = draw_index(probabilities, u)
    return (torch.arange(probabilities.shape[-1], device=u.device) == index.unsqueeze(-1)).to(probabilities.dtype)
