"""RL^2 against every baseline on the same held-out trials: the README's tables.

    python benchmarks/rl2.py --jobs 2                       # every configs/bandit_rl2_*.yaml and tabular_mdp_rl2.yaml
    python benchmarks/rl2.py configs/bandit_rl2_k5_n10.yaml

Each config trains as `distmeta train --config FILE --workers 0 --json` (one
intra-op thread per job) and is meta-tested on its `eval_episodes` test
trials. The baselines play exactly those trials (the same arms, the same
reward draws): random, greedy, epsilon-greedy, UCB1, Thompson sampling and
the finite-horizon Gittins index for bandits; random, PSRL and the oracle
(which knows the MDP) for tabular MDPs. As in the paper, epsilon-greedy's
epsilon and UCB1's constant are tuned by grid search over {0, 0.1, ..., 1},
here on the validation trials, never on the test trials they are reported on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRID = [round(0.1 * i, 1) for i in range(11)]


def run(config: Path, workdir: Path) -> dict:
    start = time.perf_counter()
    proc = subprocess.run(["distmeta", "train", "--config", str(config), "--workers", "0", "--set", "threads=1",
                           "--output", str(workdir / config.stem), "--json"],
                          capture_output=True, text=True, cwd=workdir, env={**os.environ, "MLFLOW_TRACKING_URI": store(workdir)})
    if proc.returncode != 0:
        sys.exit(f"{config}: {proc.stderr.strip().splitlines()[-1]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "wall": time.perf_counter() - start}


def store(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'mlflow.db'}"


def baselines(config_path: Path) -> dict:
    """Mean total reward per trial of every baseline on the config's test trials (tuned on its validation trials)."""
    from distmeta.config import resolve
    from distmeta.tasks import TEST, VALIDATION, make_tasks, task_seeds
    from distmeta.tasks.baselines import BANDIT_BASELINES, MDP_BASELINES, play_bandit, play_mdp

    config = resolve(config_path)
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
    default = sorted((ROOT / "configs").glob("bandit_rl2_*.yaml")) + [ROOT / "configs" / "tabular_mdp_rl2.yaml"]
    parser.add_argument("configs", nargs="*", type=Path, default=default)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    print(f"# {' '.join(['python', *sys.argv])}")
    print(f"# {platform.node()}: {platform.machine()}, {os.cpu_count()} CPUs, {args.jobs} jobs at once")
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        import mlflow

        mlflow.MlflowClient(store(Path(tmp))).search_experiments()  # create the store once, not racing
        for config, result in zip(args.configs, pool.map(lambda c: run(c, Path(tmp)), args.configs)):
            base, rl2 = baselines(config), result["test"]
            reference = base.get("gittins", base.get("oracle"))
            tuned = base.pop("tuned", {})
            cells = " | ".join(f"{name} {value:.2f}" for name, value in base.items())
            print(f"{config.name}: {result['steps']} meta-steps in {result['wall'] / 60:.1f} min | RL^2 {rl2['mean']:.2f} "
                  f"+- {rl2['ci95']:.2f} | {cells} | RL^2 / {'Gittins' if 'gittins' in base else 'oracle'} "
                  f"{rl2['mean'] / reference:.3f} | tuned {tuned}", flush=True)


if __name__ == "__main__":
    main()
