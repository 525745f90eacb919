"""Connecting to Ray and placing the actors."""

from __future__ import annotations

import os
import signal

import ray

from distmeta.distributed.server import ParameterServer
from distmeta.distributed.worker import MetaWorker


def connect(address: str | None = None) -> str | None:
    """Join ``address`` (or $RAY_ADDRESS), else start a local cluster; returns the dashboard URL."""
    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS")
    handler = signal.getsignal(signal.SIGTERM)
    context = ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    signal.signal(signal.SIGTERM, handler)  # ray.init replaces it with one that aborts the driver
    return context.dashboard_url or None


def start_server(config, spec, flat, optimizer_state, step):
    """The parameter server, on the driver's node; it needs no CPU of its own."""
    node = ray.get_runtime_context().get_node_id()
    placement = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(node, soft=True)
    actor = ray.remote(ParameterServer).options(num_cpus=0, scheduling_strategy=placement)
    return actor.remote(config.to_dict(), spec, flat, optimizer_state, step)


def start_workers(config, count: int):
    """``count`` MetaWorkers spread across nodes; a dead one restarts and Ray re-runs its calls."""
    actor = ray.remote(MetaWorker).options(
        num_cpus=config.worker_cpus, num_gpus=config.worker_gpus,
        max_restarts=-1, max_task_retries=-1, scheduling_strategy="SPREAD",
    )
    return [actor.remote(config.to_dict(), int(config.worker_cpus)) for _ in range(count)]
