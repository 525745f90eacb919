"""Episode sampling throughput on real Omniglot, beside the meta-step it feeds.

    python benchmarks/sampling.py [--data omniglot_background.parquet] [--repeats 5]

Sampling is index gathering on arrays loaded once (no decoding): this prints
tasks/s for drawing episodes (median of ``--repeats`` runs of 2000 tasks, one
thread, rotations on), and the share of a single-threaded meta-step that
drawing its tasks takes (MAML 5-way 1-shot meta-batch 32, ProtoNets 60-way).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distmeta.config import from_dict  # noqa: E402
from distmeta.data import import_omniglot  # noqa: E402
from distmeta.optim import unflatten  # noqa: E402
from distmeta.setup import build  # noqa: E402

ZIP = ROOT.parent / "shared" / "data" / "omniglot" / "images_background.zip"
CASES = [  # name, config, tasks per meta-step
    ("5-way 1-shot 15 queries (MAML, meta-batch 32)", {"algorithm": "maml", "ways": 5, "shots": 1, "queries": 15,
                                                       "meta_batch_size": 32, "inner_lr": 0.4}),
    ("20-way 1-shot 15 queries (MAML, meta-batch 16)", {"algorithm": "maml", "ways": 20, "shots": 1, "queries": 15,
                                                        "meta_batch_size": 16, "inner_lr": 0.1}),
    ("60-way 1-shot 5 queries (ProtoNets, 1 episode)", {"algorithm": "protonet", "ways": 60, "shots": 1, "queries": 5,
                                                        "test_ways": 5, "meta_batch_size": 1}),
]


def seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = args.data or Path(tempfile.mkdtemp()) / "omniglot_background.parquet"
    if not data.exists():
        import_omniglot([ZIP], data, progress=False)
    torch.set_num_threads(1)
    print(f"$ python benchmarks/sampling.py {' '.join(sys.argv[1:])}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread; "
          f"median of {args.repeats}\n")
    print("| episodes | sampling tasks/s | meta-step (1 thread) | drawing its tasks | share |")
    print("|---|---|---|---|---|")
    for name, extra in CASES:
        config = from_dict({"task": "fewshot", "dataset": str(data), "split_by": "group", "split_sizes": [20, 3, 7],
                            "rotations": True, "workers": 0, **extra})
        setup = build(config)
        sampling = seconds(lambda: [setup.tasks.sample(seed) for seed in range(2000)], args.repeats) / 2000
        params = unflatten(setup.initial_state()[0], setup.spec)
        tasks = range(config.meta_batch_size)
        step = seconds(lambda: setup.task_gradients(params, 0, tasks), args.repeats)
        draw = sampling * config.meta_batch_size
        print(f"| {name} | {1 / sampling:,.0f} | {1000 * step:.0f} ms | {1000 * draw:.1f} ms | {100 * draw / step:.1f}% |")


if __name__ == "__main__":
    main()
