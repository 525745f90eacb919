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
import time
from pathlib import Path

from distmeta.checkpoint import CheckpointError
from distmeta.config import BATCH_NORM, MAX_STEPS, MAX_TASKS, METRIC_BASED, ConfigError, describe, resolve
from distmeta.data.dataset import DataError

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distmeta", description="Distributed meta-learning on Ray, tracked in MLflow.")
    parser.add_argument("--version", action="version", version=f"distmeta {_version()}")
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

    tune = commands.add_parser("tune", help="search meta-hyperparameters with Ray Tune (see tune_configs/)",
                               description="Every trial is a real meta-training run; the best config is written as "
                                           "YAML for `distmeta train --config` and its meta-model registered in MLflow.")
    tune.add_argument("spec", nargs="?", type=Path, help="tuning YAML (see tune_configs/); not needed with --resume")
    tune.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override one key of the base training config; repeatable")
    tune.add_argument("--samples", type=int, help="trials to sample (default: the spec's samples)")
    tune.add_argument("--output", help="folder for Tune's state, the trials and best.yaml (default: runs/tune-NAME-TIME)")
    tune.add_argument("--resume", action="store_true", help="continue the tuning run in --output")
    tune.add_argument("--name", help="registered model name for the best meta-model (default: tune-NAME)")
    tune.add_argument("--address", help="Ray cluster to join: auto or HOST:PORT (default: $RAY_ADDRESS, else a local cluster)")
    _common(tune)

    submit = commands.add_parser("submit", help="run a distmeta command as a Ray job on a cluster",
                                 description="Submit `distmeta COMMAND...` (after --) as a Ray job whose working "
                                             "directory is this project; prints the job id and dashboard link.")
    submit.add_argument("--address", help="the cluster's dashboard, http://HOST:8265 (default: $RAY_API_SERVER_ADDRESS, "
                                          "$RAY_ADDRESS)")
    submit.add_argument("--wait", action="store_true", help="stream the job's logs; exit 0 SUCCEEDED, 1 FAILED, 130 STOPPED")
    submit.add_argument("--name", help="the job's submission id (default: Ray's)")
    submit.add_argument("--pip", action="append", default=[], metavar="PACKAGE", help="install in the job's env; repeatable")
    submit.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="set in the job's env; repeatable "
                        "($MLFLOW_TRACKING_URI is passed on by default)")
    submit.add_argument("--working-dir", help="the folder shipped as the job's working directory (default: this one)")
    submit.add_argument("job", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="e.g. -- train --config FILE --output s3://...")

    jobs = commands.add_parser("jobs", help="list, inspect, follow or stop Ray jobs")
    jobs.add_argument("--address", help="as for submit")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    jobs_commands.add_parser("list", help="every job: id, status, command")
    for name, text in (("status", "one job's status"), ("logs", "one job's logs"), ("stop", "stop a job (SIGTERM)")):
        one = jobs_commands.add_parser(name, help=text)
        one.add_argument("job_id", metavar="ID")
        if name == "logs":
            one.add_argument("--follow", action="store_true", help="stream until the job ends; exit with its status")
    for name in ("list", "status"):
        jobs_commands.choices[name].add_argument("--json", action="store_true", help="print JSON")

    cluster = commands.add_parser("cluster", help="a local multi-node Ray cluster with an MLflow server and an S3 store",
                                  description="For development and tests: real `ray start` nodes (token auth on), "
                                              "`mlflow server` and an S3-compatible store, all on 127.0.0.1.")
    cluster.add_argument("--dir", default=os.path.expanduser("~/.distmeta/cluster"),
                         help="where the cluster keeps its state, logs, MLflow store (default ~/.distmeta/cluster)")
    cluster_commands = cluster.add_subparsers(dest="cluster_command", required=True)
    start = cluster_commands.add_parser("up", help="start the head, N worker nodes, MLflow and S3")
    start.add_argument("--nodes", type=int, default=2, help="worker nodes (default 2)")
    start.add_argument("--cpus-per-node", type=float, default=2, help="logical CPUs per worker node (default 2)")
    start.add_argument("--gpus-per-node", type=float, default=0, help="logical GPUs per worker node (default 0)")
    cluster_commands.add_parser("status", help="endpoints, processes, Ray nodes and their resources")
    cluster_commands.add_parser("env", help="the exports that point distmeta, Ray and MLflow at the cluster")
    cluster_commands.add_parser("down", help="stop everything `up` started")
    for command in cluster_commands.choices.values():
        command.add_argument("--json", action="store_true", help="print JSON")

    evaluate = commands.add_parser("evaluate", help="meta-test a checkpoint on fresh held-out tasks")
    evaluate.add_argument("--checkpoint", required=True, help="a run's --output folder or a checkpoint folder")
    evaluate.add_argument("--episodes", type=int, help="held-out tasks (default: the run's eval_episodes, 600)")
    evaluate.add_argument("--inner-steps", "--steps", dest="steps", type=int,
                          help="adaptation steps (default: the run's test_inner_steps; --steps is an older name)")
    evaluate.add_argument("--ways", type=int, help="N of the test episodes (default: the run's test_ways)")
    evaluate.add_argument("--shots", type=int, help="K of the test episodes (default: the run's test_shots)")
    evaluate.add_argument("--queries", type=int, help="query images per class (default: the run's queries)")
    evaluate.add_argument("--dataset", help="test on every class of this Parquet file (default: the run's test split)")
    evaluate.add_argument("--rotations", action=argparse.BooleanOptionalAction,
                          help="add each test class rotated by 90, 180, 270 degrees as new classes (default: as trained)")
    evaluate.add_argument("--batch-norm", choices=BATCH_NORM,
                          help="transductive (the papers' protocol): queries normalised with their own batch's "
                               "statistics; frozen: with the support set's, each query on its own, as generated models "
                               "answer (default: as the run trained, its batch_norm key)")
    _common(evaluate)

    generate = commands.add_parser("generate", help="adapt a meta-model to a new task's examples; register the model in MLflow")
    generate.add_argument("--meta-model", required=True, metavar="URI",
                          help="runs:/RUN/meta_model, models:/NAME@ALIAS, models:/m-ID, or a checkpoint folder")
    generate.add_argument("--support", required=True, metavar="FILE",
                          help="the new task's labelled examples: CSV/Parquet with x and y columns (a task column or a "
                               "folder of files: many tasks), an image folder PATH/<class>/<image> (a folder of those: "
                               "many tasks), or a Parquet file from `distmeta data import`")
    generate.add_argument("--inner-steps", "--steps", dest="steps", type=int,
                          help="adaptation steps (default: the meta-model's test_inner_steps; --steps is an older name)")
    generate.add_argument("--name", help="registered model name (default: ALGORITHM-TASK); each run adds a version")
    generate.add_argument("--name-per-task", action="store_true", help="register each task as NAME-TASK, not as versions of NAME")
    generate.add_argument("--parallel", type=int, default=0, metavar="N",
                          help="adapt many tasks as Ray tasks, N at a time (default 0: one after another, in this process)")
    generate.add_argument("--address", help="Ray cluster for adapting many tasks in parallel (default: a local one)")
    generate.add_argument("--batch-norm", choices=BATCH_NORM, default="frozen",
                          help="frozen (default): the support set's statistics, each input answered on its own; "
                               "transductive: each request's own statistics, as in the papers' protocol")
    _common(generate)

    data = commands.add_parser("data", help="import an image dataset into one Parquet file, or describe one")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    sources = data_commands.add_parser("import", help="decode a downloaded dataset into Parquet").add_subparsers(
        dest="source", required=True)
    importers = {}
    for source, paths, size, text in [
        ("omniglot", "+", 28, "the official images_background.zip / images_evaluation.zip or their folders, in order"),
        ("folder", 1, 84, "PATH/<class>/<image> or PATH/<group>/<class>/<image>"),
        ("miniimagenet", 1, 84, "PATH/train.csv, val.csv, test.csv (filename,label) and PATH/images/"),
    ]:
        importers[source] = sources.add_parser(source, help=text, description=f"Import {text}.")
        importers[source].add_argument("paths", nargs=paths, metavar="PATH")
        importers[source].add_argument("--output", required=True, metavar="FILE", help="the .parquet file to write")
        importers[source].add_argument("--size", type=int, default=size, help=f"resize to SIZE x SIZE (default {size})")
        importers[source].add_argument("--force", action="store_true", help="overwrite --output if it exists")
    importers["folder"].add_argument("--channels", type=int, choices=(1, 3), default=3,
                                     help="1: greyscale, 3: RGB (default 3)")
    info = data_commands.add_parser("info", help="describe a dataset file")
    info.add_argument("file", metavar="FILE", help="a .parquet file from `distmeta data import`")
    info.add_argument("--json", action="store_true", help="print one JSON line instead")
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    args.ray_connected_before = _ray_connected()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        commands = {"train": _train, "tune": _tune, "submit": _submit, "jobs": _jobs, "cluster": _cluster,
                    "evaluate": _evaluate, "generate": _generate, "data": _data}
        code = commands[args.command](args)
        sys.stdout.flush()  # here, not at exit: a closed pipe is caught below
        return code
    except (ConfigError, CheckpointError, DataError) as err:
        print(f"distmeta: error: {_readable(err)}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `distmeta data info FILE | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        return 0
    except ConnectionError as err:  # e.g. no Ray cluster at --address
        print(f"distmeta: error: {str(err).strip().splitlines()[-1]}", file=sys.stderr)
        return EXIT_USAGE
    except TimeoutError as err:  # workers that stopped answering
        print(f"distmeta: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("distmeta: interrupted", file=sys.stderr)
        return 130


def _ray_connected() -> bool:
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def _disconnect(args) -> None:
    """Leave Ray before printing results: a message Ray forwards from the cluster must not follow --json's line.
    A caller's own Ray session (``main`` called in a process already connected) is left alone."""
    if not args.ray_connected_before and _ray_connected():
        sys.modules["ray"].shutdown()


def _readable(err: Exception, limit: int = 500) -> str:
    """An error as one line of at most ``limit`` characters (a value quoted in it can be huge)."""
    text = str(err)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("distmeta")
    except PackageNotFoundError:
        return "unknown (not installed)"


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
    _ray_token_auth(args.address or os.environ.get("RAY_ADDRESS"))
    from distmeta.training.run import train

    result = train(config, args.output, args.resume, args.tracking_uri, progress=not args.json or sys.stderr.isatty(),
                   address=args.address)
    _disconnect(args)
    test = result["test"]
    print(f"{_results('held-out ', result.get('test_all', {'': test}), _adaptation(config.algorithm, config.test_inner_steps))} "
          f"(95% CI, {test['episodes']} tasks); {result['steps']} steps in {result['seconds']:.0f} s, "
          f"{result['tasks_per_second']:.0f} tasks/s")
    print(f"checkpoint: {result['checkpoint']}  MLflow run: {result['run_id']}")
    if args.json:
        print(_json(result))
    return 0


def _tune(args) -> int:
    if args.resume and args.output is None:
        raise ConfigError("--resume needs --output DIR (the folder of the tuning run to continue)")
    if not args.resume and args.spec is None:
        raise ConfigError("give a tuning config (see tune_configs/), or --resume --output DIR")
    _within(args, samples=(1, None))
    from distmeta.tuning import load_spec

    spec = None if args.resume else load_spec(args.spec, args.overrides, args.samples)
    output = args.output or os.path.join("runs", f"tune-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    _ray_token_auth(args.address or os.environ.get("RAY_ADDRESS"))
    from distmeta.tuning.tuner import tune_run

    result = tune_run(spec, output, args.resume, args.address, args.tracking_uri, args.name, progress=not args.json)
    _disconnect(args)
    print(f"\n{result['trials']} trials ({result['stopped_early']} stopped early) in {result['seconds']:.0f} s; the best:")
    print(result["table"])
    print(f"best {result['metric']} {result['value']:.4f}: {result['best_config']}")
    print(f"best config: {result['best_config_file']}  (distmeta train --config {result['best_config_file']})")
    print(f"MLflow run: {result['parent_run_id']}  best trial's run: {result['best_run_id']}"
          + (f"  registered: models:/{result['registered_model']}/{result['version']}" if result["version"] else ""))
    if args.json:
        print(_json(result))
    return 0


def _submit(args) -> int:
    from distmeta import jobs

    command = args.job[1:] if args.job[:1] == ["--"] else args.job
    env = dict(item.partition("=")[::2] for item in args.env)
    _ray_token_auth(joining=True)
    job_id, link = jobs.submit(command, args.address, args.name, args.pip, env, args.working_dir)
    print(f"submitted job {job_id}: {link}", file=sys.stderr if args.wait else sys.stdout, flush=True)
    return jobs.wait(job_id, args.address) if args.wait else 0


def _jobs(args) -> int:
    from distmeta import jobs

    _ray_token_auth(joining=True)
    if args.jobs_command == "list":
        listed = jobs.list_jobs(args.address)
        for job in listed if not args.json else []:
            print(f"{job['job_id']}  {job['status']:<9}  {job['entrypoint']}")
        if args.json:
            print(json.dumps(listed))
        return 0
    if args.jobs_command == "logs":
        return jobs.logs(args.job_id, args.address, args.follow)
    if args.jobs_command == "stop":
        stopped = jobs.stop(args.job_id, args.address)
        print(f"job {args.job_id}: {'stopping' if stopped else 'had already ended'}")
        return 0
    info = jobs.status(args.job_id, args.address)
    print(json.dumps(info) if args.json else f"{info['job_id']}  {info['status']}  {info['message'] or ''}".rstrip())
    return 0


def _cluster(args) -> int:
    from distmeta import devcluster

    if args.cluster_command == "up":
        state = devcluster.up(args.dir, args.nodes, args.cpus_per_node, args.gpus_per_node)
        result = devcluster.status(args.dir)
        if not args.json:
            print(f"cluster up in {state['folder']}: 1 head + {state['nodes']} nodes; Ray {state['gcs']}, "
                  f"Jobs API {state['jobs']}, MLflow {state['mlflow']}, S3 {state['s3']} (bucket distmeta)")
            print(f'use it: eval "$(distmeta cluster --dir {state["folder"]} env)"')
    elif args.cluster_command == "status":
        result = devcluster.status(args.dir)
        if not args.json:
            for key in ("gcs", "jobs", "mlflow", "s3", "s3_uri"):
                print(f"{key:<8} {result[key]}")
            print("processes " + ", ".join(f"{k} {'up' if v else 'DOWN'}" for k, v in result["processes"].items()))
            for node in result["ray_nodes"]:
                print("node     " + ", ".join(f"{k} {v:g}" for k, v in sorted(node.items()) if not k.startswith("node:")))
    elif args.cluster_command == "env":
        result = devcluster.environment(args.dir)
        if not args.json:
            print("\n".join(f"export {k}={v}" for k, v in result.items()))
    else:
        result = {"stopped": devcluster.down(args.dir)}
        if not args.json:
            print(f"stopped {', '.join(result['stopped'])}")
    if args.json:
        print(json.dumps(result))
    return 0


def _adaptation(algorithm: str, steps: int) -> str:
    """The " after N steps" of a result line; nothing for learners without an inner loop (RL^2's is its memory)."""
    return "" if algorithm in METRIC_BASED or algorithm == "rl2" else f" after {steps} steps"


def _results(prefix: str, summaries: dict, adaptation: str) -> str:
    """``held-out mse after 10 steps: 0.1234 +- 0.0100``; with several metrics
    ``held-out after 10 steps: mse 0.1234 +- 0.0100, nll ...``."""
    values = [(s["metric"], f"{s['mean']:.4f} +- {s['ci95']:.4f}") for s in summaries.values()]
    if len(values) == 1:
        return f"{prefix}{values[0][0]}{adaptation}: {values[0][1]}"
    return f"{prefix.rstrip()}{adaptation}: " + ", ".join(f"{name} {value}" for name, value in values)


def _json(result: dict) -> str:
    """Strict JSON: a diverged (non-finite) metric becomes null, not NaN."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return json.dumps(clean(result), allow_nan=False)


def _ray_token_auth(joining) -> None:
    """Joining a `ray start` cluster, or its Jobs API (Ray >= 2.5x), needs token auth, read when ray is imported."""
    token = os.environ.get("RAY_AUTH_TOKEN") or Path.home().joinpath(".ray", "auth_token").exists()
    if joining and token and "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = "token"


def _within(args, **bounds) -> None:
    """A one-line error for the first numeric flag given outside its (lowest, highest) bounds."""
    for flag, (low, high) in bounds.items():
        value = getattr(args, flag)
        name = "inner-steps" if flag == "steps" else flag.replace("_", "-")
        if value is not None and value < low:
            raise ConfigError(f"--{name} must be >= {low}, got {value}")
        if value is not None and high is not None and value > high:
            raise ConfigError(f"--{name} must be <= {high}, got {value}")


def _evaluate(args) -> int:
    _within(args, episodes=(1, MAX_TASKS), steps=(0, MAX_STEPS), ways=(2, None), shots=(1, None),
            queries=(1, None))
    flags = {"episodes": "eval_episodes", "steps": "test_inner_steps", "ways": "test_ways", "shots": "test_shots",
             "queries": "queries", "dataset": "test_dataset", "rotations": "rotations"}
    overrides = {key: getattr(args, flag) for flag, key in flags.items() if getattr(args, flag) is not None}
    from distmeta.training.run import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, overrides, args.tracking_uri, args.batch_norm)
    episode = f"{result['ways']}-way {result['shots']}-shot " if "ways" in result else ""
    adaptation = _adaptation(result["algorithm"], result.get("inner_steps", 0))
    print(f"{_results('held-out ' + episode, result.get('all', {'': result}), adaptation)} "
          f"(95% CI, {result['episodes']} tasks{_protocol(result)})")
    if args.dataset and args.rotations is None and result.get("rotations"):
        print(f"note: as in training, {args.dataset}'s classes were each also rotated by 90, 180 and 270 degrees "
              "as new classes; --no-rotations tests without", file=sys.stderr)
    if args.json:
        print(_json(result))
    return 0


def _protocol(result: dict) -> str:
    """``, batch norm: ...`` of an image evaluation: which statistics normalised the queries."""
    meaning = {"transductive": "each query batch's own statistics, the papers' protocol",
               "frozen": "the support set's statistics, each query on its own"}
    return f"; batch norm: {meaning[result['batch_norm']]}" if "batch_norm" in result else ""


def _generate(args) -> int:
    _within(args, steps=(0, MAX_STEPS), parallel=(0, None))
    _ray_token_auth(args.address or os.environ.get("RAY_ADDRESS"))
    from distmeta.training.generate import generate

    result = generate(args.meta_model, args.support, steps=args.steps, name=args.name, name_per_task=args.name_per_task,
                      parallel=args.parallel, address=args.address, tracking_uri=args.tracking_uri,
                      batch_norm=args.batch_norm)
    _disconnect(args)
    for model in result["models"]:
        fit = ", ".join(f"{k} {v:.4g}" for k, v in model["support_fit"].items())
        print(f"registered {model['model_uri']}: task {model['task']}, {model['support_size']} examples, support {fit}")
    if args.json:
        print(_json(result))
    return 0


def _data(args) -> int:
    """``data import``: decode into Parquet, one summary line; ``data info``: describe a file."""
    from distmeta.data import dataset_info, format_info, import_folder, import_miniimagenet, import_omniglot

    if args.data_command == "info":
        info = dataset_info(args.file)
        print(json.dumps(info) if args.json else format_info(info))
        return 0
    options = {"size": args.size, "force": args.force, "progress": sys.stderr.isatty()}
    if args.source == "omniglot":
        result = import_omniglot(args.paths, args.output, **options)
    elif args.source == "folder":
        result = import_folder(args.paths[0], args.output, channels=args.channels, **options)
    else:
        result = import_miniimagenet(args.paths[0], args.output, **options)
    print(f"wrote {result['output']}: {result['images']} images, {result['classes']} classes, {result['groups']} groups, "
          f"{'x'.join(map(str, result['image_shape']))}, {result['bytes'] / 1e6:.1f} MB in {result['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
