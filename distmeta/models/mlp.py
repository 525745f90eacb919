"""The MAML regression MLP: hidden ReLU layers (40-40 by default)."""

from torch import nn


class MLP(nn.Sequential):
    def __init__(self, inputs: int = 1, hidden=(40, 40), outputs: int = 1):
        layers, width = [], inputs
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, outputs))
        super().__init__(*layers)
