"""Conv4, the few-shot backbone of MAML and Prototypical Networks.

Four blocks of [3x3 conv, batch norm, ReLU, 2x2 max-pool], then a linear head
(``outputs`` classes) or, with ``outputs=None``, the flattened embedding.

Batch norm uses the statistics of the batch it is given and keeps no running
statistics (``track_running_stats=False``), as MAML does: every task is
normalised with its own statistics at meta-training and meta-test alike, and
nothing leaks from one task to the next. Frozen statistics (a support set's,
``models/normalization.py``) can be passed in the params dict instead.

Each block pools before its ReLU: max-pooling commutes with any increasing
function, so relu(pool(x)) == pool(relu(x)) and the model is the papers'
exactly, while the ReLU and its backward touch a quarter of the activations
(about 30% faster meta-steps on CPU, benchmarks/throughput.py).
"""

from torch import nn

from distmeta.models.normalization import BatchNorm2d


def _block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, padding=1),
        BatchNorm2d(channels_out),
        nn.MaxPool2d(2),
        nn.ReLU(),
    )


class Conv4(nn.Sequential):
    def __init__(self, channels: int = 1, filters: int = 64, outputs: int | None = 5, image_size: int = 28):
        blocks = [_block(channels, filters)] + [_block(filters, filters) for _ in range(3)]
        side = image_size
        for _ in range(4):
            side //= 2
        layers = blocks + [nn.Flatten()]
        if outputs is not None:
            layers.append(nn.Linear(filters * side * side, outputs))
        super().__init__(*layers)
