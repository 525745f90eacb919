import os

import pytest
import torch

from distmeta.models import MLP, apply_fn, init_params
from distmeta.tasks import Sinusoid, task_seeds

os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


@pytest.fixture
def tiny():
    """A tiny float64 MLP, its params, and a batch of 3 sinusoid tasks (K=4, Q=5)."""
    tasks = Sinusoid(shots=4, queries=5)
    model = MLP(1, [6], 1).double()
    params = {k: v.double() for k, v in init_params(model, seed=1).items()}
    batch = tasks.sample_batch(task_seeds(0, 0, 0, 3))
    batch = type(batch)(*(t.double() for t in batch))
    return tasks, apply_fn(model), params, batch


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory):
    """One sqlite MLflow store for the whole session (creating one costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
