"""``distmeta generate``: a meta-model and a new task's examples in, a registered MLflow model out.

The meta-model (an MLflow model URI or a checkpoint folder) is adapted to
each support set with its algorithm's own adaptation: MAML-family inner SGD
steps, ProtoNets' prototypes, Matching Networks' support memory. Many tasks
are adapted in parallel as Ray tasks. Each result is logged as a
self-contained pyfunc model and registered as a new version under a name,
tagged with its lineage (the meta-model and its training run) and its fit on
the support set. Everything is checked before the first registration, so bad
input registers nothing.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from distmeta.checkpoint import CheckpointError, load_checkpoint
from distmeta.config import METRIC_BASED, ConfigError
from distmeta.data.support import read_support
from distmeta.setup import adapt_support, learner, without_data


def generate(meta_model: str, support: str, steps: int | None = None, name: str | None = None,
             name_per_task: bool = False, tracking_uri: str | None = None, address: str | None = None,
             workers: int | None = None) -> dict:
    """Adapt ``meta_model`` to every task in ``support``, register each result; a summary of the new versions.

    Several tasks are adapted as Ray tasks when ``workers`` (default: the meta-model's) is above 0.
    """
    from distmeta.tracking import tracked_run, use_store

    use_store("distmeta", tracking_uri)  # the store must answer before a models:/ URI can be read
    with tempfile.TemporaryDirectory() as scratch:
        from distmeta.tracking.models import fetch_meta_model

        checkpoint = load_checkpoint(fetch_meta_model(meta_model, scratch))
        config, shape = checkpoint.config, _input_shape(checkpoint, meta_model)
        steps = config.test_inner_steps if steps is None else steps
        supports = read_support(support, shape, classification=config.task != "sinusoid")
        _check_classes(config, supports, support)
        parallel = len(supports) > 1 and (config.workers if workers is None else workers) > 0
        adapted = _adapt(config, shape, checkpoint.params, supports, steps, parallel, address)
        name = name or f"{config.algorithm}-{config.task}"
        source = meta_model if ":/" in meta_model else os.path.abspath(meta_model)
        tags = {"distmeta.meta_model": source, "distmeta.source_run_id": checkpoint.run_id or "",
                "distmeta.algorithm": config.algorithm, "distmeta.adaptation_steps": steps}
        use_store(config.experiment, tracking_uri)
        with tracked_run(config.experiment, f"generate-{name}", tracking_uri, tags=tags) as tracker:
            models = [_register(config, shape, task, result, steps, registered, tags, Path(scratch) / f"model-{i}")
                      for i, (task, result, registered) in enumerate(zip(supports, adapted, _names(name, supports, name_per_task)))]
            tracker.log_params({"meta_model": meta_model, "support": str(support), "steps": steps, "tasks": len(models)})
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
        if config.task != "sinusoid" and config.algorithm not in METRIC_BASED and len(task.classes) > config.ways:
            raise ConfigError(f"{path} (task {task.name}) has {len(task.classes)} classes; the {config.algorithm} "
                              f"meta-model has a {config.ways}-way output layer")


def _adapt(config, shape, meta_params, supports, steps, parallel: bool, address) -> list:
    """Adapt every support set: in this process, or in parallel as Ray tasks on the cluster at ``address``."""
    if parallel:
        from distmeta.distributed import adapt_in_parallel, connect

        connect(address)
        results = adapt_in_parallel(config, shape, meta_params, supports, steps)
    else:
        results = [adapt_support(config, shape, meta_params, s.x, s.y, steps) for s in supports]
    for task, (params, _) in zip(supports, results):
        if not all(v.isfinite().all() for v in params.values()):
            raise ConfigError(f"adapting to task {task.name} diverged (non-finite parameters); try fewer --steps")
    return results


def _names(name: str, supports, per_task: bool) -> list[str]:
    return [f"{name}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', s.name)}" if per_task else name for s in supports]


def _register(config, shape, task, result, steps, registered_name, lineage, folder) -> dict:
    from distmeta.tracking.models import head_of, input_example, register, served_tensors, write_model

    task_params, fit = result
    model, _, _ = learner(config, without_data(config, shape))
    classes = task.classes or ()
    write_model(folder, model, served_tensors(config.algorithm, model, task_params, len(classes)),
                head_of(config.algorithm, config.task, adapted=True), shape, classes)
    tags = {**lineage, "distmeta.task": task.name, "distmeta.support_size": len(task.x),
            "distmeta.support_sha256": task.sha256, **{f"distmeta.support_{k}": f"{v:.6g}" for k, v in fit.items()}}
    info, version = register(folder, re.sub(r"[^A-Za-z0-9_-]+", "_", task.name)[:60] or "model", registered_name,
                             input_example(task.x[:5]), tags)
    return {"task": task.name, "name": registered_name, "version": version, "model_uri": f"models:/{registered_name}/{version}",
            "logged_model_uri": info.model_uri, "support_size": len(task.x), "support_fit": fit}
