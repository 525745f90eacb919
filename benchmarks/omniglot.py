"""Omniglot within a time budget: ProtoNets and first-order MAML on this machine, beside the papers.

    python benchmarks/omniglot.py                          # 30 minutes each, ProtoNets then FOMAML
    python benchmarks/omniglot.py --minutes 5 --algorithms protonet

Only the background half of Omniglot is available here, so its 30 alphabets
are split into our own train / validation / test alphabets (20 / 3 / 7 in
file order: 633 / 106 / 225 characters), each character also rotated by 90,
180 and 270 degrees as new classes. Each algorithm meta-trains for
``--minutes`` of wall time (validation included) with the shipped config's
paper settings, then is meta-tested on 600 episodes of the 7 unseen
alphabets: mean accuracy +- 95% CI. ProtoNets run in one process on both
cores (one 60-way episode per step); FOMAML runs on Ray, two workers of one
core each, its meta-batch of 32 sharded between them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distmeta.config import resolve  # noqa: E402
from distmeta.data import import_omniglot  # noqa: E402
from distmeta.training.run import evaluate_checkpoint, train  # noqa: E402

ZIP = ROOT.parent / "shared" / "data" / "omniglot" / "images_background.zip"
SPLIT = ["split_by=group", "split_sizes=[20, 3, 7]", "rotations=true", "val_tasks=100", "checkpoint_every=1000"]
RUNS = {  # shipped config, extra overrides, the test episodes to report
    "protonet": ("omniglot_protonet_5w1s.yaml", ["workers=0", "threads=2", "val_every=1000"],
                 [(5, 1), (5, 5), (20, 1), (20, 5)]),
    "fomaml": ("omniglot_fomaml_5w1s.yaml", ["workers=2", "worker_cpus=1", "val_every=1000"], [(5, 1), (5, 5)]),
}
PAPERS = {  # published meta-test accuracy (%), full Omniglot (1200 training characters), trained to convergence
    ("protonet", 5, 1): "98.8", ("protonet", 5, 5): "99.7", ("protonet", 20, 1): "96.0", ("protonet", 20, 5): "98.9",
    ("fomaml", 5, 1): "98.3 (MAML 98.7)", ("fomaml", 5, 5): "99.2 (MAML 99.9)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--algorithms", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--zip", type=Path, default=ZIP, help="images_background.zip")
    parser.add_argument("--workdir", type=Path, default=None, help="where data, runs and the MLflow store go")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="omniglot-bench-"))
    data = workdir / "omniglot_background.parquet"
    if not data.exists():
        import_omniglot([args.zip], data, progress=False)
    store = f"sqlite:///{workdir / 'mlflow.db'}"
    print(f"$ python benchmarks/omniglot.py {' '.join(sys.argv[1:])}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; data: {data}")
    rows = []
    for name in args.algorithms:
        config_file, extra, episodes = RUNS[name]
        overrides = [f"dataset={data}", f"minutes={args.minutes}", "steps=1000000", *SPLIT, *extra]
        config = resolve(ROOT / "configs" / config_file, overrides)
        result = train(config, workdir / name, tracking_uri=store, progress=sys.stderr.isatty())
        for ways, shots in episodes:
            test = evaluate_checkpoint(workdir / name, {"test_ways": ways, "test_shots": shots, "eval_episodes": args.episodes},
                                       store)
            rows.append({"algorithm": name, "ways": ways, "shots": shots, "accuracy": 100 * test["mean"],
                         "ci95": 100 * test["ci95"], "steps": result["steps"], "minutes": args.minutes,
                         "paper": PAPERS[(name, ways, shots)]})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| algorithm | test episodes | accuracy (%), 95% CI | meta-steps in budget | paper (%) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['algorithm']} | {r['ways']}-way {r['shots']}-shot | {r['accuracy']:.1f} +- {r['ci95']:.1f} | "
              f"{r['steps']} in {r['minutes']:g} min | {r['paper']} |")


if __name__ == "__main__":
    main()
