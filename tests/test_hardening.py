"""Hostile and careless input: one line, exit 2, in seconds, and nothing written (no output, no MLflow store).

Each case runs the real command in-process in an empty working directory
whose MLflow store would be ./mlflow.db; the files it reads live elsewhere.
"""

import dataclasses
import math
import random
import shutil
import time

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from distmeta import MetaTrainer, resolve
from distmeta.checkpoint import latest_checkpoint
from distmeta.cli import main
from distmeta.config import FIELDS, ConfigError, from_dict
from conftest import glyph_images

STORE = ["--tracking-uri", "sqlite:///mlflow.db"]  # in the working directory: it must not appear


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, glyph_file):
    """Bad files and the good ones they are variations of."""
    root = tmp_path_factory.mktemp("inputs")
    sinusoid = MetaTrainer(resolve(overrides=["workers=0", "steps=2"]))
    sinusoid.save(root / "sinusoid")
    protonet = MetaTrainer(resolve(overrides=["workers=0", "algorithm=protonet", "task=fewshot", f"dataset={glyph_file}",
                                              "ways=3", "shots=1", "queries=5", "split_sizes=[30,5,5]"]))
    protonet.save(root / "protonet")
    for name, change in (("wrong_shape", "shape"), ("missing_key", "key"), ("state_list", "list")):
        shutil.copytree(root / "sinusoid", root / name)
        step = latest_checkpoint(root / name)
        optimizer = load_file(f"{step}/optimizer.safetensors")
        if change == "shape":
            optimizer["count"] = torch.zeros(3)
        elif change == "key":
            del optimizer["count"]
        else:
            open(f"{step}/state.json", "w").write("[1, 2]")
        save_file(optimizer, f"{step}/optimizer.safetensors")
    images, _ = glyph_images(classes=2, per_class=2)
    for folder in ("glyph_folder", "bomb"):
        for c in range(2):
            (root / folder / f"c{c}").mkdir(parents=True)
            for k in range(2):
                Image.fromarray(images[2 * c + k][0]).save(root / folder / f"c{c}" / f"{k}.png")
    Image.new("1", (30000, 30000)).save(root / "bomb" / "c0" / "huge.png", optimize=True)  # 110 KB, 900 megapixels
    (root / "empty_task.csv").write_text("x,y,task\n1,2,\n2,3,\n")
    (root / "same_names").mkdir()
    (root / "two_tasks").mkdir()
    for path in ("same_names/a.csv", "same_names/a.CSV", "two_tasks/a.csv", "two_tasks/b.csv"):
        (root / path).write_text("x,y\n1,2\n2,3\n")
    (root / "a_file").write_text("")
    corrupt = bytearray(glyph_file.read_bytes())
    middle = len(corrupt) // 2  # inside the images' column chunk
    corrupt[middle : middle + 50] = bytes(b ^ 0xFF for b in corrupt[middle : middle + 50])
    (root / "corrupt.parquet").write_bytes(corrupt)
    return root


BAD = [  # (command line, with {in} for the inputs folder; what the error line says)
    ("train --set seed=1000000000000000000000000", "seed must be <= 9223372036854775807"),
    ("train --set worker_gpus=.nan", "worker_gpus must be a finite number, got nan"),
    ("train --set meta_batch_size=1000000000", "meta_batch_size must be <= 100000"),
    ("train --set eval_episodes=1000000000", "eval_episodes must be <= 100000"),
    ("train --set inner_steps=1000000000", "inner_steps must be <= 10000"),
    ("train --set hidden=[1000000000]", "GiB of memory, this machine has"),
    ("train --set task=random_episodes --set ways=100000", "GiB of memory, this machine has"),
    ("train --address 127.0.0.1:9", "no Ray cluster at --address 127.0.0.1:9: "),
    ("train --address not_a_host", "no Ray cluster at --address not_a_host: not HOST:PORT"),
    ("train --tracking-uri http://127.0.0.1:9", "MLflow tracking store http://127.0.0.1:9: "),
    ("train --tracking-uri sqlite:///no/such/folder/mlflow.db", "no folder"),
    ("train --resume --output {in}/wrong_shape --workers 0", "'count' is [3], expected [] in its optimizer state"),
    ("train --resume --output {in}/missing_key --workers 0", "'count' is missing in its optimizer state"),
    ("evaluate --checkpoint {in}/state_list", "state.json holds a list, not an object"),
    ("evaluate --checkpoint {in}/sinusoid --episodes 1000000000", "--episodes must be <= 100000"),
    ("evaluate --checkpoint {in}/sinusoid --tracking-uri http://127.0.0.1:9", "MLflow tracking store"),
    ("generate --meta-model {in}/sinusoid --support {in}/empty_task.csv", "2 of 2 rows have no task"),
    ("generate --meta-model {in}/sinusoid --support {in}/same_names --name-per-task", "two tasks are named 'a'"),
    ("generate --meta-model {in}/sinusoid --support {in}/two_tasks --parallel 2 --address 127.0.0.1:9",
     "no Ray cluster at --address 127.0.0.1:9"),
    ("generate --meta-model {in}/protonet --support {in}/bomb", "huge.png has more than 33,554,432 pixels"),
    ("generate --meta-model {in}/sinusoid --support {in}/a_file --inner-steps 100000", "--inner-steps must be <= 10000"),
    ("data import folder {in}/bomb --output out.parquet", "huge.png has more than 33,554,432 pixels"),
    ("data import folder {in}/glyph_folder --output out.parquet --size 100000", "size must be 1 to 1024 pixels"),
    ("data import folder {in}/glyph_folder --output {in}/a_file/out.parquet", "a_file is a file"),
    ("data info {in}/corrupt.parquet", "CRC checksum verification failed"),
]


@pytest.mark.parametrize("line, message", BAD, ids=[line for line, _ in BAD])
def test_bad_input_is_one_line_exit_2_in_seconds_and_writes_nothing(line, message, inputs, tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = line.format(**{"in": inputs}).split()
    store = [] if args[0] == "data" or "--tracking-uri" in args else STORE
    files = lambda: {p: p.read_bytes() for p in inputs.rglob("*") if p.is_file()}
    before = files()
    started = time.monotonic()
    assert main([*args, *store]) == 2
    assert time.monotonic() - started < 30
    err = capsys.readouterr().err
    assert err.startswith("distmeta: error: ") and err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []  # no output, no ./mlflow.db
    assert files() == before  # nothing written or rewritten beside the inputs either (a resume's config.yaml)


WRONG_KINDS = [None, "", "x", "1e9", [], [1, "a"], {"a": 1}, -1, 0, 2**70, -(2**70), 1e300, -1e300, math.nan,
               math.inf, True, 0.5, "[1,2]"]


def test_every_config_key_refuses_wrong_values_in_one_line():
    """Random wrong values of every kind for every key: a Config or a ConfigError, never anything else."""
    rng = random.Random(0)
    for key in FIELDS:
        for value in WRONG_KINDS + [rng.choice(WRONG_KINDS) for _ in range(5)]:
            try:
                config = from_dict({key: value})
            except ConfigError as err:
                assert "\n" not in str(err)
                continue
            default = FIELDS[key].default
            assert isinstance(getattr(config, key), list if default is dataclasses.MISSING else type(default)), (key, value)
            assert not isinstance(getattr(config, key), float) or math.isfinite(getattr(config, key)), (key, value)
