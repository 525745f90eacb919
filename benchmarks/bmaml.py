"""Bayesian MAML against ensemble MAML and MAML on the noisy sinusoid: the README's table.

    python benchmarks/bmaml.py --steps 10000 --jobs 2

For K = 5 and 10 it trains configs/noisy_sinusoid_bmaml_k{K}.yaml three ways:
BMAML (10 particles, SVGD, chaser loss), ensemble MAML (10 independent
particles, MAML's loss) and MAML (ensemble MAML with one particle: MAML with a
learned Gaussian noise, so it has an NLL). Same likelihood, inner step,
network and meta-steps for all. Each runs as `distmeta train --workers 0 --json`
(one intra-op thread per job) and reports, on 600 new sines after 10
adaptation steps, the MSE of the predictive mean, the NLL of the predictive
distribution and how often a held-out point falls in its 95% interval.
"""

from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from runs import create_store, header, train

ROOT = Path(__file__).resolve().parents[1]
LEARNERS = {"BMAML": ["algorithm=bmaml"], "ensemble MAML": ["algorithm=emaml"], "MAML": ["algorithm=emaml", "particles=1"]}


def run(shots: int, learner: str, steps: int, workdir: Path) -> dict:
    config = ROOT / "configs" / f"noisy_sinusoid_bmaml_k{shots}.yaml"
    return train(config, workdir, f"{learner.replace(' ', '_')}-k{shots}", [*LEARNERS[learner], f"steps={steps}", "val_every=0"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10000, help="meta-steps per run")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    header(args.jobs)
    print("| K | learner | particles | held-out MSE | held-out NLL | 95% interval coverage | time |")
    print("|---|---|---|---|---|---|---|")
    runs = [(shots, learner) for shots in (5, 10) for learner in LEARNERS]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        create_store(Path(tmp))
        for (shots, learner), result in zip(runs, pool.map(lambda r: run(*r, args.steps, Path(tmp)), runs)):
            test = result["test_all"]
            cell = lambda name: f"{test[name]['mean']:.3f} +- {test[name]['ci95']:.3f}"
            particles = 1 if learner == "MAML" else 10
            print(f"| {shots} | {learner} | {particles} | {cell('mse')} | {cell('nll')} | {cell('coverage95')} | "
                  f"{result['wall'] / 60:.1f} min |", flush=True)


if __name__ == "__main__":
    main()
