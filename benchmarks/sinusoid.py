"""Train the shipped sinusoid configs and print the README's results table.

    python benchmarks/sinusoid.py                       # every configs/sinusoid_*.yaml
    python benchmarks/sinusoid.py configs/sinusoid_maml_k5.yaml --jobs 2

Each config runs as `distmeta train --config FILE --workers 0 --json` (one process and one intra-op thread
per job, so two jobs share a 2-core machine without contention); the table
gives the held-out MSE after the config's test_inner_steps adaptation steps,
mean +- 95% CI over 600 new sines, and the wall time of the whole command.
"""

from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from runs import create_store, header, train

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", type=Path, default=sorted((ROOT / "configs").glob("sinusoid_*.yaml")))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    header(args.jobs)
    print("| config | algorithm | K | meta-steps | adaptation steps | held-out MSE (95% CI) | train + eval time |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        create_store(Path(tmp))
        for config, result in zip(args.configs, pool.map(lambda c: train(c, Path(tmp), c.stem), args.configs)):
            values = yaml.safe_load(config.read_text())
            test = result["test"]
            print(f"| {config.name} | {values.get('algorithm', 'maml')} | {values.get('shots', 10)} | {result['steps']} | "
                  f"{values.get('test_inner_steps', 10)} | {test['mean']:.3f} +- {test['ci95']:.3f} | {result['wall'] / 60:.1f} min |",
                  flush=True)


if __name__ == "__main__":
    main()
