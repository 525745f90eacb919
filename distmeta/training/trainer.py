"""The single-process meta-trainer (no Ray, no MLflow).

``MetaTrainer`` holds the run's state: the meta-parameters as one flat
float32 buffer, the outer optimizer state and the step. ``meta_step`` samples
the step's tasks (a pure function of seed, step and index), computes their
meta-gradients, drops non-finite tasks, averages and applies the outer update.

>>> trainer = MetaTrainer(resolve(overrides=["steps=100"]))   # doctest: +SKIP
>>> for _ in range(100): trainer.meta_step()                 # doctest: +SKIP
>>> trainer.evaluate(TEST, episodes=600)                     # doctest: +SKIP
"""

from __future__ import annotations

import time

import torch

from distmeta.algorithms import meta_gradients
from distmeta.config import Config
from distmeta.optim import aggregate, flatten, flatten_tasks, make_optimizer, unflatten
from distmeta.tasks import TRAIN, task_seeds
from distmeta.training.checkpoint import Checkpoint, CheckpointError, save_checkpoint
from distmeta.training.evaluation import Summary, evaluate
from distmeta.training.setup import build


class MetaTrainer:
    def __init__(self, config: Config, checkpoint: Checkpoint | None = None):
        self.config = config
        self.setup = build(config)
        self.optimizer = make_optimizer(config.outer_optimizer, config.outer_lr, config.outer_lr_schedule, config.steps)
        meta_params = self.setup.initial_meta_params()
        if checkpoint:
            meta_params = _in_order_of(meta_params, checkpoint)
        self.flat, self.spec = flatten(meta_params)
        self.opt_state = checkpoint.optimizer_state if checkpoint else self.optimizer.init(self.flat)
        self.step = checkpoint.step if checkpoint else 0

    @property
    def meta_params(self) -> dict[str, torch.Tensor]:
        return unflatten(self.flat, self.spec)

    def task_batch(self, step: int):
        seeds = task_seeds(self.config.seed, TRAIN, step, self.config.meta_batch_size)
        return self.setup.tasks.sample_batch(seeds)

    def meta_step(self) -> dict[str, float]:
        """One outer step; returns its metrics (task means, timing, dropped tasks)."""
        start = time.perf_counter()
        batch = self.task_batch(self.step)
        grads, metrics = meta_gradients(self.setup.algorithm, self.meta_params, batch, self.setup.execution)
        mean_grad, kept = aggregate(flatten_tasks(grads, self.spec))
        self.flat, self.opt_state = self.optimizer.update(mean_grad, self.opt_state, self.flat)
        self.step += 1
        seconds = time.perf_counter() - start
        summary = {f"train_{k}": v[kept].mean().item() if kept.any() else float("nan") for k, v in metrics.items()}
        summary.update(step_time=seconds, tasks_per_second=batch.num_tasks / seconds, dropped_tasks=int((~kept).sum()))
        return summary

    def evaluate(self, split: int, episodes: int, steps: int | None = None) -> Summary:
        steps = self.config.test_inner_steps if steps is None else steps
        return evaluate(self.setup, self.meta_params, split, episodes, steps)

    def save(self, output, run_id=None):
        return save_checkpoint(output, self.step, self.meta_params, self.opt_state, self.config, run_id, self.config.keep_checkpoints)


def _in_order_of(template: dict, checkpoint: Checkpoint) -> dict:
    """The checkpoint's params in the model's order (safetensors sorts names)."""
    if template.keys() != checkpoint.params.keys():
        raise CheckpointError(f"checkpoint {checkpoint.path} does not match the model's parameters")
    return {k: checkpoint.params[k] for k in template}
