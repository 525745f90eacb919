"""RL^2 against every baseline on the same held-out trials: the README's tables.

    python benchmarks/rl2.py --jobs 2                       # every configs/bandit_rl2_*.yaml and tabular_mdp_rl2*.yaml
    python benchmarks/rl2.py configs/bandit_rl2_k5_n10.yaml
    python benchmarks/rl2.py configs/tabular_mdp_rl2_ppo.yaml --jobs 1 --workers 2   # on 2 Ray workers
    python benchmarks/rl2.py configs/tabular_mdp_rl2_ppo.yaml --baselines-only 10 25 50

Each config trains as `distmeta train --config FILE --workers 0 --json` (one
intra-op thread per job; `--workers N` for N Ray workers) and is meta-tested on its `eval_episodes` test
trials. The baselines play exactly those trials (the same arms, the same
reward draws): random, greedy, epsilon-greedy, UCB1, Thompson sampling and
the finite-horizon Gittins index for bandits; random, greedy (acting on the
posterior-mean MDP), PSRL and the oracle
(which knows the MDP) for tabular MDPs. As in the paper, epsilon-greedy's
epsilon and UCB1's constant are tuned by grid search over {0, 0.1, ..., 1},
here on the validation trials, never on the test trials they are reported on.
"""

from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from runs import create_store, header, train

ROOT = Path(__file__).resolve().parents[1]
GRID = [round(0.1 * i, 1) for i in range(11)]


def baselines(config_path: Path, overrides: list[str] = ()) -> dict:
    """Mean total reward per trial of every baseline on the config's test trials (tuned on its validation trials)."""
    from distmeta.config import resolve
    from distmeta.tasks import TEST, VALIDATION, make_tasks, task_seeds
    from distmeta.tasks.baselines import BANDIT_BASELINES, MDP_BASELINES, play_bandit, play_mdp

    config = resolve(config_path, overrides)
    env = make_tasks(config)
    trials = lambda split: env.sample_batch(task_seeds(config.seed, split, 0, config.eval_episodes))
    if config.task == "tabular_mdp":
        test = trials(TEST)
        return {name: play_mdp(name, test).sum((1, 2)).mean().item() for name in MDP_BASELINES}
    validation, test = trials(VALIDATION), trials(TEST)
    total = lambda name, batch, **option: play_bandit(name, batch, **option)[1].sum(1).mean().item()
    tuned = {"epsilon_greedy": max(GRID, key=lambda e: total("epsilon_greedy", validation, epsilon=e)),
             "ucb1": max(GRID, key=lambda c: total("ucb1", validation, c=c))}
    options = {"epsilon_greedy": {"epsilon": tuned["epsilon_greedy"]}, "ucb1": {"c": tuned["ucb1"]}}
    return {name: total(name, test, **options.get(name, {})) for name in BANDIT_BASELINES} | {"tuned": tuned}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = [*sorted((ROOT / "configs").glob("bandit_rl2_*.yaml")), *sorted((ROOT / "configs").glob("tabular_mdp_rl2*.yaml"))]
    parser.add_argument("configs", nargs="*", type=Path, default=default)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="Ray workers per job (0: one process)")
    parser.add_argument("--baselines-only", type=int, nargs="+", metavar="EPISODES",
                        help="train nothing: the MDP baselines of each config with these episodes per trial")
    args = parser.parse_args()
    header(args.jobs)
    if args.baselines_only:
        print("| config | episodes n | random | greedy | PSRL | oracle (knows the MDP) |\n|---|---|---|---|---|---|")
        for config, n in ((c, n) for c in args.configs for n in args.baselines_only):
            cells = " | ".join(f"{v:.1f}" for v in baselines(config, [f"episodes={n}"]).values())
            print(f"| {config.name} | {n} | {cells} |")
        return
    tables = {"bandit": [], "tabular_mdp": []}
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        create_store(Path(tmp))
        for config, result in zip(args.configs, pool.map(lambda c: train(c, Path(tmp), c.stem, workers=args.workers), args.configs)):
            tables[result_kind(config)].append(row(config, result, baselines(config)))
    columns = {"bandit": ["random", "greedy", "epsilon-greedy", "UCB1", "Thompson", "Gittins", "RL^2", "RL^2 / Gittins"],
               "tabular_mdp": ["random", "greedy", "PSRL", "oracle (knows the MDP)", "RL^2", "RL^2 / oracle"]}
    for kind, rows in tables.items():
        if rows:
            print(f"\n| config | meta-steps | train + eval | {' | '.join(columns[kind])} |")
            print("|---" * (len(columns[kind]) + 3) + "|")
            print("\n".join(rows))


def result_kind(config: Path) -> str:
    from distmeta.config import resolve

    return resolve(config).task


def row(config: Path, result: dict, base: dict) -> str:
    """A table row: mean total reward per test trial of every baseline, then RL^2 (+- 95% CI) and its ratio."""
    tuned = base.pop("tuned", {})
    cells = [f"{value:.2f}" for value in base.values()]
    if tuned:  # epsilon-greedy and UCB1: their tuned setting beside the figure
        names = list(base)
        cells[names.index("epsilon_greedy")] += f" (eps {tuned['epsilon_greedy']})"
        cells[names.index("ucb1")] += f" (c {tuned['ucb1']})"
    reference = base.get("gittins", base.get("oracle"))
    test = result["test"]
    return (f"| {config.name} | {result['steps']} | {result['wall'] / 60:.1f} min | {' | '.join(cells)} | "
            f"**{test['mean']:.2f} +- {test['ci95']:.2f}** | {test['mean'] / reference:.3f} |")


if __name__ == "__main__":
    main()
