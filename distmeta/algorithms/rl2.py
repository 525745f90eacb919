"""RL^2 (Duan, Schulman, Chen, Bartlett, Sutskever & Abbeel, 2016).

The learner is a recurrent policy; "adapting" to a task is its hidden state,
kept across every episode of a trial and reset only between trials. At each
step it sees the observation, its previous action, the reward it got and
whether the last episode just ended, so the GRU can learn an exploration
strategy for the whole task distribution. The discount runs across the
episodes of a trial as in the paper; advantages are GAE (Schulman et al.,
2016). A task's meta-gradient is the policy gradient of its trial, so the
parameter server averages policy gradients like any other meta-gradient.

Two outer objectives:

- ``a2c``: advantage actor-critic, the trial played by the weights being
  differentiated, one gradient per trial.
- ``ppo`` (Schulman et al., 2017): an iteration plays ``minibatches x
  meta_batch_size`` trials with the weights of its first step (the behaviour
  policy), then takes ``epochs x minibatches`` optimizer steps, each on a
  shuffled minibatch of those trials: the clipped surrogate of the current
  weights replayed over the stored trajectories. The behaviour weights travel
  in the meta-parameters (``behaviour:`` entries, zero gradient) and the outer
  optimizer copies the policy into them at each iteration's start
  (``optim.refreshing``). So a step's task gradient stays a pure function of
  (weights, seed, step, index): a worker replays its trials from the
  behaviour weights, a restarted one replays them exactly, and checkpoints,
  resumes and the compiled graph need nothing new. Replaying costs a forward
  pass of the behaviour policy per trial and step, cheap next to storing
  trajectories on workers that a shuffle or a restart would move.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from distmeta.algorithms.base import Algorithm, grad
from distmeta.tasks.base import draw

BEHAVIOUR = "behaviour:"  # PPO's behaviour policy among the meta-parameters


class Rollout(NamedTuple):
    inputs: torch.Tensor  # (L, I) what the policy saw at each step, L = episodes * horizon steps
    actions: torch.Tensor  # (L, A) one-hot
    rewards: torch.Tensor  # (L,)
    log_probs: torch.Tensor  # (L,) of the actions taken
    values: torch.Tensor  # (L,)
    entropies: torch.Tensor  # (L,)


def policy_params(meta_params: dict) -> dict:
    """The policy's own weights (without PPO's behaviour copy)."""
    return {k: v for k, v in meta_params.items() if not k.startswith(BEHAVIOUR)}


def behaviour_params(meta_params: dict) -> dict:
    return {k[len(BEHAVIOUR):]: v.detach() for k, v in meta_params.items() if k.startswith(BEHAVIOUR)}


def policy_step(apply, params, x, hidden):
    """(log-probabilities of the actions, value, next hidden state) of one step."""
    logits, value, hidden = apply(params, x, hidden)
    return F.log_softmax(logits, -1), value, hidden


def initial_hidden(params, like: torch.Tensor) -> torch.Tensor:
    """The GRU's memory at a trial's start: zeros, of ``like``'s dtype and device."""
    return torch.zeros(params["hidden_gates.weight"].shape[1], dtype=like.dtype, device=like.device)


def rollout(apply, env, params, trial) -> Rollout:
    """Play one trial: ``env.episodes_per_trial`` episodes of ``env.horizon`` steps, one hidden state throughout."""
    params = policy_params(params)
    hidden = initial_hidden(params, trial[0])
    action = torch.zeros(env.actions, dtype=hidden.dtype, device=hidden.device)
    reward = done = torch.zeros(1, dtype=hidden.dtype, device=hidden.device)
    steps = []
    for episode in range(env.episodes_per_trial):
        state = env.reset(trial, episode)
        for t in range(env.horizon):
            x = torch.cat([state, action, reward, done])
            log_probs, value, hidden = policy_step(apply, params, x, hidden)
            action = draw(log_probs.exp().detach(), env.action_uniform(trial, episode, t))
            step_reward, state = env.step(trial, state, action, episode, t)
            steps.append((x, action, step_reward, (log_probs * action).sum(), value, _entropy(log_probs)))
            reward = step_reward.reshape(1)
            done = torch.full_like(done, float(t == env.horizon - 1))
    return Rollout(*(torch.stack(parts) for parts in zip(*steps)))


def replay(apply, params, inputs: torch.Tensor, actions: torch.Tensor):
    """(log-probabilities of ``actions``, values, entropies) of ``params`` fed a played trial's ``inputs``."""
    hidden = initial_hidden(params, inputs)
    steps = []
    for t in range(inputs.shape[0]):
        log_probs, value, hidden = policy_step(apply, params, inputs[t], hidden)
        steps.append(((log_probs * actions[t]).sum(), value, _entropy(log_probs)))
    return tuple(torch.stack(parts) for parts in zip(*steps))


def _entropy(log_probs):
    return -(log_probs.exp() * log_probs).sum()


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


def clipped_surrogate(log_probs, old_log_probs, advantage, clip: float):
    """PPO's policy loss: minus the mean of min(r A, clip(r, 1 - clip, 1 + clip) A), r the probability ratio."""
    ratio = torch.exp(log_probs - old_log_probs)
    return -torch.minimum(ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage).mean()


def standardized(advantage):
    """Advantages over one trial to zero mean and unit deviation (per trial, so tasks stay independent)."""
    return (advantage - advantage.mean()) / (advantage.std() + 1e-8)


def ppo_task(seed: int, batch: int, epochs: int, minibatches: int):
    """PPO's ``task_of(step, index)``: the (step, index) whose seed draws the trial a step's index-th gradient
    replays: trial j of iteration i is task j of "step" i, and each epoch shuffles the iteration's trials into
    minibatches."""
    per_iteration = epochs * minibatches

    @functools.lru_cache(maxsize=1)  # a step asks once per task index, all of one (iteration, epoch)
    def shuffle(iteration: int, epoch: int) -> np.ndarray:
        return np.random.default_rng([seed, iteration, epoch]).permutation(batch * minibatches)

    def task_of(step: int, index: int) -> tuple[int, int]:
        iteration, within = divmod(step, per_iteration)
        epoch, minibatch = divmod(within, minibatches)
        return iteration, int(shuffle(iteration, epoch)[minibatch * batch + index])

    return task_of


def rl2(apply, env, discount: float, gae_lambda: float, entropy_coef: float, value_coef: float,
        objective: str = "a2c", clip: float = 0.2, task_of=None) -> Algorithm:
    """RL^2 over a recurrent policy ``apply(params, x, h)`` and an environment family ``env``; ``objective``
    ``a2c`` or ``ppo`` (with ``task_of`` from ``ppo_task``)."""

    def loss(entropies, metrics, policy_loss, value_loss):
        entropy = entropies.mean()
        total = policy_loss + value_coef * value_loss - entropy_coef * entropy
        return total, {k: v.detach() for k, v in {"loss": total, "entropy": entropy, **metrics}.items()}

    def a2c_loss(params, trial):
        played = rollout(apply, env, params, trial)
        advantage, target = advantages(played.rewards, played.values.detach(), discount, gae_lambda)
        metrics = env.trial_metrics(trial, played.actions, played.rewards)
        return loss(played.entropies, metrics, -(played.log_probs * advantage).mean(),
                    ((played.values - target) ** 2).mean())

    def ppo_loss(meta_params, trial):
        with torch.no_grad():
            played = rollout(apply, env, behaviour_params(meta_params), trial)
        advantage, target = advantages(played.rewards, played.values, discount, gae_lambda)
        log_probs, values, entropies = replay(apply, policy_params(meta_params), played.inputs, played.actions)
        metrics = env.trial_metrics(trial, played.actions, played.rewards)
        return loss(entropies, metrics, clipped_surrogate(log_probs, played.log_probs, standardized(advantage), clip),
                    ((values - target) ** 2).mean())

    def init(params):
        return {**params, **{BEHAVIOUR + k: v.clone() for k, v in params.items()}} if objective == "ppo" else params

    def task_grad(meta_params, trial):
        return grad(ppo_loss if objective == "ppo" else a2c_loss, has_aux=True)(meta_params, trial)

    def score(meta_params, trial, steps=None):
        """A trial's metrics (total reward; regret for bandits): adapting is playing it."""
        with torch.no_grad():
            played = rollout(apply, env, meta_params, trial)
        return env.trial_metrics(trial, played.actions, played.rewards)

    return Algorithm("rl2", init=init, task_grad=task_grad, adapt=None, predict=None, score=score, task_of=task_of)
