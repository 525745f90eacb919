"""Image datasets as Parquet files: one row per image, written atomically.

    label       int32              class index 0..n-1; rows sorted by it
    class_name  string             e.g. "Latin/character01"
    group       string             e.g. "Latin" (the alphabet); "" when ungrouped
    drawer      string, nullable   who drew the image (Omniglot), else null
    image       binary(C*H*W)      uint8 pixels in C, H, W order

The schema metadata key ``distmeta.dataset`` holds the whole file's
description as JSON: ``{"format": 1, "name", "image_shape": [C, H, W],
"classes", "groups", "images", "source"}``. Pages carry CRC checksums that
are verified on load, so a damaged file is an error, never wrong pixels.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from distmeta import storage
from distmeta.data.dataset import DataError, ImageDataset

FORMAT = 1
METADATA_KEY = b"distmeta.dataset"
# Dictionary-encode the repetitive strings only: images are all distinct.
WRITE_OPTIONS = {"compression": "zstd", "use_dictionary": ["class_name", "group", "drawer"],
                 "write_page_checksum": True}


def write_dataset(path, images, labels, class_names, class_groups=None, drawers=None,
                  metadata: dict | None = None) -> str:
    """Write a dataset to ``path``: all of it or, on any error or interrupt, nothing.

    ``images`` is (N, C, H, W) uint8 in any row order, ``labels`` (N,) indices
    into ``class_names`` and ``class_groups`` (default: ungrouped), ``drawers``
    (N,) optional strings; ``metadata`` gives ``name`` and ``source``. Missing
    folders are created; an existing file is replaced. Returns ``path``.

    >>> write_dataset("tiny.parquet", np.zeros((2, 1, 4, 4), np.uint8), [0, 1], ["a", "b"],
    ...               metadata={"name": "tiny"})  # doctest: +SKIP
    'tiny.parquet'
    """
    table = _table(np.asarray(images), np.asarray(labels), list(class_names), class_groups, drawers, metadata or {})
    _write_atomically(table, Path(path))
    return str(path)


def load_dataset(path) -> ImageDataset:
    """Load a dataset file; ``images`` is a view of the decoded Arrow buffer (no copy).

    >>> data = load_dataset("data/omniglot.parquet")  # doctest: +SKIP
    >>> data.images.shape, data.num_classes          # doctest: +SKIP
    ((19280, 1, 28, 28), 964)
    """
    table, meta = _read(path, ["label", "class_name", "group", "image"])
    labels = _labels(table["label"], meta["classes"], path)
    starts = np.searchsorted(labels, np.arange(meta["classes"]))
    names = _per_class(table, "class_name", labels, starts, path)
    groups = _per_class(table, "group", labels, starts, path)
    return ImageDataset(_images(table["image"], meta["image_shape"]), labels, names, groups, meta["name"], str(path))


def dataset_info(path) -> dict:
    """A dataset's size and shape from its metadata, labels and groups. The images are read too, so every
    page's checksum is verified: a corrupt file is an error here, not in the middle of a run."""
    table, meta = _read(path, ["label", "group", "image"])
    labels = _labels(table["label"], meta["classes"], path)
    groups = _per_class(table, "group", labels, np.searchsorted(labels, np.arange(meta["classes"])), path)
    counts = np.bincount(labels)
    return {
        "name": meta["name"], "path": str(path), "bytes": _size(path), "image_shape": meta["image_shape"],
        "images": len(labels), "classes": len(counts), "groups": _group_count(groups),
        "images_per_class": {"min": int(counts.min()), "median": float(np.median(counts)), "max": int(counts.max())},
        "classes_per_group": dict(Counter(g for g in groups if g)),  # in file order
        "source": meta["source"],
    }


def format_info(info: dict) -> str:
    """``dataset_info`` as a few aligned lines and a table of classes per group."""
    per_class = info["images_per_class"]
    lines = [
        f"name         {info['name']}",
        f"file         {info['path']} ({info['bytes'] / 1e6:.1f} MB)",
        f"image shape  {'x'.join(map(str, info['image_shape']))} (C x H x W)",
        f"images       {info['images']}",
        f"classes      {info['classes']} ({per_class['min']} / {per_class['median']:g} / {per_class['max']} "
        f"images per class, min / median / max)",
        f"groups       {info['groups'] or 'none'}",
    ]
    if info["classes_per_group"]:
        width = max(len("group"), *map(len, info["classes_per_group"]))
        lines += ["", f"{'group':<{width}}  classes"]
        lines += [f"{group:<{width}}  {count:>7}" for group, count in info["classes_per_group"].items()]
    return "\n".join(lines)


def _schema(image_shape) -> pa.Schema:
    return pa.schema([
        pa.field("label", pa.int32(), nullable=False),
        pa.field("class_name", pa.string(), nullable=False),
        pa.field("group", pa.string(), nullable=False),
        pa.field("drawer", pa.string()),
        pa.field("image", pa.binary(int(np.prod(image_shape))), nullable=False),
    ])


def _group_count(class_groups) -> int:
    """Distinct groups, not counting "" (ungrouped)."""
    return len({g for g in class_groups if g})


def _table(images: np.ndarray, labels: np.ndarray, class_names: list, class_groups, drawers,
           metadata: dict) -> pa.Table:
    groups = list(class_groups) if class_groups is not None else [""] * len(class_names)
    _check(images, labels, class_names, groups, drawers)
    order = None if np.all(labels[1:] >= labels[:-1]) else np.argsort(labels, kind="stable")
    if order is not None:  # sorting copies every image; the importers' rows come sorted already
        images, labels = images[order], labels[order]
    drawers = pa.nulls(len(labels), pa.string()) if drawers is None else pa.array(list(drawers), pa.string())
    pixels = np.ascontiguousarray(images).reshape(-1)
    meta = {"format": FORMAT, "name": metadata.get("name", ""), "image_shape": list(images.shape[1:]),
            "classes": len(class_names), "groups": _group_count(groups), "images": len(labels),
            "source": list(metadata.get("source", []))}
    schema = _schema(images.shape[1:]).with_metadata({METADATA_KEY: json.dumps(meta).encode()})
    return pa.table([
        pa.array(labels, pa.int32()),
        pa.array(class_names, pa.string()).take(labels),
        pa.array(groups, pa.string()).take(labels),
        drawers if order is None else drawers.take(order),
        pa.FixedSizeBinaryArray.from_buffers(schema.field("image").type, len(labels), [None, pa.py_buffer(pixels)]),
    ], schema=schema)


def _check(images: np.ndarray, labels: np.ndarray, class_names: list, groups: list, drawers) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or 0 in images.shape:
        raise DataError(f"images must be a non-empty (N, C, H, W) uint8 array, got {images.dtype} {images.shape}")
    if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels must be {len(images)} integers, got {labels.dtype} {labels.shape}")
    if len(groups) != len(class_names):
        raise DataError(f"{len(class_names)} class names but {len(groups)} class groups")
    if drawers is not None and len(drawers) != len(images):
        raise DataError(f"{len(images)} images but {len(drawers)} drawers")
    n = len(class_names)
    if labels.min() < 0 or labels.max() >= n or not np.all(np.bincount(labels, minlength=n)):
        raise DataError(f"labels must cover 0..{n - 1}, every class with at least one image")


def _write_atomically(table: pa.Table, path: Path) -> None:
    """Write a hidden temporary file beside ``path``, then rename it: readers see all or nothing."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, temporary, **WRITE_OPTIONS)
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())  # the rename must not reach the disk before the data does
        os.replace(temporary, path)
    except OSError as err:
        raise DataError(f"cannot write {path}: {_first_line(err)}") from None
    finally:
        temporary.unlink(missing_ok=True)  # already gone after a successful rename


def _size(path) -> int:
    fs, where = storage.resolve(path)
    return fs.get_file_info(where).size


def _read(path, columns: list[str]) -> tuple[pa.Table, dict]:
    """``columns`` of a dataset file and its metadata, the schema checked first."""
    fs, where = storage.resolve(path)  # a local file, or s3://, gs://, file:// ...
    try:
        if fs.get_file_info(where).type != pafs.FileType.File:
            raise DataError(f"dataset not found: {path}")
        with fs.open_input_file(where) as source, pq.ParquetFile(source, page_checksum_verification=True) as file:
            meta = _metadata(file.schema_arrow, path)
            table = file.read(columns)
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"{path} is not a readable Parquet file: {_first_line(err)}") from None
    if table.num_rows != meta["images"]:
        raise DataError(f"{path} has {table.num_rows} rows but its metadata says {meta['images']} images")
    nulls = [name for name in table.column_names if table[name].null_count]
    if nulls:
        raise DataError(f"{path} has missing values in column {nulls[0]}")
    return table, meta


def _metadata(schema: pa.Schema, path) -> dict:
    """The distmeta metadata of a file whose columns are the expected ones."""
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise DataError(f"{path} is not a distmeta dataset (no {METADATA_KEY.decode()} metadata; "
                        "make one with `distmeta data import`)")
    try:
        meta = json.loads(raw)
        version = meta["format"]
        meta["image_shape"] = [int(d) for d in meta["image_shape"]]
        meta["classes"], meta["images"] = int(meta["classes"]), int(meta["images"])
        meta.setdefault("name", ""), meta.setdefault("source", [])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataError(f"{path} has corrupt {METADATA_KEY.decode()} metadata: {_first_line(err)}") from None
    if version != FORMAT:
        raise DataError(f"{path} has unsupported dataset format {version!r} (this version reads {FORMAT})")
    expected = _schema(meta["image_shape"])
    if [(f.name, f.type) for f in schema] != [(f.name, f.type) for f in expected]:
        actual, wanted = (", ".join(f"{f.name}: {f.type}" for f in fields) for fields in (schema, expected))
        raise DataError(f"{path} has columns ({actual}), expected ({wanted})")
    return meta


def _labels(column: pa.ChunkedArray, classes: int, path) -> np.ndarray:
    """The label column as int64, checked to run 0, 0, ..., 1, ..., classes - 1 without gaps."""
    labels = column.to_numpy().astype(np.int64)
    steps = np.diff(labels)
    if len(labels) == 0 or labels[0] != 0 or labels[-1] != classes - 1 or np.any((steps != 0) & (steps != 1)):
        raise DataError(f"{path}: labels must be sorted and run 0..{classes - 1} without gaps")
    return labels


def _per_class(table: pa.Table, column: str, labels: np.ndarray, starts: np.ndarray, path) -> tuple:
    """A per-class column's value for each class, checked to be the same on every row of the class."""
    values = table[column].take(starts)
    if not table[column].equals(values.take(labels)):
        raise DataError(f"{path} has a class whose rows disagree on its {column}")
    return tuple(values.to_pylist())


def _images(column: pa.ChunkedArray, image_shape: list[int]) -> np.ndarray:
    """(N, C, H, W) uint8 over the fixed-size binary data: a view, copied only to join chunks."""
    array = column.combine_chunks()
    width = array.type.byte_width
    data = array.buffers()[1]  # buffers: validity, data; a slice starts ``offset`` rows in
    return np.frombuffer(data, np.uint8, len(array) * width, array.offset * width).reshape(len(array), *image_shape)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
