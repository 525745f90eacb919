"""Tasks/s of the single-process trainer vs 1 and 2 Ray workers, with the step-time split.

    python benchmarks/scaling.py            # the README table (about 3 minutes)
    python benchmarks/scaling.py --quick

Cases: Omniglot-shaped Conv4 MAML (5-way 1-shot, 15 queries per class,
meta-batch 32, second order, random images) and sinusoid MAML (meta-batch 25).
Each worker gets one CPU and one torch thread; the single-process trainer is
shown with 1 and 2 threads. Figures are medians over meta-steps measured in
one run, side by side. A fitted model then extrapolates to 8 and 64 workers.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys

import ray

from distmeta import MetaTrainer, resolve
from distmeta.training.distributed import DistributedTrainer

CASES = {
    "Conv4 5w1s q=15": ["task=random_episodes", "ways=5", "shots=1", "queries=15", "meta_batch_size=32", "inner_lr=0.4"],
    "sinusoid MLP": ["task=sinusoid", "meta_batch_size=25"],
}


def measure(overrides: list[str], steps: int) -> dict:
    config = resolve(overrides=[*overrides, f"steps={steps + 1}"])
    trainer = MetaTrainer(config) if config.workers == 0 else DistributedTrainer(config)
    try:
        trainer.meta_step()  # warm-up
        samples = [trainer.meta_step() for _ in range(steps)]
    finally:
        trainer.close()
    median = {k: statistics.median(s[k] for s in samples) for k in samples[0] if isinstance(samples[0][k], (int, float))}
    median["gradient_mb"] = config.meta_batch_size * sum(p.numel() for p in trainer.setup.initial_meta_params().values()) * 4 / 1e6
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    print(f"# {' '.join(['python', *sys.argv])}")
    print(f"# {platform.node()}: {platform.machine()}, {os.cpu_count()} CPUs, ray {ray.__version__}; medians over steps")
    print("| case | trainer | tasks/s | vs 1 worker | step ms | compute ms | transfer ms | aggregate ms | transfer + aggregate |")
    print("|---|---|---|---|---|---|---|---|---|")
    fits = {}
    for case, overrides in CASES.items():
        steps = (3 if args.quick else 8) if "Conv4" in case else (50 if args.quick else 300)
        runs = {
            "single process, 1 thread": ["workers=0", "threads=1"],
            "single process, 2 threads": ["workers=0", "threads=2"],
            "1 worker": ["workers=1"],
            "2 workers": ["workers=2"],
            "2 workers, worker_reduce": ["workers=2", "worker_reduce=true"],
        }
        results = {name: measure([*overrides, *extra], steps) for name, extra in runs.items()}
        one = results["1 worker"]["tasks_per_second"]
        for name, r in results.items():
            split = [r.get(k, 0.0) * 1000 for k in ("compute_time", "transfer_time", "aggregate_time")]
            share = f"{(split[1] + split[2]) / (r['step_time'] * 1000):.1%}" if "worker" in name else "-"
            print(f"| {case} | {name} | {r['tasks_per_second']:.1f} | {r['tasks_per_second'] / one:.2f}x | "
                  f"{r['step_time'] * 1000:.1f} | " + " | ".join(f"{v:.1f}" if "worker" in name else "-" for v in split)
                  + f" | {share} |", flush=True)
        fits[case] = results
    extrapolate(fits)


def extrapolate(fits: dict) -> None:
    """Step time T(W) = c B / W + t0 + a B: compute shared by W workers, a fixed round trip, per-task aggregation.

    c: seconds of compute per task on one worker; t0: transfer per step with 2
    workers (object-store round trips, gradients in), taken as constant; a:
    aggregation seconds per task. The meta-batch grows with the workers (B = 2W,
    at least the case's own) so every worker has tasks.
    """
    print("\nExtrapolation, T(W) = c*B/W + t0 + a*B with the constants measured above (B = max(B0, 2W)):")
    print("| case | c ms/task | t0 ms | a ms/task | 8 workers tasks/s | 64 workers tasks/s | efficiency at 64 |")
    print("|---|---|---|---|---|---|---|")
    for case, results in fits.items():
        one, two = results["1 worker"], results["2 workers"]
        batch = round(one["tasks_per_second"] * one["step_time"])
        c = one["compute_time"] / batch
        t0 = two["transfer_time"]
        a = two["aggregate_time"] / batch
        rates = {}
        for workers in (8, 64):
            b = max(batch, 2 * workers)
            rates[workers] = b / (c * b / workers + t0 + a * b)
        ideal = 64 / c
        print(f"| {case} | {c * 1000:.2f} | {t0 * 1000:.2f} | {a * 1000:.4f} | {rates[8]:.0f} | {rates[64]:.0f} | "
              f"{rates[64] / ideal:.0%} |")


if __name__ == "__main__":
    main()
