"""MLflow runs end with the right status whatever happens inside them."""

import mlflow
import pytest

from distmeta.tracking import tracked_run


def _status(tracking_uri, run_id):
    return mlflow.MlflowClient(tracking_uri).get_run(run_id).info.status


def test_run_statuses(tracking_uri):
    with tracked_run("statuses", "ok", tracking_uri) as tracker:
        tracker.log_metrics({"loss": 1.0}, step=1)
        tracker.log_metrics({"loss": 0.5}, step=2)
    assert _status(tracking_uri, tracker.run_id) == "FINISHED"
    assert tracker.history("loss") == ([1, 2], [1.0, 0.5])

    with pytest.raises(RuntimeError):
        with tracked_run("statuses", "crash", tracking_uri) as crashed:
            raise RuntimeError("boom")
    assert _status(tracking_uri, crashed.run_id) == "FAILED"

    with pytest.raises(KeyboardInterrupt):
        with tracked_run("statuses", "interrupt", tracking_uri) as interrupted:
            raise KeyboardInterrupt
    assert _status(tracking_uri, interrupted.run_id) == "KILLED"

    # Reopening a run (as --resume does) continues the same run id.
    with tracked_run("statuses", "again", tracking_uri, resume_run_id=interrupted.run_id) as resumed:
        pass
    assert resumed.run_id == interrupted.run_id
    assert _status(tracking_uri, resumed.run_id) == "FINISHED"


def test_metrics_reach_the_store_by_count_or_by_time(tracking_uri):
    """A live run shows in MLflow's UI: points are written every ``flush_every`` points or ``flush_seconds``."""
    with tracked_run("statuses", "live", tracking_uri) as tracker:
        stored = lambda: len(mlflow.MlflowClient(tracking_uri).get_metric_history(tracker.run_id, "loss"))
        tracker.flush_seconds = 3600.0
        tracker.log_metrics({"loss": 1.0}, step=1)
        assert stored() == 0  # buffered: one point is far from flush_every (500) and the clock has not run out
        tracker.flush_seconds = 0.0
        tracker.log_metrics({"loss": 0.5}, step=2)
        assert stored() == 2  # the clock ran out: both points are in the store while the run is RUNNING


def test_a_resumed_run_logs_each_step_once(tracking_uri):
    """Steps redone after a checkpoint were logged before the interruption: the resumed run skips those points."""
    with tracked_run("statuses", "cut", tracking_uri) as tracker:
        tracker.log_metrics({"loss": 1.0, "val": 3.0}, step=10)
        tracker.log_metrics({"loss": 0.9}, step=20)  # logged, then killed; the checkpoint was at step 15
    with tracked_run("statuses", "again", tracking_uri, resume_run_id=tracker.run_id) as resumed:
        resumed.log_metrics({"loss": 0.9, "val": 2.0}, step=20)  # step 20 redone: val is new there, loss is not
        resumed.log_metrics({"loss": 0.8}, step=30)
    history = lambda key: [(m.step, m.value) for m in sorted(mlflow.MlflowClient(tracking_uri).get_metric_history(
        tracker.run_id, key), key=lambda m: m.step)]
    assert history("loss") == [(10, 1.0), (20, 0.9), (30, 0.8)]
    assert history("val") == [(10, 3.0), (20, 2.0)]
