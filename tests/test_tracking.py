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
