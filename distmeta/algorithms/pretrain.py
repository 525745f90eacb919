"""The "pretrained on all tasks, then fine-tuned" baseline of the MAML paper.

Meta-training fits one model to every task's examples at once (the gradient
of the loss on support and query together, no inner loop); at meta-test the
model is fine-tuned with SGD on the support set, like MAML's inner loop. It
shows what meta-learning adds over joint training.
"""

from __future__ import annotations

import torch

from distmeta.algorithms.base import Algorithm, grad, scored, sgd_steps


def pretrain(apply, tasks_spec, inner_lr: float, inner_steps: int) -> Algorithm:
    loss = tasks_spec.loss

    def adapt(meta_params, support_x, support_y, steps=inner_steps):
        return sgd_steps(apply, loss, meta_params, support_x, support_y, inner_lr, steps, first_order=True)

    def joint_loss(params, task):
        x = torch.cat([task.support_x, task.query_x])
        y = torch.cat([task.support_y, task.query_y])
        return scored(tasks_spec, apply(params, x), y)

    def task_grad(meta_params, task):
        return grad(joint_loss, has_aux=True)(meta_params, task)

    return Algorithm("pretrain", init=dict, task_grad=task_grad, adapt=adapt, predict=apply)
