"""MLflow integration: runs, metrics, plots and logged models.

``mlflow`` is imported here and nowhere below this layer.
"""

from distmeta.tracking.runs import Tracker, child_runs, current_store, end_run, tracked_run, trial_run, use_store

__all__ = ["Tracker", "child_runs", "current_store", "end_run", "tracked_run", "trial_run", "use_store"]
