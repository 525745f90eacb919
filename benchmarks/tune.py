"""ASHA against the same random search without early stopping, then the tuned setting against the paper's.

    python benchmarks/tune.py                      # tune_configs/sinusoid_maml.yaml, 16 samples, seed 0
    python benchmarks/tune.py --samples 8

Both searches draw the same configurations (the spec's searcher seed) and run
side by side in one process on one local Ray cluster, one after the other:
ASHA (the spec's scheduler) stops the worst trials at its rungs, FIFO runs
every trial to the end. Then the best setting of each search and the paper's
defaults (Finn et al., 2017: inner lr 0.01, one inner step, Adam at 0.001)
are trained from scratch with the same budget and meta-tested on 600 new
sines (mean +- 95% CI).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distmeta.config import from_dict  # noqa: E402
from distmeta.training.run import train  # noqa: E402
from distmeta.tuning import load_spec  # noqa: E402
from distmeta.tuning.tuner import tune_run  # noqa: E402

PAPER = {"inner_lr": 0.01, "inner_steps": 1, "outer_lr": 0.001}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "tune_configs" / "sinusoid_maml.yaml")
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tune-bench-"))
    store = f"sqlite:///{workdir / 'mlflow.db'}"
    spec = load_spec(args.spec, samples=args.samples)
    print(f"$ python benchmarks/tune.py {' '.join(sys.argv[1:])}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    searches = {"ASHA": spec, "FIFO (no early stopping)": spec._replace(scheduler="fifo", scheduler_options={})}
    results = {}
    for name, chosen in searches.items():
        started = time.perf_counter()
        result = tune_run(chosen, str(workdir / name.split()[0]), tracking_uri=store, name=f"bench-{name.split()[0]}",
                          progress=False)
        results[name] = {**result, "wall": time.perf_counter() - started}
        print(f"\n{name}:\n{result['table']}", flush=True)
    print(f"\n| search | trials | stopped early | meta-steps trained | wall time | best {spec.metric} | best setting |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        steps = sum(row["steps"] for row in r["rows"])
        setting = ", ".join(f"{k} {v:.3g}" for k, v in r["best_config"].items())
        print(f"| {name} | {r['trials']} | {r['stopped_early']} | {steps} | {r['wall']:.0f} s | {r['value']:.4f} | {setting} |")
    candidates = {f"best of {name.split()[0]}": r["best_config"] for name, r in results.items()}
    candidates["paper defaults"] = PAPER
    print(f"\n| setting | inner_lr | outer_lr | inner_steps | test mse after {spec.base['test_inner_steps']} steps, "
          f"600 tasks | train time |")
    print("|---|---|---|---|---|---|")
    for label, values in candidates.items():
        config = from_dict({**spec.base, **values, "eval_episodes": 600, "threads": 1})
        result = train(config, workdir / label.replace(" ", "-"), tracking_uri=store, progress=False)
        test = result["test"]
        print(f"| {label} | {config.inner_lr:.3g} | {config.outer_lr:.3g} | {config.inner_steps} | "
              f"{test['mean']:.4f} +- {test['ci95']:.4f} | {result['seconds']:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
