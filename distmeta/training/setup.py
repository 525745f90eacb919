"""Build everything a run needs from its config."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from distmeta.algorithms import Algorithm, make_algorithm
from distmeta.config import Config
from distmeta.models import MLP, apply_fn, init_params, make_model
from distmeta.tasks import make_tasks


class Setup(NamedTuple):
    config: Config
    tasks: object
    model: nn.Module
    apply: object
    algorithm: Algorithm
    execution: str

    def initial_meta_params(self) -> dict[str, torch.Tensor]:
        return self.algorithm.init(init_params(self.model, self.config.seed))


def build(config: Config) -> Setup:
    if config.threads:
        torch.set_num_threads(config.threads)
    tasks = make_tasks(config)
    model = make_model(config, tasks)
    apply = apply_fn(model)
    algorithm = make_algorithm(config, apply, tasks)
    return Setup(config, tasks, model, apply, algorithm, choose_execution(config.execution, model))


def choose_execution(requested: str, model: nn.Module, device: str = "cpu") -> str:
    """``vmap`` or ``loop``: the faster path for this model and device.

    Measured by benchmarks/throughput.py on CPU: vmap is about 15x faster for
    the sinusoid MLP, while the loop wins for Conv4 (vmap turns per-task
    convolutions into grouped ones, slow on CPU). On CUDA vmap batches tasks
    into fewer, larger kernels.
    """
    if requested != "auto":
        return requested
    return "vmap" if isinstance(model, MLP) or device != "cpu" else "loop"
