"""Task distributions. A task is a pure function of its seed."""

from distmeta.tasks.base import TRAIN, VALIDATION, TEST, Task, task_seed, task_seeds
from distmeta.tasks.classification import ClassificationLoss, RandomEpisodes
from distmeta.tasks.sinusoid import Sinusoid

__all__ = ["TRAIN", "VALIDATION", "TEST", "Task", "task_seed", "task_seeds", "Sinusoid", "ClassificationLoss", "RandomEpisodes", "make_tasks"]


def make_tasks(config):
    """The task distribution a config names."""
    if config.task == "sinusoid":
        return Sinusoid(shots=config.shots, queries=config.queries)
    if config.task == "random_episodes":
        return RandomEpisodes(ways=config.ways, shots=config.shots, queries=config.queries)
    raise ValueError(f"unknown task {config.task!r}")
