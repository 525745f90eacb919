"""A new task's labelled examples (its support set), read for ``distmeta generate``.

Regression: a CSV or Parquet file with the input column ``x`` and the target
``y``; a ``task`` column makes it many tasks, and a folder of such files is
one task per file.
Classification: an image folder ``PATH/<class>/<image>`` (one task), a folder
of such folders (one task each), or a Parquet file from ``distmeta data
import`` (one task, or one per group when it has groups). Folder images are
resized to the meta-model's input; a Parquet file must already match it.
Class names label the generated model's predictions.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from distmeta.data.dataset import DataError, ImageDataset

TABLES = (".csv", ".parquet")


class SupportSet(NamedTuple):
    name: str  # the task's name: a file or folder stem, or a `task` column value
    x: torch.Tensor  # (K, *input_shape) float32
    y: torch.Tensor  # (K, 1) float32 targets, or (K,) int64 class indices
    classes: tuple  # class names, index = label; () for regression
    sha256: str  # of x and y, to tag the generated model with exactly what it was fitted to


def read_support(path, input_shape: tuple, classification: bool) -> list[SupportSet]:
    """The support sets at ``path`` for a meta-model taking ``input_shape`` inputs; a DataError names any problem."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"support set not found: {path}")
    sets = _images(path, input_shape) if classification else _tables(path, input_shape)
    for support in sets:
        _check(support, path, classification)
    twice = [name for name, count in Counter(s.name for s in sets).items() if count > 1]
    if twice:  # e.g. a.csv and a.CSV: a task's name tags its generated model, and may name it
        raise DataError(f"{path}: two tasks are named {twice[0]!r}; rename one")
    return sets


def _tables(path: Path, input_shape: tuple) -> list[SupportSet]:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in TABLES) if path.is_dir() else [path]
    if not files:
        raise DataError(f"no .csv or .parquet support files in {path}")
    if tuple(input_shape) != (1,):
        raise DataError(f"{path}: the meta-model takes {'x'.join(map(str, input_shape))} images, not a table")
    features = ["x"]
    sets = []
    for file in files:
        frame = _read_table(file)
        missing = [c for c in [*features, "y"] if c not in frame.columns]
        if missing:
            raise DataError(f"{file} has no column {', '.join(missing)}; the meta-model needs {', '.join(features)} and y")
        if "task" in frame.columns and frame["task"].isna().any():
            raise DataError(f"{file}: {int(frame['task'].isna().sum())} of {len(frame)} rows have no task "
                            "(the task column is empty there)")
        groups = frame.groupby("task", sort=True) if "task" in frame.columns else [(file.stem, frame)]
        for name, rows in groups:
            x, y = (_floats(rows[columns], file) for columns in (features, ["y"]))
            sets.append(SupportSet(str(name), x, y, (), _digest(x, y)))
    return sets


def _read_table(file: Path):
    import pandas as pd

    try:
        return pd.read_parquet(file) if file.suffix.lower() == ".parquet" else pd.read_csv(file)
    except Exception as err:  # pandas and pyarrow raise many kinds for a bad file
        raise DataError(f"cannot read {file}: {str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}") from None


def _floats(frame, file: Path) -> torch.Tensor:
    try:
        return torch.tensor(frame.to_numpy(dtype=np.float32))
    except (TypeError, ValueError):
        raise DataError(f"{file}: columns {', '.join(frame.columns)} must be numbers") from None


def _images(path: Path, input_shape: tuple) -> list[SupportSet]:
    if len(input_shape) != 3:
        raise DataError(f"{path}: the meta-model takes a table with x and y, not images")
    channels, size, _ = input_shape
    if not path.is_dir() and path.suffix.lower() != ".parquet":
        raise DataError(f"{path}: the meta-model takes {'x'.join(map(str, input_shape))} images, not a table "
                        "(give an image folder, or a Parquet file from `distmeta data import`)")
    if path.is_dir():
        from distmeta.data.importers import read_folder

        data = read_folder(path, size, channels)
    else:
        from distmeta.data.parquet import load_dataset

        data = load_dataset(path)
        if data.image_shape != tuple(input_shape):
            raise DataError(f"{path} holds {'x'.join(map(str, data.image_shape))} images; the meta-model takes "
                            f"{'x'.join(map(str, input_shape))}")
    groups = [g for g in data.groups if g]
    return [_image_task(data, group) for group in groups] if groups else [_image_task(data, None)]


def _image_task(data: ImageDataset, group: str | None) -> SupportSet:
    """One task: every class of ``group`` (all classes when None), relabelled 0..n-1 in file order."""
    classes = [c for c, g in enumerate(data.class_groups) if group is None or g == group]
    rows = np.flatnonzero(np.isin(data.labels, classes))
    x = torch.from_numpy(data.images[rows]).float().div_(255)
    y = torch.from_numpy(np.searchsorted(classes, data.labels[rows]))
    names = tuple(data.class_names[c].rpartition("/")[2] if group else data.class_names[c] for c in classes)
    return SupportSet(group or Path(data.path).stem, x, y, names, _digest(x, y))


def _check(support: SupportSet, path: Path, classification: bool) -> None:
    where = f"{path}" + (f" (task {support.name})" if support.name not in (path.stem, path.name) else "")
    if len(support.x) == 0:
        raise DataError(f"{where}: the support set is empty")
    if not (torch.isfinite(support.x).all() and torch.isfinite(support.y.float()).all()):
        raise DataError(f"{where}: the support set has a non-finite value (NaN or inf)")
    if classification and len(support.classes) < 2:
        raise DataError(f"{where}: a classification support set needs at least 2 classes, got {len(support.classes)}")


def _digest(x: torch.Tensor, y: torch.Tensor) -> str:
    return hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()
