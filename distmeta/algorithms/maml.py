"""MAML (Finn, Abbeel & Levine, 2017), second order.

Meta-objective: the query loss after ``inner_steps`` SGD steps on the support
set, differentiated through every inner step (Hessian-vector products
included). ``first_order=True`` is FOMAML (see fomaml.py).
"""

from __future__ import annotations

from distmeta.algorithms.base import Algorithm, grad, scored, sgd_steps


def maml(apply, tasks_spec, inner_lr: float, inner_steps: int, first_order: bool = False) -> Algorithm:
    """MAML over a model ``apply(params, x)`` and a task distribution's loss.

    >>> algo = maml(apply_fn(model), Sinusoid(), inner_lr=0.01, inner_steps=1)  # doctest: +SKIP
    """
    loss = tasks_spec.loss

    def adapt(meta_params, support_x, support_y, steps=inner_steps):
        return sgd_steps(apply, loss, meta_params, support_x, support_y, inner_lr, steps, first_order)

    def query_loss(meta_params, task):
        adapted = adapt(meta_params, task.support_x, task.support_y)
        return scored(tasks_spec, apply(adapted, task.query_x), task.query_y)

    def task_grad(meta_params, task):
        return grad(query_loss, has_aux=True)(meta_params, task)

    return Algorithm("fomaml" if first_order else "maml", init=dict, task_grad=task_grad, adapt=adapt, predict=apply)

