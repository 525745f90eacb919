#!/usr/bin/env bash
# GPU check, for a machine with CUDA torch and distmeta installed (no network, < 5 minutes):
#   bash benchmarks/gpu_check.sh
# 1. CUDA and CPU meta-gradients agree (Conv4 MAML, second order, float32);
# 2. tasks/s of Conv4 MAML 5-way 1-shot 15 queries, meta-batch 32: one worker
#    per GPU, and 2 and 4 workers sharing one GPU through fractional num_gpus.
set -euo pipefail
cd "$(dirname "$0")/.."
python - <<'PY'
import os, platform, statistics, sys

import ray
import torch

from distmeta import resolve
from distmeta.setup import build
from distmeta.training.distributed import DistributedTrainer

assert torch.cuda.is_available(), "no CUDA device visible to torch"
print(f"# bash benchmarks/gpu_check.sh  ({platform.node()}, {torch.cuda.get_device_name(0)}, "
      f"{torch.cuda.device_count()} GPU(s), torch {torch.__version__}, ray {ray.__version__})")
conv4 = ["task=random_episodes", "ways=5", "shots=1", "queries=15", "meta_batch_size=32", "inner_lr=0.4"]

setup = build(resolve(overrides=conv4))
params = setup.initial_meta_params()
cpu, _ = setup.task_gradients(params, step=0, indices=range(8))
for execution in ("loop", "vmap"):
    gpu_setup = setup._replace(execution=execution)
    gpu, _ = gpu_setup.task_gradients({k: v.cuda() for k, v in params.items()}, step=0, indices=range(8))
    error = ((gpu.cpu() - cpu).norm() / cpu.norm()).item()
    print(f"CUDA {execution} vs CPU meta-gradients: relative error {error:.2e}")
    assert error < 1e-3, "CUDA and CPU meta-gradients disagree"

ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="ERROR")
gpus = int(ray.cluster_resources().get("GPU", 0))
print("| workers | num_gpus each | GPUs used | execution | tasks/s (median of 10 steps) |")
print("|---|---|---|---|---|")
for workers, share in [(gpus, 1.0), (2, 0.5), (4, 0.25)]:
    for execution in ("loop", "vmap"):
        config = resolve(overrides=[*conv4, f"workers={workers}", f"worker_gpus={share}", "worker_cpus=1",
                                    f"execution={execution}", "steps=12"])
        trainer = DistributedTrainer(config)
        try:
            trainer.meta_step(); trainer.meta_step()
            rates = [trainer.meta_step()["tasks_per_second"] for _ in range(10)]
        finally:
            trainer.close()
        print(f"| {workers} | {share} | {workers * share:g} | {execution} | {statistics.median(rates):.0f} |", flush=True)
PY
