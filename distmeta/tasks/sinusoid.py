"""Sinusoid regression, exactly as in MAML (Finn et al., 2017, section 5.1), and its noisy variant.

A task is y = A sin(x - phi) with amplitude A ~ U[0.1, 5], phase
phi ~ U[0, pi], and inputs x ~ U[-5, 5]; the loss is the mean squared error.
``NOISY`` is Bayesian MAML's setting (Yoon et al., 2018, section 5.1):
y = A sin(w x - phi) + eps with w ~ U[0.5, 2], phi ~ U[0, 2 pi] and
eps ~ N(0, (0.01 A)^2).

A prediction is a point, ``(N, 1)``, or a particle ensemble's predictive
distribution, ``(N, M, 2)`` (see ``predictive.py``): its loss is then the
negative log-likelihood, and its metrics add NLL and 95% interval coverage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from distmeta.tasks import predictive
from distmeta.tasks.base import Task, stack


@dataclass(frozen=True)
class Sinusoid:
    shots: int = 10
    queries: int = 10
    amplitude: tuple = (0.1, 5.0)
    phase: tuple = (0.0, math.pi)
    x_range: tuple = (-5.0, 5.0)
    frequency: tuple = (1.0, 1.0)
    noise: float = 0.0  # noise sd as a fraction of the amplitude

    metric = "mse"
    input_shape = (1,)
    outputs = 1

    def _draw(self, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # float64 U[0, 1] draws (amplitude, phase, x_1, ..., x_{K+Q}) exactly as MAML's sinusoid; the frequency
        # and the K+Q N(0, 1) noises come from a second stream, so the curve of a seed is the same for every K.
        gen = torch.Generator().manual_seed(seed)
        u = torch.rand(2 + self.shots + self.queries, generator=gen, dtype=torch.float64)
        extra = torch.Generator().manual_seed(seed ^ 0x5EED)
        frequency = torch.rand((), generator=extra, dtype=torch.float64)
        return u, frequency, torch.randn(self.shots + self.queries, generator=extra, dtype=torch.float64)

    def curve(self, seed: int) -> tuple[float, float, float]:
        """The (amplitude, phase, frequency) of task ``seed``."""
        u, frequency, _ = self._draw(seed)
        return (_lerp(self.amplitude, u[0]).item(), _lerp(self.phase, u[1]).item(), _lerp(self.frequency, frequency).item())

    def target(self, seed: int, x: torch.Tensor) -> torch.Tensor:
        """The noise-free curve of task ``seed`` at ``x``."""
        amplitude, phase, frequency = self.curve(seed)
        return amplitude * torch.sin(frequency * x - phase)

    def sample(self, seed: int) -> Task:
        """Task ``seed``: K support and Q query points of one sine."""
        u, frequency, eps = self._draw(seed)
        amplitude, phase, frequency = _lerp(self.amplitude, u[0]), _lerp(self.phase, u[1]), _lerp(self.frequency, frequency)
        x = _lerp(self.x_range, u[2:])
        y = amplitude * torch.sin(frequency * x - phase) + self.noise * amplitude * eps
        x, y = x.float().unsqueeze(1), y.float().unsqueeze(1)
        return Task(x[: self.shots], y[: self.shots], x[self.shots :], y[self.shots :])

    def sample_batch(self, seeds: list[int]) -> Task:
        return stack([self.sample(s) for s in seeds])

    @staticmethod
    def loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if prediction.dim() == 3:
            return predictive.mixture_nll(prediction, target)
        return torch.mean((prediction - target) ** 2)

    @staticmethod
    def metrics(prediction: torch.Tensor, target: torch.Tensor) -> dict:
        if prediction.dim() == 3:
            return predictive.metrics(prediction, target)
        return {"mse": torch.mean((prediction - target) ** 2)}


NOISY = {"phase": (0.0, 2 * math.pi), "frequency": (0.5, 2.0), "noise": 0.01}


def _lerp(bounds: tuple, u):
    return bounds[0] + (bounds[1] - bounds[0]) * u
