"""MLflow integration: runs, metrics, plots and logged models.

``mlflow`` is imported here and nowhere below this layer.
"""

from distmeta.tracking.runs import Tracker, tracked_run, use_store

__all__ = ["Tracker", "tracked_run", "use_store"]
