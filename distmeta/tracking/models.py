"""Meta-models and generated models as self-contained MLflow pyfunc models.

Both are ``served.py`` (models from code: torch and that file, no distmeta)
plus a folder with ``model.json`` and ``params.safetensors``. The meta-model
predicts with the meta-parameters as they are and also carries its training
checkpoint (config and meta-parameters), which is what ``distmeta generate``
adapts; a generated model carries the adapted parameters, or for ProtoNets
and Matching Networks the support set's prototypes or memory.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow.fs as pafs
import torch
import safetensors
from safetensors.torch import save_file
from torch import nn

from distmeta.config import PARTICLE_BASED, REGRESSION
from distmeta.models.normalization import STATISTICS, batch_norm_layers

SERVED = Path(__file__).with_name("served.py")
PIP_REQUIREMENTS = [f"torch=={torch.__version__.split('+')[0]}", f"safetensors=={safetensors.__version__}", "numpy", "pandas"]
HEADS = {"protonet": "prototypes", "matchingnet": "memory"}  # else "logits", or "regression" for sinusoids


def network_spec(module: nn.Module) -> dict:
    """The JSON tree ``served.network`` rebuilds ``module`` from (same layers, same parameter names)."""
    kind = type(module).__name__
    if isinstance(module, nn.Sequential):
        return {"type": "Sequential", "children": [network_spec(child) for child in module]}
    fields = {
        nn.Linear: lambda m: {"in": m.in_features, "out": m.out_features},
        nn.Conv2d: lambda m: {"in": m.in_channels, "out": m.out_channels, "kernel": m.kernel_size[0], "padding": m.padding[0]},
        nn.BatchNorm2d: lambda m: {"channels": m.num_features},
        nn.MaxPool2d: lambda m: {"kernel": m.kernel_size},
        nn.ReLU: lambda m: {},
        nn.Flatten: lambda m: {},
    }
    for layer, describe in fields.items():
        if type(module) is layer or (layer is nn.BatchNorm2d and isinstance(module, layer)):
            return {"type": layer.__name__, **describe(module)}
    raise ValueError(f"cannot serve a {kind} layer")


def head_of(algorithm: str, task: str, adapted: bool) -> str:
    if algorithm in PARTICLE_BASED:
        return "particles"
    if task in REGRESSION:
        return "regression"
    if algorithm in HEADS:
        return HEADS[algorithm] if adapted else "embedding"
    return "logits"


def write_model(folder: Path, model: nn.Module, tensors: dict, head: str, input_shape, classes=()) -> None:
    """``model.json`` and ``params.safetensors`` of a servable model in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    frozen = any(k.endswith(STATISTICS) for k in tensors)
    spec = {"format": 1, "network": network_spec(model), "head": head, "input_shape": list(input_shape),
            "classes": [str(c) for c in classes],
            **({"batch_norm": "frozen" if frozen else "transductive"} if batch_norm_layers(model) else {})}
    (folder / "model.json").write_text(json.dumps(spec, indent=1))
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / "params.safetensors"))


def input_example(x: torch.Tensor) -> pd.DataFrame:
    """A pyfunc input frame for examples ``x``: column ``x``, or ``image`` rows of C*H*W pixels."""
    if x.dim() == 2:
        return pd.DataFrame({"x": x[:, 0].double().numpy()})
    return pd.DataFrame({"image": list(x.reshape(len(x), -1).double().numpy())})


def log_model(folder: Path, name: str, example: pd.DataFrame, checkpoint: str | None = None):
    """Log the model in ``folder`` to the active run; returns MLflow's ModelInfo.

    The signature is inferred by running the model on ``example``; an image
    model's input is either ``image`` (pixels) or ``image_bytes`` (image
    files, which MLflow's server base64-decodes because the column is binary).
    """
    artifacts = {"model": str(folder), **({"checkpoint": checkpoint} if checkpoint else {})}
    signature = None
    if "image" in example.columns:
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, DataType, Schema
        from mlflow.types.schema import Array

        signature = ModelSignature(Schema([ColSpec(Array(DataType.double), "image", required=False),
                                           ColSpec(DataType.binary, "image_bytes", required=False)]))
    return mlflow.pyfunc.log_model(name=name, python_model=str(SERVED), artifacts=artifacts, input_example=example,
                                   signature=signature, pip_requirements=PIP_REQUIREMENTS)


def served_tensors(algorithm: str, model: nn.Module, task_params: dict, classes: int) -> dict:
    """What a generated model stores: the adapted weights, any frozen batch-norm statistics, and the
    support summary cut to its ``classes``."""
    tensors = served_weights(algorithm, model, task_params)
    tensors.update({k: v for k, v in task_params.items() if k.endswith(STATISTICS)})
    if algorithm == "protonet":
        tensors["support:prototypes"] = task_params["support:prototypes"][:classes]
    if algorithm == "matchingnet":
        tensors["support:embeddings"] = task_params["support:embeddings"]
        tensors["support:labels"] = task_params["support:labels"][:, :classes]
    return tensors


def served_weights(algorithm: str, model: nn.Module, params: dict) -> dict:
    """The network's weights in ``params`` (meta or adapted), with each particle's noise for Bayesian MAML."""
    from distmeta.models import model_params

    weights = model_params(model, params)
    if algorithm in PARTICLE_BASED:
        from distmeta.algorithms.bmaml import NOISE

        weights[NOISE] = params[NOISE]
    return weights


def fetch_meta_model(uri: str, into: str) -> tuple[str, str]:
    """(the training checkpoint inside a meta-model, a lasting name for it).

    A local checkpoint folder is used as is and named by its absolute path; an
    MLflow model URI (runs:/, models:/NAME/VERSION, models:/NAME@ALIAS,
    models:/m-ID) is downloaded into ``into`` and named by its logged-model
    id, which, unlike an alias, never moves.
    """
    from distmeta.checkpoint import CheckpointError

    if ":/" not in uri:
        return uri, str(Path(uri).resolve())  # load_checkpoint says if it is not a checkpoint
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=into)
        model_id = mlflow.models.get_model_info(uri).model_id
    except Exception as err:  # MlflowException, OSError, ...: a URI that does not resolve
        raise CheckpointError(f"meta-model {uri} not found: {str(err).strip().splitlines()[0][:200]}") from None
    checkpoint = Path(local) / "artifacts" / "checkpoint"
    if not checkpoint.is_dir():
        raise CheckpointError(f"{uri} is not a distmeta meta-model (it has no checkpoint artifact)")
    return str(checkpoint), f"{uri} (models:/{model_id})" if model_id and model_id not in uri else uri


def register(folder: Path, registered_name: str, example: pd.DataFrame, tags: dict):
    """Log a generated model to the active run and register it as a new version of ``registered_name``,
    created with its tags in one call; (model info, version)."""
    info = log_model(folder, "model", example)
    return info, register_version(info.model_uri, registered_name, tags)


def register_version(model_uri: str, registered_name: str, tags: dict) -> str:
    """Register ``model_uri`` as a new version of ``registered_name`` with ``tags``; the version.

    MLflow prints "Successfully registered ..." on stderr; distmeta's own line says it.
    """
    with contextlib.redirect_stderr(io.StringIO()):
        version = mlflow.register_model(model_uri, registered_name, tags={k: str(v) for k, v in tags.items()})
    return str(version.version)


def log_meta_model(checkpoint_location: str, name: str = "meta_model"):
    """Log a training checkpoint (local or URI) as the run's meta-model; returns its ModelInfo."""
    from distmeta.checkpoint import load_checkpoint
    from distmeta.storage import resolve
    from distmeta.models import make_model
    from distmeta.setup import without_data

    checkpoint = load_checkpoint(checkpoint_location)
    config = checkpoint.config
    model = make_model(config, without_data(config, checkpoint.input_shape))
    head = head_of(config.algorithm, config.task, adapted=False)
    classes = range(config.ways) if head == "logits" else ()
    fs, path = resolve(checkpoint.path)
    with tempfile.TemporaryDirectory() as local:
        weights = served_weights(config.algorithm, model, checkpoint.params)
        write_model(Path(local) / "model", model, weights, head, checkpoint.input_shape, classes)
        (Path(local) / "checkpoint").mkdir()
        pafs.copy_files(path, f"{local}/checkpoint", source_filesystem=fs)  # a whole checkpoint: load_checkpoint reads it
        example = torch.linspace(-5, 5, 5).unsqueeze(1) if config.task in REGRESSION else torch.rand(2, *checkpoint.input_shape)
        return log_model(Path(local) / "model", name, input_example(example), checkpoint=f"{local}/checkpoint")


def register_meta_model(checkpoint_location: str, registered_name: str, tags: dict) -> dict:
    """Log a checkpoint as the active run's meta-model and register it as a new version of ``registered_name``.

    RL^2 policies have no servable model: their checkpoint is logged as files and nothing is registered.
    """
    from distmeta.checkpoint import load_checkpoint

    if load_checkpoint(checkpoint_location).config.algorithm == "rl2":
        from distmeta.storage import local_copy

        with local_copy(checkpoint_location) as local:
            mlflow.log_artifacts(local, "meta_model_checkpoint")
        return {"model_uri": None, "registered_model": None, "version": None}
    info = log_meta_model(checkpoint_location)
    return {"model_uri": info.model_uri, "registered_model": registered_name,
            "version": register_version(info.model_uri, registered_name, tags)}
