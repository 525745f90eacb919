"""Meta-learning algorithms as pure torch.func functions (no Ray, no MLflow)."""

from distmeta.algorithms.base import Algorithm, grad, meta_gradients, plain_autograd, sgd_steps
from distmeta.algorithms.bmaml import bmaml
from distmeta.algorithms.emaml import emaml
from distmeta.algorithms.fomaml import fomaml
from distmeta.algorithms.maml import maml
from distmeta.algorithms.matchingnet import matchingnet
from distmeta.algorithms.metasgd import metasgd
from distmeta.algorithms.pretrain import pretrain
from distmeta.algorithms.protonet import protonet
from distmeta.algorithms.reptile import reptile
from distmeta.algorithms.rl2 import ppo_task, rl2

REGISTRY = {"maml": maml, "fomaml": fomaml, "metasgd": metasgd, "reptile": reptile, "pretrain": pretrain,
            "protonet": protonet, "matchingnet": matchingnet, "bmaml": bmaml, "emaml": emaml, "rl2": rl2}

__all__ = ["Algorithm", "grad", "meta_gradients", "plain_autograd", "sgd_steps", "make_algorithm", *REGISTRY]


def make_algorithm(config, apply, tasks_spec, fresh=None) -> Algorithm:
    """The algorithm a config names, over a model's ``apply`` and a task distribution.

    ``fresh(m)``: the model's params from the m-th independent initialisation
    (Bayesian and ensemble MAML start each particle from its own).
    """
    if config.algorithm == "rl2":
        task_of = (ppo_task(config.seed, config.meta_batch_size, config.ppo_epochs, config.ppo_minibatches)
                   if config.policy_loss == "ppo" else None)
        return rl2(apply, tasks_spec, config.discount, config.gae_lambda, config.entropy_coef, config.value_coef,
                   config.policy_loss, config.ppo_clip, task_of)
    extra = {}
    if config.algorithm in ("bmaml", "emaml"):
        extra = {"particles": config.particles, "fresh": fresh}
    if config.algorithm == "bmaml":
        extra["leader_steps"] = config.leader_steps
    return REGISTRY[config.algorithm](apply, tasks_spec, config.inner_lr, config.inner_steps, **extra)
