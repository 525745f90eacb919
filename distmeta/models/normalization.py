"""Batch norm that answers each input on its own: statistics frozen from a support set.

Conv4's batch norm keeps no running statistics, so by default it normalises
with the statistics of the batch it is given (the papers' transductive
protocol): a query's prediction then depends on the other queries sent with
it. ``support_statistics`` records, for each batch-norm layer, the mean and
(biased) variance of its input while the support set passes through the
network; with those entries in the params dict, ``functional_call`` of a model
in eval mode (``apply_fn`` puts it there) normalises every input with them,
so the answer for an image no longer depends on its batch. Without them the
same model uses batch statistics, as in training.

>>> stats = support_statistics(model, params, support_x)   # doctest: +SKIP
>>> apply(params | stats, one_query)                        # doctest: +SKIP
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

STATISTICS = (".running_mean", ".running_var")


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` without running statistics, whose frozen ones (passed in the params dict) are
    differentiable: meta-training with ``batch_norm=frozen`` backpropagates through the support set's
    statistics, which torch's eval-mode kernel does not allow. Without them, batch statistics."""

    def __init__(self, channels: int):
        super().__init__(channels, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.running_mean is None:
            return super().forward(x)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        scale = torch.rsqrt(self.running_var.reshape(shape) + self.eps) * self.weight.reshape(shape)
        return (x - self.running_mean.reshape(shape)) * scale + self.bias.reshape(shape)


def batch_norm_layers(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]


def support_statistics(model: nn.Module, params: dict, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{layer.running_mean, layer.running_var}`` of every batch-norm layer as ``x`` passes with ``params``.

    Empty for a model without batch norm. Works under ``vmap`` (the hooks only read).
    """
    layers = batch_norm_layers(model)
    if not layers:
        return {}
    seen: dict[str, torch.Tensor] = {}

    def record(name):
        def hook(module, inputs):
            dims = [0] + list(range(2, inputs[0].dim()))  # every axis but the channels
            seen[name + STATISTICS[0]] = inputs[0].mean(dims)
            seen[name + STATISTICS[1]] = inputs[0].var(dims, unbiased=False)  # what normalised the support

        return hook

    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_pre_hook(record(name)) for name in layers]
    try:
        functional_call(model, params, (x,))
    finally:
        for handle in handles:
            handle.remove()
    return seen
