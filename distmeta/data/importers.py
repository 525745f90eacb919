"""Importers: image data sets as users download them, decoded once into Parquet.

    import_omniglot(["images_background.zip"], "data/omniglot.parquet")
    import_folder("flowers", "data/flowers.parquet")        # PATH/<class>/<image>, or PATH/<group>/<class>/<image>
    import_miniimagenet("mini-imagenet", "data/mini.parquet")  # Ravi & Larochelle's CSV splits and images/

Every image is decoded in full (a truncated file is an error, not a grey
patch), converted to greyscale or RGB and resized with Lanczos, the filter of
MAML's preprocessing. Rows come out in a fixed order, so the same input gives
the same file. Decoding Omniglot's background set takes about 3 s on one core,
which is why it runs in one process. Pillow is imported on first use.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import struct
import sys
import time
import zipfile
import zlib
from collections import Counter
from contextlib import ExitStack
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from distmeta.data.dataset import DataError, ImageDataset
from distmeta.data.parquet import write_dataset
from distmeta.resources import gib, machine_memory

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
MODES = {1: "L", 3: "RGB"}  # channels -> Pillow mode
SPLITS = ("train", "val", "test")  # mini-ImageNet's CSV files, in class order
# What Pillow and zipfile raise for a damaged image, depending on the format and where the damage is.
MAX_SIZE = 1024  # --size: pixels per side of the stored images
MAX_PIXELS = 2**25  # of a source image (5792 x 5792): above any photo's, far below a decompression bomb's
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, zipfile.BadZipFile)


class _Member(NamedTuple):
    """An image inside an open zip archive."""

    archive: zipfile.ZipFile
    member: str

    @property
    def name(self) -> str:
        return PurePosixPath(self.member).name

    def __str__(self) -> str:
        return f"{self.archive.filename}:{self.member}"


class _Class(NamedTuple):
    name: str
    group: str
    images: list  # Paths or _Members, in row order


def import_omniglot(paths, output, size: int = 28, force: bool = False, progress: bool = True) -> dict:
    """Import the official Omniglot zips, or their unpacked folders, into one file.

    Paths go in argument order, so background then evaluation puts the 964
    background classes first; within a path alphabets, characters and drawings
    are sorted. A class is named "Alphabet/characterNN", grouped by alphabet; a
    row's drawer is the ``NN`` of ``<id>_<NN>.png``. Images keep Omniglot's
    polarity (white background 255, dark strokes).

    >>> import_omniglot(["images_background.zip"], "data/omniglot.parquet")["classes"]  # doctest: +SKIP
    964
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    started = _start(output, size, force)
    with ExitStack() as archives:  # zip members are read while decoding
        classes = [c for path in paths for c in _omniglot_classes(Path(path), archives)]
        return _convert(classes, output, size, "L", progress, {"name": "omniglot", "source": list(map(str, paths))},
                        started, drawers=True)


def import_folder(path, output, size: int = 84, channels: int = 3, force: bool = False, progress: bool = True) -> dict:
    """Import an image folder: ``PATH/<class>/<image>`` or ``PATH/<group>/<class>/<image>``.

    The layout is detected. Groups are sorted, classes sorted within their
    group (a grouped class is named "group/class"), images sorted by file name.
    Images are squashed to ``size`` x ``size`` without cropping.
    """
    _check_channels(channels)
    started = _start(output, size, force)
    root, classes = _folder_classes(path)
    metadata = {"name": root.resolve().name, "source": [str(root)]}
    return _convert(classes, output, size, MODES[channels], progress, metadata, started)


def read_folder(path, size: int, channels: int, progress: bool = False) -> ImageDataset:
    """An image folder decoded in memory, as ``import_folder`` would write it (e.g. a new task's support set)."""
    _check_channels(channels)
    root, classes = _folder_classes(path)
    images, labels = _decode_classes(classes, size, MODES[channels], progress, root.name)
    return ImageDataset(images, labels, tuple(c.name for c in classes), tuple(c.group for c in classes), root.name,
                        str(root))


def _check_channels(channels: int) -> None:
    if channels not in MODES:
        raise DataError(f"channels must be 1 (greyscale) or 3 (RGB), got {channels}")


def _folder_classes(path) -> tuple[Path, list[_Class]]:
    """The classes of an image folder, in order, after checking its layout."""
    root = _folder(path)
    files = sorted(_image_files(root, IMAGE_EXTENSIONS))
    if not files:
        raise DataError(f"no images found under {root} ({', '.join(IMAGE_EXTENSIONS)})")
    depths = Counter(len(parts) for parts, _ in files)
    depth = 3 if depths[3] > depths[2] else 2  # the layout most images follow
    stray = next((file for parts, file in files if len(parts) != depth), None)
    if stray:
        raise DataError(f"{stray} is out of place: expected PATH/<class>/<image> or PATH/<group>/<class>/<image>, "
                        "every image at the same depth")
    return root, [_Class("/".join(key), key[0] if depth == 3 else "", [file for _, file in group])
                  for key, group in itertools.groupby(files, key=lambda f: f[0][:-1])]


def import_miniimagenet(path, output, size: int = 84, force: bool = False, progress: bool = True) -> dict:
    """Import mini-ImageNet as Ravi & Larochelle split it.

    ``PATH/train.csv``, ``val.csv``, ``test.csv`` (``filename,label``, the
    label a WordNet id) and the images in ``PATH/images/``. A class's group is
    its split, and classes run train, val, test (each CSV in order of first
    appearance), so a group split in file order is the standard 64/16/20.
    """
    started = _start(output, size, force)
    root = _folder(path)
    classes = [c for split in SPLITS for c in _split_classes(root, split)]
    return _convert(classes, output, size, "RGB", progress, {"name": "miniimagenet", "source": [str(root)]}, started)


def _start(output, size: int, force: bool) -> float:
    """Check what can be checked before any decoding; returns the start time."""
    output = Path(output)
    if not 1 <= size <= MAX_SIZE:
        raise DataError(f"size must be 1 to {MAX_SIZE} pixels, got {size}")
    if output.parent.exists() and not output.parent.is_dir():
        raise DataError(f"cannot write {output}: {output.parent} is a file")
    if output.is_dir():
        raise DataError(f"{output} is a folder; the output is a file such as data/omniglot.parquet")
    if output.exists() and not force:
        raise DataError(f"{output} already exists (use --force to overwrite)")
    return time.perf_counter()


def _folder(path) -> Path:
    root = Path(path)
    if not root.exists():
        raise DataError(f"not found: {root}")
    if not root.is_dir():
        raise DataError(f"not a folder: {root}")
    return root


def _is_image(relative: PurePosixPath | Path, extensions) -> bool:
    """An image by its name, outside hidden files and folders (and macOS's __MACOSX copies in zips)."""
    hidden = any(part.startswith(".") or part == "__MACOSX" for part in relative.parts)
    return relative.suffix.lower() in extensions and not hidden


def _image_files(root: Path, extensions) -> list[tuple[tuple, Path]]:
    """(path parts below ``root``, path) of every image file under ``root``."""
    files = ((p.relative_to(root), p) for p in root.rglob("*"))
    return [(relative.parts, p) for relative, p in files if _is_image(relative, extensions) and p.is_file()]


def _omniglot_classes(path: Path, archives: ExitStack) -> list[_Class]:
    """The characters under one zip or folder, in order."""
    if path.is_dir():
        files = _image_files(path, (".png",))
    elif path.exists():
        archive = archives.enter_context(_open_zip(path))
        files = [(PurePosixPath(n).parts, _Member(archive, n)) for n in archive.namelist()
                 if _is_image(PurePosixPath(n), (".png",))]
    else:
        raise DataError(f"not found: {path}")
    if not files:
        raise DataError(f"no PNG images found in {path}")
    stray = next((ref for parts, ref in files if len(parts) < 3), None)
    if stray:
        raise DataError(f"{stray} is not in the Omniglot layout <Alphabet>/characterNN/<id>_<drawer>.png")
    files.sort(key=lambda file: (file[0][-3:], file[0]))  # alphabet, character, drawing
    return [_Class("/".join(key[-2:]), key[-2], [ref for _, ref in group])
            for key, group in itertools.groupby(files, key=lambda file: file[0][:-1])]


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{path} is neither a folder nor a readable zip archive ({err})") from None


def _split_classes(root: Path, split: str) -> list[_Class]:
    """The classes one mini-ImageNet CSV lists, in order of first appearance."""
    listing = root / f"{split}.csv"
    try:
        with open(listing, newline="") as file:
            rows = [row for row in csv.reader(file) if row]
    except FileNotFoundError:
        raise DataError(f"missing {listing} (expected {', '.join(s + '.csv' for s in SPLITS)} and images/)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"cannot read {listing}: {err}") from None
    if not rows or [cell.strip() for cell in rows[0]] != ["filename", "label"]:
        raise DataError(f"{listing} does not start with the header filename,label")
    classes: dict[str, list[Path]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not all(cell.strip() for cell in row):
            raise DataError(f"{listing} line {line}: expected filename,label, got {','.join(row)!r}")
        image = root / "images" / row[0].strip()
        if not image.is_file():
            raise DataError(f"{listing} line {line}: image {image} not found")
        classes.setdefault(row[1].strip(), []).append(image)
    if not classes:
        raise DataError(f"{listing} lists no images")
    return [_Class(name, split, images) for name, images in classes.items()]


def _convert(classes: list[_Class], output, size: int, mode: str, progress: bool, metadata: dict, started: float,
             drawers: bool = False) -> dict:
    """Decode every class's images and write them; a short summary of the file."""
    seen = Counter(c.name for c in classes)
    twice = next((name for name, count in seen.items() if count > 1), None)
    if twice:
        raise DataError(f"class {twice} appears twice (the same data given twice, or in two splits)")
    needed = sum(len(c.images) for c in classes) * len(mode) * size * size
    if needed > machine_memory():
        raise DataError(f"{sum(len(c.images) for c in classes):,} images of {len(mode)}x{size}x{size} need {gib(needed)} "
                        f"of memory, this machine has {gib(machine_memory())}: choose a smaller --size")
    images, labels = _decode_classes(classes, size, mode, progress, metadata["name"])
    write_dataset(output, images, labels, [c.name for c in classes], [c.group for c in classes],
                  [_drawer(ref.name) for c in classes for ref in c.images] if drawers else None, metadata)
    return {"output": str(output), "images": len(images), "classes": len(classes),
            "groups": len({c.group for c in classes} - {""}), "image_shape": list(images.shape[1:]),
            "bytes": os.path.getsize(output), "seconds": time.perf_counter() - started}


def _drawer(file_name: str) -> str | None:
    """``07`` for Omniglot's ``0709_07.png``."""
    stem = PurePosixPath(file_name).stem
    return stem.rpartition("_")[2] if "_" in stem else None


def _decode_classes(classes: list[_Class], size: int, mode: str, progress: bool, name: str):
    """(images, labels) of every class's images, in row order."""
    labels = np.repeat(np.arange(len(classes)), [len(c.images) for c in classes])
    return _decode_all([ref for c in classes for ref in c.images], size, mode, progress, name), labels


def _decode_all(refs: list, size: int, mode: str, progress: bool, name: str) -> np.ndarray:
    images = np.empty((len(refs), len(mode), size, size), np.uint8)  # "L": 1 channel, "RGB": 3
    for row, ref in enumerate(tqdm(refs, desc=f"decoding {name}", unit="img", file=sys.stderr, disable=not progress)):
        images[row] = _decode(ref, size, mode)
    return images


def _decode(ref, size: int, mode: str) -> np.ndarray:
    """One image as (C, size, size) uint8."""
    from PIL import Image, UnidentifiedImageError

    try:
        source = io.BytesIO(ref.archive.read(ref.member)) if isinstance(ref, _Member) else ref
        with Image.open(source) as image:  # reads the header only
            if image.width * image.height > MAX_PIXELS:
                raise Image.DecompressionBombError
            image.load()  # decode it all now: Pillow is lazy and truncation would surface later, or never
            pixels = np.asarray(image.convert(mode).resize((size, size), Image.LANCZOS))
    except Image.DecompressionBombError:  # ours, or Pillow's own at open (beyond twice its limit)
        raise DataError(f"image {ref} has more than {MAX_PIXELS:,} pixels: refused before decoding "
                        "(a decompression bomb, or far larger than a training image)") from None
    except UnidentifiedImageError:
        raise DataError(f"corrupt image {ref}: not in a format Pillow can read") from None
    except DECODE_ERRORS as err:
        raise DataError(f"corrupt image {ref}: {str(err).strip() or type(err).__name__}") from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
