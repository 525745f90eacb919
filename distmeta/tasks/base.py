"""What every task distribution shares: the task tuple and seeding."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

# Seed streams: training, validation and test tasks never coincide.
TRAIN, VALIDATION, TEST = 0, 1, 2


class Task(NamedTuple):
    """A support set to adapt on and a query set to score the adaptation.

    A single task has tensors shaped ``(K, ...)``; a batch of tasks adds a
    leading task dimension, ``(T, K, ...)``.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor

    @property
    def num_tasks(self) -> int:
        """Size of the leading task dimension of a batch."""
        return self.support_x.shape[0]

    def index(self, i) -> "Task":
        """Task ``i`` of a batch (or a sub-batch when ``i`` is a slice)."""
        return Task(*(t[i] for t in self))

    def to(self, device) -> "Task":
        return Task(*(t.to(device) for t in self))


def stack(tasks: list[Task]) -> Task:
    """Stack single tasks into a batch with a leading task dimension."""
    return Task(*(torch.stack(parts) for parts in zip(*tasks)))


def task_seed(seed: int, split: int, step: int, index: int) -> int:
    """The seed of task ``index`` of meta-step ``step`` in a run.

    Depends on nothing else, so any process that draws the task draws the
    same one: this is what makes sharded and retried meta-steps exact.
    """
    return int(np.random.SeedSequence([seed, split, step, index]).generate_state(1, np.uint64)[0] >> 1)


def task_seeds(seed: int, split: int, step: int, count: int) -> list[int]:
    return [task_seed(seed, split, step, i) for i in range(count)]
