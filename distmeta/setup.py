"""Build everything a run needs from its config."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from distmeta.algorithms import Algorithm, make_algorithm, meta_gradients
from distmeta.algorithms.base import adapt_to_support, frozen_batch_norm
from distmeta.checkpoint import Checkpoint, CheckpointError
from distmeta.config import REGRESSION, REINFORCEMENT, Config, ConfigError
from distmeta.data.dataset import ImageDataset
from distmeta.models import MLP, RecurrentPolicy, apply_fn, init_params, make_model, policy_inputs
from distmeta.resources import gib, machine_memory
from distmeta.optim import FlatSpec, Optimizer, flatten, flatten_tasks, make_optimizer, refreshing
from distmeta.tasks import TEST, TRAIN, VALIDATION, RandomEpisodes, make_tasks, task_seed


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

    def check_held_out(self) -> None:
        """Fail now, not at the first validation, where a held-out split cannot give its episodes."""
        for split in (VALIDATION, TEST):
            self.tasks_for(split)

    def initial_meta_params(self) -> dict[str, torch.Tensor]:
        return self.algorithm.init(init_params(self.model, self.config.seed))

    def initial_state(self, checkpoint: Checkpoint | None = None) -> tuple[torch.Tensor, dict, int]:
        """(flat meta-parameters, optimizer state, step): fresh, or a checkpoint's checked against the model."""
        params = self.initial_meta_params()
        flat, _ = flatten(params)
        fresh = outer_optimizer(self.config).init(flat)
        if checkpoint is None:
            return flat, fresh, 0
        for what, expected, saved in (("parameters", params, checkpoint.params),
                                      ("optimizer state", fresh, checkpoint.optimizer_state)):
            if _shapes(expected) != _shapes(saved):
                raise CheckpointError(f"checkpoint {checkpoint.path} does not match the model: "
                                      f"{_difference(expected, saved)} in its {what}")
        flat, _ = flatten({k: checkpoint.params[k] for k in params})  # the model's order: safetensors sorts names
        return flat, checkpoint.optimizer_state, checkpoint.step

    def task_gradients(self, meta_params, step: int, indices) -> tuple[torch.Tensor, dict]:
        """Meta-gradients ``(T, P)`` and metrics ``{name: (T,)}`` of tasks ``indices`` of ``step``.

        The single-process trainer asks for every index of a meta-step, a
        worker for its shard; the tasks are the same either way.
        """
        task_of = self.algorithm.task_of or (lambda step, index: (step, index))
        seeds = [task_seed(self.config.seed, TRAIN, *task_of(step, i)) for i in indices]
        device = next(iter(meta_params.values())).device
        batch = self.tasks.sample_batch(seeds).to(device)
        grads, metrics = meta_gradients(self.algorithm, meta_params, batch, self.execution)
        return flatten_tasks(grads, self.spec), metrics


def _shapes(tensors: dict) -> dict:
    return {k: tuple(v.shape) for k, v in tensors.items()}


def _difference(expected: dict, saved: dict) -> str:
    """The first entry that differs: missing, extra, or of another shape."""
    missing, extra = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    if missing or extra:
        return f"{missing[0]!r} is missing" if missing else f"{extra[0]!r} is unexpected"
    name = next(k for k in expected if tuple(expected[k].shape) != tuple(saved[k].shape))
    return f"{name!r} is {list(saved[name].shape)}, expected {list(expected[name].shape)}"


def build(config: Config, device: str = "cpu", dataset: ImageDataset | None = None) -> Setup:
    """Everything a run needs; a few-shot ``dataset`` already in memory is used instead of reading the file."""
    tasks = make_tasks(config, TRAIN, dataset)
    if device == "cpu":
        check_memory(config, tasks)
    model, apply, algorithm = learner(config, tasks)
    torch.set_num_threads(config.threads or auto_threads(model))
    _, spec = flatten(algorithm.init(init_params(model, config.seed)))
    return Setup(config, tasks, model, apply, algorithm, choose_execution(config.execution, model, device), spec)


EVALUATION_CHUNK = 200  # held-out tasks adapted at once (training.evaluation)


def check_memory(config: Config, tasks, available: int | None = None) -> None:
    """Refuse, in one line naming the key, a run that cannot fit this machine's memory, before allocating it.

    What is counted is a lower bound, sized on torch's meta device (shapes
    without storage): the meta-parameters with two optimizer moments, one
    meta-step's per-task gradients (the server holds them all), one
    meta-step's task data with a single forward pass's activations (of every
    task when they are vmapped, of one in a loop), and an evaluation chunk's. Training holds more (autograd keeps each inner step),
    so what this refuses would surely run out of memory.
    """
    with torch.device("meta"):
        model, _, algorithm = learner(config, tasks)
        parameters = sum(p.numel() for p in algorithm.init(init_params(model, 0)).values())
        per_example = _activations(model, tasks, config)
    held_out = (config.test_ways or config.ways, config.test_shots or config.shots)
    train_examples, test_examples = _examples(config, config.ways, config.shots), _examples(config, *held_out)
    inputs = math.prod(tasks.input_shape)
    model_key = "filters" if len(tasks.input_shape) == 3 else "hidden"
    each = f"of {inputs + per_example:,} floats each (input and {model_key}={getattr(config, model_key)}'s activations)"
    vmap = choose_execution(config.execution, model) == "vmap"  # tasks at once; a loop holds one task's activations
    shipped = config.workers if config.worker_reduce else config.meta_batch_size
    chunk = min(EVALUATION_CHUNK, max(config.eval_episodes, config.val_tasks))
    needs = {  # bytes (float32) and what sets them
        3 * parameters * 4: f"{model_key}={getattr(config, model_key)} gives {parameters:,} parameters",
        shipped * parameters * 4: f"meta_batch_size={config.meta_batch_size} tasks' gradients of {parameters:,} parameters",
        train_examples * (config.meta_batch_size * inputs + (config.meta_batch_size if vmap else 1) * per_example) * 4:
            f"meta_batch_size={config.meta_batch_size} tasks of {train_examples:,} examples (ways, shots, queries) {each}",
        test_examples * (chunk * inputs + (chunk if vmap else 1) * per_example) * 4:
            f"{chunk} held-out tasks at once of {test_examples:,} examples (test_ways, test_shots, queries) {each}",
    }
    total, available = sum(needs), available or machine_memory()
    if total > available:
        raise ConfigError(f"the run needs at least {gib(total)} of memory, this machine has {gib(available)}: "
                          f"{needs[max(needs)]}")


def _examples(config: Config, ways: int, shots: int) -> int:
    """Examples in one task: images of an episode, points of a sinusoid, steps of an RL^2 trial."""
    if config.task in REINFORCEMENT:
        return config.pulls if config.task == "bandit" else config.horizon * config.episodes
    return (ways if config.task not in REGRESSION else 1) * (shots + config.queries)


def _activations(model: nn.Module, tasks, config: Config) -> int:
    """Floats every layer outputs for one example: a forward pass on the meta device."""
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, out: sizes.append(sum(o.numel() for o in _tensors(out))))
             for m in model.modules() if not list(m.children())]
    inputs = ((torch.empty(1, policy_inputs(tasks)), torch.empty(1, config.hidden[0])) if config.algorithm == "rl2"
              else (torch.empty(1, *tasks.input_shape),))
    model(*inputs)
    for hook in hooks:
        hook.remove()
    return sum(sizes)


def _tensors(out):
    return [out] if isinstance(out, torch.Tensor) else [o for o in out if isinstance(o, torch.Tensor)]


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
    optimizer = make_optimizer(config.outer_optimizer, config.outer_lr, config.outer_lr_schedule, config.steps)
    if config.algorithm == "rl2" and config.policy_loss == "ppo":  # meta-params: [policy, behaviour policy]
        return refreshing(optimizer, config.ppo_epochs * config.ppo_minibatches)
    return optimizer


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
