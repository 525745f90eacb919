"""ParameterServer: the meta-parameters, the outer optimizer, the version."""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from distmeta.checkpoint import save_checkpoint
from distmeta.config import from_dict
from distmeta.optim import FlatSpec, aggregate, unflatten
from distmeta.setup import outer_optimizer


class ParameterServer:
    """Owns one flat float32 buffer of meta-parameters and the optimizer state.

    ``apply`` aggregates a meta-step's task gradients (dropping non-finite
    tasks), takes one optimizer step and returns the new weights; called with
    ``num_returns=2``, those weights go to the object store once per version
    and the driver hands their reference to every worker.
    """

    def __init__(self, config: dict, spec: FlatSpec, flat: np.ndarray, optimizer_state: dict, step: int, dropped: int = 0):
        self.config = from_dict(config)
        self.spec = spec
        self.flat = torch.tensor(flat)
        self.optimizer = outer_optimizer(self.config)
        self.opt_state = {k: torch.tensor(v) for k, v in optimizer_state.items()}
        self.step = step
        self.version = 0
        self.dropped = dropped

    def weights(self) -> np.ndarray:
        return self.flat.numpy()

    def state(self) -> dict:
        """What a new server starts from to carry on exactly where this one is (``start_server``'s arguments)."""
        return {"flat": self.flat.numpy(), "optimizer_state": {k: v.numpy() for k, v in self.opt_state.items()},
                "step": self.step, "dropped": self.dropped}

    def pid(self) -> int:
        return os.getpid()

    def apply(self, *shards, based_on: int | None = None):
        """One outer step from the shards' gradients, computed at version ``based_on``; returns (weights, stats).

        A step whose every task was dropped leaves the parameters and the
        optimizer state as they were.
        """
        start = time.perf_counter()
        if shards and isinstance(shards[0], tuple):  # reduced on the workers: (sum, kept, tasks)
            count = sum(c for _, c, _ in shards)
            update, kept = torch.tensor(sum(s for s, _, _ in shards)) / max(count, 1), None
            self.dropped += sum(n for *_, n in shards) - count
        else:
            update, kept = aggregate(torch.from_numpy(np.concatenate(shards)), self.config.aggregate)
            count = int(kept.sum())
            self.dropped += len(kept) - count
        if count:
            self.flat, self.opt_state = self.optimizer.update(update, self.opt_state, self.flat)
        staleness = None if based_on is None else self.version - based_on
        self.step += 1
        self.version += 1
        stats = {"version": self.version, "step": self.step, "kept": None if kept is None else kept.numpy(),
                 "staleness": staleness, "dropped_total": self.dropped, "aggregate_time": time.perf_counter() - start}
        return self.flat.numpy(), stats

    def checkpoint(self, output: str, run_id=None, input_shape=None) -> str:
        """Save params, optimizer state, step and config (tasks are pure functions of seeds: no RNG state)."""
        params = unflatten(self.flat, self.spec)
        return save_checkpoint(output, self.step, params, self.opt_state, self.config, run_id, self.config.keep_checkpoints,
                               input_shape)
