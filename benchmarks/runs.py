"""What the training benchmarks share: `distmeta train --json` as a subprocess, one MLflow store per benchmark.

Imported by sinusoid.py, bmaml.py and rl2.py (run as `python benchmarks/NAME.py`, so this folder is on the path).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def header(jobs: int) -> None:
    """The command and the machine, printed above every table."""
    print(f"# {' '.join(['python', *sys.argv])}")
    print(f"# {platform.node()}: {platform.machine()}, {os.cpu_count()} CPUs, {jobs} jobs at once")


def store(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'mlflow.db'}"


def create_store(workdir: Path) -> None:
    """Create the benchmark's MLflow store once, before parallel jobs would race to."""
    import mlflow

    mlflow.MlflowClient(store(workdir)).search_experiments()


def train(config: Path, workdir: Path, name: str, sets: list[str] = (), workers: int = 0) -> dict:
    """`distmeta train --config CONFIG --workers 0 --json` with one intra-op thread (so jobs share cores
    without contention) and ``--set`` overrides; its JSON result plus the wall time of the whole command.
    ``workers``: Ray workers instead of one process (one core each)."""
    start = time.perf_counter()
    command = ["distmeta", "train", "--config", str(config), "--workers", str(workers), "--set", "threads=1",
               "--output", str(workdir / name), "--json", *[arg for s in sets for arg in ("--set", s)]]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=workdir,
                          env={**os.environ, "MLFLOW_TRACKING_URI": store(workdir)})
    if proc.returncode != 0:
        sys.exit(f"{name}: {proc.stderr.strip().splitlines()[-1]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "wall": time.perf_counter() - start}
