"""Intra-op threads for one-process training: what the `threads: 0` (auto) default chooses, measured.

    python benchmarks/threads.py            # quiet, then beside one busy process; 5 repeats each
    python benchmarks/threads.py --quick

Times single-process meta-steps (MetaTrainer, sampling included) of the
sinusoid MLP (MAML, shipped default config) and Conv4 (first-order MAML,
5-way 1-shot, 15 queries, meta-batch 8, random 28x28 episodes) with 1 thread
and with torch's default (one per core), interleaved in one run, first on
the quiet machine, then while one other process keeps a core busy (a laptop
doing something else, a shared CI machine). Each figure is the median of
the repeats of a timed block of steps.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distmeta import MetaTrainer, resolve  # noqa: E402

DEFAULT_THREADS = torch.get_num_threads()
CASES = {
    "sinusoid MLP (default config)": ["workers=0"],
    "Conv4 5w1s q=15, meta-batch 8": ["workers=0", "algorithm=fomaml", "task=random_episodes", "ways=5", "shots=1",
                                      "queries=15", "meta_batch_size=8", "inner_lr=0.4"],
}


def step_ms(overrides: list[str], threads: int, steps: int) -> float:
    trainer = MetaTrainer(resolve(overrides=overrides + [f"threads={threads}"]))
    trainer.meta_step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        trainer.meta_step()
    return 1000 * (time.perf_counter() - start) / steps


def spin(stop) -> None:
    while not stop.is_set():
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 3 if args.quick else 5
    print(f"$ python benchmarks/threads.py {' '.join(sys.argv[1:])}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, torch {torch.__version__}")
    print("\n| case | machine | 1 thread (ms/step) | default, " f"{DEFAULT_THREADS} threads (ms/step) | default / 1 thread |")
    print("|---|---|---|---|---|")
    for load in ("quiet", "one core busy"):
        stop = multiprocessing.Event()
        busy = multiprocessing.Process(target=spin, args=(stop,)) if load != "quiet" else None
        if busy:
            busy.start()
        try:
            for name, overrides in CASES.items():
                steps = 200 if "MLP" in name else 5
                times = {1: [], DEFAULT_THREADS: []}
                for _ in range(repeats):
                    for threads in times:
                        times[threads].append(step_ms(overrides, threads, steps))
                one, default = (statistics.median(times[t]) for t in (1, DEFAULT_THREADS))
                print(f"| {name} | {load} | {one:.1f} | {default:.1f} | {default / one:.2f} |", flush=True)
        finally:
            if busy:
                stop.set()
                busy.join()


if __name__ == "__main__":
    main()
