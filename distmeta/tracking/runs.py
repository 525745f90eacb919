"""One MLflow run per train or evaluate command, never left RUNNING."""

from __future__ import annotations

import contextlib
import time

import mlflow
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from distmeta.config import ConfigError


class Tracker:
    """Buffered metric logging into one MLflow run (one batch per flush)."""

    def __init__(self, run_id: str, resumed: bool = False, flush_every: int = 500):
        self.run_id = run_id
        self.resumed = resumed
        self.client = MlflowClient()
        self.flush_every = flush_every
        self._buffer: list[Metric] = []

    def log_params(self, params: dict) -> None:
        items = [Param(k, str(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: dict, step: int) -> None:
        now = int(time.time() * 1000)
        self._buffer += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer[:1000], self._buffer[1000:]
            self.client.log_batch(self.run_id, metrics=batch)

    def history(self, key: str) -> tuple[list[int], list[float]]:
        self.flush()
        points = sorted(self.client.get_metric_history(self.run_id, key), key=lambda m: m.step)
        return [m.step for m in points], [m.value for m in points]

    def log_figure(self, figure, name: str) -> None:
        self.client.log_figure(self.run_id, figure, name)

    def log_artifacts(self, local_dir: str, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, local_dir, artifact_path)

    def set_tags(self, tags: dict) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))


def use_store(experiment: str, tracking_uri: str | None = None) -> None:
    """Point MLflow at the store and experiment, or raise ConfigError in one line."""
    try:
        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment(experiment)
    except Exception as err:  # MlflowException, connection and filesystem errors alike
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"MLflow tracking store {mlflow.get_tracking_uri()}: {detail}") from None


@contextlib.contextmanager
def tracked_run(experiment: str, run_name: str, tracking_uri: str | None = None, resume_run_id: str | None = None, tags=None):
    """Start (or reopen) a run; end it FINISHED, KILLED on interrupt, FAILED on error."""
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

