"""One MLflow run per train or evaluate command, never left RUNNING."""

from __future__ import annotations

import contextlib
import os
import time

import mlflow
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from distmeta.config import ConfigError
from distmeta.resources import unreachable
from distmeta.storage import absolute


class Tracker:
    """Buffered metric logging into one MLflow run: one batch per ``flush_every`` points, and at least
    every ``flush_seconds``, so the MLflow UI follows a slow run live."""

    def __init__(self, run_id: str, resumed: bool = False, flush_every: int = 500, flush_seconds: float = 10.0):
        self.run_id = run_id
        self.resumed = resumed
        self.client = MlflowClient()
        self.flush_every, self.flush_seconds = flush_every, flush_seconds
        self._buffer: list[Metric] = []
        self._flushed = time.monotonic()
        # A resumed run redoes the steps after its checkpoint, which the interrupted one may have logged:
        # the same values (tasks are pure functions of their seeds), logged once.
        self._logged_through = self._last_steps() if resumed else {}

    def _last_steps(self) -> dict[str, int]:
        """Each metric's last logged step."""
        keys = self.client.get_run(self.run_id).data.metrics
        return {key: max(m.step for m in self.client.get_metric_history(self.run_id, key)) for key in keys}

    def log_params(self, params: dict) -> None:
        items = [Param(k, str(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: dict, step: int) -> None:
        now = int(time.time() * 1000)
        self._buffer += [Metric(k, float(v), now, step) for k, v in metrics.items()
                         if step > self._logged_through.get(k, -1)]
        if len(self._buffer) >= self.flush_every or time.monotonic() - self._flushed >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        self._flushed = time.monotonic()
        while self._buffer:
            batch, self._buffer = self._buffer[:1000], self._buffer[1000:]
            self.client.log_batch(self.run_id, metrics=batch)

    def history(self, key: str) -> tuple[list[int], list[float]]:
        self.flush()
        points = sorted(self.client.get_metric_history(self.run_id, key), key=lambda m: m.step)
        return [m.step for m in points], [m.value for m in points]

    def log_figure(self, figure, name: str) -> None:
        import matplotlib.pyplot as plt

        self.client.log_figure(self.run_id, figure, name)
        plt.close(figure)  # pyplot keeps every figure until closed

    def log_artifact(self, local_path: str) -> None:
        self.client.log_artifact(self.run_id, local_path)

    def log_artifacts(self, local_dir: str, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, local_dir, artifact_path)

    def set_tags(self, tags: dict) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))


def check_store(tracking_uri: str | None = None) -> None:
    """Point MLflow at the store and fail fast, writing nothing, where it cannot be used: a server that does
    not accept a connection (MLflow itself retries for minutes), or a SQLite file in a missing folder."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    uri = mlflow.get_tracking_uri()
    try:  # a scheme no store (or plugin) serves; MLflow's registry of them, read without building a store
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        _tracking_store_registry.get_store_builder(uri)
    except ImportError:
        pass  # another MLflow version: use_store reports it
    except Exception as err:
        raise ConfigError(f"MLflow tracking store {uri}: {str(err).strip().splitlines()[0]}") from None
    if uri.startswith(("http://", "https://")):
        why = unreachable(uri)
        if why:
            raise ConfigError(f"MLflow tracking store {uri}: {why}")
    elif uri.startswith("sqlite:///"):
        folder = os.path.dirname(os.path.abspath(uri.removeprefix("sqlite:///")))
        if not os.path.isdir(folder):
            raise ConfigError(f"MLflow tracking store {uri}: no folder {folder}")


def use_store(experiment: str, tracking_uri: str | None = None) -> None:
    """Point MLflow at the store and experiment, or raise ConfigError in one line."""
    try:
        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment(experiment)
    except Exception as err:  # MlflowException, connection and filesystem errors alike
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"MLflow tracking store {mlflow.get_tracking_uri()}: {detail}") from None


def current_store() -> str:
    """The tracking URI in force, a relative sqlite or file path made absolute (Tune trials run in other folders)."""
    uri = mlflow.get_tracking_uri()
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + os.path.abspath(uri[len(prefix):])
    return absolute(uri)  # a plain path is a local store too


@contextlib.contextmanager
def tracked_run(experiment: str, run_name: str, tracking_uri: str | None = None, resume_run_id: str | None = None, tags=None):
    """Start (or reopen) a run; end it FINISHED (also on a clean exit), KILLED on interrupt, FAILED on error."""
    use_store(experiment, tracking_uri)
    run_id = resume_run_id if resume_run_id and _exists(resume_run_id) else None
    run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, tags=tags, log_system_metrics=False)
    tracker = Tracker(run.info.run_id, resumed=run_id is not None)
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except SystemExit as exit:  # a clean exit, e.g. Tune ending a trial from inside tune.report
        status = "FINISHED" if exit.code in (0, None) else "FAILED"
        raise
    finally:
        with contextlib.suppress(Exception):
            tracker.flush()
        mlflow.end_run(status)


def _exists(run_id: str) -> bool:
    try:
        MlflowClient().get_run(run_id)
        return True
    except Exception:
        return False


TRIAL_TAG = "distmeta.tune_trial"


@contextlib.contextmanager
def trial_run(config, parent_run_id: str, trial_id: str, tracking_uri: str, values: dict, checkpoint=None):
    """A tuning trial's run, nested under the tuning job's; reopened when Tune restarts the trial.

    A trial that PBT restarts from another trial's checkpoint keeps logging
    into its own run, tagged with where it continued from; the searched
    values are logged as ``hp_<key>`` metrics at the step they took effect.
    """
    use_store(config.experiment, tracking_uri)
    existing = [r.info.run_id for r in child_runs(parent_run_id) if r.data.tags.get(TRIAL_TAG) == trial_id]
    tags = {MLFLOW_PARENT_RUN_ID: parent_run_id, TRIAL_TAG: trial_id,
            "distmeta.algorithm": config.algorithm, "distmeta.task": config.task}
    with tracked_run(config.experiment, trial_id, tracking_uri, existing[0] if existing else None, tags) as tracker:
        if not tracker.resumed:
            tracker.log_params(config.to_dict())
        if checkpoint is not None and checkpoint.run_id != tracker.run_id:
            tracker.set_tags({"distmeta.continued_from_run": checkpoint.run_id, "distmeta.continued_at_step": checkpoint.step})
        numbers = {f"hp_{k}": v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        tracker.log_metrics(numbers, checkpoint.step if checkpoint else 0)
        yield tracker


def child_runs(parent_run_id: str) -> list:
    """The runs nested under ``parent_run_id``."""
    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    return client.search_runs([parent.info.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'",
                              max_results=50000)


def end_run(run_id: str, status: str, tags: dict | None = None) -> None:
    """Tag how a run ended and, if another process left it open (a trial Tune stopped or lost), close it."""
    client = MlflowClient()
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, str(value))
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, status)
