"""Hand-designed baselines for the RL^2 task distributions (Duan et al., 2016, tables 1 and 2).

Every baseline plays a batch of trials on the trial's own random numbers:
pull t of a bandit pays ``uniforms[t, 1] < means[arm]``, and an MDP episode
starts, moves and pays exactly as ``TabularMDPs.reset``/``step`` say. So the
baselines and an RL^2 policy face the same rewards (common random numbers)
and their differences are not sampling noise of the environment. What a
baseline draws itself (tie-breaks, posterior samples, exploration) comes
from a ``torch.Generator`` seeded by ``seed``, so a call is deterministic.

Bandit posteriors are Beta(1, 1) priors per arm; MDP posteriors are
Dirichlet(1, ..., 1) per transition row and N(1, 1) per mean reward with
known unit reward noise, the priors the tasks are drawn from.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from distmeta.tasks.bandits import BanditTrial
from distmeta.tasks.base import draw_index
from distmeta.tasks.tabular_mdp import MDPTrial

BANDIT_BASELINES = ("random", "greedy", "epsilon_greedy", "ucb1", "thompson", "gittins")
MDP_BASELINES = ("random", "greedy", "psrl", "oracle")


# Shared helpers.

def _argmax_random(scores: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Argmax over the last dim, ties broken uniformly at random (argmax alone favours low indices)."""
    best = scores == scores.max(-1, keepdim=True).values
    keys = torch.rand(scores.shape, generator=gen, dtype=torch.float64)
    return torch.where(best, keys, -1.0).argmax(-1)


def _gamma(shape: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Gamma(shape, 1) draws for shape >= 1 (Marsaglia and Tsang, 2000).

    torch.distributions samples from the global generator only; this takes ours.
    """
    d = (shape - 1 / 3).reshape(-1)
    c = 1 / torch.sqrt(9 * d)
    out = torch.empty_like(d)
    todo = torch.arange(d.numel())
    while todo.numel():  # each round accepts > 95% of what is left
        dd, cc = d[todo], c[todo]
        x = torch.randn(dd.shape, generator=gen, dtype=d.dtype)
        v = (1 + cc * x) ** 3
        u = torch.rand(dd.shape, generator=gen, dtype=d.dtype)
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + dd - dd * v + dd * torch.log(v.clamp(min=1e-300)))
        out[todo[ok]] = (dd * v)[ok]
        todo = todo[~ok]
    return out.reshape(shape.shape)


def _beta(a: torch.Tensor, b: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    x, y = _gamma(a, gen), _gamma(b, gen)
    return x / (x + y)


# Bandits. A policy maps (pull t, successes, failures (B, arms), pulls, generator) to arms (B,).

def _random(t, successes, failures, pulls, gen):
    return torch.randint(successes.shape[-1], successes.shape[:1], generator=gen)


def _greedy(t, successes, failures, pulls, gen):
    return _argmax_random((1 + successes) / (2 + successes + failures), gen)


def _epsilon_greedy(t, successes, failures, pulls, gen, epsilon: float = 0.1):
    # Both arms for every trial: vectorised over the batch, each trial keeps the one its coin picks.
    explore = torch.rand(successes.shape[:1], generator=gen, dtype=torch.float64) < epsilon
    random, greedy = _random(t, successes, failures, pulls, gen), _greedy(t, successes, failures, pulls, gen)
    return torch.where(explore, random, greedy)


def _ucb1(t, successes, failures, pulls, gen, c: float = 1.0):
    """Auer et al. (2002): each arm once (unplayed arms score inf), then empirical mean + c sqrt(2 ln t / n)."""
    n = successes + failures
    bonus = c * torch.sqrt(2 * math.log(max(t, 1)) / n.clamp(min=1))
    return _argmax_random(torch.where(n > 0, successes / n.clamp(min=1) + bonus, math.inf), gen)


def _thompson(t, successes, failures, pulls, gen):
    return _argmax_random(_beta(1 + successes, 1 + failures, gen), gen)


@functools.lru_cache(maxsize=8)
def _gittins_tensor(pulls: int, grid: int) -> torch.Tensor:
    return torch.from_numpy(gittins_table(pulls, grid).copy())  # torch wants a writable array


def _gittins(t, successes, failures, pulls, gen, grid: int = 1001):
    table = _gittins_tensor(pulls, grid)
    return _argmax_random(table[successes.long(), failures.long(), pulls - t], gen)


BANDIT_POLICIES = {"random": _random, "greedy": _greedy, "epsilon_greedy": _epsilon_greedy, "ucb1": _ucb1,
                   "thompson": _thompson, "gittins": _gittins}


@functools.lru_cache(maxsize=8)
def gittins_table(pulls: int, grid: int = 1001) -> np.ndarray:
    """Finite-horizon Gittins indices (Kaufmann, 2016) of a Beta(1 + s, 1 + f) arm with r pulls left, table[s, f, r].

    The index is the calibrating retirement reward: the smallest lambda per
    remaining pull for which retiring now (lambda r) is as good as pulling the
    arm with the option to retire at any later pull. Backward induction over
    r, vectorised over a grid of lambdas and all (s, f): W(s, f, 0) = 0,
    W(s, f, r) = max(lambda r, p (1 + W(s+1, f, r-1)) + (1 - p) W(s, f+1, r-1)).
    Retiring minus continuing is piecewise linear and strictly increasing in
    lambda (slope >= 1), so linear interpolation between the two grid points
    around its root is exact unless a kink falls between them. Only states
    with s + f + r <= pulls are reachable; the rest are NaN. Read-only: cached.
    """
    lam = np.linspace(0.0, 1.0, grid)  # the last axis: contiguous, so numpy's inner loops are long
    counts = np.arange(pulls + 1)
    mean = ((1 + counts[:, None]) / (2 + counts[:, None] + counts[None, :]))[..., None]
    table = np.full((pulls + 1, pulls + 1, pulls + 1), np.nan)
    value = np.zeros((pulls + 1, pulls + 1, grid))  # r = 0
    for r in range(1, pulls + 1):
        m = pulls - r + 1  # states with s + f <= pulls - r lie in [:m, :m]; skip the rest (3x less work)
        p = mean[:m, :m]
        play = value[1:m + 1, :m] + 1  # in place from here: the arrays are big, temporaries cost
        play *= p
        play += (1 - p) * value[:m, 1:m + 1]
        retire = lam * r
        # Retiring minus playing is < 0 at lambda = 0 (play >= p > 0) and > 0 at lambda = 1 (play = r - 1 + p).
        hi = (play > retire).sum(-1, keepdims=True)  # first grid point where retiring is as good
        g_lo = retire[hi - 1] - np.take_along_axis(play, hi - 1, -1)
        g_hi = retire[hi] - np.take_along_axis(play, hi, -1)
        root = (lam[hi - 1] - g_lo * (lam[hi] - lam[hi - 1]) / (g_hi - g_lo))[..., 0]  # g_hi - g_lo >= spacing
        reachable = counts[:m, None] + counts[None, :m] <= pulls - r
        table[:m, :m, r] = np.where(reachable, root, np.nan)
        value = np.maximum(retire, play, out=play)
    table.flags.writeable = False
    return table


def play_bandit(policy: str, trials: BanditTrial, seed: int = 0, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """Play a batch of bandit trials with a baseline: (arms (B, pulls) long, rewards (B, pulls)).

    ``options`` go to the policy: ``epsilon`` (epsilon_greedy), ``c`` (ucb1), ``grid`` (gittins).
    """
    choose = BANDIT_POLICIES[policy]
    gen = torch.Generator().manual_seed(seed)
    means, uniforms = trials.means, trials.uniforms
    (batch, arms), pulls = means.shape, uniforms.shape[1]
    rows = torch.arange(batch)
    successes = torch.zeros(batch, arms, dtype=torch.float64)
    failures = torch.zeros_like(successes)
    chosen = torch.empty(batch, pulls, dtype=torch.long)
    rewards = torch.empty(batch, pulls, dtype=means.dtype)
    for t in range(pulls):
        arm = choose(t, successes, failures, pulls, gen, **options)
        reward = (uniforms[:, t, 1] < means[rows, arm]).to(means.dtype)  # as Bandits.step pays
        successes[rows, arm] += reward.double()
        failures[rows, arm] += 1 - reward.double()
        chosen[:, t], rewards[:, t] = arm, reward
    return chosen, rewards


def pull_regret(trials: BanditTrial, arms: torch.Tensor) -> torch.Tensor:
    """(B, pulls) expected reward each pull loses to pulling the best arm: max mean - the pulled arm's mean."""
    return trials.means.max(-1, keepdim=True).values - trials.means.gather(-1, arms)


def pseudo_regret(trials: BanditTrial, arms: torch.Tensor) -> torch.Tensor:
    """(B,) expected reward lost to always pulling the best arm: pulls * max mean - sum of pulled means."""
    return pull_regret(trials, arms).sum(-1)


# Tabular MDPs. A policy maps (trials, transition counts (B, S, A, S), reward sums (B, S, A), generator)
# to the actions of the next episode, (B, horizon, S): one action per step and state.

def plan(transitions: torch.Tensor, rewards: torch.Tensor, horizon: int) -> torch.Tensor:
    """Optimal finite-horizon actions (B, horizon, S) of MDPs (B, S, A, S), (B, S, A), by value iteration."""
    value = torch.zeros(rewards.shape[:2], dtype=rewards.dtype)
    actions = torch.empty(rewards.shape[0], horizon, rewards.shape[1], dtype=torch.long)
    for t in reversed(range(horizon)):
        value, actions[:, t] = (rewards + torch.einsum("bsak,bk->bsa", transitions, value)).max(-1)
    return actions


def _horizon(trials: MDPTrial) -> int:
    return trials.noise.shape[-1]


def _mdp_random(trials, counts, reward_sums, gen):
    # An episode is at one state per step, so a fresh action per (step, state) is a uniform action every step.
    batch, states, actions = trials.rewards.shape
    return torch.randint(actions, (batch, _horizon(trials), states), generator=gen)


def _oracle(trials, counts, reward_sums, gen):
    return plan(trials.transitions.double(), trials.rewards.double(), _horizon(trials))


def _reward_posterior(counts, reward_sums):
    """Mean and std of each mean reward's posterior: prior N(1, 1), unit noise variance."""
    visits = counts.sum(-1)
    return (1 + reward_sums) / (1 + visits), (1 + visits).rsqrt()


def posterior_sample(counts: torch.Tensor, reward_sums: torch.Tensor, gen: torch.Generator):
    """An MDP (transitions (B, S, A, S), mean rewards (B, S, A)) drawn from the posterior given the data."""
    gammas = _gamma(1 + counts, gen)  # Dirichlet(1 + counts) per row, as normalised gammas
    mean, std = _reward_posterior(counts, reward_sums)
    return gammas / gammas.sum(-1, keepdim=True), mean + std * torch.randn(mean.shape, generator=gen, dtype=mean.dtype)


def _psrl(trials, counts, reward_sums, gen):
    """Osband et al. (2013): act optimally in one MDP sampled from the posterior."""
    return plan(*posterior_sample(counts, reward_sums, gen), _horizon(trials))


def _mdp_greedy(trials, counts, reward_sums, gen):
    """Certainty equivalence: act optimally in the posterior mean MDP."""
    transitions = (1 + counts) / (1 + counts).sum(-1, keepdim=True)
    return plan(transitions, _reward_posterior(counts, reward_sums)[0], _horizon(trials))


MDP_POLICIES = {"random": _mdp_random, "oracle": _oracle, "psrl": _psrl, "greedy": _mdp_greedy}


def rollout_mdp(policy: str, trials: MDPTrial, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Play a batch of MDP trials with a baseline: states, actions (long) and rewards, each (B, episodes, horizon)."""
    choose = MDP_POLICIES[policy]
    gen = torch.Generator().manual_seed(seed)
    transitions, mean_rewards, uniforms, noise = trials
    batch, states, actions = mean_rewards.shape
    episodes, horizon = noise.shape[1:]
    rows = torch.arange(batch)
    counts = torch.zeros(batch, states, actions, states, dtype=torch.float64)
    reward_sums = torch.zeros(batch, states, actions, dtype=torch.float64)
    start = torch.full((states,), 1.0 / states, dtype=mean_rewards.dtype)  # as TabularMDPs.reset
    visited = torch.empty(batch, episodes, horizon, dtype=torch.long)
    taken = torch.empty_like(visited)
    rewards = torch.empty(batch, episodes, horizon, dtype=mean_rewards.dtype)
    for e in range(episodes):
        table = choose(trials, counts, reward_sums, gen)  # the policy only learns between episodes
        state = draw_index(start, uniforms[:, e, 0, 2])
        for t in range(horizon):
            action = table[rows, t, state]
            reward = mean_rewards[rows, state, action] + noise[:, e, t]
            following = draw_index(transitions[rows, state, action], uniforms[:, e, t, 1])
            counts[rows, state, action, following] += 1
            reward_sums[rows, state, action] += reward.double()
            visited[:, e, t], taken[:, e, t], rewards[:, e, t] = state, action, reward
            state = following
    return visited, taken, rewards


def play_mdp(policy: str, trials: MDPTrial, seed: int = 0) -> torch.Tensor:
    """Rewards (B, episodes, horizon) of a baseline on a batch of MDP trials."""
    return rollout_mdp(policy, trials, seed)[2]
