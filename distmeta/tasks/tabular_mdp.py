"""Random tabular MDPs, the second RL^2 task distribution (Duan et al., 2016, section 3.2).

A task is an MDP of ``states`` states and ``actions`` actions: each row of
transition probabilities is drawn from a flat Dirichlet, each mean reward
from N(1, 1), and a reward is its mean plus N(0, 1) noise. A trial is
``episodes`` episodes of ``horizon`` steps; each episode starts in a state
drawn uniformly. As with bandits, every random number of a trial is drawn
with the task: ``uniforms[e, t]`` holds the action draw, the next-state draw
(inverse CDF of the transition row) and, at t=0, the start-state draw;
``noise[e, t]`` is the reward noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from distmeta.tasks.base import batched, draw, stack


@batched
class MDPTrial(NamedTuple):
    transitions: torch.Tensor  # (S, A, S), rows sum to 1
    rewards: torch.Tensor  # (S, A) mean rewards
    uniforms: torch.Tensor  # (episodes, horizon, 3): action, next state, start state
    noise: torch.Tensor  # (episodes, horizon) N(0, 1) reward noise


@dataclass(frozen=True)
class TabularMDPs:
    states: int = 10
    actions: int = 5
    horizon: int = 10
    episodes: int = 10

    metric = "reward"  # total reward of a trial (higher is better)

    @property
    def input_shape(self) -> tuple:
        return (self.states,)

    @property
    def episodes_per_trial(self) -> int:
        return self.episodes

    def sample(self, seed: int) -> MDPTrial:
        gen = torch.Generator().manual_seed(seed)
        s, a = self.states, self.actions
        gammas = -torch.log(torch.rand(s, a, s, generator=gen))  # Dirichlet(1, ..., 1) as normalised Exp(1)
        transitions = gammas / gammas.sum(-1, keepdim=True)
        rewards = 1 + torch.randn(s, a, generator=gen)
        uniforms = torch.rand(self.episodes, self.horizon, 3, generator=gen)
        noise = torch.randn(self.episodes, self.horizon, generator=gen)
        return MDPTrial(transitions, rewards, uniforms, noise)

    def sample_batch(self, seeds: list[int]) -> MDPTrial:
        return stack([self.sample(s) for s in seeds])

    # The environment, one trial (vmappable).

    def reset(self, trial: MDPTrial, episode: int) -> torch.Tensor:
        return draw(torch.full((self.states,), 1.0 / self.states, dtype=trial.rewards.dtype), trial.uniforms[episode, 0, 2])

    @staticmethod
    def step(trial: MDPTrial, state: torch.Tensor, action: torch.Tensor, episode: int, t: int):
        """(reward, next state) of one-hot ``action`` in one-hot ``state``."""
        reward = state @ trial.rewards @ action + trial.noise[episode, t]
        following = torch.einsum("s,a,sak->k", state, action, trial.transitions)
        return reward, draw(following, trial.uniforms[episode, t, 1])

    @staticmethod
    def action_uniform(trial: MDPTrial, episode: int, t: int) -> torch.Tensor:
        return trial.uniforms[episode, t, 0]

    @staticmethod
    def trial_metrics(trial: MDPTrial, actions: torch.Tensor, rewards: torch.Tensor) -> dict:
        return {"reward": rewards.sum()}
