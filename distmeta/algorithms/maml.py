"""MAML (Finn, Abbeel & Levine, 2017), second order.

Meta-objective: the query loss after ``inner_steps`` SGD steps on the support
set, differentiated through every inner step (Hessian-vector products
included). ``first_order=True`` is FOMAML (see fomaml.py).
"""

from __future__ import annotations

from distmeta.algorithms.base import Algorithm, query_loss_grad, sgd_steps


def maml(apply, tasks_spec, inner_lr: float, inner_steps: int, first_order: bool = False) -> Algorithm:
    """MAML over a model ``apply(params, x)`` and a task distribution's loss.

    >>> algo = maml(apply_fn(model), Sinusoid(), inner_lr=0.01, inner_steps=1)  # doctest: +SKIP
    """
    loss = tasks_spec.loss

    def adapt(meta_params, support_x, support_y, steps=inner_steps):
        return sgd_steps(apply, loss, meta_params, support_x, support_y, inner_lr, steps, first_order)

    task_grad = query_loss_grad(adapt, apply, tasks_spec)  # through every inner step (unless first order)
    return Algorithm("fomaml" if first_order else "maml", init=dict, task_grad=task_grad, adapt=adapt, predict=apply)

