"""The train and evaluate drivers: a trainer (one process or Ray) inside an MLflow run.

Everything a command does to disk and to MLflow happens here, after the
config has been validated, so bad input never leaves a half-recorded run.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace

from distmeta.checkpoint import latest_checkpoint, load_checkpoint, write_config
from distmeta.config import CLASSIFICATION, METRIC_BASED, REGRESSION, REINFORCEMENT, Config, ConfigError, from_dict
from distmeta.setup import build
from distmeta.storage import absolute, is_uri, local_copy
from distmeta.tasks import TEST, VALIDATION, task_seeds
from distmeta.training.evaluation import evaluate_all, sinusoid_fits, test_episode, trial_curves
from distmeta.training.progress import Progress
from distmeta.optim import unflatten
from distmeta.training.trainer import MetaTrainer

# Keys that may change when resuming: they do not change the optimisation path.
RESUMABLE = {"steps", "minutes", "threads", "val_every", "val_tasks", "eval_episodes", "checkpoint_every", "keep_checkpoints", "log_every",
             "step_timeout", "placement_timeout", "compiled_graph"}


def default_output(config: Config) -> str:
    return os.path.join("runs", f"{config.algorithm}-{config.task}-{time.strftime('%Y%m%d-%H%M%S')}")


def prepare_output(config: Config, output: str, resume: bool):
    """The checkpoint to resume from (or None), after checking the folder is usable."""
    existing = latest_checkpoint(output)
    if not resume:
        if existing is not None:
            raise ConfigError(f"{output} already holds checkpoints; pass --resume or choose another --output")
        return None
    if existing is None:
        raise ConfigError(f"--resume: no checkpoint in {output}")
    checkpoint = load_checkpoint(existing)
    saved = checkpoint.config.to_dict()
    resumable = RESUMABLE - ({"steps"} if config.outer_lr_schedule != "constant" else set())
    for key, value in config.to_dict().items():
        if key not in resumable and saved[key] != value:
            raise ConfigError(f"--resume: {key} is {value!r} but the checkpoint was trained with {saved[key]!r}")
    if checkpoint.step > config.steps:
        raise ConfigError(f"--resume: checkpoint is at step {checkpoint.step}, beyond steps={config.steps}")
    return checkpoint


def make_trainer(config: Config, checkpoint=None, address: str | None = None):
    """The single-process trainer for ``workers=0``, else the Ray one."""
    if config.workers == 0:
        return MetaTrainer(config, checkpoint)
    from distmeta.training.distributed import DistributedTrainer

    trainer = DistributedTrainer(config, checkpoint, address)
    if trainer.dashboard:
        print(f"Ray dashboard: http://{trainer.dashboard}", file=sys.stderr)
    return trainer


def train(config: Config, output: str | None = None, resume: bool = False, tracking_uri=None, progress: bool = True,
          address: str | None = None) -> dict:
    """Meta-train, validate, checkpoint, meta-test and record it all in MLflow."""
    from distmeta.tracking import check_store, use_store

    output = absolute(output or default_output(config))
    # data paths as absolute ones, so the saved config works from any folder (evaluate, resume, generate)
    config = replace(config, **{k: absolute(getattr(config, k)) for k in ("dataset", "test_dataset") if getattr(config, k)})
    checkpoint = prepare_output(config, output, resume)
    check_store(tracking_uri)  # a store that does not answer fails here, before Ray starts
    if in_ray_job():
        _check_outputs_outlive_the_job(config, output)
    trainer = make_trainer(config, checkpoint, address)  # checks the data, the checkpoint and the cluster
    try:
        use_store(config.experiment, tracking_uri)  # the first write: everything above only reads
        try:
            write_config(output, config)
        except OSError as err:
            raise ConfigError(f"cannot write to --output {output}: {err.strerror or err}") from None
        return _train(trainer, config, output, checkpoint, tracking_uri, progress)
    finally:
        trainer.close()


def _train(trainer, config: Config, output: str, checkpoint, tracking_uri, progress: bool) -> dict:
    from distmeta.tracking import tracked_run

    run_name = output.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]  # a URI's last part, without its options
    tags = {"distmeta.algorithm": config.algorithm, "distmeta.task": config.task, "distmeta.output": output}
    with tracked_run(config.experiment, run_name, tracking_uri, checkpoint and checkpoint.run_id, tags) as tracker:
        if not tracker.resumed:
            tracker.log_params(config.to_dict())
        if config.workers:  # where the work ran
            tracker.set_tags({"distmeta.worker_nodes": len({w["node"] for w in trainer.worker_locations()})})
        started = time.perf_counter()
        try:
            stats = fit(trainer, output, tracker, progress)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (`ray job stop`): keep what was trained for --resume
            trainer.save(output, tracker.run_id)
            raise
        summaries = trainer.evaluate_all(TEST, config.eval_episodes)
        test = summaries[trainer.setup.tasks.metric]
        tracker.log_metrics(_test_metrics(summaries), trainer.step)
        final = trainer.save(output, tracker.run_id)
        _log_artifacts(trainer, tracker, final)
        validation = stats["validation"] and stats["validation"][trainer.setup.tasks.metric]
        return {
            "run_id": tracker.run_id,
            "output": output,
            "checkpoint": final,
            "steps": trainer.step,
            "tasks_per_second": stats["tasks"] / stats["seconds"] if stats["seconds"] else 0.0,
            "seconds": round(time.perf_counter() - started, 2),
            "validation": validation and {"metric": validation.metric, "value": validation.mean},
            "test": test._asdict(),
            **({"test_all": {k: v._asdict() for k, v in summaries.items()}} if len(summaries) > 1 else {}),
        }


def in_ray_job() -> bool:
    """Whether this process is a Ray job's driver, whose working directory Ray deletes with the job."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def _check_outputs_outlive_the_job(config: Config, output: str) -> None:
    """Refuse checkpoints, an MLflow store or datasets inside a Ray job's temporary working directory: outputs
    would be lost, and a dataset's path there would be another one when a resubmitted job resumes."""
    from distmeta.tracking import current_store

    here = os.getcwd()
    store = current_store()
    places = [("--output", output, "--output s3://BUCKET/PATH (or a folder every node shares)"),
              ("the MLflow store", store.removeprefix("sqlite:///"), "--tracking-uri http://MLFLOW_HOST:5000")]
    places += [(key, getattr(config, key), f"{key}=s3://BUCKET/FILE.parquet (or a shared absolute path)")
               for key in ("dataset", "test_dataset") if getattr(config, key)]
    for what, path, fix in places:
        if not is_uri(path) and (path == here or path.startswith(here + os.sep)):
            raise ConfigError(f"inside a Ray job {what} ({path}) would be deleted with the job's working directory; "
                              f"pass {fix}")


def _test_metrics(summaries: dict) -> dict:
    """``test_<metric>`` and ``test_<metric>_ci95`` of every metric."""
    return {f"test_{name}{suffix}": value for name, s in summaries.items()
            for suffix, value in (("", s.mean), ("_ci95", s.ci95))}


def fit(trainer, output: str, tracker, progress: bool = True, report=None) -> dict:
    """Meta-train to ``steps`` (or the time budget), validating every ``val_every`` steps and at the end.

    The loop both ``distmeta train`` and a Tune trial run. With ``report``,
    every validation also saves a checkpoint and calls
    ``report(step, validation, checkpoint)`` (``validation``: every metric's
    Summary). Returns the tasks and seconds trained and the last validation.
    """
    config = trainer.config
    stats = {"tasks": 0, "seconds": 0.0}
    window: dict[str, list] = {}
    bar = Progress(config.steps, trainer.step, f"{config.algorithm} {config.task}", enabled=progress)
    deadline = time.monotonic() + 60 * config.minutes if config.minutes else float("inf")
    with bar:
        while trainer.step < config.steps:
            # steps may run ahead of the driver up to the next validation, checkpoint or end, not past them
            past_deadline = time.monotonic() >= deadline
            metrics = trainer.meta_step(trainer.step + 1 if past_deadline else _next_stop(config, trainer.step))
            stats["tasks"] += round(metrics["tasks_per_second"] * metrics["step_time"])
            stats["seconds"] += metrics["step_time"]
            for key, value in metrics.items():
                window.setdefault(key, []).append(value)
            step = trainer.step
            last = step == config.steps or (time.monotonic() >= deadline and not trainer.running_ahead)
            if step % config.log_every == 0 or last:
                means = {k: sum(v) / len(v) for k, v in window.items()}
                means["dropped_tasks"] = sum(window["dropped_tasks"])
                tracker.log_metrics(means, step)
                bar.set_postfix(_postfix(means))
                window.clear()
            if config.val_every and step % config.val_every == 0 and not last:
                _validate(trainer, output, tracker, report, bar)
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                tracker.flush()  # a run resumed from this checkpoint has every point up to it
                trainer.save(output, tracker.run_id)
            bar.update(1)
            if last:  # the step budget or the time budget is spent
                break
    return {**stats, "validation": _validate(trainer, output, tracker, report, bar)}


def _next_stop(config: Config, step: int) -> int:
    """The first step after ``step`` where the driver needs the trainer to stop: validation, checkpoint, end."""
    stops = [config.steps] + [(step // every + 1) * every for every in (config.val_every, config.checkpoint_every) if every]
    return min(stops)


def _validate(trainer, output: str, tracker, report=None, bar=None) -> dict | None:
    """Validate on every metric, log them and show them; None when the run has no validation classes."""
    if trainer.setup.tasks_for(VALIDATION) is None:
        return None
    summaries = trainer.evaluate_all(VALIDATION, trainer.config.val_tasks)
    tracker.log_metrics({f"val_{name}": s.mean for name, s in summaries.items()}, trainer.step)
    if bar is not None:
        bar.write(f"validation at step {trainer.step}: " + ", ".join(map(str, summaries.values())))
    if report is not None:
        report(trainer.step, summaries, trainer.save(output, tracker.run_id))
    return summaries


def _postfix(means: dict) -> dict:
    postfix = {"loss": f"{means['train_loss']:.4f}", "tasks/s": f"{means['tasks_per_second']:.0f}"}
    if "compute_time" in means:  # distributed: where the step time goes
        for part in ("compute", "transfer", "aggregate"):
            postfix[part] = f"{1000 * means[part + '_time']:.1f}ms"
    return postfix


def _log_artifacts(trainer, tracker, checkpoint: str) -> None:
    from distmeta.tracking import plots
    from distmeta.tracking.models import log_meta_model

    metric = trainer.setup.tasks.metric
    figure = plots.learning_curve(tracker.history("train_loss"), tracker.history(f"val_{metric}"), metric)
    tracker.log_figure(figure, "learning_curve.png")
    if trainer.config.task in REGRESSION:
        seeds = task_seeds(trainer.config.seed, VALIDATION, 0, 4)
        fits = sinusoid_fits(trainer.setup, trainer.meta_params, seeds, trainer.config.test_inner_steps)
        tracker.log_figure(plots.sinusoid_fits(fits, trainer.config.test_inner_steps), "sinusoid_fits.png")
    elif trainer.setup.tasks.metric == "accuracy":
        tracker.log_figure(plots.episode(*test_episode(trainer.setup, trainer.meta_params)), "test_episode.png")
    if trainer.config.task in REINFORCEMENT:
        curves, quantity, unit = trial_curves(trainer.setup, trainer.meta_params, trainer.config.eval_episodes)
        tracker.log_figure(plots.trial_curves(curves, quantity, unit), "trial_curves.png")
        tracker.log_metrics({f"baseline_{name}_{quantity}": float(curve[-1])
                             for name, curve in curves.items() if name != "RL^2"}, trainer.step)
        with local_copy(checkpoint) as local:  # a policy plays tasks: no pyfunc to serve
            tracker.log_artifacts(local, "meta_model_checkpoint")
        return
    info = log_meta_model(checkpoint)
    tracker.set_tags({"distmeta.meta_model_uri": info.model_uri})


def evaluate_checkpoint(path, overrides: dict | None = None, tracking_uri=None, batch_norm: str | None = None) -> dict:
    """Meta-test a checkpoint on fresh test tasks, as its own MLflow run.

    ``overrides`` changes the protocol, never the model: ``eval_episodes``,
    ``test_inner_steps``, ``test_ways``, ``test_shots``, ``queries``,
    ``test_dataset``, ``rotations`` (validated as any config is). ``batch_norm``:
    ``transductive`` (the papers' protocol) or ``frozen`` (as generated models answer); default: as trained.
    """
    from distmeta.tracking import check_store, tracked_run

    check_store(tracking_uri)
    checkpoint = load_checkpoint(path)
    config = from_dict({**checkpoint.config.to_dict(), **(overrides or {})})
    setup = build(config)
    flat, _, _ = setup.initial_state(checkpoint)  # the checkpoint must fit the model, name by name
    setup.tasks_for(TEST)  # and the test episodes the data: both fail before anything is recorded
    meta_params = unflatten(flat, setup.spec)
    batch_norm = batch_norm or config.batch_norm
    tags = {"distmeta.checkpoint": absolute(checkpoint.path), "distmeta.train_run_id": checkpoint.run_id or ""}
    with tracked_run(config.experiment, f"evaluate-step-{checkpoint.step}", tracking_uri, tags=tags) as tracker:
        protocol = {"episodes": config.eval_episodes}
        if config.algorithm not in METRIC_BASED and config.algorithm != "rl2":
            protocol["inner_steps"] = config.test_inner_steps
        if config.task in CLASSIFICATION:
            protocol.update(ways=config.test_ways or config.ways, shots=config.test_shots or config.shots,
                            queries=config.queries, dataset=config.test_dataset or config.dataset)
        if config.task == "fewshot":
            protocol.update(rotations=config.rotations, batch_norm=batch_norm)
        tracker.log_params({"checkpoint": checkpoint.path, "algorithm": config.algorithm, **protocol})
        summaries = evaluate_all(setup, meta_params, TEST, config.eval_episodes, batch_norm=batch_norm)
        tracker.log_metrics(_test_metrics(summaries), checkpoint.step)
        summary = summaries[setup.tasks.metric]
        extra = {"all": {k: v._asdict() for k, v in summaries.items()}} if len(summaries) > 1 else {}
        return {**summary._asdict(), **protocol, "algorithm": config.algorithm, "run_id": tracker.run_id, **extra}
