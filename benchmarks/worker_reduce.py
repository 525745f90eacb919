"""How far summing on the workers moves a run: the default run's parameters after N steps, per path.

    python benchmarks/worker_reduce.py            # 2000 steps of the shipped default, 2 workers (about 1 minute)

Per-task gradients over the compiled graph give bit for bit the parameters of
the actor-call path that was the default before it. Any change of float32
round-off grows over Adam steps: a shard's gradients computed in a smaller
batch (the worker count), and more so sums on the workers.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import ray

from distmeta import MetaTrainer, resolve
from distmeta.training.distributed import DistributedTrainer


def final_parameters(overrides: list[str], steps: int):
    config = resolve(overrides=[f"steps={steps}", *overrides])
    trainer = MetaTrainer(config) if config.workers == 0 else DistributedTrainer(config)
    try:
        while trainer.step < config.steps:
            trainer.meta_step(config.steps)
        return trainer.flat.clone()
    finally:
        trainer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    print(f"# {' '.join(['python', *sys.argv])}")
    print(f"# {platform.node()}: {platform.machine()}, {os.cpu_count()} CPUs, ray {ray.__version__}")
    one_process = final_parameters(["workers=0"], args.steps)
    before = final_parameters(["workers=2", "compiled_graph=false"], args.steps)  # the default before issue 14
    print("| run (2 workers) | relative difference to one process | to actor calls, per-task | bit-identical to it |")
    print("|---|---|---|---|")
    for name, extra in {"actor calls, per-task gradients (the default before)": ["compiled_graph=false"],
                        "compiled graph, per-task gradients (the default)": [],
                        "compiled graph, summed on the workers": ["worker_reduce=true"]}.items():
        params = final_parameters(["workers=2", *extra], args.steps)
        print(f"| {name} | {relative(params, one_process):.2e} | {relative(params, before):.2e} | "
              f"{bool((params == before).all())} |", flush=True)


def relative(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


if __name__ == "__main__":
    main()
