"""MLflow integration: runs, metrics, plots and logged models.

``mlflow`` is imported here and nowhere below this layer. Its INFO lines and
download bars stay off the user's terminal: they would bury the progress and
the result (warnings and errors still show).
"""

import logging
import os

from distmeta.tracking.runs import Tracker, check_store, child_runs, current_store, end_run, tracked_run, trial_run, use_store

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
for _name in ("mlflow", "alembic"):  # after mlflow's import, which sets its logger's level
    logging.getLogger(_name).setLevel(logging.WARNING)

__all__ = ["Tracker", "check_store", "child_runs", "current_store", "end_run", "tracked_run", "trial_run", "use_store"]
