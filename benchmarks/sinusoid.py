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
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run(config: Path, workdir: Path) -> dict:
    start = time.perf_counter()
    proc = subprocess.run(
        ["distmeta", "train", "--config", str(config), "--workers", "0", "--set", "threads=1", "--output", str(workdir / config.stem), "--json"],
        capture_output=True, text=True, cwd=workdir, env={**os.environ, "MLFLOW_TRACKING_URI": store(workdir)},
    )
    if proc.returncode != 0:
        sys.exit(f"{config}: {proc.stderr.strip().splitlines()[-1]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "wall": time.perf_counter() - start}


def store(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'mlflow.db'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", type=Path, default=sorted((ROOT / "configs").glob("sinusoid_*.yaml")))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    print(f"# {' '.join(['python', *sys.argv])}")
    print(f"# {platform.node()}: {platform.machine()}, {os.cpu_count()} CPUs, {args.jobs} jobs at once")
    print("| config | algorithm | K | meta-steps | adaptation steps | held-out MSE (95% CI) | train + eval time |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        import mlflow

        mlflow.MlflowClient(store(Path(tmp))).search_experiments()  # create the store once, not racing
        for config, result in zip(args.configs, pool.map(lambda c: run(c, Path(tmp)), args.configs)):
            values = yaml.safe_load(config.read_text())
            test = result["test"]
            print(f"| {config.name} | {values.get('algorithm', 'maml')} | {values.get('shots', 10)} | {result['steps']} | "
                  f"{values.get('test_inner_steps', 10)} | {test['mean']:.3f} +- {test['ci95']:.3f} | {result['wall'] / 60:.1f} min |",
                  flush=True)


if __name__ == "__main__":
    main()
