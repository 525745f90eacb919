"""The tuning driver: ``distmeta tune``.

Checks the whole search before any trial starts, then runs one Tune
experiment whose trials are real meta-training runs (``trial.run_trial``),
each in a placement group of one bundle for its driver and one per worker.
Records the job as an MLflow run with one nested run per trial, and at the
end writes the best config, the trial table and a plot, and registers the
best trial's meta-model.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import ray
import yaml
from ray import tune

from distmeta.config import ConfigError, from_dict
from distmeta.distributed import connect
from distmeta.setup import build
from distmeta.tasks import VALIDATION, load_training_data
from distmeta.training.evaluation import evaluate_all
from distmeta.tuning.spec import TuneSpec, corners, load_spec
from distmeta.tuning.trial import TrialContext, run_trial

STATE = "tuning.json"  # the job's name and MLflow run, beside the experiment
SPEC = "tuning.yaml"  # the resolved spec, a valid tuning config: what --resume runs again
EXPERIMENT = "tune"  # Tune's experiment folder under --output


def tune_run(spec: TuneSpec | None, output: str, resume: bool = False, address: str | None = None,
             tracking_uri: str | None = None, name: str | None = None, progress: bool = True) -> dict:
    """Run (or with ``resume``, continue) a tuning job in ``output``; returns the best trial and MLflow ids."""
    from distmeta.tracking import check_store, current_store, tracked_run, use_store

    output = os.path.abspath(output)
    spec, state = _prepare_output(spec, output, resume)
    base = from_dict(spec.base)
    searcher = _searcher(spec)  # a missing optional extra fails here
    data = load_training_data(base)
    _check_metric(spec, base, data)
    check_store(tracking_uri)  # a store that does not answer fails here, before Ray starts
    store = current_store()
    connect(address)
    _check_resources(spec)
    use_store(base.experiment, tracking_uri)  # the first write to the store
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # JSON and CSV results, no TensorBoard files (_run_config)
    started = time.perf_counter()
    tags = {"distmeta.tuning": spec.name, "distmeta.output": output, "distmeta.algorithm": base.algorithm,
            "distmeta.task": base.task}
    with tracked_run(base.experiment, f"tune-{spec.name}", store, state.get("parent_run_id"), tags) as tracker:
        if not tracker.resumed:
            tracker.log_params(_spec_params(spec))
        _save_state(output, spec, tracker.run_id)
        dataset = (ray.put(data),) if data is not None else None  # one copy in the object store for every trial
        context = TrialContext(spec.base, spec.metric, spec.mode, tracker.run_id, store, os.path.join(output, "trials"))
        trainable = tune.with_resources(tune.with_parameters(run_trial, context=context, dataset=dataset),
                                        lambda values: trial_resources(spec.trial_config(values)))
        if resume:
            tuner = tune.Tuner.restore(os.path.join(output, EXPERIMENT), trainable, resume_errored=True)
        else:
            tuner = tune.Tuner(trainable, param_space=search_space(spec), tune_config=_tune_config(spec, searcher),
                               run_config=_run_config(spec, output, progress))
        results = tuner.fit()
        interrupted = results.num_terminated + results.num_errors < len(results)
        rows = _close_trials(spec, tracker.run_id, results, interrupted)
        if interrupted:
            raise KeyboardInterrupt
        return _finish(spec, output, tracker, rows, name, time.perf_counter() - started)


def search_space(spec: TuneSpec) -> dict:
    return {key: _sampler(dimension) for key, dimension in spec.space.items()}


def _sampler(dimension):
    kind, values = dimension.kind, dimension.values
    if kind == "grid":
        return tune.grid_search(values)
    if kind == "choice":
        return tune.choice(values)
    low, high = values[:2]
    if dimension.integer:  # Tune's integer ranges exclude their upper end; ours include it
        low, high = int(low), int(high)
        return {"loguniform": lambda: tune.lograndint(low, high + 1), "uniform": lambda: tune.randint(low, high + 1),
                "randint": lambda: tune.randint(low, high + 1),
                "quniform": lambda: tune.qrandint(low, high, int(values[2]))}[kind]()
    return {"loguniform": lambda: tune.loguniform(low, high), "uniform": lambda: tune.uniform(low, high),
            "randint": lambda: tune.randint(int(low), int(high) + 1),
            "quniform": lambda: tune.quniform(low, high, values[2])}[kind]()


def trial_resources(config) -> tune.PlacementGroupFactory:
    """Bundle 0 for the trial's driver (and the parameter server, which takes no CPU), one per worker."""
    driver = {"CPU": max(1, config.threads) if config.workers == 0 else 1}
    worker = {"CPU": config.worker_cpus, **({"GPU": config.worker_gpus} if config.worker_gpus else {})}
    return tune.PlacementGroupFactory([driver] + [worker] * config.workers)


def _prepare_output(spec, output: str, resume: bool) -> tuple[TuneSpec, dict]:
    """The spec to run and the saved state: a new job needs a fresh folder, a resumed one its own spec."""
    state_file = Path(output, STATE)
    if not resume:
        if state_file.exists():
            raise ConfigError(f"{output} already holds a tuning run; pass --resume or choose another --output")
        return spec, {}
    if not state_file.exists() or not tune.Tuner.can_restore(os.path.join(output, EXPERIMENT)):
        raise ConfigError(f"--resume: no tuning run in {output}")
    state = json.loads(state_file.read_text())
    return load_spec(Path(output, SPEC))._replace(name=state["name"]), state


def _save_state(output: str, spec: TuneSpec, parent_run_id: str) -> None:
    os.makedirs(output, exist_ok=True)
    saved = {"config": spec.base, **{k: v for k, v in spec.to_dict().items() if k not in ("name", "base")}}
    saved["scheduler"] = {"name": saved["scheduler"], **saved.pop("scheduler_options")}
    Path(output, SPEC).write_text(yaml.safe_dump(saved, sort_keys=False))
    Path(output, STATE).write_text(json.dumps({"name": spec.name, "parent_run_id": parent_run_id}))


def _searcher(spec: TuneSpec):
    if spec.searcher != "optuna":  # random and grid
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(random_state=spec.seed)
    try:
        import optuna  # noqa: F401
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise ConfigError("searcher optuna needs the optuna extra: pip install -e '.[optuna]'") from None
    return OptunaSearch(seed=spec.seed)


def _check_metric(spec: TuneSpec, base, data) -> None:
    """The metric must be one a trial reports (val_<name> for each of the task's metrics), on a validation split."""
    setup = build(base, dataset=data)
    if setup.tasks_for(VALIDATION) is None:
        raise ConfigError("tuning selects on validation tasks, and this config has no validation split "
                          "(set split_sizes with a non-zero middle count); never on test")
    reported = {f"val_{name}" for name in evaluate_all(setup, setup.initial_meta_params(), VALIDATION, 1)}
    if spec.metric not in reported:
        raise ConfigError(f"metric {spec.metric!r} is never reported; trials report {', '.join(sorted(reported))}")


def _check_resources(spec: TuneSpec) -> None:
    """Refuse a trial the cluster could never place, instead of leaving it pending forever."""
    total = ray.cluster_resources()
    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    for values in corners(spec):
        bundles = trial_resources(spec.trial_config(values)).bundles
        for kind in ("CPU", "GPU"):
            need = sum(b.get(kind, 0) for b in bundles)
            largest = max(b.get(kind, 0) for b in bundles)
            if need > total.get(kind, 0) or not any(n.get(kind, 0) >= largest for n in nodes):
                shown = ", ".join(f"{k}={v}" for k, v in values.items())
                raise ConfigError(f"a trial ({shown}) needs {need:g} {kind}s (1 bundle per worker of {largest:g} at most, "
                                  f"plus its driver); the Ray cluster has {total.get(kind, 0):g}")


def _tune_config(spec: TuneSpec, searcher) -> tune.TuneConfig:
    return tune.TuneConfig(metric=spec.metric, mode=spec.mode, num_samples=spec.samples, scheduler=_scheduler(spec),
                           search_alg=searcher, max_concurrent_trials=spec.max_concurrent or None,
                           time_budget_s=60 * spec.time_budget_minutes or None)


def _scheduler(spec: TuneSpec):
    """Trials are measured in meta-steps, so ASHA's rungs and the cosine schedule's horizon agree (max_t = steps)."""
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

    options = dict(spec.scheduler_options)
    if spec.scheduler == "asha":
        return ASHAScheduler(time_attr="step", max_t=spec.base["steps"], **options)
    if spec.scheduler == "pbt":
        # a list mutates to a neighbouring value, a distribution is resampled or scaled by 0.8 or 1.2
        mutations = {key: spec.space[key].values if spec.space[key].kind in ("grid", "choice") else _sampler(spec.space[key])
                     for key in options.pop("mutations")}
        return PopulationBasedTraining(time_attr="step", hyperparam_mutations=mutations, **options)
    return None  # fifo


def _run_config(spec: TuneSpec, output: str, progress: bool) -> tune.RunConfig:
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return tune.RunConfig(name=EXPERIMENT, storage_path=output, verbose=1 if progress else 0,
                          callbacks=[CloseTrialRuns(spec.base["steps"]), JsonLoggerCallback(), CSVLoggerCallback()],
                          # PBT clones other trials' recent checkpoints: it keeps them all (they are small)
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=None if spec.scheduler == "pbt" else 2))


class CloseTrialRuns(tune.Callback):
    """Ends a trial's MLflow run as soon as Tune is done with it (a trial Tune stops cannot end its own run)."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_trial_complete(self, iteration, trials, trial, **info):
        _end(trial.last_result, _ending(trial.last_result, None, self.steps))

    def on_trial_error(self, iteration, trials, trial, **info):
        _end(trial.last_result, _ending(trial.last_result, "error", self.steps))


def _ending(result: dict, error, steps: int) -> dict:
    """How a trial ended: FAILED, or FINISHED and whether before ``steps`` (stopped early by the scheduler or budget)."""
    return {"status": "FAILED" if error else "FINISHED", "stopped_early": error is None and result.get("step", 0) < steps}


def _end(result: dict, ending: dict) -> None:
    from distmeta.tracking import end_run

    if result.get("mlflow_run_id"):
        end_run(result["mlflow_run_id"], ending["status"], {"distmeta.stopped_early": ending["stopped_early"]})


def _close_trials(spec: TuneSpec, parent_run_id: str, results, interrupted: bool) -> list[dict]:
    """One row per trial; no trial's run is left RUNNING (KILLED when the job was interrupted, FAILED when its
    trial died before reporting)."""
    from distmeta.tracking import child_runs, end_run

    rows = []
    for result in results:
        metrics = result.metrics or {}
        rows.append({"trial": metrics.get("trial_id") or Path(result.path).name, "config": result.config or {},
                     "step": metrics.get("step", 0), "value": metrics.get(spec.metric),
                     "run_id": metrics.get("mlflow_run_id"), "checkpoint": result.checkpoint and result.checkpoint.path,
                     **_ending(metrics, result.error, spec.base["steps"])})
    endings = {row["run_id"]: row for row in rows}
    for run in child_runs(parent_run_id):
        if run.info.status == "RUNNING":
            row = endings.get(run.info.run_id)
            if interrupted or row is None:  # not done, or died before it reported
                end_run(run.info.run_id, "KILLED" if interrupted else "FAILED")
            else:
                end_run(run.info.run_id, row["status"], {"distmeta.stopped_early": row["stopped_early"]})
    return rows


def _finish(spec: TuneSpec, output: str, tracker, rows: list[dict], name: str | None, seconds: float) -> dict:
    from distmeta.tracking import plots
    from distmeta.tracking.models import register_meta_model

    ranked = sorted((r for r in rows if r["status"] == "FINISHED" and _finite(r["value"])),
                    key=lambda r: r["value"], reverse=spec.mode == "max")  # a diverged trial (nan) ranks last
    if not ranked:
        raise ConfigError(f"no trial reported a finite {spec.metric}: see the trials' errors above")
    best = ranked[0]
    best_config = spec.trial_config(best["config"])
    best_file = Path(output, "best.yaml")
    best_file.write_text(yaml.safe_dump(best_config.to_dict(), sort_keys=False))
    ordered = ranked + [r for r in rows if r not in ranked]
    Path(output, "trials.md").write_text(trial_table(spec, ordered) + "\n")
    tracker.log_metrics({f"best_{spec.metric}": best["value"], "trials": len(rows),
                         "stopped_early": sum(r["stopped_early"] for r in rows)}, best["step"])
    tracker.set_tags({"distmeta.best_trial": best["trial"], "distmeta.best_run_id": best["run_id"]})
    tracker.log_artifact(str(best_file))
    tracker.log_artifact(str(Path(output, "trials.md")))
    tracker.log_figure(plots.tuning(rows, list(spec.space), spec.metric,
                                    [k for k, d in spec.space.items() if d.kind == "loguniform"]), "tuning.png")
    model = register_meta_model(best["checkpoint"], name or f"tune-{spec.name}",
                                {"distmeta.tune_trial": best["trial"], "distmeta.trial_run_id": best["run_id"]})
    return {"best_config": {k: best_config.to_dict()[k] for k in spec.space}, "metric": spec.metric,
            "value": best["value"], "best_trial": best["trial"], "best_run_id": best["run_id"],
            "parent_run_id": tracker.run_id, "best_config_file": str(best_file), "trials": len(rows),
            "stopped_early": sum(r["stopped_early"] for r in rows), "seconds": round(seconds, 1),
            "rows": table_rows(spec, ordered), "table": trial_table(spec, ordered[: spec.top]), **model}


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def table_rows(spec: TuneSpec, rows: list[dict]) -> list[dict]:
    return [{"trial": r["trial"], **{k: r["config"].get(k) for k in spec.space}, "steps": r["step"],
             spec.metric: r["value"], "status": "stopped early" if r["stopped_early"] else r["status"].lower()}
            for r in rows]


def trial_table(spec: TuneSpec, rows: list[dict]) -> str:
    """The trials as a markdown table, best first."""
    rows = table_rows(spec, rows)
    header = list(rows[0]) if rows else ["trial"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(r[k]) for k in header) + " |" for r in rows]
    return "\n".join(lines)


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _spec_params(spec: TuneSpec) -> dict:
    """The spec as MLflow params: structured values as JSON."""
    return {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in spec.to_dict().items()}
