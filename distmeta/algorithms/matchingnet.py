"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, 2016).

A query's label distribution is an attention-weighted sum of the support
labels, ``P(y | x) = sum_i a(x, x_i) onehot(y_i)``, with ``a`` a softmax over
the cosine similarities between the query's and the support examples'
embeddings (one shared embedding: the paper's model without full-context
embeddings). The meta-gradient of a task is the gradient of the query
negative log-likelihood; "adapting" is storing the support set's embeddings.

Predictions are log-probabilities over ``S`` (support size) label slots, so
the cross-entropy of the shared classification loss is exactly the NLL; empty
slots get a log-probability of about -69 (probabilities are floored at 1e-30
so their gradient stays finite).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distmeta.algorithms.base import SUPPORT, Algorithm, label_slots, query_loss_grad, without_support


def attention(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Softmax over the support of cosine similarities, shaped (len(queries), len(keys))."""
    return torch.softmax(F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).T, dim=-1)


def matchingnet(apply, tasks_spec, inner_lr: float = 0.0, inner_steps: int = 0) -> Algorithm:
    """Matching Networks over an embedding ``apply(params, x) -> (B, D)``; the inner-loop arguments are unused."""

    def adapt(meta_params, support_x, support_y, steps=0):
        memory = apply(meta_params, support_x)
        labels = label_slots(support_y, memory.dtype)
        return {**meta_params, SUPPORT + "embeddings": memory, SUPPORT + "labels": labels}

    def predict(task_params, x):
        attended = attention(apply(without_support(task_params), x), task_params[SUPPORT + "embeddings"])
        return torch.log((attended @ task_params[SUPPORT + "labels"]).clamp(min=1e-30))

    return Algorithm("matchingnet", init=dict, task_grad=query_loss_grad(adapt, predict, tasks_spec), adapt=adapt,
                     predict=predict)
