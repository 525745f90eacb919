"""Checkpoints as safetensors plus JSON, on any filesystem pyarrow knows.

    OUTPUT/config.yaml                 the resolved config of the run
    OUTPUT/checkpoints/step-00001000/  one folder per checkpoint:
        params.safetensors             meta-parameters by name
        optimizer.safetensors          outer optimizer state
        state.json                     step, MLflow run id, config

OUTPUT is a local folder or a URI (``storage.py``: ``file://``, ``s3://``,
``gs://``, ``hdfs://``, options in the query string). Nothing is ever
unpickled. ``state.json`` is written last, through a temporary file moved
into place: a folder without it is an unfinished checkpoint, ignored and
overwritten, so a checkpoint is complete or absent however the writer dies
(single-file moves work on object stores too; directory moves do not).
"""

from __future__ import annotations

import json
import posixpath
from typing import NamedTuple

import pyarrow.fs as pafs
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from distmeta.config import Config, ConfigError, from_dict
from distmeta.storage import located, resolve

FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or corrupt."""


class Checkpoint(NamedTuple):
    params: dict[str, torch.Tensor]
    optimizer_state: dict[str, torch.Tensor]
    step: int
    config: Config
    run_id: str | None
    path: str
    input_shape: tuple | None = None  # of one example, e.g. (1, 28, 28): what a model for new data must take


def save_checkpoint(output, step: int, params, optimizer_state, config: Config, run_id=None, keep: int = 2,
                    input_shape=None) -> str:
    """Write the checkpoint of ``step`` under ``output``, prune old ones; returns its location."""
    fs, root = resolve(output)
    root = posixpath.join(root, "checkpoints")
    final = posixpath.join(root, f"step-{step:08d}")
    if _complete(fs, final):  # this step is saved already, and a step's state never changes
        return located(output, final)
    fs.create_dir(final, recursive=True)
    state = {"format": FORMAT, "step": step, "run_id": run_id, "config": config.to_dict(),
             "input_shape": list(input_shape) if input_shape else None}
    _write(fs, final, "params.safetensors", save_tensors({k: v.detach().cpu().contiguous() for k, v in params.items()}))
    _write(fs, final, "optimizer.safetensors", save_tensors({k: v.cpu().contiguous() for k, v in optimizer_state.items()}))
    _write(fs, final, ".state.json.tmp", json.dumps(state, indent=1).encode())
    fs.move(posixpath.join(final, ".state.json.tmp"), posixpath.join(final, "state.json"))
    for old in _step_dirs(fs, root)[:-keep]:
        fs.delete_dir(old)
    return located(output, final)


def write_config(output, config: Config) -> None:
    fs, root = resolve(output)
    fs.create_dir(root, recursive=True)
    _write(fs, root, ".config.yaml.tmp", yaml.safe_dump(config.to_dict(), sort_keys=False).encode())
    fs.move(posixpath.join(root, ".config.yaml.tmp"), posixpath.join(root, "config.yaml"))


def latest_checkpoint(output) -> str | None:
    """The newest checkpoint folder under a run's output, or None."""
    fs, root = resolve(output)
    dirs = _step_dirs(fs, posixpath.join(root, "checkpoints"))
    return located(output, dirs[-1]) if dirs else None


def load_checkpoint(path) -> Checkpoint:
    """Load a checkpoint folder, or the newest checkpoint of a run's output folder.

    >>> ckpt = load_checkpoint("runs/sinusoid")      # doctest: +SKIP
    >>> ckpt.params["0.weight"].shape, ckpt.step    # doctest: +SKIP
    """
    fs, root = resolve(path)
    if fs.get_file_info(root).type == pafs.FileType.NotFound:
        raise CheckpointError(f"checkpoint not found: {path}")
    if fs.get_file_info(posixpath.join(root, "state.json")).type == pafs.FileType.NotFound:
        newest = latest_checkpoint(path)
        if newest is None:
            raise CheckpointError(f"no checkpoint in {path} (expected state.json or checkpoints/step-*)")
        return load_checkpoint(newest)
    try:
        state = json.loads(_read(fs, root, "state.json"))
        if not isinstance(state, dict):
            raise CheckpointError(f"corrupt checkpoint {path}: state.json holds a {type(state).__name__}, not an object")
        if state.get("format") != FORMAT:
            raise CheckpointError(f"checkpoint {path} has unsupported format {state.get('format')!r}")
        params = load_tensors(_read(fs, root, "params.safetensors"))
        optimizer_state = load_tensors(_read(fs, root, "optimizer.safetensors"))
        config = from_dict(state["config"])
        shape = tuple(state["input_shape"]) if state.get("input_shape") else None
        return Checkpoint(params, optimizer_state, int(state["step"]), config, state.get("run_id"), str(path), shape)
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, TypeError, SafetensorError, ConfigError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"corrupt checkpoint {path}: {detail}") from None


def _write(fs, folder: str, name: str, data: bytes) -> None:
    with fs.open_output_stream(posixpath.join(folder, name)) as stream:
        stream.write(data)


def _read(fs, folder: str, name: str) -> bytes:
    with fs.open_input_stream(posixpath.join(folder, name)) as stream:
        return stream.read()


def _complete(fs, folder: str) -> bool:
    return fs.get_file_info(posixpath.join(folder, "state.json")).type == pafs.FileType.File


def _step_dirs(fs, root: str) -> list[str]:
    """Complete checkpoint folders under ``root``, oldest first."""
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    dirs = (i.path for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("step-"))
    return sorted(d for d in dirs if _complete(fs, d))
