"""Outputs, datasets and support sets on an S3-compatible store (moto's server on 127.0.0.1), through pyarrow.fs."""

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pyarrow.fs as pafs
import pytest
import torch

from distmeta import storage
from distmeta.checkpoint import latest_checkpoint, load_checkpoint
from distmeta.config import resolve
from distmeta.data import dataset_info
from distmeta.training.generate import generate
from distmeta.training.run import evaluate_checkpoint, train

MOTO = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
TINY = ["steps=20", "val_every=0", "eval_episodes=20", "workers=0", "checkpoint_every=10"]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """``s3://bucket/PATH?...`` URIs of a bucket on a real S3 server on this machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    query = f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    patch = pytest.MonkeyPatch()
    patch.setenv("AWS_ACCESS_KEY_ID", "test")
    patch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    deadline = time.time() + 30
    while True:
        try:
            fs, _ = pafs.FileSystem.from_uri(f"s3://bucket?{query}&allow_bucket_creation=true")
            fs.create_dir("bucket")
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    yield lambda path: f"s3://bucket/{path}?{query}"
    patch.undo()
    server.terminate()
    server.wait(timeout=30)


def upload(local: Path, uri: str) -> None:
    fs, path = storage.resolve(uri)
    pafs.copy_files(str(local), path, destination_filesystem=fs)


def test_locations_keep_their_query_string():
    uri = "s3://b/runs/a?endpoint_override=h:9000&scheme=http"
    assert storage.located(uri, "b/runs/a/checkpoints/step-00000010") == \
        "s3://b/runs/a/checkpoints/step-00000010?endpoint_override=h:9000&scheme=http"
    assert storage.join(uri, "config.yaml") == "s3://b/runs/a/config.yaml?endpoint_override=h:9000&scheme=http"
    assert storage.absolute(uri) == uri and storage.absolute("x").startswith("/")


def test_training_checkpoints_evaluates_and_resumes_on_s3(s3, tracking_uri):
    output = s3("runs/sine")
    result = train(resolve(overrides=TINY), output, tracking_uri=tracking_uri, progress=False)
    newest = latest_checkpoint(output)
    assert newest.endswith("/checkpoints/step-00000020?" + output.split("?")[1])  # same endpoint, not AWS
    assert result["checkpoint"] == newest and load_checkpoint(output).step == 20
    evaluated = evaluate_checkpoint(output, {"eval_episodes": 20}, tracking_uri)
    assert evaluated["mean"] == pytest.approx(result["test"]["mean"], rel=1e-6)
    resumed = train(resolve(overrides=[*TINY, "steps=30"]), output, resume=True, tracking_uri=tracking_uri, progress=False)
    assert resumed["steps"] == 30 and resumed["run_id"] == result["run_id"]
    mlflow.set_tracking_uri(tracking_uri)
    assert mlflow.get_run(result["run_id"]).data.tags["distmeta.meta_model_uri"].startswith("models:/")


def test_few_shot_training_reads_its_dataset_from_s3(s3, glyph_file, tracking_uri):
    dataset = s3("data/glyphs.parquet")
    upload(glyph_file, dataset)
    assert dataset_info(dataset)["classes"] == 40
    config = resolve(overrides=["algorithm=protonet", "task=fewshot", f"dataset={dataset}", "split_by=group",
                                "split_sizes=[2, 1, 1]", "shots=1", "queries=2", "filters=8", "steps=3", "val_tasks=5",
                                "eval_episodes=10", "workers=0", "meta_batch_size=2"])
    result = train(config, s3("runs/glyphs"), tracking_uri=tracking_uri, progress=False)
    assert result["steps"] == 3 and 0.0 <= result["test"]["mean"] <= 1.0
    assert load_checkpoint(s3("runs/glyphs")).config.dataset == dataset  # the URI, query included, kept as given


def test_generate_reads_a_support_set_from_s3(s3, tmp_path, tracking_uri):
    train(resolve(overrides=TINY), tmp_path / "sine", tracking_uri=tracking_uri, progress=False)
    local = tmp_path / "support.csv"
    local.write_text("x,y\n" + "\n".join(f"{x / 2},{torch.sin(torch.tensor(x / 2)).item()}" for x in range(-8, 8)))
    support = s3("support/support.csv")
    upload(local, support)
    result = generate(str(tmp_path / "sine"), support, name="sine-from-s3", tracking_uri=tracking_uri)
    [model] = result["models"]
    assert model["task"] == "support" and model["support_size"] == 16


def test_rl2_with_an_s3_output_logs_its_checkpoint(s3, tracking_uri):
    config = resolve(overrides=["algorithm=rl2", "task=bandit", "hidden=[8]", "steps=2", "meta_batch_size=4",
                                "val_every=0", "eval_episodes=10", "workers=0"])
    result = train(config, s3("runs/bandit"), tracking_uri=tracking_uri, progress=False)
    mlflow.set_tracking_uri(tracking_uri)
    files = {a.path for a in mlflow.MlflowClient().list_artifacts(result["run_id"], "meta_model_checkpoint")}
    assert {f.rsplit("/", 1)[-1] for f in files} == {"params.safetensors", "optimizer.safetensors", "state.json"}
