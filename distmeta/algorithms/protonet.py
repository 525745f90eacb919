"""Prototypical Networks (Snell, Swersky & Zemel, 2017).

A class's prototype is the mean embedding of its support examples; a query is
classified by a softmax over negative squared Euclidean distances to the
prototypes. There is no inner loop: the meta-gradient of a task is the
gradient of its query loss with respect to the embedding's parameters, and
"adapting" to a task is computing its prototypes.

Labels are ``0..N-1``. Prototypes are computed for ``S`` (support size) label
slots, a static bound on ``N`` that keeps the function vmappable for any way
count; slots with no support example get logit ``-inf``.
"""

from __future__ import annotations

import torch

from distmeta.algorithms.base import SUPPORT, Algorithm, label_slots, query_loss_grad, without_support


def class_means(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(means, present): the mean embedding of each label slot ``0..S-1``, and which slots have examples."""
    onehot = label_slots(labels, embeddings.dtype)  # (S, S)
    counts = onehot.sum(0)
    return onehot.T @ embeddings / counts.clamp(min=1).unsqueeze(1), counts > 0


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||a_i - b_j||^2`` for every row pair, shaped (len(a), len(b)), as ``|a|^2 - 2 a.b + |b|^2``.

    A matmul instead of a (len(a), len(b), D) difference tensor: 20-way 5-shot
    mini-ImageNet would need 192 MB per task for that.
    """
    return (a * a).sum(-1, keepdim=True) - 2 * a @ b.T + (b * b).sum(-1)


def protonet(apply, tasks_spec, inner_lr: float = 0.0, inner_steps: int = 0) -> Algorithm:
    """ProtoNets over an embedding ``apply(params, x) -> (B, D)``; the inner-loop arguments are unused."""

    def adapt(meta_params, support_x, support_y, steps=0):
        prototypes, present = class_means(apply(meta_params, support_x), support_y)
        return {**meta_params, SUPPORT + "prototypes": prototypes, SUPPORT + "present": present}

    def predict(task_params, x):
        logits = -squared_distances(apply(without_support(task_params), x), task_params[SUPPORT + "prototypes"])
        return logits.masked_fill(~task_params[SUPPORT + "present"], float("-inf"))

    return Algorithm("protonet", init=dict, task_grad=query_loss_grad(adapt, predict, tasks_spec), adapt=adapt,
                     predict=predict)
