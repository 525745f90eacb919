"""Tasks/s of one meta-step, vmap vs loop, on this machine.

    python benchmarks/throughput.py            # the README table
    python benchmarks/throughput.py --quick    # fewer repeats

Cases: sinusoid MLP 40-40 (K=10, Q=10, meta-batch 25) and Conv4 on 28x28
inputs (5-way 1-shot, meta-batch 32, 1 and 15 queries per class), all MAML
second order with one inner step; 1 and 2 intra-op threads. A meta-step here
is what the trainer times: sampling the batch, per-task meta-gradients, mean.
Each figure is the median over repeats of a timed block of steps.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from distmeta.algorithms import maml, meta_gradients
from distmeta.models import MLP, Conv4, apply_fn, init_params
from distmeta.tasks import RandomEpisodes, Sinusoid, task_seeds

# learn2learn's MAML (clone()/adapt() per task) on the same Conv4 step, from
# ../shared/ENVIRONMENT.md: it does not install on Python 3.11.
LEARN2LEARN = {(1, 1): 36, (1, 2): 60, (15, 1): 11.1, (15, 2): 16.8}


def cases():
    yield "sinusoid MLP", Sinusoid(10, 10), MLP(), 25, 0.01, None
    for queries in (1, 15):
        yield f"Conv4 5w1s q={queries}", RandomEpisodes(5, 1, queries), Conv4(outputs=5), 32, 0.4, queries


def flops_per_task(tasks, model, inner_lr) -> float:
    """Matmul and convolution FLOPs of one task's meta-gradient (torch's flop counter)."""
    algo = maml(apply_fn(model), tasks, inner_lr, inner_steps=1)
    with FlopCounterMode(display=False) as counter:
        meta_gradients(algo, init_params(model, 0), tasks.sample_batch(task_seeds(0, 0, 0, 1)), "loop")
    return counter.get_total_flops()


def tasks_per_second(tasks, model, meta_batch, inner_lr, execution, steps, repeats) -> float:
    algo = maml(apply_fn(model), tasks, inner_lr, inner_steps=1)
    params = init_params(model, 0)

    def step(i):
        batch = tasks.sample_batch(task_seeds(0, 0, i, meta_batch))
        grads, _ = meta_gradients(algo, params, batch, execution)
        return {k: g.mean(0) for k, g in grads.items()}

    step(0)  # warm-up
    timings = []
    for r in range(repeats):
        start = time.perf_counter()
        for i in range(steps):
            step(1 + r * steps + i)
        timings.append(meta_batch * steps / (time.perf_counter() - start))
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    repeats = 3 if args.quick else 5
    print(f"# {' '.join(['python', *sys.argv])}")
    print(f"# {platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, median of {repeats} repeats")
    print("| case | threads | vmap tasks/s | loop tasks/s | loop / vmap | learn2learn tasks/s | best / learn2learn | GFLOP/task | best GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, tasks, model, meta_batch, inner_lr, queries in cases():
        for threads in args.threads:
            torch.set_num_threads(threads)
            steps = 20 if queries is None else 1
            vmap_rate = tasks_per_second(tasks, model, meta_batch, inner_lr, "vmap", steps, repeats)
            loop_rate = tasks_per_second(tasks, model, meta_batch, inner_lr, "loop", steps, repeats)
            reference = LEARN2LEARN.get((queries, threads))
            best = max(vmap_rate, loop_rate)
            ratio = f"{best / reference:.2f}x" if reference else "-"
            flops = flops_per_task(tasks, model, inner_lr) / 1e9
            print(f"| {name} | {threads} | {vmap_rate:.1f} | {loop_rate:.1f} | {loop_rate / vmap_rate:.2f} | "
                  f"{reference or '-'} | {ratio} | {flops:.3g} | {best * flops:.0f} |", flush=True)


if __name__ == "__main__":
    main()
