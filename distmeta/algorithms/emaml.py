"""Ensemble MAML: Bayesian MAML's ablation (Yoon et al., 2018, section 5).

M particles, as in bmaml.py, but each adapts by itself: a plain gradient
step on the same log-posterior, without the kernel (no sharing of
gradients, no repulsion, no average over particles), and the
meta-objective is MAML's: the query negative log-likelihood after adapting,
averaged over particles, differentiated through the inner steps. With one
particle it is MAML with a learned Gaussian noise, whose predictions have an
NLL to compare.
"""

from __future__ import annotations

import torch

from distmeta.algorithms.base import Algorithm, grad, scored
from distmeta.algorithms.bmaml import particles_init, particles_predict, stein_adapt
from distmeta.tasks.predictive import gaussian_nll


def emaml(apply, tasks_spec, inner_lr: float, inner_steps: int, particles: int, fresh) -> Algorithm:
    predict = particles_predict(apply)
    adapt = stein_adapt(predict, inner_lr, inner_steps, kernel=False)

    def query_loss(meta_params, task):
        prediction = predict(adapt(meta_params, task.support_x, task.support_y), task.query_x)
        loss = gaussian_nll(prediction[..., 0], prediction[..., 1], task.query_y).mean()  # each particle a MAML
        _, metrics = scored(tasks_spec, prediction, task.query_y)
        return loss, {**metrics, "loss": loss.detach()}

    def task_grad(meta_params, task):
        return grad(query_loss, has_aux=True)(meta_params, task)

    return Algorithm("emaml", init=particles_init(particles, fresh), task_grad=task_grad, adapt=adapt, predict=predict)
