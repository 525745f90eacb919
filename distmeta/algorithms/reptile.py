"""Reptile (Nichol, Achiam & Schulman, 2018).

Adapt with ``inner_steps`` plain SGD steps on the task's support set; the
meta-gradient is the displacement ``meta_params - adapted``, which the outer
optimizer then follows like a gradient. No derivative flows through the
inner loop.
"""

from __future__ import annotations

import torch

from distmeta.algorithms.base import Algorithm, scored, sgd_steps


def reptile(apply, tasks_spec, inner_lr: float, inner_steps: int) -> Algorithm:
    loss = tasks_spec.loss

    def adapt(meta_params, support_x, support_y, steps=inner_steps):
        return sgd_steps(apply, loss, meta_params, support_x, support_y, inner_lr, steps, first_order=True)

    def task_grad(meta_params, task):
        with torch.no_grad():
            adapted = adapt(meta_params, task.support_x, task.support_y)
            _, metrics = scored(tasks_spec, apply(adapted, task.query_x), task.query_y)
        return {k: meta_params[k] - adapted[k] for k in meta_params}, metrics

    return Algorithm("reptile", init=dict, task_grad=task_grad, adapt=adapt, predict=apply)
