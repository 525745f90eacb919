"""Sinusoid regression, exactly as in MAML (Finn et al., 2017, section 5.1).

A task is y = A sin(x - phi) with amplitude A ~ U[0.1, 5], phase
phi ~ U[0, pi], and inputs x ~ U[-5, 5]; the loss is the mean squared error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from distmeta.tasks.base import Task, stack


@dataclass(frozen=True)
class Sinusoid:
    shots: int = 10
    queries: int = 10
    amplitude: tuple = (0.1, 5.0)
    phase: tuple = (0.0, math.pi)
    x_range: tuple = (-5.0, 5.0)

    metric = "mse"
    input_shape = (1,)
    outputs = 1

    def _draw(self, seed: int) -> torch.Tensor:
        # One float64 draw per task: (amplitude, phase, x_1, ..., x_{K+Q}) as U[0, 1].
        gen = torch.Generator().manual_seed(seed)
        return torch.rand(2 + self.shots + self.queries, generator=gen, dtype=torch.float64)

    def curve(self, seed: int) -> tuple[float, float]:
        """The (amplitude, phase) of task ``seed``."""
        amplitude, phase = self._draw(seed)[:2].tolist()
        return (_lerp(self.amplitude, amplitude), _lerp(self.phase, phase))

    def target(self, seed: int, x: torch.Tensor) -> torch.Tensor:
        amplitude, phase = self.curve(seed)
        return amplitude * torch.sin(x - phase)

    def sample(self, seed: int) -> Task:
        """Task ``seed``: K support and Q query points of one sine."""
        u = self._draw(seed)
        amplitude, phase = _lerp(self.amplitude, u[0]), _lerp(self.phase, u[1])
        x = _lerp(self.x_range, u[2:]).unsqueeze(1)
        y = amplitude * torch.sin(x - phase)
        x, y = x.float(), y.float()
        return Task(x[: self.shots], y[: self.shots], x[self.shots :], y[self.shots :])

    def sample_batch(self, seeds: list[int]) -> Task:
        return stack([self.sample(s) for s in seeds])

    @staticmethod
    def loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.mean((prediction - target) ** 2)

    @staticmethod
    def metrics(prediction: torch.Tensor, target: torch.Tensor) -> dict:
        return {"mse": torch.mean((prediction - target) ** 2)}


def _lerp(bounds: tuple, u):
    return bounds[0] + (bounds[1] - bounds[0]) * u
