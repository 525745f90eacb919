"""A distmeta model as a self-contained MLflow pyfunc model ("models from code").

MLflow logs this file with the model and runs it when the model loads, so a
served or loaded model needs torch, safetensors, numpy, pandas and MLflow,
and no distmeta code. The model's folder holds ``model.json`` (the network
as a tree of torch layers, the head, the input shape, class names) and
``params.safetensors`` (the network's weights, and for metric-based learners
the support set's prototypes or memory under ``support:`` keys).

Input: a DataFrame with column ``x`` (regression), or for an image model
``image`` (each row the C*H*W pixels in [0, 1], row-major, as a list) or
``image_bytes`` (each row a PNG or JPEG file's bytes; base64 in a JSON
request), decoded, converted and resized with Lanczos as ``distmeta data
import`` does. Output: ``y``; for Bayesian
and ensemble MAML's particles (weights stacked on a leading dimension, each
with its Gaussian noise), ``y`` and ``std``, the mean and standard deviation
of the particles' predictive mixture; or ``label``
(a class name of the support set) and ``probabilities`` (one per class, in
``classes`` order); or ``embedding`` for an unadapted metric-based meta-model.
Batch norm: a generated image model stores the support set's statistics
(``model.json`` ``"batch_norm": "frozen"``, the default of ``distmeta
generate``) and answers each image on its own; generated with
``--batch-norm transductive`` (and the meta-model) it normalises each request
with the request's own statistics, as in training.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from torch import nn

SUPPORT = "support:"
IMAGE_BYTES = "image_bytes"
NOISE = "likelihood:log_std"  # each particle's Gaussian noise (log sd), beside its stacked weights
LOG_STD_MIN = math.log(1e-3)  # as in training
LAYERS = {
    "Sequential": lambda spec: nn.Sequential(*(network(child) for child in spec["children"])),
    "Linear": lambda spec: nn.Linear(spec["in"], spec["out"]),
    "Conv2d": lambda spec: nn.Conv2d(spec["in"], spec["out"], spec["kernel"], padding=spec["padding"]),
    "BatchNorm2d": lambda spec: nn.BatchNorm2d(spec["channels"], track_running_stats=False),
    "MaxPool2d": lambda spec: nn.MaxPool2d(spec["kernel"]),
    "ReLU": lambda spec: nn.ReLU(),
    "Flatten": lambda spec: nn.Flatten(),
}


MAX_PIXELS = 2**25  # of a request's image, as `distmeta data import` allows (a decompression bomb is refused)


def network(spec: dict) -> nn.Module:
    """The torch module a ``model.json`` network tree describes."""
    return LAYERS[spec["type"]](spec)


def scores(head: str, output: torch.Tensor, support: dict) -> torch.Tensor:
    """Class log-scores of a classifier head over the network's output."""
    if head == "logits":
        return output
    if head == "prototypes":  # Prototypical Networks: -squared Euclidean distance to each class mean
        prototypes = support["prototypes"]
        return -((output * output).sum(-1, keepdim=True) - 2 * output @ prototypes.T + (prototypes * prototypes).sum(-1))
    if head == "memory":  # Matching Networks: softmax over cosine similarity to the support set
        cosine = nn.functional.normalize(output, dim=-1) @ nn.functional.normalize(support["embeddings"], dim=-1).T
        return torch.log((torch.softmax(cosine, dim=-1) @ support["labels"]).clamp(min=1e-30))
    raise ValueError(f"unknown head {head!r}")


class DistmetaModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from safetensors.torch import load_file

        folder = Path(context.artifacts["model"])
        self.spec = json.loads((folder / "model.json").read_text())
        tensors = load_file(folder / "params.safetensors")
        self.net = network(self.spec["network"]).eval()  # eval: batch norm uses the frozen statistics, if stored
        if self.spec["head"] == "particles":  # weights stay stacked; applied one particle at a time
            self.particles = tensors
            return
        self.weights = {k: v for k, v in tensors.items() if not k.startswith(SUPPORT)}
        self.support = {k[len(SUPPORT):]: v for k, v in tensors.items() if k.startswith(SUPPORT)}

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        column = "image" if len(self.spec["input_shape"]) == 3 else "x"
        if column == "image" and IMAGE_BYTES in model_input.columns:
            rows = np.stack([self.decode(value) for value in model_input[IMAGE_BYTES]])
        else:
            rows = np.stack([np.asarray(value, dtype=np.float32).reshape(-1) for value in model_input[column]])
        size = int(np.prod(self.spec["input_shape"]))
        if rows.shape[1] != size:
            raise ValueError(f"each {column!r} must hold {size} values ({'x'.join(map(str, self.spec['input_shape']))}), "
                             f"got {rows.shape[1]}")
        x = torch.from_numpy(rows).reshape(len(rows), *self.spec["input_shape"])
        with torch.no_grad():
            head = self.spec["head"]
            output = None if head == "particles" else torch.func.functional_call(self.net, self.weights, (x,))
            if head == "regression":
                return pd.DataFrame({"y": output[:, 0].numpy().astype(np.float64)})
            if head == "particles":
                mean, std = self.mixture(x)
                return pd.DataFrame({"y": mean.numpy().astype(np.float64), "std": std.numpy().astype(np.float64)})
            if head == "embedding":
                return pd.DataFrame({"embedding": list(output.numpy().astype(np.float64))})
            classes = self.spec["classes"]
            probabilities = torch.softmax(scores(head, output, self.support)[:, : len(classes)], dim=-1)
        return pd.DataFrame({"label": [classes[i] for i in probabilities.argmax(-1).tolist()],
                             "probabilities": list(probabilities.numpy().astype(np.float64))})

    def decode(self, data: bytes) -> np.ndarray:
        """An image file's pixels in [0, 1], C*H*W: greyscale or RGB, resized with Lanczos, as at import."""
        from PIL import Image

        channels, height, width = self.spec["input_shape"]
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            if image.width * image.height > MAX_PIXELS:
                raise ValueError(f"an image of {image.width}x{image.height} pixels: more than {MAX_PIXELS:,}, "
                                 "refused before decoding")
            image.load()
            pixels = np.asarray(image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.LANCZOS))
        pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        return pixels.reshape(-1).astype(np.float32) / 255

    def mixture(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and sd of the equal mixture of the particles' Gaussians N(net_m(x), sd_m^2)."""
        weights = {k: v for k, v in self.particles.items() if k != NOISE}
        means = torch.stack([torch.func.functional_call(self.net, {k: v[m] for k, v in weights.items()}, (x,))[:, 0]
                             for m in range(len(self.particles[NOISE]))])
        variances = torch.exp(2 * self.particles[NOISE].clamp(min=LOG_STD_MIN)).unsqueeze(1)
        mean = means.mean(0)
        return mean, ((variances + means**2).mean(0) - mean**2).clamp(min=0).sqrt()


mlflow.models.set_model(DistmetaModel())
