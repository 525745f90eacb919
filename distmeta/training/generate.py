"""``distmeta generate``: a meta-model and a new task's examples in, a registered MLflow model out.

The meta-model (an MLflow model URI or a checkpoint folder) is adapted to
each support set with its algorithm's own adaptation: MAML-family inner SGD
steps, ProtoNets' prototypes, Matching Networks' support memory. Many tasks
can be adapted in parallel as Ray tasks. Each result is logged as a
self-contained pyfunc model and registered as a new version under a name,
tagged with its lineage (the meta-model and its training run) and its fit on
the support set. Everything is checked before the first registration, so bad
input registers nothing.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from distmeta.checkpoint import CheckpointError, load_checkpoint
from distmeta.config import METRIC_BASED, REGRESSION, REINFORCEMENT, ConfigError
from distmeta.data.dataset import DataError
from distmeta.data.support import read_support
from distmeta.storage import local_copy
from distmeta.models import make_model
from distmeta.setup import adapt_support, without_data

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # safe as a registered model name and in a models:/ URI


def generate(meta_model: str, support: str, *, steps: int | None = None, name: str | None = None,
             name_per_task: bool = False, parallel: int = 0, address: str | None = None,
             tracking_uri: str | None = None, batch_norm: str = "frozen") -> dict:
    """Adapt ``meta_model`` to every task in ``support`` and register each result; a summary of the new versions.

    ``parallel`` > 0 adapts the tasks as Ray tasks, at most that many at once. ``batch_norm="frozen"``
    stores the support set's batch-norm statistics in an image model, so it answers each image on its
    own; ``"transductive"`` leaves it normalising each request with the request's own statistics.
    """
    from distmeta.tracking import check_store, tracked_run, use_store
    from distmeta.tracking.models import fetch_meta_model

    check_store(tracking_uri)  # the store must answer before a models:/ URI can be read
    with tempfile.TemporaryDirectory() as scratch:
        location, source = fetch_meta_model(meta_model, scratch)
        checkpoint = load_checkpoint(location)
        config = checkpoint.config
        if config.task in REINFORCEMENT:
            raise ConfigError(f"{meta_model} is an RL^2 policy: it adapts by playing a task (its memory), not to "
                              "examples; use `distmeta evaluate`")
        shape = _input_shape(checkpoint, meta_model)
        with local_copy(support) as local:  # a URI's files, fetched once
            supports = read_support(local, shape, classification=config.task not in REGRESSION)
        _check_classes(config, supports, support)
        names = _names(name or f"{config.algorithm}-{config.task}", supports, name_per_task)
        steps = 0 if config.algorithm in METRIC_BASED else config.test_inner_steps if steps is None else steps
        adapted = _adapt(config, shape, checkpoint.params, supports, steps, parallel, address, batch_norm)
        tags = {"distmeta.meta_model": source, "distmeta.source_run_id": checkpoint.run_id or "",
                "distmeta.algorithm": config.algorithm, "distmeta.adaptation_steps": steps}
        if len(shape) == 3:
            tags["distmeta.batch_norm"] = batch_norm
        use_store(config.experiment, tracking_uri)
        with tracked_run(config.experiment, f"generate-{names[0]}", tracking_uri, tags=tags) as tracker:
            tracker.log_params({"meta_model": meta_model, "support": str(support), "steps": steps, "tasks": len(supports)})
            models = [_register(config, shape, *item, tags, Path(scratch) / f"model-{i}")
                      for i, item in enumerate(zip(supports, adapted, names))]
    return {"run_id": tracker.run_id, "models": models, **(models[0] if len(models) == 1 else {})}


def _input_shape(checkpoint, meta_model: str) -> tuple:
    """The shape of one input: recorded in the checkpoint, or (older checkpoints) read from the training data."""
    if checkpoint.input_shape:
        return checkpoint.input_shape
    config = checkpoint.config
    if config.task != "fewshot":
        return without_data(config, (1, 28, 28)).input_shape  # sinusoid (1,); random episodes 1x28x28
    if not Path(config.dataset).exists():
        raise CheckpointError(f"{meta_model} does not record its input shape and its dataset {config.dataset} is gone")
    from distmeta.data.parquet import dataset_info

    return tuple(dataset_info(config.dataset)["image_shape"])


def _check_classes(config, supports, path) -> None:
    """A MAML-family model has an output per class: more classes than that is an error, not a crash."""
    for task in supports:
        if config.task not in REGRESSION and config.algorithm not in METRIC_BASED and len(task.classes) > config.ways:
            raise DataError(f"{path} (task {task.name}) has {len(task.classes)} classes; the {config.algorithm} "
                            f"meta-model has a {config.ways}-way output layer")


def _names(name: str, supports, per_task: bool) -> list[str]:
    """The registered model name of each task, checked before anything is registered."""
    names = [f"{name}-{s.name}" if per_task else name for s in supports]
    bad = next((n for n in names if not NAME.fullmatch(n)), None)
    if bad:
        raise ConfigError(f"registered model name {bad!r}: use letters, digits, '_', '-' and '.'")
    return names


def _adapt(config, shape, meta_params, supports, steps, parallel: int, address, batch_norm: str) -> list:
    """Adapt every support set: in this process, or as Ray tasks on the cluster at ``address``."""
    if parallel > 0 and len(supports) > 1:
        from distmeta.distributed import adapt_in_parallel, connect

        connect(address)
        results = adapt_in_parallel(config, shape, meta_params, supports, steps, parallel, batch_norm)
    else:
        results = [adapt_support(config, shape, meta_params, s.x, s.y, steps, batch_norm) for s in supports]
    for task, (params, _) in zip(supports, results):
        if not all(v.isfinite().all() for v in params.values()):
            raise ConfigError(f"adapting to task {task.name} diverged (non-finite parameters); try fewer --steps")
    return results


def _register(config, shape, task, result, registered_name, lineage, folder) -> dict:
    from distmeta.tracking.models import head_of, input_example, register, served_tensors, write_model

    task_params, fit = result
    model = make_model(config, without_data(config, shape))
    write_model(folder, model, served_tensors(config.algorithm, model, task_params, len(task.classes)),
                head_of(config.algorithm, config.task, adapted=True), shape, task.classes)
    tags = {**lineage, "distmeta.task": task.name, "distmeta.support_size": len(task.x),
            "distmeta.support_sha256": task.sha256, **{f"distmeta.support_{k}": f"{v:.6g}" for k, v in fit.items()}}
    info, version = register(folder, registered_name, input_example(task.x[:5]), tags)
    return {"task": task.name, "name": registered_name, "version": version, "model_uri": f"models:/{registered_name}/{version}",
            "logged_model_uri": info.model_uri, "support_size": len(task.x), "support_fit": fit}
