"""Connecting to Ray and placing the actors."""

from __future__ import annotations

import os
import signal

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from distmeta.config import ConfigError
from distmeta.distributed.server import ParameterServer
from distmeta.distributed.worker import MetaWorker
from distmeta.resources import unreachable
from distmeta.setup import adapt_support


def connect(address: str | None = None) -> str | None:
    """Join ``address`` (or $RAY_ADDRESS; "auto" finds a `ray start` cluster here), else start a local cluster; returns the dashboard URL."""
    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS")
    why = address and address not in ("auto", "local") and unreachable(address)
    if why:  # Ray would retry for minutes, or fail with a traceback for a malformed address
        raise ConnectionError(f"no Ray cluster at --address {address}: {why}")
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


def reserve(config):
    """The run's placement group and the bundle of its first worker: a Tune trial's own group (bundle 0 is the
    trial's driver), else a new group of one bundle per worker, spread over the nodes.

    The workers are gang-scheduled: they start together or not at all. With
    ``placement_timeout`` 0 a cluster that cannot hold them now fails at once;
    otherwise the pending bundles ask an autoscaling cluster for nodes, and
    the run waits that many seconds for them.
    """
    group = ray.util.get_current_placement_group()
    if group is not None:
        return group, 1
    if not config.placement_timeout:
        check_resources(config)
    worker = {"CPU": config.worker_cpus, **({"GPU": config.worker_gpus} if config.worker_gpus else {})}
    group = placement_group([worker] * config.workers, strategy="SPREAD")
    try:
        ray.get(group.ready(), timeout=config.placement_timeout or None)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(group)
        raise ConfigError(f"the Ray cluster did not make room for {config.workers} workers x {_shown(worker)} within "
                          f"placement_timeout={config.placement_timeout:g} s") from None
    return group, 0


def release(group, first: int) -> None:
    """Give back a placement group the run made (not a Tune trial's)."""
    if first == 0:
        remove_placement_group(group)


def start_server(config, spec, state: dict, group):
    """The parameter server from ``state`` (``ParameterServer.state``), in bundle 0 of the run's placement
    group (a Tune trial's driver, or the first worker): it takes no CPU of its own, and runs where the work
    is placed, never on a head kept free of it. Ray does not restart it: the trainer starts a new one."""
    actor = ray.remote(ParameterServer).options(num_cpus=0, scheduling_strategy=_bundle(group, 0))
    return actor.remote(config.to_dict(), spec, **state)


def start_workers(config, group, first: int):
    """One MetaWorker per ``config.workers`` (see ``start_worker``)."""
    return [start_worker(config, group, first + index) for index in range(config.workers)]


def start_worker(config, group, bundle: int):
    """A MetaWorker in ``bundle`` of the run's placement group; a dead one restarts and Ray re-runs its calls.

    The few-shot images come with each ``compute`` call (``MetaWorker.compute``).

    ``where`` runs in its own concurrency group, so a liveness check never
    queues behind a long ``compute``.
    """
    actor = ray.remote(concurrency_groups={"control": 1})(MetaWorker).options(
        num_cpus=config.worker_cpus, num_gpus=config.worker_gpus, max_restarts=MAX_RESTARTS, max_task_retries=-1,
        scheduling_strategy=_bundle(group, bundle),
    )
    return actor.remote(config.to_dict())


def _bundle(group, index: int) -> PlacementGroupSchedulingStrategy:
    # an actor with a strategy of its own would leave the group: name the bundle
    return PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=index)


def _shown(resources: dict) -> str:
    return " + ".join(f"{v:g} {k}" for k, v in resources.items())


def adapt_in_parallel(config, input_shape, meta_params: dict, supports: list, steps: int, at_once: int,
                      batch_norm: str = "frozen") -> list:
    """``setup.adapt_support`` of every support set as Ray tasks of one CPU each, ``at_once`` at a time."""
    adapt = ray.remote(num_cpus=1)(adapt_support)
    shared = ray.put(meta_params)  # once, not once per task
    results = []
    for start in range(0, len(supports), at_once):
        chunk = supports[start : start + at_once]
        results += ray.get([adapt.remote(config, input_shape, shared, s.x, s.y, steps, batch_norm) for s in chunk])
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
