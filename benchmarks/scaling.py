"""Tasks/s of the single-process trainer vs 1 and 2 Ray workers, with the step-time split.

    python benchmarks/scaling.py            # the README table (about 5 minutes)
    python benchmarks/scaling.py --quick
    python benchmarks/scaling.py --case "Conv4 5w1s q=15"   # again, for a median of runs

Cases: Omniglot-shaped Conv4 MAML (5-way 1-shot, 15 queries per class,
meta-batch 32, second order, random images) and sinusoid MAML (the shipped
default: meta-batch 25), and RL^2 with PPO on tabular MDPs (10 states, 5
actions, 10 episodes of 10 steps, a 64-unit GRU, 128 trials a step (the shipped config): a task is a
trial replayed, so new trials/s are tasks/s over ppo_epochs). Each worker gets one CPU and one torch thread; the
single-process trainer is shown with 1 and 2 threads. The Ray paths: the
parameter server runs the steps over a compiled graph (the default) with
workers sending one summed gradient each (``worker_reduce``) or per-task
gradients (the default), and the actor-call path (``compiled_graph=false``).
Figures are medians over meta-steps measured in one run, side by side; tasks/s
is the driver's wall clock over the same steps. A model fitted to them
extrapolates to 8 and 64 workers.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import ray

from distmeta import MetaTrainer, resolve
from distmeta.training.distributed import DistributedTrainer

CASES = {
    "Conv4 5w1s q=15": ["task=random_episodes", "ways=5", "shots=1", "queries=15", "meta_batch_size=32", "inner_lr=0.4"],
    "sinusoid MLP": ["task=sinusoid", "meta_batch_size=25"],
    "RL^2 MDP PPO, GRU 64": ["algorithm=rl2", "task=tabular_mdp", "hidden=[64]", "meta_batch_size=128", "policy_loss=ppo"],
}
SLOW = ("Conv4 5w1s q=15", "RL^2 MDP PPO, GRU 64")  # seconds a step: fewer steps
RUNS = {
    "single process, 1 thread": ["workers=0", "threads=1"],
    "single process, 2 threads": ["workers=0", "threads=2"],
    "1 worker": ["workers=1", "worker_reduce=true"],
    "2 workers": ["workers=2", "worker_reduce=true"],
    "2 workers, per-task gradients": ["workers=2"],
    "1 worker, actor calls": ["workers=1", "compiled_graph=false", "worker_reduce=true"],
    "2 workers, actor calls": ["workers=2", "compiled_graph=false", "worker_reduce=true"],
}


def measure(overrides: list[str], steps: int) -> dict:
    config = resolve(overrides=[*overrides, f"steps={steps + 1}"])
    trainer = MetaTrainer(config) if config.workers == 0 else DistributedTrainer(config)
    try:
        trainer.meta_step()  # warm-up (and the graph's compilation)
        start = time.perf_counter()
        samples = [trainer.meta_step(until=config.steps) for _ in range(steps)]  # as `fit` runs them
        wall = (time.perf_counter() - start) / steps
    finally:
        trainer.close()
    median = {k: statistics.median(s[k] for s in samples) for k in samples[0] if isinstance(samples[0][k], (int, float))}
    median["tasks_per_second"] = config.meta_batch_size / wall  # the driver's wall clock, all overheads in
    median["batch"] = config.meta_batch_size
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--case", choices=list(CASES), help="one case only (e.g. to repeat Conv4 for a median)")
    args = parser.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    print(f"# {' '.join(['python', *sys.argv])}")
    print(f"# {platform.node()}: {platform.machine()}, {os.cpu_count()} CPUs, ray {ray.__version__}; medians over steps")
    print("| case | trainer | tasks/s | vs 1 process, 1 thread | vs 1 worker | step ms | compute ms | transfer ms | "
          "aggregate ms | transfer + aggregate |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    fits = {}
    for case, overrides in CASES.items():
        if args.case and case != args.case:
            continue
        steps = (3 if args.quick else 8) if case in SLOW else (50 if args.quick else 300)
        results = {name: measure([*overrides, *extra], steps) for name, extra in RUNS.items()}
        one = results["1 worker"]["tasks_per_second"]
        single = results["single process, 1 thread"]["tasks_per_second"]
        for name, r in results.items():
            split = [r.get(k, 0.0) * 1000 for k in ("compute_time", "transfer_time", "aggregate_time")]
            share = f"{(split[1] + split[2]) / (r['step_time'] * 1000):.1%}" if "worker" in name else "-"
            print(f"| {case} | {name} | {r['tasks_per_second']:.1f} | {r['tasks_per_second'] / single:.2f}x | "
                  f"{r['tasks_per_second'] / one:.2f}x | {r['step_time'] * 1000:.1f} | "
                  + " | ".join(f"{v:.1f}" if "worker" in name else "-" for v in split) + f" | {share} |", flush=True)
        fits[case] = results
    extrapolate(fits)


def extrapolate(fits: dict) -> None:
    """Step time T(W) = c B / W + r0 + r1 W: compute shared by W workers, plus the round trip and aggregation.

    c: seconds of compute per task on one worker. r0 + r1 W: transfer plus
    aggregation, fitted through the 1- and 2-worker compiled-graph runs where
    each worker ships one summed gradient (so the server's work grows
    with W, not with the tasks). With per-task gradients the server adds a
    per task instead (a: the 2-worker run's aggregation per task). The
    meta-batch grows with the workers (B = 2W, at least the case's own) so
    every worker has tasks.
    """
    print("\nExtrapolation, T(W) = c*B/W + r0 + r1*W (+ a*B with per-task gradients), constants measured above "
          "(B = max(B0, 2W)):")
    print("| case | c ms/task | r0 ms | r1 ms/worker | a ms/task | 8 workers tasks/s | 64 workers tasks/s | "
          "efficiency at 64 | at 64, per-task gradients |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case, results in fits.items():
        one, two, per_task = results["1 worker"], results["2 workers"], results["2 workers, per-task gradients"]
        batch = one["batch"]
        c = one["compute_time"] / batch
        overhead = [r["transfer_time"] + r["aggregate_time"] for r in (one, two)]
        r1 = max(0.0, overhead[1] - overhead[0])
        r0 = overhead[0] - r1
        a = per_task["aggregate_time"] / batch

        def rate(workers: int, per_task_cost: float = 0.0) -> float:
            b = max(batch, 2 * workers)
            return b / (c * b / workers + r0 + r1 * workers + per_task_cost * b)

        ideal = 64 / c
        print(f"| {case} | {c * 1000:.2f} | {r0 * 1000:.2f} | {r1 * 1000:.3f} | {a * 1000:.4f} | {rate(8):.0f} | "
              f"{rate(64):.0f} | {rate(64) / ideal:.0%} | {rate(64, a) / ideal:.0%} |")


if __name__ == "__main__":
    main()
