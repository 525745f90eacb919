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

from distmeta.checkpoint import Checkpoint, save_checkpoint
from distmeta.config import Config
from distmeta.optim import aggregate, unflatten
from distmeta.setup import build, outer_optimizer
from distmeta.training.evaluation import Summary, evaluate_all


class MetaTrainer:
    """``dataset``: the few-shot images already in memory (else read from the config's file)."""

    running_ahead = False  # one process never runs a step before it is asked for

    def __init__(self, config: Config, checkpoint: Checkpoint | None = None, dataset=None):
        self.config = config
        self.setup = build(config, dataset=dataset)
        self.setup.check_held_out()
        self.optimizer = outer_optimizer(config)
        self.spec = self.setup.spec
        self.flat, self.opt_state, self.step = self.setup.initial_state(checkpoint)

    @property
    def meta_params(self) -> dict[str, torch.Tensor]:
        return unflatten(self.flat, self.spec)

    def meta_step(self, until: int | None = None) -> dict[str, float]:
        """One outer step; returns its metrics (task means, timing, dropped tasks). ``until``: see
        ``DistributedTrainer.meta_step`` (one process runs each step when asked)."""
        start = time.perf_counter()
        tasks = range(self.config.meta_batch_size)
        grads, metrics = self.setup.task_gradients(self.meta_params, self.step, tasks)
        mean_grad, kept = aggregate(grads, self.config.aggregate)
        if kept.any():  # a step with every task dropped changes nothing
            self.flat, self.opt_state = self.optimizer.update(mean_grad, self.opt_state, self.flat)
        self.step += 1
        return step_summary(metrics, kept, time.perf_counter() - start)

    def evaluate(self, split: int, episodes: int, steps: int | None = None) -> Summary:
        """Meta-test the current meta-parameters (``steps`` defaults to ``test_inner_steps``): the task's metric."""
        return self.evaluate_all(split, episodes, steps)[self.setup.tasks.metric]

    def evaluate_all(self, split: int, episodes: int, steps: int | None = None) -> dict[str, Summary]:
        """Every metric the task reports, each as mean +- 95% CI."""
        return evaluate_all(self.setup, self.meta_params, split, episodes, steps)

    def close(self) -> None:
        """Nothing to release in one process (the distributed trainer stops its actors)."""

    def save(self, output, run_id=None):
        return save_checkpoint(output, self.step, self.meta_params, self.opt_state, self.config, run_id,
                               self.config.keep_checkpoints, self.setup.tasks.input_shape)


def step_summary(metrics: dict, kept: torch.Tensor, seconds: float) -> dict[str, float]:
    """A meta-step's metrics: means over the tasks kept, tasks/s, step time, tasks dropped."""
    summary = {f"train_{k}": v[kept].mean().item() if kept.any() else float("nan") for k, v in metrics.items()}
    summary.update(step_time=seconds, tasks_per_second=kept.numel() / seconds, dropped_tasks=int((~kept).sum()))
    return summary
