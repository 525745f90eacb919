"""ParameterServer: the meta-parameters, the outer optimizer, the version."""

from __future__ import annotations

import copy
import os
import time

import numpy as np
import ray
import torch
from ray.dag import InputNode, MultiOutputNode

from distmeta.checkpoint import save_checkpoint
from distmeta.config import from_dict
from distmeta.optim import FlatSpec, aggregate, unflatten
from distmeta.setup import outer_optimizer

# Waiting on a compiled graph's channel spins a core, which on a machine with no spare core slows the workers
# themselves (Conv4 on 2 workers and 2 cores: 2.13 s a step against 1.97 s with actor calls); the server sleeps
# through this share of the last step's fastest worker compute first.
IDLE_SHARE = 0.8
MAX_GRAPH_FAILURES = 5  # worker losses in one run_steps call before the driver must replace workers


class ParameterServer:
    """Owns one flat float32 buffer of meta-parameters and the optimizer state.

    ``apply`` aggregates a meta-step's task gradients (dropping non-finite
    tasks), takes one optimizer step and returns the new weights; called with
    ``num_returns=2``, those weights go to the object store once per version
    and the driver hands their reference to every worker.

    ``run_steps`` instead runs whole sync steps itself, over a Ray compiled
    graph of the workers: weights out and gradients back through shared-memory
    channels, with no actor call and no driver on the step's critical path.
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
        self.workers, self.graph = [], None  # run_steps: the workers (use_workers), compiled on first use
        self.idle = 0.0  # run_steps: seconds to sleep before reading a step's gradients

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

    def use_workers(self, workers: list, shards: list[list[int]], dataset: tuple = ()) -> None:
        """The workers ``run_steps`` shards each step over (again after the driver replaced lost ones)."""
        self._teardown()
        self.workers, self.shards, self.dataset = workers, shards, dataset

    def run_steps(self, first: int, count: int) -> tuple[list, str | None]:
        """Sync steps ``first`` .. ``first + count - 1``: each step's (worker infos, stats), and why it stopped
        early (None; "timeout"; "workers lost": a worker Ray could not restart, for the driver to replace;
        "graph failed: ...": any other error; "skipped": a call queued behind one that stopped early).

        A worker that dies mid-step costs a new graph over its restarted actor
        and the step redone from the same seeds: the run stays exact.
        """
        if first != self.step:  # queued behind a call that stopped early: the driver asks again
            return [], "skipped"
        results, failures = [], 0
        while len(results) < count:
            try:
                start = time.perf_counter()
                result = self._graph().execute(self.flat.numpy(), self.step)
                time.sleep(self.idle)  # a graph's reader spins: sleep through most of the workers' compute instead
                outputs = ray.get(result, timeout=self.config.step_timeout or None)
            except ray.exceptions.RayChannelTimeoutError:
                self._teardown()
                return results, "timeout"
            except (ray.exceptions.RayActorError, ray.exceptions.RaySystemError, ray.exceptions.ObjectLostError):
                self._teardown()  # Ray restarts a killed worker; the next graph is compiled over it
                failures += 1
                if failures > MAX_GRAPH_FAILURES:
                    return results, "workers lost"
                continue
            except Exception as err:  # the graph itself, or a worker's own error: the driver goes on with actor calls
                self._teardown()
                return results, f"graph failed: {type(err).__name__}: {err}"
            # copies: a graph's numpy arrays are views of its channels, which stay blocked while a view lives
            infos = copy.deepcopy([info for info, _ in outputs])
            self.idle = IDLE_SHARE * min(info["compute_time"] for info in infos)
            _, stats = self.apply(*[grads for _, grads in outputs])
            del outputs
            stats["step_time"] = time.perf_counter() - start
            results.append((infos, stats))
        return results, None

    def _graph(self):
        """The compiled step: (weights, step) in, every worker's (info, gradients) for its shard out."""
        if self.graph is None:
            ray.get([w.prepare.remote(self.dataset) for w in self.workers])  # raises for a worker lost for good
            with InputNode() as step:
                outputs = [w.compute.bind(step[0], 0, step[1], shard) for w, shard in zip(self.workers, self.shards)]
                self.graph = MultiOutputNode(outputs).experimental_compile()
        return self.graph

    def stop(self) -> None:
        """End the graph's loops on the workers, so that killing them afterwards interrupts nothing."""
        self._teardown()

    def _teardown(self) -> None:
        if self.graph is not None:
            self.graph.teardown()
        self.graph = None

    def checkpoint(self, output: str, run_id=None, input_shape=None) -> str:
        """Save params, optimizer state, step and config (tasks are pure functions of seeds: no RNG state)."""
        params = unflatten(self.flat, self.spec)
        return save_checkpoint(output, self.step, params, self.opt_state, self.config, run_id, self.config.keep_checkpoints,
                               input_shape)
