"""Bayesian MAML (Yoon, Kim, Dia, Kim, Bengio & Ahn, 2018).

The meta-parameters are M particles of the model, stacked: every tensor has a
leading particle dimension, and each particle also carries the log standard
deviation of its Gaussian likelihood (``NOISE``). Adapting to a task moves
the particles by Stein variational gradient descent (SVGD; Liu & Wang, 2016)
towards the task posterior:

    phi(theta_i) = 1/M sum_j [ k(theta_j, theta_i) grad log p(theta_j | D) + grad_{theta_j} k(theta_j, theta_i) ]

with an RBF kernel k(a, b) = exp(-|a - b|^2 / h) whose bandwidth is the
median heuristic, h = median pairwise |a - b|^2 / log M. The second term
pushes particles apart; without it (``kernel=False``) the particles descend
independently: ensemble MAML, the paper's ablation (see emaml.py). The
meta-initialisation is the weights' prior: as in MAML, no explicit prior term.

The meta-objective is the chaser loss: the chaser is the particles after n
SVGD steps on the support set, the leader continues s more steps on support
plus query, and the loss is the squared distance of their weights,
differentiated through the chaser's steps only (the leader is a target,
with no gradient). The noise has a Gamma prior on its precision, as in the
authors' code.
"""

from __future__ import annotations

import math

import torch
from torch.func import vmap

from distmeta.algorithms.base import Algorithm, grad, scored
from distmeta.tasks.predictive import gaussian_nll

NOISE = "likelihood:log_std"  # a particle's Gaussian noise (log sd), learned and adapted with its weights
PRECISION_PRIOR = (2.0, 0.2)  # Gamma(a, b) prior on the noise precision 1/sd^2, as in the authors' code: mode sd ~0.3


def log_noise_prior(log_std: torch.Tensor) -> torch.Tensor:
    """log p(log sd) of the Gamma(a, b) precision prior, in log-sd coordinates (Jacobian included).

    It keeps the noise from growing until the likelihood is flat: a flat
    likelihood would make every particle stand still and the chaser loss 0.
    """
    a, b = PRECISION_PRIOR
    precision = torch.exp(-2 * log_std)
    return (a * torch.log(precision) - b * precision).sum()


def particles_init(count: int, fresh):
    """``init``: particle 0 is the given params, particle m the model freshly initialised by ``fresh(m)``."""

    def init(params):
        draws = [params] + [fresh(m) for m in range(1, count)]
        stacked = {k: torch.stack([d[k] for d in draws]) for k in params}
        return {**stacked, NOISE: torch.zeros(count)}

    return init


def particles_predict(apply):
    """``predict``: every particle's (mean, log std) at ``x``, shaped ``(N, M, 2)``."""

    def predict(particles, x):
        weights = {k: v for k, v in particles.items() if k != NOISE}
        means = vmap(apply, in_dims=(0, None))(weights, x)[..., 0]  # (M, N)
        log_std = particles[NOISE].unsqueeze(1).expand_as(means)
        return torch.stack([means, log_std], -1).transpose(0, 1)

    return predict


def stein_step(predict, particles, x, y, lr: float, kernel: bool = True):
    """One SVGD step of the particles on data (x, y); ``kernel=False`` is independent gradient ascent,
    each particle a plain MAML step (SVGD's 1/M average over particles applies to the kernel step only).

    The log-likelihood is summed over the data (a posterior, not a mean); its
    gradient for every particle comes from one backward pass, as the
    particles' likelihoods are independent.
    """

    def negative_log_posterior(p):
        prediction = predict(p, x)
        return gaussian_nll(prediction[..., 0], prediction[..., 1], y).sum() - log_noise_prior(p[NOISE])

    score = {k: -g for k, g in grad(negative_log_posterior)(particles).items()}  # grad log p(theta_m | D)
    count = particles[NOISE].shape[0]
    if not kernel:
        return {k: v + lr * score[k] for k, v in particles.items()}
    k_matrix, bandwidth = rbf_kernel(particles)
    total = k_matrix.sum(1)
    stepped = {}
    for name, theta in particles.items():
        flat, drive = theta.reshape(count, -1), score[name].reshape(count, -1)
        repulsion = (2 / bandwidth) * (total.unsqueeze(1) * flat - k_matrix @ flat)  # sum_j grad_{theta_j} k
        stepped[name] = theta + lr * ((k_matrix @ drive + repulsion) / count).reshape(theta.shape)
    return stepped


def stein_adapt(predict, lr: float, default_steps: int, kernel: bool = True):
    """``adapt``: ``steps`` SVGD steps of the particles on the support set (independent steps without the kernel)."""

    def adapt(meta_params, support_x, support_y, steps=default_steps):
        for _ in range(steps):
            meta_params = stein_step(predict, meta_params, support_x, support_y, lr, kernel)
        return meta_params

    return adapt


def rbf_kernel(particles) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, h): the RBF kernel matrix over all parameters of the particles, and its median-heuristic bandwidth
    (torch's median: the lower of the two middle values for an even number of pairs)."""
    count = particles[NOISE].shape[0]
    flat = torch.cat([v.reshape(count, -1) for v in particles.values()], 1)
    squared = ((flat.unsqueeze(0) - flat.unsqueeze(1)) ** 2).sum(-1)
    upper = torch.triu_indices(count, count, 1)
    pairs = squared[upper[0], upper[1]]
    bandwidth = (pairs.median() / math.log(count)).clamp(min=1e-8) if count > 1 else torch.ones(())
    return torch.exp(-squared / bandwidth), bandwidth


def bmaml(apply, tasks_spec, inner_lr: float, inner_steps: int, particles: int, fresh, leader_steps: int = 1) -> Algorithm:
    """Bayesian MAML with ``particles`` particles; ``fresh(m)`` gives particle m's initial params."""
    predict = particles_predict(apply)
    adapt = stein_adapt(predict, inner_lr, inner_steps)

    def chaser_loss(meta_params, task):
        chaser = adapt(meta_params, task.support_x, task.support_y)
        everything = torch.cat([task.support_x, task.query_x]), torch.cat([task.support_y, task.query_y])
        leader = adapt({k: v.detach() for k, v in chaser.items()}, *everything, leader_steps)
        distance = sum(((chaser[k] - leader[k].detach()) ** 2).sum() for k in chaser if k != NOISE)  # weights only
        _, metrics = scored(tasks_spec, predict(chaser, task.query_x), task.query_y)
        return distance, {**metrics, "loss": distance.detach()}

    def task_grad(meta_params, task):
        return grad(chaser_loss, has_aux=True)(meta_params, task)

    return Algorithm("bmaml", init=particles_init(particles, fresh), task_grad=task_grad, adapt=adapt, predict=predict)
