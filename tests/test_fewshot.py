"""Few-shot image classification end to end: learning, the meta-test protocol, bad input.

Images are generated glyphs (tests/conftest.py): chance is 1/N, and only
what was learned on the training alphabets carries over to the test ones.
"""

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image

from distmeta import TEST, MetaTrainer, load_checkpoint, resolve
from distmeta.data import write_dataset
from distmeta.cli import main
from conftest import GLYPH_NAMES, glyph_images

SHOTS = ["ways=5", "shots=1", "queries=5", "filters=16", "split_by=group", "split_sizes=[2, 1, 1]", "workers=0"]


@pytest.fixture(autouse=True)
def store(tracking_uri, capsys):
    """The MLflow store and experiment exist before a test reads the CLI's stderr."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("distmeta")
    capsys.readouterr()


def few_shot(glyph_file, *overrides):
    return resolve(overrides=["task=fewshot", f"dataset={glyph_file}", *SHOTS, *overrides])


@pytest.mark.parametrize("algorithm, extra", [
    ("protonet", ["outer_lr=0.003"]),
    ("matchingnet", ["outer_lr=0.001"]),
    ("fomaml", ["outer_lr=0.003", "inner_lr=0.4", "test_inner_steps=3"]),
    ("metasgd", ["outer_lr=0.003", "inner_lr=0.4", "test_inner_steps=1"]),
])
def test_meta_training_beats_chance_on_unseen_alphabets(glyph_file, algorithm, extra):
    config = few_shot(glyph_file, f"algorithm={algorithm}", "meta_batch_size=4", "threads=2", "rotations=true",
                      "split_sizes=[3, 0, 1]", *extra)
    trainer = MetaTrainer(config)
    before = trainer.evaluate(TEST, 200)
    for _ in range(100):
        trainer.meta_step()
    after = trainer.evaluate(TEST, 200)
    # measured: protonet 0.51 -> 0.90, matchingnet 0.47 -> 0.72, fomaml 0.57 -> 0.76, metasgd 0.55 -> 0.94 (chance 0.2)
    assert after.mean - after.ci95 > 0.6
    assert after.mean - after.ci95 > before.mean + before.ci95 + 0.1


def write_folder(root: Path) -> None:
    """The glyphs as an image folder: root/<alphabet>/<character>/<n>.png."""
    images, labels = glyph_images()
    for n, (image, label) in enumerate(zip(images, labels)):
        path = root / GLYPH_NAMES[label] / f"{n:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0]).save(path)


def test_import_train_evaluate_from_the_command_line(tmp_path, tracking_uri, capsys):
    write_folder(tmp_path / "glyphs")
    data = tmp_path / "glyphs.parquet"
    assert main(["data", "import", "folder", str(tmp_path / "glyphs"), "--output", str(data), "--size", "28",
                 "--channels", "1"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {data}: 480 images, 40 classes, 4 groups, 1x28x28")
    out = tmp_path / "run"
    args = ["train", "--set", "task=fewshot", "--set", f"dataset={data}", "--set", "algorithm=protonet",
            "--set", "steps=40", "--set", "val_every=20", "--set", "val_tasks=20", "--set", "eval_episodes=100",
            "--set", "rotations=true", "--set", "test_ways=3", *[a for s in SHOTS for a in ("--set", s)],
            "--output", str(out), "--tracking-uri", tracking_uri, "--json"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("held-out accuracy: ")  # no "after N steps": ProtoNets has no inner loop
    result = json.loads(lines[-1])
    assert result["test"]["episodes"] == 100
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(result["run_id"])}
    assert {"learning_curve.png", "test_episode.png"} <= artifacts
    for ways, shots in [(5, 1), (10, 5)]:
        assert main(["evaluate", "--checkpoint", str(out), "--ways", str(ways), "--shots", str(shots),
                     "--episodes", "60", "--tracking-uri", tracking_uri, "--json"]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        result = json.loads(lines[-1])
        assert lines[0].startswith(f"held-out {ways}-way {shots}-shot accuracy: ")
        assert lines[0].endswith("tasks; batch norm: each query batch's own statistics, the papers' protocol)")
        assert "inner_steps" not in result and result["batch_norm"] == "transductive"  # ProtoNets takes no steps
        assert (result["ways"], result["shots"], result["episodes"], result["dataset"]) == (ways, shots, 60, str(data))
        assert 1 / ways + 0.2 < result["mean"] <= 1
    # every class of another file: 12 new glyphs x 4 rotations = 48 classes, so 41-way is possible only there
    # (the run's own test split has 10 x 4 = 40)
    images, labels = glyph_images(classes=12, seed=1)
    other = tmp_path / "other.parquet"
    write_dataset(other, images, labels, [f"new{c}" for c in range(12)], metadata={"name": "other"})
    assert main(["evaluate", "--checkpoint", str(out), "--dataset", str(other), "--ways", "41", "--episodes", "20",
                 "--tracking-uri", tracking_uri, "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert (result["ways"], result["dataset"], result["rotations"]) == (41, str(other), True) and result["mean"] > 2 / 41
    assert "classes were each also rotated by 90, 180 and 270 degrees" in captured.err  # said, not silent
    assert main(["evaluate", "--checkpoint", str(out), "--dataset", str(other), "--no-rotations", "--ways", "12",
                 "--episodes", "20", "--batch-norm", "frozen", "--tracking-uri", tracking_uri, "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert (result["ways"], result["rotations"], result["batch_norm"]) == (12, False, "frozen") and result["mean"] > 2 / 12
    assert "rotated" not in captured.err
    assert main(["evaluate", "--checkpoint", str(out), "--ways", "41", "--tracking-uri", tracking_uri]) == 2
    assert "41-way episodes need 41 classes; the test split of" in capsys.readouterr().err


def test_a_time_budget_stops_training_and_still_tests_and_saves(glyph_file, tmp_path, tracking_uri, capsys):
    out = tmp_path / "run"
    sets = ["task=fewshot", f"dataset={glyph_file}", *SHOTS, "algorithm=protonet", "steps=1000000", "minutes=0.02",
            "split_sizes=[3, 0, 1]", "eval_episodes=20", "val_every=5"]  # no validation classes: validation is skipped
    assert main(["train", *[a for s in sets for a in ("--set", s)], "--output", str(out), "--tracking-uri", tracking_uri,
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 < result["steps"] < 1000000 and result["seconds"] < 60
    assert result["validation"] is None and result["test"]["episodes"] == 20
    assert load_checkpoint(out).step == result["steps"]


@pytest.mark.parametrize("overrides, flags, message", [
    (["ways=11"], [], "11-way episodes need 11 classes; the validation split of {data} has 10"),
    (["queries=12"], [], "class 'g0/c00' of {data} has 12 images, fewer than shots + queries = 13"),
    (["split_sizes=[3, 1, 1]"], [], "split_sizes [3, 1, 1] need 5 groups; {data} has 4"),
    (["dataset={missing}"], [], "{missing}"),
    (["algorithm=maml", "test_ways=20"], [], "maml has a 5-way output layer, so test_ways must be 5"),
    (["test_dataset={small}"], [], "test_dataset {small} holds 1x14x14 images; the model takes 1x28x28"),
])
def test_bad_few_shot_runs_are_one_line_and_leave_nothing(glyph_file, tmp_path, tracking_uri, capsys, overrides, flags,
                                                          message):
    missing, small = tmp_path / "missing.parquet", tmp_path / "small.parquet"
    write_dataset(small, np.zeros((24, 1, 14, 14), np.uint8), np.repeat(np.arange(6), 4), [str(c) for c in range(6)])
    names = {"data": glyph_file, "missing": missing, "small": small}
    sets = [a for s in ["task=fewshot", f"dataset={glyph_file}", *SHOTS, *overrides] for a in ("--set", s.format(**names))]
    recorded = len(mlflow.search_runs(search_all_experiments=True, output_format="list"))
    code = main(["train", *sets, *flags, "--output", str(tmp_path / "run"), "--tracking-uri", tracking_uri])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("distmeta: error: ")
    assert message.format(**names) in err[0]
    assert not (tmp_path / "run").exists()
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == recorded


def test_evaluate_rejects_a_head_of_the_wrong_size(glyph_file, tmp_path, tracking_uri, capsys):
    out = tmp_path / "maml"
    sets = [a for s in ["task=fewshot", f"dataset={glyph_file}", *SHOTS, "algorithm=fomaml", "steps=2", "val_every=0",
                        "eval_episodes=10", "val_tasks=10"] for a in ("--set", s)]
    assert main(["train", *sets, "--output", str(out), "--tracking-uri", tracking_uri]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out), "--ways", "20", "--tracking-uri", tracking_uri]) == 2
    assert capsys.readouterr().err.strip() == ("distmeta: error: fomaml has a 5-way output layer, so test_ways must be 5 "
                                               "(train a 20-way model for 20-way tests)")
