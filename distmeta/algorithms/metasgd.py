"""Meta-SGD (Li, Zhou, Chen & Li, 2017).

MAML whose inner learning rate is a learned tensor per parameter, shaped like
that parameter: theta' = theta - alpha * grad L_support(theta), with both
theta and alpha meta-learned by the outer loop. The rates start at
``inner_lr``, so before any outer step Meta-SGD computes exactly MAML.
"""

from __future__ import annotations

import torch

from distmeta.algorithms.base import Algorithm, query_loss_grad, sgd_steps

PREFIX = "inner_lr:"


def split(meta_params):
    """(model params, per-parameter inner learning rates keyed like the params)."""
    params = {k: v for k, v in meta_params.items() if not k.startswith(PREFIX)}
    rates = {k[len(PREFIX) :]: v for k, v in meta_params.items() if k.startswith(PREFIX)}
    return params, rates


def metasgd(apply, tasks_spec, inner_lr: float, inner_steps: int) -> Algorithm:
    loss = tasks_spec.loss

    def init(params):
        return {**params, **{PREFIX + k: torch.full_like(v, inner_lr) for k, v in params.items()}}

    def adapt(meta_params, support_x, support_y, steps=inner_steps):
        params, rates = split(meta_params)
        return sgd_steps(apply, loss, params, support_x, support_y, rates, steps)

    return Algorithm("metasgd", init=init, task_grad=query_loss_grad(adapt, apply, tasks_spec), adapt=adapt,
                     predict=apply)
