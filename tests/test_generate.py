"""`distmeta generate` end to end: real training runs, a real MLflow registry, a real model server."""

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from distmeta import load_checkpoint
from distmeta.algorithms.base import adapt_to_support
from distmeta.cli import main
from distmeta.data import write_dataset
from distmeta.data.support import read_support
from distmeta.setup import adapt_support, learner, without_data
from distmeta.tasks import Sinusoid, Task
from distmeta.training.evaluation import adapted_metrics
from conftest import glyph_images

A, PHASE = 3.0, 1.2  # the new sine: y = A sin(x - PHASE)


def cli(capsys, *args) -> tuple[int, dict | None]:
    code = main(list(map(str, args)))
    out = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(out[-1]) if code == 0 and "--json" in args else None


def versions(tracking_uri) -> int:
    mlflow.set_tracking_uri(tracking_uri)
    return len(mlflow.MlflowClient().search_model_versions())


@pytest.fixture(autouse=True)
def store(tracking_uri, capsys):
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("distmeta")
    capsys.readouterr()


def train(tmp_path_factory, tracking_uri, *sets) -> tuple:
    """A trained run's output folder and its logged meta-model URI."""
    out = tmp_path_factory.mktemp("meta") / "run"
    assert main(["train", *[a for s in sets for a in ("--set", s)], "--output", str(out), "--tracking-uri",
                 tracking_uri, "--json"]) == 0
    run_id = load_checkpoint(out).run_id
    return out, mlflow.MlflowClient(tracking_uri).get_run(run_id).data.tags["distmeta.meta_model_uri"], run_id


@pytest.fixture(scope="module")
def sine_meta(tmp_path_factory, tracking_uri):
    return train(tmp_path_factory, tracking_uri, "steps=4000", "workers=0", "val_every=0", "eval_episodes=20")


@pytest.fixture(scope="module")
def glyph_meta(tmp_path_factory, tracking_uri, glyph_file):
    few_shot = ["task=fewshot", f"dataset={glyph_file}", "ways=5", "shots=1", "queries=5", "filters=16",
                "split_by=group", "split_sizes=[3, 0, 1]", "rotations=true", "workers=0", "val_every=0",
                "eval_episodes=20", "outer_lr=0.003", "meta_batch_size=4"]
    return {algorithm: train(tmp_path_factory, tracking_uri, *few_shot, f"algorithm={algorithm}", "steps=60",
                             "inner_lr=0.4", "test_inner_steps=3")
            for algorithm in ("protonet", "matchingnet", "fomaml", "metasgd")}


def sine(n: int, seed: int) -> pd.DataFrame:
    x = np.random.default_rng(seed).uniform(-5, 5, n)
    return pd.DataFrame({"x": x, "y": A * np.sin(x - PHASE)})


def test_a_generated_sine_model_fits_its_task(sine_meta, tmp_path, tracking_uri, capsys):
    out, meta_uri, run_id = sine_meta
    support = tmp_path / "sine.csv"
    sine(10, seed=1).to_csv(support, index=False)
    code, result = cli(capsys, "generate", "--meta-model", meta_uri, "--support", support, "--name", "sine",
                       "--tracking-uri", tracking_uri, "--json")
    assert code == 0 and result["version"] == "1" and result["model_uri"] == "models:/sine/1"
    new = sine(100, seed=2)
    generated = mlflow.pyfunc.load_model("models:/sine/1").predict(new[["x"]])["y"].to_numpy()
    before = mlflow.pyfunc.load_model(meta_uri).predict(new[["x"]])["y"].to_numpy()
    mse_after, mse_before = np.mean((generated - new.y) ** 2), np.mean((before - new.y) ** 2)
    assert mse_after < mse_before / 5  # measured: 0.11 against 1.12, a tenth (4000 meta-steps, 10 adaptation steps)
    # what the evaluation protocol computes for this task (support: the 10 points, query: the 100)
    checkpoint = load_checkpoint(out)
    config = checkpoint.config
    model, apply, algorithm = learner(config, without_data(config, (1,)))
    setup = type("Setup", (), {"tasks": Sinusoid(), "model": model, "algorithm": algorithm, "execution": "vmap"})
    as_tensor = lambda frame, column: torch.tensor(frame[column].to_numpy(), dtype=torch.float32).unsqueeze(1)
    task = Task(*(t.unsqueeze(0) for t in (as_tensor(pd.read_csv(support), "x"), as_tensor(pd.read_csv(support), "y"),
                                            as_tensor(new, "x"), as_tensor(new, "y"))))
    protocol = adapted_metrics(setup, checkpoint.params, task, config.test_inner_steps)["mse"].item()
    assert mse_after == pytest.approx(protocol, rel=1e-4)
    # lineage: the version knows its meta-model; the training run finds what was generated from it
    tags = mlflow.MlflowClient().get_model_version("sine", "1").tags
    assert tags["distmeta.source_run_id"] == run_id and tags["distmeta.algorithm"] == "maml"
    assert tags["distmeta.support_size"] == "10" and tags["distmeta.adaptation_steps"] == str(config.test_inner_steps)
    assert float(tags["distmeta.support_mse"]) < 0.5 and len(tags["distmeta.support_sha256"]) == 64


def test_registry_versions_aliases_and_lineage(sine_meta, tmp_path, tracking_uri, capsys):
    out, _, run_id = sine_meta
    for seed in (3, 4):
        sine(10, seed).to_csv(tmp_path / f"s{seed}.csv", index=False)
        assert cli(capsys, "generate", "--meta-model", out, "--support", tmp_path / f"s{seed}.csv", "--name", "twice",
                   "--steps", "5", "--tracking-uri", tracking_uri)[0] == 0
    client = mlflow.MlflowClient()
    listed = {str(v.version): v.tags for v in client.search_model_versions("name = 'twice'")}
    assert sorted(listed) == ["1", "2"] and listed["1"]["distmeta.support_sha256"] != listed["2"]["distmeta.support_sha256"]
    assert listed["2"]["distmeta.adaptation_steps"] == "5" and listed["2"]["distmeta.meta_model"] == str(out)
    client.set_registered_model_alias("twice", "champion", "2")
    x = pd.DataFrame({"x": [-1.0, 0.5, 2.0]})
    assert mlflow.pyfunc.load_model("models:/twice@champion").predict(x).equals(
        mlflow.pyfunc.load_model("models:/twice/2").predict(x))
    found = client.search_model_versions(f"tags.`distmeta.source_run_id` = '{run_id}'")
    assert {("twice", "1"), ("twice", "2")} <= {(v.name, str(v.version)) for v in found}


def write_task(root, classes, per_class, seed=0):
    """An image-folder support set: root/<class>/<n>.png from glyph classes ``classes``; returns the images used."""
    images, labels = glyph_images()
    chosen = []
    for c in classes:
        rows = np.flatnonzero(labels == c)[:per_class]
        for n, row in enumerate(rows):
            (root / f"char{c}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[row, 0]).save(root / f"char{c}" / f"{n}.png")
        chosen.append(images[np.flatnonzero(labels == c)[per_class:per_class + 3]])
    return np.concatenate(chosen)  # 3 unseen queries per class


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("algorithm, ways", [("protonet", 5), ("matchingnet", 5), ("fomaml", 5), ("metasgd", 5),
                                             ("fomaml", 3)])  # 3 classes on a 5-way head: the first 3 outputs
def test_a_generated_image_model_predicts_as_the_adapted_model(glyph_meta, algorithm, ways, tmp_path, tracking_uri,
                                                               capsys):
    out, meta_uri, _ = glyph_meta[algorithm]
    queries = write_task(tmp_path / "task", range(30, 30 + ways), per_class=1)  # test-split glyphs, 1 image per class
    # by its MLflow URI through an alias, as users of the registry would
    client = mlflow.MlflowClient()
    meta_name = f"meta-{algorithm}"
    registered = mlflow.register_model(meta_uri, meta_name)
    client.set_registered_model_alias(meta_name, "prod", registered.version)
    code, result = cli(capsys, "generate", "--meta-model", f"models:/{meta_name}@prod", "--support", tmp_path / "task",
                       "--name", f"glyphs-{algorithm}", "--tracking-uri", tracking_uri, "--json")
    assert code == 0 and result["support_size"] == ways
    assert client.get_model_version(result["name"], result["version"]).tags["distmeta.meta_model"].endswith(
        f"(models:/{meta_uri.rsplit('/', 1)[-1]})")  # the alias, and the logged model it pointed to
    frame = pd.DataFrame({"image": list((queries.reshape(len(queries), -1) / 255.0))})
    generated = mlflow.pyfunc.load_model(result["model_uri"])
    served = generated.predict(frame)
    # each image answered on its own (frozen batch norm): alone, or as PNG bytes, as in the batch
    alone = pd.concat([generated.predict(frame.iloc[[i]]) for i in range(len(frame))])
    assert list(alone["label"]) == list(served["label"])
    assert np.allclose(np.stack(alone["probabilities"]), np.stack(served["probabilities"]), atol=1e-5)
    as_files = generated.predict(pd.DataFrame({"image_bytes": [png(q[0]) for q in queries]}))
    assert np.allclose(np.stack(as_files["probabilities"]), np.stack(served["probabilities"]), atol=1e-6)
    # in-process: the algorithm's own adaptation and prediction
    checkpoint = load_checkpoint(out)
    config = checkpoint.config
    model, _, algo = learner(config, without_data(config, checkpoint.input_shape))
    support = torch.from_numpy(np.stack([np.asarray(Image.open(tmp_path / "task" / f"char{c}" / "0.png"))
                                         for c in range(30, 30 + ways)])).float().div(255).unsqueeze(1)
    task_params = adapt_to_support(algo, model, checkpoint.params, support, torch.arange(ways), config.test_inner_steps,
                                   "frozen")
    with torch.no_grad():
        logits = algo.predict(task_params, torch.from_numpy(queries).float().div(255))[:, :ways]
    expected = torch.softmax(logits, -1).numpy()
    assert np.allclose(np.stack(served["probabilities"]), expected, atol=1e-5)
    assert list(served["label"]) == [f"char{30 + i}" for i in expected.argmax(1)]
    assert np.mean(served["label"] == np.repeat([f"char{c}" for c in range(30, 30 + ways)], 3)) > 1.5 / ways  # chance 1/N
    # the image meta-model itself is a pyfunc too: N-way scores, or embeddings for metric-based learners
    before = mlflow.pyfunc.load_model(meta_uri).predict(frame)
    assert len(before) == len(frame) and set(before.columns) in ({"embedding"}, {"label", "probabilities"})


def test_many_tasks_are_adapted_on_ray_and_registered_per_task(glyph_meta, tmp_path, tracking_uri, capsys):
    out, _, _ = glyph_meta["protonet"]
    write_task(tmp_path / "tasks" / "first", range(30, 33), per_class=2)
    write_task(tmp_path / "tasks" / "second", range(35, 40), per_class=1)
    import ray
    from ray.util.state import list_tasks

    try:
        ray.init(num_cpus=2, logging_level="ERROR")
        code, result = cli(capsys, "generate", "--meta-model", out, "--support", tmp_path / "tasks", "--name", "batch",
                           "--name-per-task", "--parallel", "2", "--tracking-uri", tracking_uri, "--json")
        assert list_tasks(filters=[("name", "=", "adapt_support")])  # the tasks went through Ray
    finally:
        ray.shutdown()
    assert code == 0
    assert [(m["task"], m["name"], m["version"], m["support_size"]) for m in result["models"]] == [
        ("first", "batch-first", "1", 6), ("second", "batch-second", "1", 5)]
    checkpoint = load_checkpoint(out)
    support = read_support(tmp_path / "tasks", (1, 28, 28), classification=True)[0]
    task_params, fit = adapt_support(checkpoint.config, (1, 28, 28), checkpoint.params, support.x, support.y, 0)
    assert fit == pytest.approx(result["models"][0]["support_fit"])
    served = mlflow.pyfunc.load_model("models:/batch-first/1").predict(pd.DataFrame({"image": list(support.x.reshape(6, -1).double().numpy())}))
    assert list(served["label"]) == [support.classes[i] for i in support.y]  # ProtoNets fits its own support set


def test_a_checkpoint_without_its_input_shape_reads_it_from_the_training_data(glyph_meta, tmp_path, tracking_uri,
                                                                               capsys):
    source = Path(load_checkpoint(glyph_meta["protonet"][0]).path)
    old = tmp_path / "old"
    shutil.copytree(source, old)
    state = json.loads((old / "state.json").read_text())
    del state["input_shape"]  # as distmeta wrote checkpoints before it recorded the shape
    (old / "state.json").write_text(json.dumps(state))
    write_task(tmp_path / "task", range(30, 33), per_class=1)
    code, result = cli(capsys, "generate", "--meta-model", old, "--support", tmp_path / "task", "--name", "old",
                       "--tracking-uri", tracking_uri, "--json")
    assert code == 0 and result["support_fit"]["accuracy"] == 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_serves_a_generated_image_model_over_http(glyph_meta, tmp_path, tracking_uri, capsys):
    out, _, _ = glyph_meta["protonet"]
    queries = write_task(tmp_path / "task", range(30, 35), per_class=1)
    code, result = cli(capsys, "generate", "--meta-model", out, "--support", tmp_path / "task", "--name", "served",
                       "--tracking-uri", tracking_uri, "--json")
    assert code == 0
    port = free_port()
    # the server runs uvicorn from this environment's bin/, as in an activated virtualenv
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", result["model_uri"],
                               "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the model server did not start"
                time.sleep(0.5)
        files = [[base64.b64encode(png(q[0])).decode()] for q in queries]  # PNG files, as `curl` users send them
        body = json.dumps({"dataframe_split": {"columns": ["image_bytes"], "data": files}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body, {"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
    finally:
        server.terminate()
        server.wait(timeout=30)
    pixels = pd.DataFrame({"image": list(queries.reshape(len(queries), -1) / 255.0)})
    expected = mlflow.pyfunc.load_model(result["model_uri"]).predict(pixels)
    assert [row["label"] for row in answer["predictions"]] == list(expected["label"])
    assert np.allclose([row["probabilities"] for row in answer["predictions"]], np.stack(expected["probabilities"]),
                       atol=1e-6)


@pytest.mark.parametrize("support, meta, message", [
    ("nocol.csv", "sine", "has no column y; the meta-model needs x and y"),
    ("empty.csv", "sine", "the support set is empty"),
    ("nan.csv", "sine", "the support set has a non-finite value (NaN or inf)"),
    ("images", "sine", "no .csv or .parquet support files in"),
    ("sine.csv", "protonet", "the meta-model takes 1x28x28 images, not a table"),
    ("one", "protonet", "a classification support set needs at least 2 classes, got 1"),
    ("six", "fomaml", "has 6 classes; the fomaml meta-model has a 5-way output layer"),
    ("sine.csv", "models:/no-such-model/1", "meta-model models:/no-such-model/1 not found"),
    ("missing.csv", "sine", "support set not found"),
    ("nanx.csv", "sine", "the support set has a non-finite value (NaN or inf)"),
    ("small.parquet", "protonet", "holds 1x14x14 images; the meta-model takes 1x28x28"),
    ("emptydir", "protonet", "no images found under"),
    ("sine.csv", "runs:/0123456789abcdef/meta_model", "meta-model runs:/0123456789abcdef/meta_model not found"),
    ("sine.csv", "nowhere", "checkpoint not found"),
    ("sine.csv", "sine --name bad/name", "registered model name 'bad/name': use letters, digits"),
])
def test_bad_input_is_one_line_and_registers_nothing(sine_meta, glyph_meta, tmp_path, tracking_uri, capsys, support,
                                                      meta, message):
    sine(10, 1).to_csv(tmp_path / "sine.csv", index=False)
    sine(10, 1)[["x"]].to_csv(tmp_path / "nocol.csv", index=False)
    sine(0, 1).to_csv(tmp_path / "empty.csv", index=False)
    sine(10, 1).assign(y=lambda f: f.y.where(f.index != 3, np.nan)).to_csv(tmp_path / "nan.csv", index=False)
    write_task(tmp_path / "images", range(2), per_class=1)
    write_task(tmp_path / "one", range(1), per_class=2)
    write_task(tmp_path / "six", range(30, 36), per_class=1)
    sine(10, 1).assign(x=lambda f: f.x.where(f.index != 2, np.inf)).to_csv(tmp_path / "nanx.csv", index=False)
    write_dataset(tmp_path / "small.parquet", np.zeros((4, 1, 14, 14), np.uint8), [0, 0, 1, 1], ["a", "b"])
    (tmp_path / "emptydir" / "a").mkdir(parents=True)
    meta, *flags = meta.split()
    uri = {"sine": sine_meta[0], **{k: v[0] for k, v in glyph_meta.items()}}.get(meta, meta)
    before = versions(tracking_uri)
    code = main(["generate", "--meta-model", str(uri), "--support", str(tmp_path / support), *flags,
                 "--tracking-uri", tracking_uri])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("distmeta: error: ") and message in err[0], err
    assert versions(tracking_uri) == before


def test_a_generated_bmaml_model_returns_its_predictive_mean_and_std(tmp_path_factory, tmp_path, tracking_uri, capsys):
    out, meta_uri, run_id = train(tmp_path_factory, tracking_uri, "algorithm=bmaml", "task=noisy_sinusoid", "particles=3",
                                  "steps=200", "workers=0", "val_every=0", "eval_episodes=20")
    run = mlflow.MlflowClient().get_run(run_id)
    assert {"test_mse", "test_nll", "test_coverage95", "test_nll_ci95"} <= set(run.data.metrics)
    assert "sinusoid_fits.png" in {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    support = tmp_path / "sine.csv"
    sine(10, seed=1).to_csv(support, index=False)
    code, result = cli(capsys, "generate", "--meta-model", meta_uri, "--support", support, "--name", "bayes-sine",
                       "--tracking-uri", tracking_uri, "--json")
    assert code == 0 and {"mse", "nll", "coverage95"} <= set(result["support_fit"])
    new = sine(50, seed=2)
    served = mlflow.pyfunc.load_model(result["model_uri"]).predict(new[["x"]])
    # the same particles adapted in this process: the mixture's mean and sd
    from distmeta.tasks.predictive import moments

    checkpoint = load_checkpoint(out)
    x, y = (torch.tensor(sine(10, seed=1)[c].to_numpy(), dtype=torch.float32).unsqueeze(1) for c in "xy")
    task_params, _ = adapt_support(checkpoint.config, (1,), checkpoint.params, x, y, checkpoint.config.test_inner_steps)
    _, _, algorithm = learner(checkpoint.config, without_data(checkpoint.config, (1,)))
    mean, std = moments(algorithm.predict(task_params, torch.tensor(new[["x"]].to_numpy(), dtype=torch.float32)))
    assert served["y"].to_numpy() == pytest.approx(mean[:, 0].numpy(), abs=1e-5)
    assert served["std"].to_numpy() == pytest.approx(std[:, 0].numpy(), abs=1e-5)
    assert (served["std"] > 0).all()
    # and the meta-model itself (before adapting) answers with both columns too
    assert list(mlflow.pyfunc.load_model(meta_uri).predict(new[["x"]]).columns) == ["y", "std"]


def test_an_rl2_policy_is_not_generated_from_examples(tmp_path_factory, tmp_path, tracking_uri, capsys):
    out = tmp_path_factory.mktemp("rl2") / "run"
    assert main(["train", "--set", "algorithm=rl2", "--set", "task=bandit", "--set", "steps=3", "--set", "workers=0",
                 "--set", "hidden=[8]", "--set", "eval_episodes=20", "--set", "val_every=0", "--output", str(out),
                 "--tracking-uri", tracking_uri]) == 0
    capsys.readouterr()
    run_id = load_checkpoint(out).run_id
    metrics = mlflow.MlflowClient().get_run(run_id).data.metrics
    assert {"test_reward", "test_regret", "baseline_gittins_regret", "baseline_random_regret"} <= set(metrics)
    assert metrics["baseline_random_regret"] > metrics["baseline_gittins_regret"]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    assert {"trial_curves.png", "meta_model_checkpoint", "learning_curve.png"} <= artifacts
    sine(10, 1).to_csv(tmp_path / "sine.csv", index=False)
    before = versions(tracking_uri)
    code = main(["generate", "--meta-model", str(out), "--support", str(tmp_path / "sine.csv"), "--tracking-uri", tracking_uri])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is an RL^2 policy" in err[0]
    assert versions(tracking_uri) == before
