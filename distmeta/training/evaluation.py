"""The meta-test protocol: adapt to fresh tasks, score on their query sets.

Test tasks come from their own seed stream (``tasks.TEST``), so they are never
tasks seen in training or validation; the result is the mean over tasks with a
95% confidence interval (1.96 standard errors), as papers report it.

Batch norm (Conv4) is scored one of two ways: ``transductive``, the papers'
protocol, normalises the query set with its own statistics, so a query's
prediction depends on the other queries; ``frozen`` normalises every query
with the support set's statistics, each query on its own, as a generated
model answers.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch.func import vmap

from distmeta.algorithms import plain_autograd
from distmeta.algorithms.base import adapt_to_support
from distmeta.tasks import TEST, task_seeds
from distmeta.tasks.predictive import moments


class Summary(NamedTuple):
    metric: str
    mean: float
    ci95: float
    episodes: int

    def __str__(self) -> str:
        return f"{self.metric} {self.mean:.4f} +- {self.ci95:.4f} (95% CI, {self.episodes} tasks)"


def summarize(metric: str, values: torch.Tensor) -> Summary:
    values = values.double()
    n = values.numel()
    std = values.std().item() if n > 1 else 0.0
    return Summary(metric, values.mean().item(), 1.96 * std / math.sqrt(n), n)


def adapted_metrics(setup, meta_params, tasks, steps: int, batch_norm: str = "transductive") -> dict[str, torch.Tensor]:
    """Per-task metrics after adaptation for a batch of tasks: ``{name: (T,)}``."""
    algorithm = setup.algorithm

    def one(task):
        if algorithm.score is not None:
            return algorithm.score(meta_params, task, steps)
        task_params = adapt_to_support(algorithm, setup.model, meta_params, task.support_x, task.support_y, steps,
                                       batch_norm)
        metrics = setup.tasks.metrics(algorithm.predict(task_params, task.query_x), task.query_y)
        return {k: v.detach() for k, v in metrics.items()}

    if setup.execution == "vmap":
        return vmap(one, randomness="same")(tasks)
    with plain_autograd():
        results = [one(tasks.index(i)) for i in range(tasks.num_tasks)]
    return {k: torch.stack([r[k] for r in results]) for k in results[0]}


def evaluate_all(setup, meta_params, split: int, episodes: int, steps: int | None = None,
                 chunk: int = 200, batch_norm: str | None = None) -> dict[str, Summary]:
    """Meta-test ``episodes`` tasks of ``split`` with ``steps`` adaptation steps (default ``test_inner_steps``):
    every metric the task reports (e.g. MSE, NLL and coverage for Bayesian MAML), as mean +- 95% CI.
    ``batch_norm``: which statistics normalise the queries (default: as the run trained)."""
    steps = setup.config.test_inner_steps if steps is None else steps
    batch_norm = batch_norm or setup.config.batch_norm
    seeds = task_seeds(setup.config.seed, split, 0, episodes)
    tasks = setup.tasks_for(split)
    values: dict[str, list] = {}
    for start in range(0, episodes, chunk):
        batch = tasks.sample_batch(seeds[start : start + chunk])
        for name, value in adapted_metrics(setup, meta_params, batch, steps, batch_norm).items():
            values.setdefault(name, []).append(value)
    return {name: summarize(name, torch.cat(parts)) for name, parts in values.items()}


def evaluate(setup, meta_params, split: int, episodes: int, steps: int | None = None) -> Summary:
    """The task's headline metric of ``evaluate_all``."""
    return evaluate_all(setup, meta_params, split, episodes, steps)[setup.tasks.metric]


def test_episode(setup, meta_params) -> tuple:
    """(support_x, support_y, query_x, query_y, predicted labels) of the first test episode, for a plot."""
    task = setup.tasks_for(TEST).sample(task_seeds(setup.config.seed, TEST, 0, 1)[0])
    task_params = setup.algorithm.adapt(meta_params, task.support_x, task.support_y, setup.config.test_inner_steps)
    with torch.no_grad():
        predicted = setup.algorithm.predict(task_params, task.query_x).argmax(-1)
    order = torch.randperm(len(predicted), generator=torch.Generator().manual_seed(0))  # queries of every class
    return task.support_x, task.support_y, task.query_x[order], task.query_y[order], predicted[order]


def sinusoid_fits(setup, meta_params, seeds: list[int], steps: int, points: int = 200) -> list[dict]:
    """Curves for a fit plot: truth, meta-model, and the model adapted to K points (with its
    predictive standard deviation, ``after_std``, when the learner has one)."""
    low, high = setup.tasks.x_range
    grid = torch.linspace(low, high, points).unsqueeze(1)
    algorithm, fits = setup.algorithm, []
    for seed in seeds:
        task = setup.tasks.sample(seed)
        fitted = lambda n: _point_and_spread(algorithm.predict(algorithm.adapt(meta_params, task.support_x, task.support_y, n), grid))
        (before, _), (after, spread) = fitted(0), fitted(steps)
        fits.append({"x": grid.squeeze(1).numpy(), "truth": setup.tasks.target(seed, grid).squeeze(1).numpy(),
                     "before": before, "after": after, "after_std": spread,
                     "support_x": task.support_x.squeeze(1).numpy(), "support_y": task.support_y.squeeze(1).numpy()})
    return fits


def _point_and_spread(prediction: torch.Tensor):
    """(mean, std or None) as numpy curves, of a point prediction or a particle ensemble's distribution."""
    prediction = prediction.detach()
    if prediction.dim() == 3:
        mean, std = moments(prediction)
        return mean.squeeze(1).numpy(), std.squeeze(1).numpy()
    return prediction.squeeze(1).numpy(), None


def trial_curves(setup, meta_params, trials: int = 500) -> tuple[dict, str, str]:
    """Per-step curves of RL^2 and every baseline on the same held-out trials, what they accumulate and over
    what: pseudo-regret over pulls for bandits, reward over episodes for tabular MDPs."""
    from distmeta.algorithms.rl2 import rollout
    from distmeta.tasks import baselines

    env = setup.tasks
    batch = env.sample_batch(task_seeds(setup.config.seed, TEST, 0, trials))
    with torch.no_grad():
        played = vmap(lambda trial: rollout(setup.apply, env, meta_params, trial), randomness="same")(batch)
    if setup.config.task == "bandit":
        arms = {"RL^2": played.actions.argmax(-1)}
        arms.update({name: baselines.play_bandit(name, batch)[0] for name in baselines.BANDIT_BASELINES})
        return {k: baselines.pull_regret(batch, v).cumsum(1).mean(0).numpy() for k, v in arms.items()}, "regret", "pulls"
    per_episode = played.rewards.reshape(trials, env.episodes, env.horizon).sum(-1)
    curves = {"RL^2": per_episode, **{name: baselines.play_mdp(name, batch).sum(-1) for name in baselines.MDP_BASELINES}}
    return {k: v.cumsum(1).mean(0).numpy() for k, v in curves.items()}, "reward", "episodes"
