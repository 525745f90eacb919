"""Frozen against transductive batch norm: does a generated model answer one image as well as a batch?

    python benchmarks/batch_norm.py                          # 4 minutes of meta-training per learner
    python benchmarks/batch_norm.py --minutes 2 --algorithms protonet fomaml

Each learner meta-trains on Omniglot's background alphabets as in
benchmarks/omniglot.py (20 / 3 / 7 alphabets, with rotations, its shipped
5-way 1-shot config, one process), then is meta-tested on the same 600
5-way 1-shot episodes of the 7 unseen alphabets twice: ``transductive``
(the papers' protocol: the query batch normalised with its own statistics)
and ``frozen`` (every query normalised with the support set's statistics,
each on its own, as `distmeta generate`'s models answer one image per request).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from omniglot import SPLIT, ZIP  # noqa: E402

from distmeta.config import resolve  # noqa: E402
from distmeta.data import import_omniglot  # noqa: E402
from distmeta.training.run import evaluate_checkpoint, train  # noqa: E402

CONFIGS = {"protonet": "omniglot_protonet_5w1s.yaml", "matchingnet": "omniglot_matchingnet_5w1s.yaml",
           "fomaml": "omniglot_fomaml_5w1s.yaml", "maml": "omniglot_maml_5w1s.yaml",
           "metasgd": "omniglot_metasgd_5w1s.yaml"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--algorithms", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--train-batch-norm", choices=("transductive", "frozen"), default="transductive",
                        help="the batch_norm key in meta-training (frozen: trained as generated models answer)")
    parser.add_argument("--workdir", type=Path, default=None, help="where data, runs and the MLflow store go")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="batch-norm-bench-"))
    data = workdir / "omniglot_background.parquet"
    if not data.exists():
        import_omniglot([ZIP], data, progress=False)
    store = f"sqlite:///{workdir / 'mlflow.db'}"
    print(f"$ python benchmarks/batch_norm.py {' '.join(sys.argv[1:])}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    rows = []
    for name in args.algorithms:
        overrides = [f"dataset={data}", f"minutes={args.minutes}", "steps=1000000", *SPLIT, "workers=0", "val_every=0",
                     f"batch_norm={args.train_batch_norm}"]
        output = workdir / f"{name}-{args.train_batch_norm}"
        result = train(resolve(ROOT / "configs" / CONFIGS[name], overrides), output, tracking_uri=store, progress=False)
        scores = {mode: evaluate_checkpoint(output, {"test_ways": 5, "test_shots": 1,
                                                             "eval_episodes": args.episodes}, store, mode)
                  for mode in ("transductive", "frozen")}
        rows.append({"algorithm": name, "trained": args.train_batch_norm, "steps": result["steps"], "queries": scores["frozen"]["queries"],
                     **{mode: [100 * s["mean"], 100 * s["ci95"]] for mode, s in scores.items()}})
        print(json.dumps(rows[-1]), flush=True)
    print("\n| learner | trained | meta-steps | query batch | transductive (%) | frozen, one query at a time (%) | difference |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        (batch, batch_ci), (alone, alone_ci) = r["transductive"], r["frozen"]
        print(f"| {r['algorithm']} | {r['trained']} | {r['steps']} | {5 * r['queries']} | {batch:.1f} +- {batch_ci:.1f} | "
              f"{alone:.1f} +- {alone_ci:.1f} | {alone - batch:+.1f} |")


if __name__ == "__main__":
    main()
