"""First-order MAML (Finn et al., 2017, section 5.2).

MAML with the second derivatives dropped: the meta-gradient is the gradient
of the query loss at the adapted parameters, applied to the meta-parameters.
"""

from distmeta.algorithms.base import Algorithm
from distmeta.algorithms.maml import maml


def fomaml(apply, tasks_spec, inner_lr: float, inner_steps: int) -> Algorithm:
    return maml(apply, tasks_spec, inner_lr, inner_steps, first_order=True)
