"""N-way classification episodes: the loss and metrics, and random images.

``RandomEpisodes`` draws episodes of random images with the shapes of a real
few-shot benchmark (Omniglot: 1x28x28); there is nothing to learn in them,
they exist to measure speed and check numerics on the real shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distmeta.tasks.base import Task, stack


class ClassificationLoss:
    metric = "accuracy"

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels)

    @staticmethod
    def metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict:
        return {"accuracy": (logits.argmax(dim=-1) == labels).float().mean()}


@dataclass(frozen=True)
class RandomEpisodes(ClassificationLoss):
    ways: int = 5
    shots: int = 1
    queries: int = 15
    image_shape: tuple = (1, 28, 28)

    @property
    def input_shape(self) -> tuple:
        return self.image_shape

    def sample(self, seed: int) -> Task:
        gen = torch.Generator().manual_seed(seed)
        per_class = self.shots + self.queries  # shots and queries are per class
        images = torch.rand(self.ways, per_class, *self.image_shape, generator=gen)
        labels = torch.arange(self.ways).unsqueeze(1).expand(self.ways, per_class)
        support = images[:, : self.shots].reshape(-1, *self.image_shape), labels[:, : self.shots].reshape(-1)
        query = images[:, self.shots :].reshape(-1, *self.image_shape), labels[:, self.shots :].reshape(-1)
        return Task(*support, *query)

    def sample_batch(self, seeds: list[int]) -> Task:
        return stack([self.sample(s) for s in seeds])
