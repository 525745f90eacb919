"""The RL^2 baselines: bandit and MDP environments, the Gittins index, and the policies' expected rankings."""

import functools

import pytest
import torch

from distmeta.tasks import baselines
from distmeta.tasks.bandits import Bandits, BanditTrial
from distmeta.tasks.baselines import (BANDIT_BASELINES, MDP_BASELINES, gittins_table, play_bandit, play_mdp,
                                      posterior_sample, pseudo_regret, rollout_mdp)
from distmeta.tasks.tabular_mdp import TabularMDPs


@functools.lru_cache(maxsize=None)
def bandit_trials(arms: int, pulls: int, count: int) -> BanditTrial:
    return Bandits(arms, pulls).sample_batch(range(count))


@functools.lru_cache(maxsize=None)
def played(policy: str, arms: int, pulls: int, count: int):
    """(total reward, pseudo-regret) per trial, each (count,)."""
    trials = bandit_trials(arms, pulls, count)
    chosen, rewards = play_bandit(policy, trials)
    return rewards.sum(1), pseudo_regret(trials, chosen)


def paired_gap(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean of a - b over the same trials, and its standard error."""
    diff = (a - b).double()
    return diff.mean().item(), (diff.std() / len(diff) ** 0.5).item()


# Bandits: the environment.

def test_bandit_tasks_have_uniform_means_and_pay_them():
    trials = bandit_trials(5, 10, 4000)
    means = trials.means.double()
    assert abs(means.mean().item() - 0.5) < 0.01  # standard error 0.002
    assert abs(means.var().item() - 1 / 12) < 0.003  # standard error 0.0005
    # Always pulling arm 0 pays its mean: check it among the tasks where arm 0 is good and where it is bad.
    pays = (trials.uniforms[:, :, 1] < trials.means[:, :1]).double().mean(1)
    for chosen in (means[:, 0] > 0.8, means[:, 0] < 0.2):
        assert abs(pays[chosen].mean().item() - means[chosen, 0].mean().item()) < 0.02
    total, _ = played("random", 5, 10, 4000)
    assert abs(total.double().mean().item() / 10 - 0.5) < 0.015  # 40000 pulls


def test_play_bandit_pays_as_the_environment_steps():
    tasks = Bandits(3, 6)
    trials = tasks.sample_batch(range(5))
    for policy in BANDIT_BASELINES:
        arms, rewards = play_bandit(policy, trials, seed=3)
        assert arms.shape == rewards.shape == (5, 6) and arms.dtype == torch.long
        for b in range(5):
            trial = trials.index(b)
            for t in range(6):
                action = torch.nn.functional.one_hot(arms[b, t], 3).float()
                assert tasks.step(trial, tasks.reset(trial, t), action, t, 0)[0] == rewards[b, t]


def test_pseudo_regret_by_hand():
    trials = BanditTrial(torch.tensor([[0.2, 0.7, 0.5]]), torch.zeros(1, 4, 2))
    arms = torch.tensor([[1, 0, 2, 1]])
    assert pseudo_regret(trials, arms).item() == pytest.approx(4 * 0.7 - (0.7 + 0.2 + 0.5 + 0.7))


def test_common_random_numbers():
    trials = bandit_trials(5, 10, 4000)
    runs = {policy: play_bandit(policy, trials, seed=1) for policy in BANDIT_BASELINES}
    for policy, (arms, rewards) in runs.items():
        again = play_bandit(policy, trials, seed=1)
        assert torch.equal(arms, again[0]) and torch.equal(rewards, again[1])  # deterministic
        # Every policy is paid by the trial's own reward draws ...
        assert torch.equal(rewards, (trials.uniforms[:, :, 1] < trials.means.gather(1, arms)).float())
    # ... so where two policies pull the same arm at the same pull, they get the same reward.
    for other in ("greedy", "thompson", "gittins"):
        same = runs["random"][0] == runs[other][0]
        assert same.sum() > 1000
        assert torch.equal(runs["random"][1][same], runs[other][1][same])
    assert not torch.equal(runs["random"][0], play_bandit("random", trials, seed=2)[0])  # the seed matters


def test_ties_are_broken_at_random():
    trials = bandit_trials(5, 10, 4000)
    for policy in ("greedy", "ucb1", "gittins"):  # every arm ties at the first pull
        first = play_bandit(policy, trials)[0][:, 0]
        assert (torch.bincount(first, minlength=5) / 4000 - 0.2).abs().max() < 0.03, policy  # standard error 0.006


def test_options_reach_the_policy():
    trials = bandit_trials(5, 10, 4000)
    always_random = play_bandit("epsilon_greedy", trials, epsilon=1.0)[1].sum(1).mean().item()
    assert abs(always_random - 5.0) < 0.15  # as random play, not as greedy (6.6)
    with pytest.raises(TypeError):
        play_bandit("greedy", trials, epsilon=0.5)


def test_beta_draws_have_the_right_moments():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.full((40000,), 3.0, dtype=torch.float64), torch.full((40000,), 5.0, dtype=torch.float64)
    draws = baselines._beta(a, b, gen)
    assert abs(draws.mean().item() - 3 / 8) < 0.003  # standard error 0.0008
    assert abs(draws.var().item() - 15 / (64 * 9)) < 0.001
    ones = baselines._beta(torch.ones(40000, dtype=torch.float64), torch.ones(40000, dtype=torch.float64), gen)
    assert abs(ones.mean().item() - 0.5) < 0.005 and abs(ones.var().item() - 1 / 12) < 0.002  # Beta(1, 1) = U[0, 1]


# The Gittins index.

def brute_force_index(s: int, f: int, r: int) -> float:
    """The calibration value by bisection on a plain recursion: the definition, checked independently."""

    @functools.lru_cache(maxsize=None)
    def value(lam, a, b, left):
        if left == 0:
            return 0.0
        p = a / (a + b)
        return max(lam * left, p * (1 + value(lam, a + 1, b, left - 1)) + (1 - p) * value(lam, a, b + 1, left - 1))

    lo, hi = 0.0, 1.0
    for _ in range(50):
        lam = (lo + hi) / 2
        p = (1 + s) / (2 + s + f)
        play = p * (1 + value(lam, s + 2, f + 1, r - 1)) + (1 - p) * value(lam, s + 1, f + 2, r - 1)
        lo, hi = (lo, lam) if lam * r >= play else (lam, hi)
    return hi


def test_gittins_index_matches_its_definition():
    table = gittins_table(6)
    assert table.shape == (7, 7, 7)
    for s in range(6):
        for f in range(6 - s):
            for r in range(1, 7 - s - f):
                assert abs(table[s, f, r] - brute_force_index(s, f, r)) < 1e-4, (s, f, r)
    # Two pulls of a Beta(1, 1) arm: 2 lambda = (1 + 2/3) / 2 + lambda / 2 for lambda in [1/3, 2/3].
    assert table[0, 0, 2] == pytest.approx(5 / 9, abs=1e-9)


def test_gittins_index_properties():
    pulls = 30
    table = torch.from_numpy(gittins_table(pulls).copy())
    s, f, r = torch.meshgrid(*(torch.arange(pulls + 1),) * 3, indexing="ij")
    mean = (1 + s) / (2 + s + f).double()
    reachable = s + f + r <= pulls
    assert not table[reachable & (r > 0)].isnan().any()
    one_left = reachable & (r == 1)
    assert torch.allclose(table[one_left], mean[one_left], atol=1e-9, rtol=0)  # no future to explore for
    more = reachable & (r > 1)
    assert (table[more] > mean[more]).all()  # an exploration bonus ...
    longer = (s + f + r < pulls) & (r > 0)
    assert (table[:, :, 2:][longer[:, :, 1:-1]] >= table[:, :, 1:-1][longer[:, :, 1:-1]]).all()  # ... growing with r
    assert (table[0, 0, 2:] > 0.5).all() and table[0, 0, pulls] > 0.75  # 0.79: 30 pulls make a fresh arm worth trying


# Bandit policies: how they rank (seeds range(2000), 5 arms, 100 pulls; seen: mean pseudo-regret random 33.6,
# ucb1 17.3, epsilon_greedy 8.8, thompson 8.2, greedy 7.6, gittins 4.8; standard errors 0.09 to 0.26).

def test_bandit_regret_ranking():
    regret = {policy: played(policy, 5, 100, 2000)[1] for policy in BANDIT_BASELINES}
    for policy in BANDIT_BASELINES[1:]:
        gap, se = paired_gap(regret["random"], regret[policy])
        assert gap > 10 and gap > 20 * se, policy  # random is far worst
    for policy in ("greedy", "epsilon_greedy", "ucb1", "thompson"):
        gap, se = paired_gap(regret[policy], regret["gittins"])
        assert gap > 5 * se, policy
    gap, se = paired_gap(regret["ucb1"], regret["thompson"])
    assert gap > 5 * se  # ucb1 with c = 1 explores too long for 100 pulls


def test_bandit_rewards_match_the_rl2_paper():
    """RL^2 table 1, 5 arms 10 pulls: random 5.0, greedy 6.6, Gittins 6.6 (here 4.996, 6.617, 6.647 on 100000
    trials). The paper tuned UCB1's and epsilon-greedy's constants; here they are fixed, so they are not compared."""
    for policy, paper in (("random", 5.0), ("greedy", 6.6), ("gittins", 6.6)):
        total, _ = played(policy, 5, 10, 4000)  # standard error 0.035
        assert abs(total.double().mean().item() - paper) < 0.15, policy


def test_policies_find_the_better_of_two_arms():
    gen = torch.Generator().manual_seed(0)
    trials = BanditTrial(torch.tensor([0.9, 0.1]).expand(500, 2).contiguous(), torch.rand(500, 20, 2, generator=gen))
    # After 5 pulls, the fraction of pulls of the 0.9 arm (seen: greedy 0.997, gittins 0.997, thompson 0.95,
    # epsilon_greedy 0.95, ucb1 0.86, random 0.49).
    for policy, least in (("greedy", 0.97), ("gittins", 0.97), ("thompson", 0.9), ("ucb1", 0.75)):
        arms, _ = play_bandit(policy, trials)
        assert (arms[:, 5:] == 0).float().mean() > least, policy
    arms, _ = play_bandit("random", trials)
    assert abs((arms == 0).float().mean().item() - 0.5) < 0.03


# Tabular MDPs (seen on seeds range(500), TabularMDPs(10, 5, 10, 10): mean total reward random 99.7, psrl 133.5,
# greedy 147.9, oracle 217.5, standard errors about 1.1).

def test_rollout_follows_the_environment():
    tasks = TabularMDPs(states=4, actions=3, horizon=5, episodes=3)
    trials = tasks.sample_batch(range(6))
    for policy in MDP_BASELINES:
        states, actions, rewards = rollout_mdp(policy, trials, seed=2)
        assert states.shape == actions.shape == rewards.shape == (6, 3, 5)
        assert torch.equal(play_mdp(policy, trials, seed=2), rewards)  # deterministic
        for b in range(6):
            trial = trials.index(b)
            for e in range(3):
                state = tasks.reset(trial, e)
                for t in range(5):
                    assert state.argmax() == states[b, e, t]
                    reward, state = tasks.step(trial, state, torch.nn.functional.one_hot(actions[b, e, t], 3).float(),
                                               e, t)
                    assert reward == rewards[b, e, t]


@functools.lru_cache(maxsize=None)
def mdp_totals(policy: str) -> torch.Tensor:
    """(500, episodes) reward per episode."""
    return play_mdp(policy, TabularMDPs(10, 5, 10, 10).sample_batch(range(500))).sum(-1).double()


def test_posterior_samples():
    """Prior N(1, 1) mean rewards with unit noise, Dirichlet(1 + counts) transitions; 20000 draws of each."""
    counts = torch.zeros(20000, 2, 1, 3, dtype=torch.float64)
    counts[:, 1, 0] = torch.tensor([3.0, 0.0, 1.0])  # (state 1, action 0): 4 visits, rewards summing to 6
    sums = torch.zeros(20000, 2, 1, dtype=torch.float64)
    sums[:, 1, 0] = 6.0
    transitions, rewards = posterior_sample(counts, sums, torch.Generator().manual_seed(0))
    assert torch.allclose(transitions.sum(-1), torch.ones(()).double())
    unseen, seen = rewards[:, 0, 0], rewards[:, 1, 0]
    assert abs(unseen.mean().item() - 1) < 0.03 and abs(unseen.var().item() - 1) < 0.05  # the prior
    assert abs(seen.mean().item() - 7 / 5) < 0.015 and abs(seen.var().item() - 1 / 5) < 0.01  # (1 + 6) / (1 + 4)
    assert torch.allclose(transitions[:, 0, 0].mean(0), torch.full((3,), 1 / 3).double(), atol=0.01)
    assert torch.allclose(transitions[:, 1, 0].mean(0), torch.tensor([4 / 7, 1 / 7, 2 / 7]).double(), atol=0.01)


def test_random_mdp_play_earns_the_prior_mean():
    assert abs(mdp_totals("random").mean().item() / 10 - 1) < 0.04  # mean rewards ~ N(1, 1); standard error 0.009


def test_mdp_ranking():
    random, psrl, oracle = (mdp_totals(policy).sum(1) for policy in ("random", "psrl", "oracle"))
    gap, se = paired_gap(psrl, random)
    assert gap > 15 and gap > 10 * se
    gap, se = paired_gap(oracle, psrl)
    assert gap > 50 and gap > 10 * se  # the oracle knows the MDP: an upper reference, well above a learner


def test_psrl_learns_across_episodes():
    psrl, oracle = mdp_totals("psrl"), mdp_totals("oracle")
    gap, se = paired_gap(psrl[:, -1], psrl[:, 0])
    assert gap > 3 and gap > 5 * se  # better in the last episode than in the first
    gap, se = paired_gap(oracle[:, 0], oracle[:, -1])
    assert abs(gap) < 4 * se + 0.5  # the oracle has nothing to learn


def test_psrl_approaches_the_oracle():
    """Small MDPs, many episodes: over the last 10 of 40, PSRL earns nearly what the oracle does (seen: 0.16 less
    per episode, standard error 0.014; with its transition counts never updated, 0.92 less)."""
    trials = TabularMDPs(states=3, actions=2, horizon=5, episodes=40).sample_batch(range(300))
    psrl, oracle = (play_mdp(policy, trials)[:, -10:].sum(-1).mean(1) for policy in ("psrl", "oracle"))
    gap, se = paired_gap(oracle, psrl)
    assert 3 * se < gap < 0.4
