"""One Tune trial: the real trainer (one process, or its own ParameterServer and MetaWorkers inside the
trial's placement group), reporting to Tune at every validation, into its own nested MLflow run.

Runs in a Tune trial actor: everything it needs arrives as absolute paths and
ids (Tune changes the working directory), and it never installs signal
handlers (it is not on the main thread).
"""

from __future__ import annotations

import math
import os
import shutil
from typing import NamedTuple

import ray
from ray import tune

from distmeta.checkpoint import latest_checkpoint, load_checkpoint
from distmeta.config import from_dict
from distmeta.tasks import VALIDATION
from distmeta.training.run import fit
from distmeta.training.trainer import MetaTrainer


class TrialContext(NamedTuple):
    base: dict  # the training config every trial starts from
    metric: str  # what the search optimises, and whether to "min" or "max" it
    mode: str
    parent_run_id: str  # the tuning job's MLflow run
    tracking_uri: str  # absolute
    trials_root: str  # absolute: each trial writes its checkpoints under trials_root/TRIAL_ID


def run_trial(values: dict, context: TrialContext, dataset=None) -> None:
    """Train with the base config plus ``values``; ``dataset`` is ``(reference,)`` to the shared few-shot images."""
    from distmeta.tracking import trial_run

    config = from_dict({**context.base, **values})
    trial_id = tune.get_context().get_trial_id()
    reference = dataset[0] if dataset else None
    output = os.path.join(context.trials_root, trial_id)
    checkpoint = _starting_point(output)
    if checkpoint is not None and checkpoint.step >= config.steps:
        # finished before a killed tuning driver recorded it: report the same validation again, train nothing
        trainer = MetaTrainer(config, checkpoint, dataset=None if reference is None else ray.get(reference))
        _report(context, trainer.step, trainer.evaluate_all(VALIDATION, config.val_tasks), checkpoint.path,
                checkpoint.run_id)
        return
    trainer = _trainer(config, checkpoint, reference)
    try:
        with trial_run(config, context.parent_run_id, trial_id, context.tracking_uri, values, checkpoint) as tracker:

            def report(step, validation, saved):
                tracker.flush()  # the MLflow UI shows the trial as far as Tune has it
                _report(context, step, validation, saved, tracker.run_id)

            fit(trainer, output, tracker, progress=False, report=report)
    finally:
        trainer.close()


def _report(context: TrialContext, step: int, validation: dict, checkpoint, run_id: str) -> None:
    metrics = {f"val_{name}": s.mean for name, s in validation.items()}
    if not math.isfinite(metrics.get(context.metric, 0.0)):  # diverged: the worst value, so schedulers stop it
        metrics[context.metric] = math.inf if context.mode == "min" else -math.inf
    tune.report({"step": step, **metrics, "mlflow_run_id": run_id}, checkpoint=tune.Checkpoint.from_directory(checkpoint))


def _starting_point(output: str):
    """The checkpoint a (re)started trial continues from, or None for a new one.

    Tune's (when it resumes the trial, or PBT restarts it from another
    trial's), unless the trial's own folder holds a newer one of its own run:
    Tune records its state every few seconds, so a tuning driver killed just
    after a validation restores the one before, and the trial would repeat
    steps. A trial that continues from another's state drops its own steps.
    """
    found = tune.get_checkpoint()
    if found is not None:
        with found.as_directory() as folder:
            found = load_checkpoint(folder)
    newest = latest_checkpoint(output)
    own = newest and load_checkpoint(newest)
    if own is not None and (found is None or (own.run_id == found.run_id and own.step > found.step)):
        return own
    shutil.rmtree(output, ignore_errors=True)
    return found


def _trainer(config, checkpoint, dataset):
    if config.workers == 0:
        return MetaTrainer(config, checkpoint, dataset=None if dataset is None else ray.get(dataset))
    from distmeta.training.distributed import DistributedTrainer

    return DistributedTrainer(config, checkpoint, dataset=dataset)
