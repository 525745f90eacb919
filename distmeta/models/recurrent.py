"""RL^2's recurrent policy: a GRU whose hidden state is the agent's memory of the trial so far."""

import torch
from torch import nn


class RecurrentPolicy(nn.Module):
    """``(x, h) -> (action logits, value, next h)``: one GRU step, then policy and value heads.

    The GRU is written out (Cho et al., 2014; torch.nn.GRUCell's equations)
    from two linear layers, so torch.func.vmap batches it like any other model.
    """

    def __init__(self, inputs: int, hidden: int, actions: int):
        super().__init__()
        self.input_gates = nn.Linear(inputs, 3 * hidden)
        self.hidden_gates = nn.Linear(hidden, 3 * hidden)
        self.policy = nn.Linear(hidden, actions)
        self.value = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        reset_in, update_in, new_in = self.input_gates(x).chunk(3, -1)
        reset_h, update_h, new_h = self.hidden_gates(h).chunk(3, -1)
        reset = torch.sigmoid(reset_in + reset_h)
        update = torch.sigmoid(update_in + update_h)
        candidate = torch.tanh(new_in + reset * new_h)
        h = (1 - update) * candidate + update * h
        return self.policy(h), self.value(h)[..., 0], h


def policy_inputs(env) -> int:
    """Size of RL^2's policy input (``algorithms.rl2.rollout``): observation, previous action, previous
    reward, done flag."""
    return env.input_shape[0] + env.actions + 2
