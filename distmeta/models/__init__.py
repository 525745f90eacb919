"""Backbones as ``nn.Module`` architectures plus plain params dicts.

The module holds no state the algorithms use: they pass a params dict to
``torch.func.functional_call``, so any ``nn.Module`` without buffers works.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from distmeta.config import METRIC_BASED
from distmeta.models.conv4 import Conv4
from distmeta.models.mlp import MLP
from distmeta.models.recurrent import RecurrentPolicy, policy_inputs

__all__ = ["MLP", "Conv4", "RecurrentPolicy", "make_model", "init_params", "model_params", "apply_fn"]


def make_model(config, tasks) -> nn.Module:
    """The backbone for a config and its task distribution: Conv4 for images, else an MLP.

    Metric-based learners (ProtoNets, Matching Networks) get Conv4 without
    its head: the flattened embedding. RL^2 gets a GRU policy of ``hidden[0]`` units.
    """
    if config.algorithm == "rl2":
        return RecurrentPolicy(policy_inputs(tasks), config.hidden[0], tasks.actions)
    if len(tasks.input_shape) == 3:
        channels, size, _ = tasks.input_shape
        return Conv4(channels, config.filters, None if config.algorithm in METRIC_BASED else config.ways, size)
    return MLP(tasks.input_shape[0], config.hidden, tasks.outputs)


def init_params(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Fresh parameters for ``model``, a pure function of ``seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    if any(True for _ in model.buffers()):
        raise ValueError("models must not hold buffers (use batch statistics, not running ones)")
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def model_params(model: nn.Module, meta_params: dict) -> dict[str, torch.Tensor]:
    """The entries of ``meta_params`` that are ``model``'s own (e.g. without Meta-SGD's rates)."""
    names = dict(model.named_parameters())
    return {k: v for k, v in meta_params.items() if k in names}


def apply_fn(model: nn.Module):
    """``(params, *inputs) -> output`` for ``model`` (inputs: ``x``, or RL^2's ``x, h``).

    The model is put in eval mode, where batch norm still uses batch statistics
    unless ``params`` carries frozen ones (``normalization.support_statistics``).
    """
    model.eval()

    def apply(params, *inputs):
        return functional_call(model, params, inputs)

    return apply
