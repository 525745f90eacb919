import os

import numpy as np
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
    import mlflow

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    # the experiment's artifacts in the temporary folder too, not ./mlruns of wherever pytest runs
    mlflow.MlflowClient(uri).create_experiment("distmeta", artifact_location=str(folder / "artifacts"))
    return uri


def glyph_images(classes: int = 40, per_class: int = 12, size: int = 28, seed: int = 0):
    """Omniglot-like images: each class a random set of strokes, each image it shifted and speckled.

    Returns (images (N, 1, size, size) uint8, labels (N,)); a class is only
    recognisable from its strokes, so chance is 1/N and learning shows.
    """
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in range(classes):
        template = np.zeros((size + 8, size + 8), dtype=bool)
        for _ in range(4):  # four straight strokes between random points
            (r0, c0), (r1, c1) = rng.integers(6, size + 2, (2, 2))
            for t in np.linspace(0, 1, 40):
                template[round(r0 + t * (r1 - r0)), round(c0 + t * (c1 - c0))] = True
        for _ in range(per_class):
            dr, dc = rng.integers(-2, 3, 2)
            image = template[4 + dr : 4 + dr + size, 4 + dc : 4 + dc + size] ^ (rng.random((size, size)) < 0.05)
            images.append(np.where(image, 0, 255).astype(np.uint8)[None])  # dark strokes on white, as Omniglot
            labels.append(c)
    return np.stack(images), np.array(labels)


GLYPH_NAMES = [f"g{c // 10}/c{c:02d}" for c in range(40)]
GLYPH_GROUPS = [f"g{c // 10}" for c in range(40)]


@pytest.fixture(scope="session")
def glyph_file(tmp_path_factory):
    """A Parquet glyph dataset: 40 classes in 4 groups ("alphabets") of 10, 12 images each."""
    from distmeta.data import write_dataset

    images, labels = glyph_images()
    path = tmp_path_factory.mktemp("data") / "glyphs.parquet"
    write_dataset(path, images, labels, GLYPH_NAMES, GLYPH_GROUPS, metadata={"name": "glyphs"})
    return path


def start_local_ray(**options) -> None:
    """``ray.init`` of a local cluster, tried twice: Ray gives a node 30 s (fixed) to register, which a
    heavily loaded machine can miss ("The current node timed out during startup")."""
    import ray

    ray.shutdown()  # in case an earlier in-process test left one running
    for attempt in (1, 2):
        try:
            ray.init(address="local", log_to_driver=False, logging_level="ERROR", **options)
            return
        except Exception as err:
            ray.shutdown()
            if attempt == 2 or "timed out during startup" not in str(err):
                raise
