"""distmeta: distributed meta-learning on Ray, as pure torch.func math.

The Python API (no Ray, no MLflow needed)::

    from distmeta import Sinusoid, MLP, init_params, apply_fn, maml, meta_gradients
"""

from distmeta.algorithms import Algorithm, fomaml, maml, matchingnet, meta_gradients, metasgd, pretrain, protonet, reptile
from distmeta.config import Config, ConfigError, resolve
from distmeta.models import MLP, Conv4, apply_fn, init_params
from distmeta.tasks import TEST, TRAIN, VALIDATION, Sinusoid, Task, task_seeds
from distmeta.checkpoint import CheckpointError, load_checkpoint
from distmeta.training.evaluation import evaluate
from distmeta.training.trainer import MetaTrainer

__version__ = "0.1.0"

__all__ = [
    "Algorithm", "fomaml", "maml", "matchingnet", "meta_gradients", "metasgd", "pretrain", "protonet", "reptile",
    "Config", "ConfigError", "resolve", "MLP", "Conv4", "apply_fn", "init_params",
    "TEST", "TRAIN", "VALIDATION", "Sinusoid", "Task", "task_seeds",
    "CheckpointError", "load_checkpoint", "evaluate", "MetaTrainer",
]
