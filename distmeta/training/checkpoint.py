"""Checkpoints as safetensors plus JSON: nothing is ever unpickled.

    OUTPUT/config.yaml                 the resolved config of the run
    OUTPUT/checkpoints/step-00001000/  one folder per checkpoint:
        params.safetensors             meta-parameters by name
        optimizer.safetensors          outer optimizer state
        state.json                     step, MLflow run id, config

A folder is written under a temporary name and renamed into place, so a
checkpoint is either complete or absent, whenever the process dies.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from distmeta.config import Config, ConfigError, from_dict

FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or corrupt."""


class Checkpoint(NamedTuple):
    params: dict[str, torch.Tensor]
    optimizer_state: dict[str, torch.Tensor]
    step: int
    config: Config
    run_id: str | None
    path: Path


def save_checkpoint(output: Path, step: int, params, optimizer_state, config: Config, run_id=None, keep: int = 2) -> Path:
    """Write the checkpoint of ``step`` under ``output`` and prune old ones."""
    root = Path(output) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.contiguous() for k, v in params.items()}, tmp / "params.safetensors")
    save_file({k: v.contiguous() for k, v in optimizer_state.items()}, tmp / "optimizer.safetensors")
    state = {"format": FORMAT, "step": step, "run_id": run_id, "config": config.to_dict()}
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in _step_dirs(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def write_config(output: Path, config: Config) -> None:
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    tmp = output / ".config.yaml.tmp"
    tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    os.replace(tmp, output / "config.yaml")


def latest_checkpoint(output: Path) -> Path | None:
    dirs = _step_dirs(Path(output) / "checkpoints")
    return dirs[-1] if dirs else None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint folder, or the newest checkpoint of a run's output folder.

    >>> ckpt = load_checkpoint("runs/sinusoid")      # doctest: +SKIP
    >>> ckpt.params["0.weight"].shape, ckpt.step    # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not (path / "state.json").exists():
        newest = latest_checkpoint(path)
        if newest is None:
            raise CheckpointError(f"no checkpoint in {path} (expected state.json or checkpoints/step-*)")
        path = newest
    try:
        state = json.loads((path / "state.json").read_text())
        if state.get("format") != FORMAT:
            raise CheckpointError(f"checkpoint {path} has unsupported format {state.get('format')!r}")
        params = load_file(path / "params.safetensors")
        optimizer_state = load_file(path / "optimizer.safetensors")
        config = from_dict(state["config"])
        return Checkpoint(params, optimizer_state, int(state["step"]), config, state.get("run_id"), path)
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, TypeError, SafetensorError, ConfigError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"corrupt checkpoint {path}: {detail}") from None


def _step_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
