"""Build everything a run needs from its config."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from distmeta.algorithms import Algorithm, make_algorithm, meta_gradients
from distmeta.algorithms.base import adapt_to_support, frozen_batch_norm
from distmeta.checkpoint import Checkpoint, CheckpointError
from distmeta.config import REGRESSION, REINFORCEMENT, Config
from distmeta.data.dataset import ImageDataset
from distmeta.models import MLP, RecurrentPolicy, apply_fn, init_params, make_model
from distmeta.optim import FlatSpec, Optimizer, flatten, flatten_tasks, make_optimizer
from distmeta.tasks import TRAIN, RandomEpisodes, make_tasks, task_seed


class Setup(NamedTuple):
    config: Config
    tasks: object
    model: nn.Module
    apply: object
    algorithm: Algorithm
    execution: str
    spec: FlatSpec  # how a flat buffer of meta-parameters maps to names and shapes

    @property
    def dataset(self) -> ImageDataset | None:
        """The few-shot images in memory (loaded once, shared by every split), or None."""
        return getattr(self.tasks, "dataset", None)

    def tasks_for(self, split: int):
        """The task distribution of ``split`` (training's is ``tasks``)."""
        return self.tasks if split == TRAIN else make_tasks(self.config, split, self.dataset)

    def initial_meta_params(self) -> dict[str, torch.Tensor]:
        return self.algorithm.init(init_params(self.model, self.config.seed))

    def initial_state(self, checkpoint: Checkpoint | None = None) -> tuple[torch.Tensor, dict, int]:
        """(flat meta-parameters, optimizer state, step): fresh, or a checkpoint's checked against the model."""
        params = self.initial_meta_params()
        if checkpoint is None:
            flat, _ = flatten(params)
            return flat, outer_optimizer(self.config).init(flat), 0
        shapes = {k: tuple(v.shape) for k, v in params.items()}
        if shapes != {k: tuple(v.shape) for k, v in checkpoint.params.items()}:
            raise CheckpointError(f"checkpoint {checkpoint.path} does not match the model's parameters")
        flat, _ = flatten({k: checkpoint.params[k] for k in params})  # the model's order: safetensors sorts names
        return flat, checkpoint.optimizer_state, checkpoint.step

    def task_gradients(self, meta_params, step: int, indices) -> tuple[torch.Tensor, dict]:
        """Meta-gradients ``(T, P)`` and metrics ``{name: (T,)}`` of tasks ``indices`` of ``step``.

        The single-process trainer asks for every index of a meta-step, a
        worker for its shard; the tasks are the same either way.
        """
        seeds = [task_seed(self.config.seed, TRAIN, step, i) for i in indices]
        device = next(iter(meta_params.values())).device
        batch = self.tasks.sample_batch(seeds).to(device)
        grads, metrics = meta_gradients(self.algorithm, meta_params, batch, self.execution)
        return flatten_tasks(grads, self.spec), metrics


def build(config: Config, device: str = "cpu", dataset: ImageDataset | None = None) -> Setup:
    """Everything a run needs; a few-shot ``dataset`` already in memory is used instead of reading the file."""
    tasks = make_tasks(config, TRAIN, dataset)
    model, apply, algorithm = learner(config, tasks)
    torch.set_num_threads(config.threads or auto_threads(model))
    _, spec = flatten(algorithm.init(init_params(model, config.seed)))
    return Setup(config, tasks, model, apply, algorithm, choose_execution(config.execution, model, device), spec)


TORCH_THREADS = torch.get_num_threads()  # torch's own default: one per core


def auto_threads(model: nn.Module) -> int:
    """Intra-op threads for ``threads: 0``: one for the small MLP and GRU, torch's default for Conv4.

    benchmarks/threads.py: a sinusoid MAML step gains nothing from a second
    thread on a quiet 2-core machine and is several times slower with it when
    another process keeps a core busy (threads wait for each other); Conv4's
    convolutions are large enough to use every core.
    """
    return 1 if isinstance(model, (MLP, RecurrentPolicy)) else TORCH_THREADS


def learner(config: Config, tasks) -> tuple[nn.Module, object, Algorithm]:
    """(model, apply, algorithm) for a config and a task distribution (or ``without_data``'s stand-in)."""
    model = make_model(config, tasks)
    apply = apply_fn(model)
    algorithm = make_algorithm(config, apply, tasks, fresh=lambda m: init_params(model, _seed(config.seed, m)))
    if config.batch_norm == "frozen":
        algorithm = frozen_batch_norm(algorithm, model, tasks)
    return model, apply, algorithm


def _seed(seed: int, m: int) -> int:
    """The initialisation seed of Bayesian MAML's particle m (particle 0 uses the run seed itself)."""
    return int(np.random.SeedSequence([seed, m]).generate_state(1)[0])


def without_data(config: Config, input_shape) -> object:
    """A stand-in task distribution with a trained run's loss and input shape: enough to adapt, no dataset needed."""
    if config.task in REGRESSION or config.task in REINFORCEMENT:
        return make_tasks(config)
    return RandomEpisodes(config.ways, config.shots, config.queries, tuple(input_shape))


def adapt_support(config: Config, input_shape, meta_params: dict, support_x, support_y, steps: int,
                  batch_norm: str = "frozen"):
    """(task params, fit) of a new task: the algorithm's adaptation to its support set (with its batch-norm
    statistics frozen in, by default), and how well the result fits that support set (loss and the task's
    metric), scored as the served model answers. What ``distmeta generate`` serves."""
    tasks = without_data(config, input_shape)
    model, _, algorithm = learner(config, tasks)
    task_params = adapt_to_support(algorithm, model, meta_params, support_x, support_y, steps, batch_norm)
    task_params = {k: v.detach() for k, v in task_params.items()}
    with torch.no_grad():
        prediction = algorithm.predict(task_params, support_x)
        if support_y.dtype == torch.int64:  # classes: score as the served model does, over the support's N classes
            prediction = prediction[:, : int(support_y.max()) + 1]
        fit = {"loss": tasks.loss(prediction, support_y), **tasks.metrics(prediction, support_y)}
    return task_params, {k: float(v) for k, v in fit.items()}


def outer_optimizer(config: Config) -> Optimizer:
    return make_optimizer(config.outer_optimizer, config.outer_lr, config.outer_lr_schedule, config.steps)


def choose_execution(requested: str, model: nn.Module, device: str = "cpu") -> str:
    """``vmap`` or ``loop``: the faster path for this model and device.

    Measured by benchmarks/throughput.py on CPU: vmap is about 5x faster for
    the sinusoid MLP, while the loop wins for Conv4 (vmap turns per-task
    convolutions into grouped ones, slow on CPU). For RL^2's GRU on bandit
    trials vmap took 73 ms a step against the loop's 146 (measured once, by hand). On CUDA vmap batches tasks
    into fewer, larger kernels.
    """
    if requested != "auto":
        return requested
    return "vmap" if isinstance(model, (MLP, RecurrentPolicy)) or device != "cpu" else "loop"
