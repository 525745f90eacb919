"""One Tune trial: the real trainer (one process, or its own ParameterServer and MetaWorkers inside the
trial's placement group), reporting to Tune at every validation, into its own nested MLflow run.

Runs in a Tune trial actor: everything it needs arrives as absolute paths and
ids (Tune changes the working directory), and it never installs signal
handlers (it is not on the main thread).
"""

from __future__ import annotations

import os
import shutil
from typing import NamedTuple

import ray
from ray import tune

from distmeta.checkpoint import load_checkpoint
from distmeta.config import from_dict
from distmeta.training.run import fit
from distmeta.training.trainer import MetaTrainer


class TrialContext(NamedTuple):
    base: dict  # the training config every trial starts from
    parent_run_id: str  # the tuning job's MLflow run
    tracking_uri: str  # absolute
    trials_root: str  # absolute: each trial writes its checkpoints under trials_root/TRIAL_ID


def run_trial(values: dict, context: TrialContext, dataset=None) -> None:
    """Train with the base config plus ``values``; ``dataset`` is ``(reference,)`` to the shared few-shot images."""
    from distmeta.tracking import trial_run

    config = from_dict({**context.base, **values})
    trial_id = tune.get_context().get_trial_id()
    reference = dataset[0] if dataset else None
    checkpoint = _tune_checkpoint()  # set when Tune resumes this trial, or PBT restarts it from another's
    output = os.path.join(context.trials_root, trial_id)
    shutil.rmtree(output, ignore_errors=True)  # a restarted trial's old steps are not its state now: Tune keeps that
    trainer = _trainer(config, checkpoint, reference)
    try:
        with trial_run(config, context.parent_run_id, trial_id, context.tracking_uri, values, checkpoint) as tracker:

            def report(step, validation, saved):
                tracker.flush()  # the MLflow UI shows the trial as far as Tune has it
                metrics = {f"val_{name}": s.mean for name, s in validation.items()}
                tune.report({"step": step, **metrics, "mlflow_run_id": tracker.run_id},
                            checkpoint=tune.Checkpoint.from_directory(saved))

            fit(trainer, output, tracker, progress=False, report=report)
    finally:
        trainer.close()


def _tune_checkpoint():
    found = tune.get_checkpoint()
    if found is None:
        return None
    with found.as_directory() as folder:
        return load_checkpoint(folder)


def _trainer(config, checkpoint, dataset):
    if config.workers == 0:
        return MetaTrainer(config, checkpoint, dataset=None if dataset is None else ray.get(dataset))
    from distmeta.training.distributed import DistributedTrainer

    return DistributedTrainer(config, checkpoint, dataset=dataset)
