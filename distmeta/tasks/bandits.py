"""Bernoulli multi-armed bandits, the first RL^2 task distribution (Duan et al., 2016, section 3.1).

A task is a bandit of ``arms`` arms whose success probabilities are drawn
from U[0, 1]; a trial is ``pulls`` pulls of it, each pull an episode of one
step. Every random number a trial needs is drawn with the task, from its
seed: ``uniforms[t, 0]`` picks the policy's action at pull t (inverse CDF of
its probabilities) and pulling arm a at pull t pays 1 when
``uniforms[t, 1] < means[a]``. So a trial is a pure function of the seed and
the policy, whichever process plays it, and the baselines face the same
rewards (common random numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from distmeta.tasks.base import batched, stack


@batched
class BanditTrial(NamedTuple):
    means: torch.Tensor  # (arms,) success probability of each arm
    uniforms: torch.Tensor  # (pulls, 2): action draw, reward draw


@dataclass(frozen=True)
class Bandits:
    arms: int = 5
    pulls: int = 10

    metric = "reward"  # total reward of a trial (higher is better)
    input_shape = (1,)  # nothing to observe but the previous action and reward
    horizon = 1  # a pull is an episode of one step

    @property
    def episodes_per_trial(self) -> int:
        return self.pulls

    @property
    def actions(self) -> int:
        return self.arms

    def sample(self, seed: int) -> BanditTrial:
        gen = torch.Generator().manual_seed(seed)
        return BanditTrial(torch.rand(self.arms, generator=gen), torch.rand(self.pulls, 2, generator=gen))

    def sample_batch(self, seeds: list[int]) -> BanditTrial:
        return stack([self.sample(s) for s in seeds])

    # The environment, one trial (vmappable: no data-dependent Python control flow).

    @staticmethod
    def reset(trial: BanditTrial, episode: int) -> torch.Tensor:
        return torch.ones_like(trial.means[:1])

    @staticmethod
    def step(trial: BanditTrial, state, action: torch.Tensor, episode: int, t: int):
        """(reward, next state) of one-hot ``action`` at pull ``episode``."""
        reward = (trial.uniforms[episode, 1] < (trial.means * action).sum()).to(action.dtype)
        return reward, state

    @staticmethod
    def action_uniform(trial: BanditTrial, episode: int, t: int) -> torch.Tensor:
        return trial.uniforms[episode, 0]

    @staticmethod
    def trial_metrics(trial: BanditTrial, actions: torch.Tensor, rewards: torch.Tensor) -> dict:
        """Total reward, and the pseudo-regret against always pulling the best arm.

        ``actions``: (pulls, arms) one-hot; ``rewards``: (pulls,).
        """
        expected = (actions * trial.means).sum()
        return {"reward": rewards.sum(), "regret": trial.means.max() * len(rewards) - expected}
