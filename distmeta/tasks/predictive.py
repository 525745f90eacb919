"""Predictive distributions of particle ensembles (Bayesian MAML, ensemble MAML) for regression.

A predictive distribution for N inputs is a tensor ``(N, M, 2)``: each of M
particles' Gaussian mean and log standard deviation. The ensemble predicts
the equal-weight mixture of the M Gaussians.

>>> prediction = torch.zeros(3, 2, 2)            # 3 inputs, 2 particles, N(0, 1) each
>>> round(float(mixture_nll(prediction, torch.zeros(3, 1))), 4)
0.9189
"""

from __future__ import annotations

import math

import torch

LOG_STD_MIN = math.log(1e-3)  # keeps a particle's likelihood finite when its noise would collapse


def gaussian_nll(mean: torch.Tensor, log_std: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Elementwise -log N(y; mean, exp(log_std)^2)."""
    log_std = log_std.clamp(min=LOG_STD_MIN)
    return log_std + 0.5 * ((y - mean) * torch.exp(-log_std)) ** 2 + 0.5 * math.log(2 * math.pi)


def mixture_nll(prediction: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over inputs of -log (1/M) sum_m N(y; mean_m, std_m^2); ``y`` is ``(N, 1)``."""
    per_particle = -gaussian_nll(prediction[..., 0], prediction[..., 1], y)  # (N, M)
    return -(torch.logsumexp(per_particle, dim=-1) - math.log(prediction.shape[1])).mean()


def moments(prediction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the mixture, each ``(N, 1)``: std includes the particles' disagreement and their noise."""
    means, stds = prediction[..., 0], torch.exp(prediction[..., 1].clamp(min=LOG_STD_MIN))
    mean = means.mean(-1, keepdim=True)
    variance = (stds**2 + means**2).mean(-1, keepdim=True) - mean**2
    return mean, variance.clamp(min=0).sqrt()


def metrics(prediction: torch.Tensor, y: torch.Tensor) -> dict:
    """MSE of the mixture mean, its NLL, and how often y falls in mean +- 1.96 std: the mixture's 95%
    interval under a Gaussian approximation (exact for one particle; wider for a multimodal mixture)."""
    mean, std = moments(prediction)
    return {"mse": torch.mean((mean - y) ** 2), "nll": mixture_nll(prediction, y),
            "coverage95": (torch.abs(y - mean) <= 1.96 * std).float().mean()}
