"""N-way K-shot episodes from an image dataset, and its train/val/test class splits.

Drawing a task is index gathering on arrays already in memory (no image
decoding): choose N classes of the split, then K + Q images of each, all from
a numpy generator seeded with the task's seed, so a task is a pure function
of its seed whichever process draws it.

With ``rotations`` every class also appears rotated by 90, 180 and 270
degrees as three new classes (the Omniglot convention of Santoro et al. and
Vinyals et al.); a class and its rotations always fall in the same split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from distmeta.data.dataset import DataError, ImageDataset
from distmeta.tasks.base import TEST, TRAIN, VALIDATION, Task, stack
from distmeta.tasks.classification import ClassificationLoss

ROTATIONS = 4  # 0, 90, 180, 270 degrees
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)


@dataclass(frozen=True, eq=False)
class Episodes(ClassificationLoss):
    """Episodes over ``classes``: dataset class ids, or with ``rotations`` ``4 * class + quarter_turns``."""

    dataset: ImageDataset
    classes: np.ndarray
    ways: int = 5
    shots: int = 1
    queries: int = 15
    rotations: bool = False
    split: str = "this split"  # for error messages: "the validation split", ...

    def __post_init__(self):
        if self.ways > len(self.classes):
            raise DataError(f"{self.ways}-way episodes need {self.ways} classes; {self.split} of "
                            f"{self.dataset.path or 'the dataset'} has {len(self.classes)}")
        # computed once: drawing a task is then O(ways), not O(images)
        object.__setattr__(self, "_starts", self.dataset.class_starts)
        object.__setattr__(self, "_counts", self.dataset.class_counts)
        base = self.classes // ROTATIONS if self.rotations else self.classes
        counts = self._counts[base]
        if counts.min() < self.shots + self.queries:
            worst = int(base[counts.argmin()])
            raise DataError(f"class {self.dataset.class_names[worst]!r} of {self.dataset.path or 'the dataset'} has "
                            f"{counts.min()} images, fewer than shots + queries = {self.shots + self.queries}")

    @property
    def input_shape(self) -> tuple:
        return self.dataset.image_shape

    def sample(self, seed: int) -> Task:
        rng = np.random.default_rng(seed)
        chosen = rng.choice(self.classes, self.ways, replace=False)
        base, turns = (chosen // ROTATIONS, chosen % ROTATIONS) if self.rotations else (chosen, np.zeros_like(chosen))
        per_class = self.shots + self.queries
        starts, counts = self._starts, self._counts
        rows = np.stack([starts[c] + rng.choice(counts[c], per_class, replace=False) for c in base])
        images = self.dataset.images[rows]  # (ways, per_class, C, H, W): a gather, not a decode
        for i in np.flatnonzero(turns):
            images[i] = np.rot90(images[i], turns[i], axes=(-2, -1))
        x = torch.from_numpy(images).float().div_(255)
        y = torch.arange(self.ways).unsqueeze(1).expand(self.ways, per_class)
        shape = self.dataset.image_shape
        return Task(x[:, : self.shots].reshape(-1, *shape), y[:, : self.shots].reshape(-1),
                    x[:, self.shots :].reshape(-1, *shape), y[:, self.shots :].reshape(-1))

    def sample_batch(self, seeds: list[int]) -> Task:
        return stack([self.sample(s) for s in seeds])


def split_classes(dataset: ImageDataset, by: str = "class", sizes=(), rotations: bool = False) -> dict:
    """``{TRAIN: classes, VALIDATION: classes, TEST: classes}``, consecutive in file order.

    ``sizes`` counts classes (``by="class"``) or groups (``by="group"``, e.g.
    Omniglot alphabets) per split; empty means 70/10/20%.
    """
    if by == "group" and not any(dataset.class_groups):
        raise DataError(f"split_by=group, but {dataset.path or 'the dataset'} has no groups (use split_by=class)")
    units = dataset.groups if by == "group" else list(range(dataset.num_classes))
    if not sizes:
        train, val = (round(f * len(units)) for f in DEFAULT_FRACTIONS[:2])
        sizes = (train, val, len(units) - train - val)
    if sum(sizes) > len(units):
        raise DataError(f"split_sizes {list(sizes)} need {sum(sizes)} {by}{'es' if by == 'class' else 's'}; {dataset.path or 'the dataset'} "
                        f"has {len(units)}")
    bounds = np.cumsum([0, *sizes])
    parts = {}
    for split, (low, high) in zip((TRAIN, VALIDATION, TEST), zip(bounds[:-1], bounds[1:])):
        if by == "group":
            chosen = set(units[low:high])
            classes = np.array([c for c, g in enumerate(dataset.class_groups) if g in chosen], dtype=np.int64)
        else:
            classes = np.arange(low, high, dtype=np.int64)
        parts[split] = with_rotations(classes) if rotations else classes
    return parts


def with_rotations(classes: np.ndarray) -> np.ndarray:
    """Each class id followed by its three rotated copies' ids."""
    return (classes[:, None] * ROTATIONS + np.arange(ROTATIONS)).reshape(-1)
