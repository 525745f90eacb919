"""The meta-model as an MLflow pyfunc model.

It predicts with the meta-parameters as they are (no adaptation); what it
stores (architecture config and params as safetensors) is what adapting it
to a new task needs.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.fs as pafs

PIP_REQUIREMENTS = ["torch", "safetensors", "pyyaml", "numpy", "pandas"]
PACKAGE = Path(__file__).resolve().parents[1]


class MetaModel(mlflow.pyfunc.PythonModel):
    """Regression meta-model: a DataFrame with a column ``x`` in, ``y`` out."""

    def load_context(self, context):
        from safetensors.torch import load_file

        from distmeta.config import from_dict
        from distmeta.models import apply_fn, make_model, model_params
        from distmeta.tasks import make_tasks

        state = json.loads(Path(context.artifacts["state"]).read_text())
        config = from_dict(state["config"])
        model = make_model(config, make_tasks(config))
        self.params = model_params(model, load_file(context.artifacts["params"]))
        self.apply = apply_fn(model)

    def predict(self, context, model_input: pd.DataFrame, params=None):
        import torch

        x = torch.tensor(np.asarray(model_input["x"], dtype=np.float32)).unsqueeze(1)
        with torch.no_grad():
            y = self.apply(self.params, x).squeeze(1).numpy()
        return pd.DataFrame({"y": y})


def log_meta_model(checkpoint: str, name: str = "meta_model"):
    """Log a checkpoint (local or URI) as a pyfunc model in the active run; returns its model info."""
    from distmeta.checkpoint import resolve_location

    example = pd.DataFrame({"x": np.linspace(-5.0, 5.0, 5)})
    signature = mlflow.models.infer_signature(example, pd.DataFrame({"y": np.zeros(5)}))
    fs, path = resolve_location(checkpoint)
    with tempfile.TemporaryDirectory() as local:
        pafs.copy_files(path, local, source_filesystem=fs)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=MetaModel(),
            artifacts={"params": f"{local}/params.safetensors", "state": f"{local}/state.json"},
            code_paths=[str(PACKAGE)],
            pip_requirements=PIP_REQUIREMENTS,
            signature=signature,
            input_example=example,
        )
