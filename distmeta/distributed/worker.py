"""MetaWorker: per-task meta-gradients for a shard of a meta-batch."""

from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np
import ray
import torch

from distmeta.config import from_dict
from distmeta.optim import aggregate, unflatten
from distmeta.setup import build


class MetaWorker:
    """Samples its shard's tasks itself and returns their meta-gradients.

    It keeps nothing between calls but the built model and task distribution,
    so a restarted worker, or any other, recomputes a shard exactly.
    """

    def __init__(self, config: dict):
        self.config = from_dict(config)
        # Ray may leave GPUs visible to an actor that asked for none: use one only when asked.
        gpu = self.config.worker_gpus > 0 and torch.cuda.is_available()
        self.device = torch.device("cuda" if gpu else "cpu")
        self.setup = None

    def compute(self, weights: np.ndarray, version: int, step: int, indices: list[int], dataset: tuple = ()):
        """(info, gradients) for tasks ``indices`` of meta-step ``step``, at weights ``version``.

        Gradients are ``(T, P)`` float32, or with ``worker_reduce`` the triple
        (sum over finite tasks, their count, all tasks) to save bandwidth.

        ``dataset``: empty, or a one-element tuple holding the object reference
        of the few-shot images; the first call builds the worker from it
        (mapped from the node's object store, no copy). Every call carries it,
        so a restarted worker's retried call brings it along, where a
        constructor argument in the object store is one Ray cannot promise to
        keep for a restart (it logs an error about it, ray#53727).
        """
        self.prepare(dataset)
        start = time.perf_counter()
        params = unflatten(torch.tensor(weights, device=self.device), self.setup.spec)
        grads, metrics = self.setup.task_gradients(params, step, indices)
        grads = grads.cpu()
        info = {"version": version, "metrics": {k: v.cpu().numpy() for k, v in metrics.items()}}
        if self.config.worker_reduce:
            mean, kept = aggregate(grads)
            grads = (mean.numpy() * int(kept.sum()), int(kept.sum()), len(kept))
            info["kept"] = kept.numpy()
        else:
            grads = grads.numpy()
        info["compute_time"] = time.perf_counter() - start
        return info, grads

    def prepare(self, dataset: tuple = ()) -> None:
        """Build the model and task distribution once (a compiled graph's calls carry no dataset: it comes first)."""
        if self.setup is None:  # its CPUs are its threads, not the driver's `threads`
            threads = max(1, int(self.config.worker_cpus))
            self.setup = build(replace(self.config, threads=threads), self.device.type,
                               ray.get(dataset[0]) if dataset else None)

    def where(self) -> dict:
        """This worker's process and Ray node, and whether its dataset maps the object store (no copy)."""
        images = self.setup.dataset.images if self.setup is not None and self.setup.dataset is not None else None
        shared = images is not None and not images.flags.writeable  # Ray's zero-copy numpy views are read-only
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "dataset_shared": shared}
