"""MLflow integration: runs, metrics, plots and logged models.

``mlflow`` is imported here and nowhere below this layer.
"""

from distmeta.tracking.runs import Tracker, tracked_run

__all__ = ["Tracker", "tracked_run"]
