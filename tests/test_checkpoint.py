"""Checkpoints on pyarrow filesystems: round trips, URIs, pruning, corruption."""

import pytest
import torch

from distmeta.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from distmeta.config import resolve


@pytest.mark.parametrize("uri", [False, True], ids=["path", "file:// URI"])
def test_roundtrip_and_pruning(tmp_path, uri):
    output = f"file://{tmp_path}/run" if uri else str(tmp_path / "run")
    config = resolve(overrides=["steps=5"])
    params = {"b": torch.arange(3.0), "a": torch.ones(2, 2)}
    for step in (1, 2, 3):
        location = save_checkpoint(output, step, {k: v * step for k, v in params.items()},
                                   {"count": torch.tensor(step)}, config, run_id="abc", keep=2)
    assert location == latest_checkpoint(output) and location.endswith("checkpoints/step-00000003")
    assert location.startswith("file://") == uri
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-00000002", "step-00000003"]
    ckpt = load_checkpoint(output)
    assert ckpt.step == 3 and ckpt.run_id == "abc" and ckpt.config == config
    assert torch.equal(ckpt.params["b"], 3 * params["b"]) and ckpt.optimizer_state["count"].item() == 3


def test_truncated_state_is_reported(tmp_path):
    location = save_checkpoint(tmp_path, 1, {"a": torch.ones(1)}, {}, resolve())
    (tmp_path / "checkpoints" / "step-00000001" / "state.json").write_text('{"format": 1, "st')
    with pytest.raises(CheckpointError, match="corrupt checkpoint .*step-00000001"):
        load_checkpoint(location)
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        load_checkpoint(tmp_path / "checkpoints" / "step-00000001" / "..")  # the checkpoints folder itself
