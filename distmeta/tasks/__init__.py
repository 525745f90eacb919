"""Task distributions. A task is a pure function of its seed."""

import functools
import os

import numpy as np

from distmeta.data.dataset import DataError
from distmeta.tasks.base import TRAIN, VALIDATION, TEST, Task, task_seed, task_seeds
from distmeta.tasks.classification import ClassificationLoss, RandomEpisodes
from distmeta.tasks.fewshot import Episodes, split_classes, with_rotations
from distmeta.tasks.bandits import Bandits
from distmeta.tasks.sinusoid import NOISY, Sinusoid
from distmeta.tasks.tabular_mdp import TabularMDPs

__all__ = ["TRAIN", "VALIDATION", "TEST", "Task", "task_seed", "task_seeds", "Sinusoid", "ClassificationLoss",
           "RandomEpisodes", "Episodes", "Bandits", "TabularMDPs", "split_classes", "make_tasks", "load_training_data"]


SPLIT_NAMES = {TRAIN: "training", VALIDATION: "validation", TEST: "test"}


def make_tasks(config, split: int = TRAIN, dataset=None):
    """The task distribution a config names for ``split``.

    Validation and test episodes use ``test_ways``/``test_shots`` (0: as in
    training). Few-shot episodes come from ``dataset`` when given (already in
    memory, e.g. from Ray's object store), else from the config's file; test
    episodes come from every class of ``test_dataset`` when one is set. An
    empty validation split (``split_sizes=[n, 0, m]``) gives None.
    """
    held_out = split != TRAIN
    ways = (config.test_ways or config.ways) if held_out else config.ways
    shots = (config.test_shots or config.shots) if held_out else config.shots
    if config.task == "sinusoid":
        return Sinusoid(shots=shots, queries=config.queries)
    if config.task == "noisy_sinusoid":
        return Sinusoid(shots=shots, queries=config.queries, **NOISY)
    if config.task == "bandit":
        return Bandits(config.arms, config.pulls)
    if config.task == "tabular_mdp":
        return TabularMDPs(config.states, config.actions, config.horizon, config.episodes)
    if config.task == "random_episodes":
        return RandomEpisodes(ways=ways, shots=shots, queries=config.queries)
    training = dataset if dataset is not None else load_training_data(config)
    if split == TEST and config.test_dataset:
        dataset = _load_test_data(config.test_dataset)
        if dataset.image_shape != training.image_shape:
            raise DataError(f"test_dataset {dataset.path} holds {_shape(dataset)} images; the model takes "
                            f"{_shape(training)} ({training.path})")
        classes = np.arange(dataset.num_classes)
        classes = with_rotations(classes) if config.rotations else classes
    else:
        dataset = training
        classes = split_classes(dataset, config.split_by, config.split_sizes, config.rotations)[split]
        if split == VALIDATION and len(classes) == 0:
            return None  # split_sizes gave validation no classes: runs skip validation
    return Episodes(dataset, classes, ways, shots, config.queries, config.rotations, f"the {SPLIT_NAMES[split]} split")


def _shape(dataset) -> str:
    return "x".join(map(str, dataset.image_shape))


def load_training_data(config):
    """The few-shot dataset a config trains on, read from its file; None for other tasks."""
    if config.task != "fewshot":
        return None
    from distmeta.data.parquet import load_dataset  # pyarrow only for few-shot runs

    return load_dataset(config.dataset)


def _load_test_data(path: str):
    """A ``test_dataset`` file, read once per process however often its episodes are drawn (checks, test, plot).

    Keyed by modification time and size too, so a rewritten file is read again.
    """
    stat = os.stat(path) if os.path.exists(path) else None  # a missing file: load_dataset says so
    return _load_once(path, stat and (stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=2)
def _load_once(path: str, version):
    from distmeta.data.parquet import load_dataset

    return load_dataset(path)
