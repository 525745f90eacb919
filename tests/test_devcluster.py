"""`distmeta cluster up`: a head and two worker nodes (real `ray start`, token auth), an MLflow server and an S3
store on this machine; jobs submitted to it keep their results on the server and in the store."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pyarrow.fs as pafs
import pytest

from distmeta import storage
from distmeta.checkpoint import latest_checkpoint, load_checkpoint

pytestmark = pytest.mark.cluster  # real Ray processes; `pytest -m cluster` runs these alone


def distmeta(args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "distmeta.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env=env or os.environ)


def last_json(stdout: str):
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "AWS_"))}
    started = distmeta(["cluster", "--dir", str(folder), "up", "--nodes", "2", "--cpus-per-node", "2", "--json"], base)
    assert started.returncode == 0, started.stderr[-3000:]
    env = {**base, **last_json(distmeta(["cluster", "--dir", str(folder), "env", "--json"], base).stdout)}
    state = json.loads((folder / "cluster.json").read_text())
    yield folder, env, state
    stopped = distmeta(["cluster", "--dir", str(folder), "down"], base)
    assert stopped.returncode == 0, stopped.stderr
    time.sleep(1)
    leftovers = [pid for pid in os.listdir("/proc") if pid.isdigit() and _mentions(pid, state["scratch"], state["s3"])]
    assert not leftovers, "processes left behind"


def _mentions(pid: str, *needles: str) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return any(n in command for n in needles)


def s3(state, path):
    return f"s3://distmeta/{path}?endpoint_override={state['s3']}&scheme=http&region=us-east-1"


def test_status_shows_the_nodes_and_endpoints(cluster):
    folder, env, state = cluster
    status = last_json(distmeta(["cluster", "--dir", str(folder), "status", "--json"], env).stdout)
    assert all(status["processes"].values()) and set(status["processes"]) == {"head", "node-0", "node-1", "mlflow", "s3"}
    assert sorted(n.get("CPU", 0) for n in status["ray_nodes"]) == [0, 2, 2]  # the head keeps no CPU for work
    assert status["mlflow"].startswith("http://127.0.0.1:") and status["jobs"].startswith("http://127.0.0.1:")


def test_a_job_on_four_workers_over_two_nodes_keeps_its_results(cluster, monkeypatch):
    _, env, state = cluster
    output = s3(state, "runs/sine")
    proc = distmeta(["submit", "--wait", "--", "train", "--workers", "4", "--set", "steps=60", "--set", "val_every=30",
                     "--set", "eval_episodes=50", "--output", output], env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, env[key])
    checkpoint = load_checkpoint(output)
    assert checkpoint.step == 60 and latest_checkpoint(output).endswith(output.split("?")[1])
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])  # the cluster's tracking server
    run = mlflow.get_run(checkpoint.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["distmeta.worker_nodes"] == "2"
    assert "val_mse" in run.data.metrics and run.data.tags["distmeta.meta_model_uri"].startswith("models:/")
    evaluated = distmeta(["evaluate", "--checkpoint", output, "--episodes", "50", "--json"], env)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert last_json(evaluated.stdout)["mean"] == pytest.approx(run.data.metrics["test_mse"], rel=1e-6)


def test_a_few_shot_job_reads_its_dataset_from_s3(cluster, glyph_file, monkeypatch):
    _, env, state = cluster
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, env[key])
    dataset = s3(state, "data/glyphs.parquet")
    fs, path = storage.resolve(dataset)
    pafs.copy_files(str(glyph_file), path, destination_filesystem=fs)
    output = s3(state, "runs/glyphs")
    proc = distmeta(["submit", "--wait", "--", "train", "--workers", "2", "--set", "algorithm=protonet",
                     "--set", "task=fewshot", "--set", f"dataset={dataset}", "--set", "split_by=group",
                     "--set", "split_sizes=[2, 1, 1]", "--set", "shots=1", "--set", "queries=2", "--set", "filters=8",
                     "--set", "steps=4", "--set", "meta_batch_size=2", "--set", "val_every=0", "--set", "eval_episodes=10",
                     "--output", output], env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "5-way 1-shot" in proc.stdout or "held-out accuracy" in proc.stdout
    assert load_checkpoint(output).config.dataset == dataset


def test_cluster_commands_without_a_cluster_are_one_line(tmp_path):
    for command in (["status"], ["env"], ["down"]):
        proc = distmeta(["cluster", "--dir", str(tmp_path / "none"), *command])
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no cluster in" in proc.stderr
    bad = distmeta(["cluster", "--dir", str(tmp_path / "bad"), "up", "--nodes", "0"])
    assert bad.returncode == 2 and "--nodes >= 1" in bad.stderr and not (tmp_path / "bad").exists()
