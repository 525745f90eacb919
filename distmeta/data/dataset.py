"""An image dataset in memory: numpy arrays, rows grouped by class.

Loaded once per node from Parquet (``distmeta.data.parquet``) and, when
distributed, shared read-only through Ray's object store: the arrays pickle
out of band, so every worker on a node sees the same memory.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class DataError(ValueError):
    """A dataset problem (missing file, corrupt image, too few classes), reported as one line."""


class ImageDataset(NamedTuple):
    images: np.ndarray  # (N, C, H, W) uint8, rows sorted by label
    labels: np.ndarray  # (N,) int64, non-decreasing: class c occupies one contiguous block
    class_names: tuple  # class_names[c]: e.g. "Latin/character01"
    class_groups: tuple  # class_groups[c]: e.g. "Latin" (the alphabet); "" when ungrouped
    name: str = ""  # e.g. "omniglot"
    path: str = ""  # the file it was loaded from

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple:
        return tuple(self.images.shape[1:])

    @property
    def class_starts(self) -> np.ndarray:
        """Row of each class's first image."""
        return np.searchsorted(self.labels, np.arange(self.num_classes))

    @property
    def class_counts(self) -> np.ndarray:
        """Images per class."""
        return np.bincount(self.labels, minlength=self.num_classes)

    @property
    def groups(self) -> list[str]:
        """Distinct groups in file order."""
        return list(dict.fromkeys(self.class_groups))


def from_arrays(images, labels, class_names, class_groups=None, name: str = "") -> ImageDataset:
    """An ``ImageDataset`` from arrays in any row order (sorted by label here)."""
    images, labels = np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64)
    if images.ndim != 4 or len(images) != len(labels):
        raise DataError(f"images must be (N, C, H, W) with one label each, got {images.shape} and {labels.shape}")
    order = np.argsort(labels, kind="stable")
    groups = tuple(class_groups) if class_groups is not None else ("",) * len(class_names)
    return ImageDataset(images[order], labels[order], tuple(class_names), groups, name)
