"""The distributed meta-trainer: MetaTrainer's interface over Ray actors.

Sync mode: every meta-step shards the meta-batch's task indices across the
workers, waits for all of them, and hands their gradients to the parameter
server, which applies the outer update (the driver never touches gradients or
weights). By default the server runs the steps itself, over a Ray compiled
graph of the workers (``ParameterServer.run_steps``), a chunk of steps per
call while the driver logs the previous chunk; with ``compiled_graph=false``
each step is actor calls whose object references the driver passes on.

Async mode: each worker computes a shard at the newest weights it was given,
and the server applies shards as they arrive; a gradient more than
``max_staleness`` versions old is recomputed at the newest weights instead of
applied. Here a step is one applied shard of ``ceil(meta_batch_size / workers)``
tasks.

A worker that dies is restarted by Ray, which re-runs its pending calls (the
server compiles its graph again over the restarted actor and redoes the
step); tasks are pure functions of (seed, step, index), so the rerun is exact.
A parameter server that dies is replaced by a new one from the state of the
last checkpoint (kept in the driver too), which replays the steps since: exact
in sync mode, for the same reason.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque

import numpy as np
import ray
import torch

from distmeta.checkpoint import Checkpoint
from distmeta.config import Config
from distmeta.distributed import connect, release, reserve, start_server, start_worker, start_workers, where
from distmeta.optim import unflatten
from distmeta.setup import build
from distmeta.tasks import load_training_data
from distmeta.training.trainer import MetaTrainer, step_summary

CHUNK_SECONDS = 0.1  # compiled path: about this much work per server call, so the progress bar still moves
STOP_SECONDS = 10  # for the server to end its graph at close, behind any chunk still queued


class DistributedTrainer:
    """``dataset``: an object reference to the few-shot images already in the object store (a Tune driver
    shares one among its trials); by default the trainer puts its own there."""

    def __init__(self, config: Config, checkpoint: Checkpoint | None = None, address: str | None = None, dataset=None):
        self.config = config
        data = load_training_data(config) if dataset is None and config.task == "fewshot" else None
        # every check of the config, the data and the checkpoint, before Ray starts
        self.setup = build(config, dataset=ray.get(dataset) if dataset is not None else data)
        self.setup.check_held_out()
        flat, opt_state, step = self.setup.initial_state(checkpoint)
        self.spec = self.setup.spec
        self.dashboard = connect(address)
        self.group, self.first_bundle = reserve(config)  # fails (or waits) for a cluster too small
        if data is not None:
            dataset = ray.put(data)  # into the object store once, for every worker
            self.setup = build(config, dataset=ray.get(dataset))  # the driver reads that copy too, not its own
        self.dataset = () if dataset is None else (dataset,)  # nested: each compute call carries the reference
        self.shard_size = math.ceil(config.meta_batch_size / config.workers)
        self.shards = [s.tolist() for s in np.array_split(np.arange(config.meta_batch_size), config.workers) if len(s)]
        self.recomputed = 0
        self.compiled = config.mode == "sync" and config.compiled_graph  # until the graph fails (_fall_back)
        self.workers = start_workers(config, self.group, self.first_bundle)
        self._start_server({"flat": flat.numpy(), "optimizer_state": {k: v.numpy() for k, v in opt_state.items()},
                            "step": step})

    def _start_server(self, state: dict) -> None:
        """A parameter server from ``state``, which is also what a lost one is rebuilt from."""
        self.saved = state
        self.server = start_server(self.config, self.spec, state, self.group)
        self.weights = self.server.weights.remote()
        self.version, self.step = 0, state["step"]
        self.inflight: dict = {}  # async: info ref -> (worker index, gradients ref, chunk)
        self.chunks: deque = deque()  # compiled: the server's run_steps calls in flight, (reference, steps)
        self.ready: deque = deque()  # compiled: steps the server ran that meta_step has not returned yet
        self.last_step_seconds = None  # compiled: the last returned step's time on the server, sizes chunks
        if self.compiled:
            self._use_workers()
        self.next_chunk = self.step  # async: the next chunk of tasks to hand out

    @property
    def flat(self) -> torch.Tensor:
        """The meta-parameters after every step started so far."""
        self._settle()
        return torch.tensor(ray.get(self.server.weights.remote()))

    @property
    def meta_params(self) -> dict[str, torch.Tensor]:
        return unflatten(self.flat, self.spec)

    @property
    def running_ahead(self) -> bool:
        """Whether steps have started, or finished, that ``meta_step`` has not returned yet."""
        return bool(self.chunks or self.ready)

    def meta_step(self, until: int | None = None) -> dict[str, float]:
        """One step's metrics. ``until``: the steps up to it may run ahead while the driver logs this one
        (compiled sync path); the caller saves or evaluates only at ``until``, where the server stops."""
        try:
            if self.config.mode == "async":
                return self._async_step()
            if self.compiled:
                return self._graph_steps(until)
            return self._pop_ready() if self.ready else self._sync_step()
        except ray.exceptions.RayActorError:
            if self._server_alive():
                raise
            self._restart_server()
            return self.meta_step(until)

    def _server_alive(self) -> bool:
        try:
            ray.get(self.server.pid.remote())
            return True
        except ray.exceptions.RayActorError:
            return False

    def _restart_server(self) -> None:
        """Replace a lost parameter server: a new one from the last saved state, brought back to the current
        step by replaying the steps since. Tasks are pure functions of (seed, step, index) and the sharding is
        the same, so in sync mode the replay is exact (async mode's order of arrival never was)."""
        target = self.step
        if self.compiled:
            for worker in self.workers:  # still looping in the lost server's graph: Ray restarts them fresh
                ray.kill(worker, no_restart=False)
            self._replace_dead_workers()
        self._start_server(self.saved)
        while self.step < target:
            self.meta_step(until=target)

    def _graph_steps(self, until: int | None) -> dict[str, float]:
        """The next step's metrics, from chunks of steps the server runs over its compiled graph. Two chunks
        are in flight, so the server never waits for the driver; none runs past ``until``."""
        until = max(until or 0, self.step + 1)
        while not self.ready:
            if not self.chunks:
                self._run_chunk(until)
            results, stopped = self._get(self.chunks.popleft()[0], self._chunk_timeout())
            self.ready.extend(results)
            if stopped == "timeout":
                raise self._timeout()
            if stopped == "workers lost":  # new workers, then the rest from where the server is
                self._settle()  # the chunk queued behind this one stops at once
                self._replace_dead_workers()
                self._use_workers()
            elif stopped and stopped.startswith("graph failed"):
                self._fall_back(stopped)
                return self.meta_step(until)
        while len(self.chunks) < 2 and self._next_to_run() < until:
            self._run_chunk(until)
        return self._pop_ready()

    def _fall_back(self, why: str) -> None:
        """The graph failed (as it can over a worker restarted after its node was lost, Ray 2.60): the run goes
        on with actor calls from the server's step; a worker's own error recurs there and ends the run."""
        print(f"distmeta: {why.splitlines()[0][:200]}; continuing with actor calls", file=sys.stderr)
        self.compiled = False
        self._settle()  # calls queued behind the failed one are skipped
        self._replace_dead_workers()
        ray.get(self.server.stop.remote())
        self.weights = self.server.weights.remote()

    def _pop_ready(self) -> dict[str, float]:
        infos, stats = self.ready.popleft()
        self.step, self.last_step_seconds = stats["step"], stats["step_time"]
        return self._summary(infos, stats, stats["step_time"])

    def _next_to_run(self) -> int:
        return self.step + len(self.ready) + sum(size for _, size in self.chunks)

    def _run_chunk(self, until: int) -> None:
        """Ask the server for about ``CHUNK_SECONDS`` of steps after those it has been asked for."""
        first = self._next_to_run()
        size = max(1, round(CHUNK_SECONDS / self.last_step_seconds)) if self.last_step_seconds else 1
        size = min(size, until - first)
        self.chunks.append((self.server.run_steps.remote(first, size), size))

    def _chunk_timeout(self) -> float:
        return self.config.step_timeout * (self._next_to_run() - self.step + 1)

    def _use_workers(self) -> None:
        ray.get(self.server.use_workers.remote(self.workers, self.shards, self.dataset))

    def _settle(self) -> None:
        """Wait for the chunks in flight (the next ``meta_step`` calls return their steps)."""
        while self.chunks:
            self.ready.extend(self._get(self.chunks.popleft()[0], self._chunk_timeout())[0])

    def _sync_step(self, attempts: int = 5) -> dict[str, float]:
        start = time.perf_counter()
        for attempt in range(attempts):
            calls = [w.compute.options(num_returns=2).remote(self.weights, self.version, self.step, shard, self.dataset)
                     for w, shard in zip(self.workers, self.shards)]
            try:
                infos = self._get([info for info, _ in calls])
                weights, stats = self.server.apply.options(num_returns=2).remote(*[grads for _, grads in calls])
                stats = self._get(stats)
                break
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError):
                # A worker (or its node) is gone for good, or took gradients with it
                # before the server read them (then the server applied nothing).
                if attempt == attempts - 1 or not self._server_alive():
                    raise  # a lost server: meta_step replaces it
                self._replace_dead_workers()
        self.weights, self.version, self.step = weights, stats["version"], stats["step"]
        return self._summary(infos, stats, time.perf_counter() - start)

    def _async_step(self) -> dict[str, float]:
        start = time.perf_counter()
        if not self.inflight:
            for index in range(len(self.workers)):
                self._submit(index)
        while True:
            ready = ray.wait(list(self.inflight), num_returns=1, timeout=self.config.step_timeout or None)[0]
            if not ready:
                raise self._timeout()
            [ready] = ready
            index, grads, chunk = self.inflight.pop(ready)
            try:
                info = ray.get(ready)
            except ray.exceptions.RayActorError:  # a worker Ray could not restart: replace it, redo its chunk
                self._replace_dead_workers()
                self._submit(index, chunk)
                continue
            if self.version - info["version"] <= self.config.max_staleness:
                break
            self.recomputed += 1
            self._submit(index, chunk)  # too old: recompute at the newest weights
        self.weights, stats = self.server.apply.options(num_returns=2).remote(grads, based_on=info["version"])
        self.version += 1
        self._submit(index)
        stats = self._get(stats)
        self.step = stats["step"]
        summary = self._summary([info], stats, time.perf_counter() - start)
        summary.update(staleness=stats["staleness"], recomputed=self.recomputed)
        return summary

    def _get(self, refs, timeout: float | None = None):
        """``ray.get`` bounded by ``step_timeout``: a step never hangs forever (in a Tune trial least of all)."""
        try:
            return ray.get(refs, timeout=(timeout or self.config.step_timeout) or None)
        except ray.exceptions.GetTimeoutError:
            raise self._timeout() from None

    def _timeout(self) -> TimeoutError:
        return TimeoutError(f"meta-step {self.step + 1}: the workers did not answer within "
                            f"step_timeout={self.config.step_timeout:g} s")

    def _replace_dead_workers(self) -> None:
        """Swap workers that Ray could not restart (e.g. their node left) for new ones."""
        for i, worker in enumerate(self.workers):
            try:
                where(worker, timeout=120)  # waits out a restart in progress
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                ray.kill(worker, no_restart=True)
                self.workers[i] = start_worker(self.config, self.group, self.first_bundle + i)

    def _submit(self, index: int, chunk: int | None = None) -> None:
        """Async: worker ``index`` computes ``chunk`` (default: the next new one) at the newest weights."""
        if chunk is None:
            chunk, self.next_chunk = self.next_chunk, self.next_chunk + 1
        worker = self.workers[index]
        info, grads = worker.compute.options(num_returns=2).remote(self.weights, self.version, chunk,
                                                                   range(self.shard_size), self.dataset)
        self.inflight[info] = (index, grads, chunk)

    def _summary(self, infos: list, stats: dict, seconds: float) -> dict[str, float]:
        metrics = {k: torch.from_numpy(np.concatenate([i["metrics"][k] for i in infos])) for k in infos[0]["metrics"]}
        kept = stats["kept"] if stats["kept"] is not None else np.concatenate([i["kept"] for i in infos])
        summary = step_summary(metrics, torch.tensor(kept), seconds)
        compute = max(i["compute_time"] for i in infos)
        summary.update(compute_time=compute, aggregate_time=stats["aggregate_time"],
                       transfer_time=max(0.0, seconds - compute - stats["aggregate_time"]))
        return summary

    evaluate, evaluate_all = MetaTrainer.evaluate, MetaTrainer.evaluate_all

    def save(self, output, run_id=None) -> str:
        """Checkpoint the server's state, and keep it here too: a lost server restarts from it."""
        try:
            self._settle()
            path = ray.get(self.server.checkpoint.remote(output, run_id, self.setup.tasks.input_shape))
            self.saved = ray.get(self.server.state.remote())
            return path
        except ray.exceptions.RayActorError:
            if self._server_alive():
                raise
            self._restart_server()
            return self.save(output, run_id)

    def worker_locations(self) -> list[dict]:
        """Each worker's process id and Ray node id."""
        return [where(w) for w in self.workers]

    def close(self) -> None:
        if self.compiled:
            try:
                ray.get(self.server.stop.remote(), timeout=STOP_SECONDS)
            except ray.exceptions.RayError:
                pass  # a dead or stuck server: the kills below end the graph's loops too
        for actor in [self.server, *self.workers]:
            ray.kill(actor)
        release(self.group, self.first_bundle)
