"""Wall time of the commands a new user runs first, the way the README shows them.

    python benchmarks/first_run.py                 # each command 3 times: median, min and max
    python benchmarks/first_run.py --repeats 2

Each command runs as a fresh process in its own scratch folder (a new MLflow
store each time, Ray start-up and shutdown included), one after another on
an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot" / "images_background.zip"
COMMANDS = {
    "distmeta data import omniglot images_background.zip": ["data", "import", "omniglot", str(ZIP), "--output", "o.parquet"],
    "distmeta train --workers 0": ["train", "--workers", "0"],
    "distmeta train": ["train"],
}


def seconds(args: list[str]) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "distmeta.cli", *args], cwd=scratch, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--commands", nargs="+", default=list(COMMANDS), choices=list(COMMANDS))
    args = parser.parse_args()
    print(f"$ python benchmarks/first_run.py {' '.join(sys.argv[1:])}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}\n")
    print("| command | median (s) | min - max (s) | runs |")
    print("|---|---|---|---|")
    for name in args.commands:
        times = [seconds(COMMANDS[name]) for _ in range(args.repeats)]
        print(f"| `{name}` | {statistics.median(times):.1f} | {min(times):.1f} - {max(times):.1f} | {len(times)} |",
              flush=True)


if __name__ == "__main__":
    main()
