"""Meta-learning algorithms as pure torch.func functions (no Ray, no MLflow)."""

from distmeta.algorithms.base import Algorithm, grad, meta_gradients, plain_autograd, sgd_steps
from distmeta.algorithms.fomaml import fomaml
from distmeta.algorithms.maml import maml
from distmeta.algorithms.matchingnet import matchingnet
from distmeta.algorithms.metasgd import metasgd
from distmeta.algorithms.pretrain import pretrain
from distmeta.algorithms.protonet import protonet
from distmeta.algorithms.reptile import reptile

REGISTRY = {"maml": maml, "fomaml": fomaml, "metasgd": metasgd, "reptile": reptile, "pretrain": pretrain,
            "protonet": protonet, "matchingnet": matchingnet}

__all__ = ["Algorithm", "grad", "meta_gradients", "plain_autograd", "sgd_steps", "make_algorithm", *REGISTRY]


def make_algorithm(config, apply, tasks_spec) -> Algorithm:
    """The algorithm a config names, over a model's ``apply`` and a task distribution."""
    return REGISTRY[config.algorithm](apply, tasks_spec, config.inner_lr, config.inner_steps)
