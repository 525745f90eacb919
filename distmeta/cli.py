"""``distmeta``: the command line.

Every user mistake (bad config, missing file, corrupt checkpoint) ends as one
line on stderr and exit code 2, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from pathlib import Path

from distmeta.checkpoint import CheckpointError
from distmeta.config import ConfigError, describe, resolve

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distmeta", description="Distributed meta-learning on Ray, tracked in MLflow.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="meta-train (defaults: MAML on sinusoid regression)",
                                epilog="Run `distmeta train --help-config` for every config key.")
    train.add_argument("--config", type=Path, help="YAML config file (see configs/)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config key; repeatable")
    train.add_argument("--output", help="folder for the resolved config and checkpoints (default: runs/NAME)")
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    train.add_argument("--help-config", action="store_true", help="list every config key and exit")
    ray_options = train.add_argument_group("distributed (shorthands for the config keys of the same names)")
    for flag, kind, text in [
        ("--workers", int, "MetaWorker actors; 0 runs in this process without Ray (default 2)"),
        ("--worker-cpus", float, "CPUs (torch threads) per worker (default 1)"),
        ("--worker-gpus", float, "GPUs per worker; fractions share one GPU (default 0)"),
        ("--mode", str, "sync (default) or async"),
        ("--max-staleness", int, "async: recompute gradients older than this many versions (default 2)"),
        ("--checkpoint-every", int, "checkpoint every K steps"),
    ]:
        ray_options.add_argument(flag, type=kind, help=text)
    ray_options.add_argument("--address", help="Ray cluster to join: auto or HOST:PORT (default: $RAY_ADDRESS, else a local cluster)")
    _common(train)

    evaluate = commands.add_parser("evaluate", help="meta-test a checkpoint on fresh held-out tasks")
    evaluate.add_argument("--checkpoint", required=True, help="a run's --output folder or a checkpoint folder")
    evaluate.add_argument("--episodes", type=int, help="held-out tasks (default: the run's eval_episodes, 600)")
    evaluate.add_argument("--steps", type=int, help="adaptation steps (default: the run's test_inner_steps)")
    _common(evaluate)
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return {"train": _train, "evaluate": _evaluate}[args.command](args)
    except (ConfigError, CheckpointError) as err:
        print(f"distmeta: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ConnectionError as err:  # e.g. no Ray cluster at --address
        print(f"distmeta: error: {str(err).strip().splitlines()[-1]}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("distmeta: interrupted", file=sys.stderr)
        return 130


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _train(args) -> int:
    if args.help_config:
        print(describe())
        return 0
    if args.resume and args.output is None:
        raise ConfigError("--resume needs --output DIR (the folder of the run to continue)")
    shorthands = ["workers", "worker_cpus", "worker_gpus", "mode", "max_staleness", "checkpoint_every"]
    overrides = args.overrides + [f"{k}={getattr(args, k)}" for k in shorthands if getattr(args, k) is not None]
    config = resolve(args.config, overrides)
    _ray_token_auth(args.address)
    from distmeta.training.run import train

    result = train(config, args.output, args.resume, args.tracking_uri, progress=not args.json or sys.stderr.isatty(),
                   address=args.address)
    test = result["test"]
    print(f"held-out {test['metric']} after {config.test_inner_steps} steps: {test['mean']:.4f} +- {test['ci95']:.4f} "
          f"(95% CI, {test['episodes']} tasks); {result['steps']} steps in {result['seconds']:.0f} s, "
          f"{result['tasks_per_second']:.0f} tasks/s")
    print(f"checkpoint: {result['checkpoint']}  MLflow run: {result['run_id']}")
    if args.json:
        print(_json(result))
    return 0


def _json(result: dict) -> str:
    """Strict JSON: a diverged (non-finite) metric becomes null, not NaN."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return json.dumps(clean(result), allow_nan=False)


def _ray_token_auth(address: str | None) -> None:
    """Joining a `ray start` cluster (Ray >= 2.5x) needs token auth, read when ray is imported."""
    token = os.environ.get("RAY_AUTH_TOKEN") or Path.home().joinpath(".ray", "auth_token").exists()
    if (address or os.environ.get("RAY_ADDRESS")) and token and "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = "token"


def _evaluate(args) -> int:
    for name in ("episodes", "steps"):
        value = getattr(args, name)
        if value is not None and value < (1 if name == "episodes" else 0):
            raise ConfigError(f"--{name} must be >= {1 if name == 'episodes' else 0}, got {value}")
    from distmeta.training.run import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, args.episodes, args.steps, args.tracking_uri)
    print(f"{result['metric']} after {result['inner_steps']} steps: {result['mean']:.4f} +- {result['ci95']:.4f} "
          f"(95% CI, {result['episodes']} tasks)")
    if args.json:
        print(_json(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
