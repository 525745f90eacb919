"""Connecting to Ray and placing the actors."""

from __future__ import annotations

import os
import signal

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from distmeta.config import ConfigError
from distmeta.distributed.server import ParameterServer
from distmeta.distributed.worker import MetaWorker
from distmeta.setup import adapt_support


def connect(address: str | None = None) -> str | None:
    """Join ``address`` (or $RAY_ADDRESS; "auto" finds a `ray start` cluster here), else start a local cluster; returns the dashboard URL."""
    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS")
    handler = signal.getsignal(signal.SIGTERM)
    # in a Ray job the workers' output (their errors above all) goes to the job's log; on a terminal it would be noise
    in_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
    try:
        context = ray.init(address=address or "local", log_to_driver=in_job, logging_level="ERROR")
    except ConnectionError as err:
        hint = "" if os.environ.get("RAY_AUTH_MODE") == "token" else (
            " (a cluster with token authentication needs its token: ~/.ray/auth_token or $RAY_AUTH_TOKEN)")
        raise ConnectionError(f"{str(err).strip().splitlines()[-1]}{hint}") from None
    signal.signal(signal.SIGTERM, handler)  # ray.init replaces it with one that aborts the driver
    return context.dashboard_url or None


MAX_RESTARTS = 10  # per worker: enough for node losses, not a crash loop forever


def start_server(config, spec, flat, optimizer_state, step):
    """The parameter server; it takes no CPU. Inside a Tune trial it joins the trial driver's bundle (0) of
    the trial's placement group, else it is pinned to the driver's node (which the driver needs alive anyway)."""
    placement = trial_bundle(0)
    if placement is None:
        node = ray.get_runtime_context().get_node_id()
        placement = NodeAffinitySchedulingStrategy(node, soft=False)
    actor = ray.remote(ParameterServer).options(num_cpus=0, scheduling_strategy=placement)
    return actor.remote(config.to_dict(), spec, flat, optimizer_state, step)


def start_workers(config, count: int, dataset=None):
    """``count`` MetaWorkers (see ``start_worker``)."""
    return [start_worker(config, index, dataset) for index in range(count)]


def start_worker(config, index: int, dataset=None):
    """MetaWorker ``index``: a dead one restarts and Ray re-runs its calls.

    Workers spread across nodes; inside a Tune trial worker ``index`` takes
    bundle ``1 + index`` of the trial's placement group instead, so that
    concurrent trials never share CPUs or GPUs.

    ``dataset`` is an object reference to the few-shot images (``ray.put``
    once by the driver): each node fetches it once into its object store, and
    the workers there map its arrays without copying.

    ``where`` runs in its own concurrency group, so a liveness check never
    queues behind a long ``compute``.
    """
    actor = ray.remote(concurrency_groups={"control": 1})(MetaWorker).options(
        num_cpus=config.worker_cpus, num_gpus=config.worker_gpus, max_restarts=MAX_RESTARTS, max_task_retries=-1,
        scheduling_strategy=trial_bundle(1 + index) or "SPREAD",
    )
    return actor.remote(config.to_dict(), dataset)


def trial_bundle(index: int):
    """Bundle ``index`` of the placement group this process runs in (a Tune trial's), or None outside one.

    An actor with a scheduling strategy of its own would leave the group, so
    the trial's actors name their bundle explicitly.
    """
    group = ray.util.get_current_placement_group()
    return None if group is None else PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=index)


def adapt_in_parallel(config, input_shape, meta_params: dict, supports: list, steps: int, at_once: int) -> list:
    """``setup.adapt_support`` of every support set as Ray tasks of one CPU each, ``at_once`` at a time."""
    adapt = ray.remote(num_cpus=1)(adapt_support)
    shared = ray.put(meta_params)  # once, not once per task
    results = []
    for start in range(0, len(supports), at_once):
        chunk = supports[start : start + at_once]
        results += ray.get([adapt.remote(config, input_shape, shared, s.x, s.y, steps) for s in chunk])
    return results


def where(worker, timeout: float | None = None):
    """A worker's process id and node, answered even while it computes."""
    return ray.get(worker.where.options(concurrency_group="control").remote(), timeout=timeout)


def check_resources(config) -> None:
    """Fail fast, instead of waiting forever for actors the cluster cannot place."""
    total = ray.cluster_resources()
    for name, each in (("CPU", config.worker_cpus), ("GPU", config.worker_gpus)):
        if each and total.get(name, 0) < config.workers * each:
            raise ConfigError(f"{config.workers} workers x {each:g} {name} need {config.workers * each:g} {name}s; "
                              f"the Ray cluster has {total.get(name, 0):g}")
