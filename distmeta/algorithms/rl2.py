"""RL^2 (Duan, Schulman, Chen, Bartlett, Sutskever & Abbeel, 2016).

The learner is a recurrent policy; "adapting" to a task is its hidden state,
kept across every episode of a trial and reset only between trials. At each
step it sees the observation, its previous action, the reward it got and
whether the last episode just ended, so the GRU can learn an exploration
strategy for the whole task distribution. The outer loop is plain RL over
trials: here advantage actor-critic (A2C) with generalised advantage
estimation (GAE; Schulman et al., 2016), the discount running across the
episodes of a trial as in the paper. A task's meta-gradient is the A2C
gradient of its trial, so the parameter server averages policy gradients
over the meta-batch like any other meta-gradient.

PPO's clipped objective would re-use each batch of trials for several
updates; that does not fit one gradient per task per step, so distmeta's
outer loop is A2C (PPO's first epoch is exactly this gradient).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from distmeta.algorithms.base import Algorithm, grad
from distmeta.tasks.base import draw


class Rollout(NamedTuple):
    log_probs: torch.Tensor  # (L,) of the actions taken, L = episodes * horizon steps
    values: torch.Tensor  # (L,)
    entropies: torch.Tensor  # (L,)
    actions: torch.Tensor  # (L, A) one-hot
    rewards: torch.Tensor  # (L,)


def rollout(apply, env, params, trial) -> Rollout:
    """Play one trial: ``env.episodes_per_trial`` episodes of ``env.horizon`` steps, one hidden state throughout."""
    hidden = torch.zeros(params["hidden_gates.weight"].shape[1], dtype=trial[0].dtype, device=trial[0].device)
    action = torch.zeros(env.actions, dtype=hidden.dtype, device=hidden.device)
    reward = done = torch.zeros(1, dtype=hidden.dtype, device=hidden.device)
    steps = []
    for episode in range(env.episodes_per_trial):
        state = env.reset(trial, episode)
        for t in range(env.horizon):
            logits, value, hidden = apply(params, torch.cat([state, action, reward, done]), hidden)
            log_probs = F.log_softmax(logits, -1)
            action = draw(log_probs.exp().detach(), env.action_uniform(trial, episode, t))
            step_reward, state = env.step(trial, state, action, episode, t)
            entropy = -(log_probs.exp() * log_probs).sum()
            steps.append(((log_probs * action).sum(), value, entropy, action, step_reward))
            reward = step_reward.reshape(1)
            done = torch.full_like(done, float(t == env.horizon - 1))
    return Rollout(*(torch.stack(parts) for parts in zip(*steps)))


def advantages(rewards: torch.Tensor, values: torch.Tensor, discount: float, gae_lambda: float):
    """(GAE advantages, value targets) of one trial; the trial's end is terminal."""
    following, advantage, out = torch.zeros_like(values[0]), torch.zeros_like(values[0]), []
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + discount * following - values[t]
        advantage = delta + discount * gae_lambda * advantage
        out.append(advantage)
        following = values[t]
    gae = torch.stack(out[::-1])
    return gae, gae + values


def rl2(apply, env, discount: float, gae_lambda: float, entropy_coef: float, value_coef: float) -> Algorithm:
    """RL^2 over a recurrent policy ``apply(params, x, h)`` and an environment family ``env``."""

    def a2c_loss(params, trial):
        played = rollout(apply, env, params, trial)
        advantage, target = advantages(played.rewards, played.values.detach(), discount, gae_lambda)
        policy_loss = -(played.log_probs * advantage).mean()
        value_loss = ((played.values - target) ** 2).mean()
        entropy = played.entropies.mean()
        loss = policy_loss + value_coef * value_loss - entropy_coef * entropy
        metrics = {"loss": loss, "entropy": entropy, **env.trial_metrics(trial, played.actions, played.rewards)}
        return loss, {k: v.detach() for k, v in metrics.items()}

    def task_grad(meta_params, trial):
        return grad(a2c_loss, has_aux=True)(meta_params, trial)

    def score(meta_params, trial, steps=None):
        """A trial's metrics (total reward; regret for bandits): adapting is playing it."""
        with torch.no_grad():
            played = rollout(apply, env, meta_params, trial)
        return env.trial_metrics(trial, played.actions, played.rewards)

    return Algorithm("rl2", init=dict, task_grad=task_grad, adapt=None, predict=None, score=score)
