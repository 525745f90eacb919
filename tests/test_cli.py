"""The command line end to end: real runs, a real MLflow store, real signals."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from distmeta import load_checkpoint
from distmeta.cli import main
from distmeta.models import MLP, apply_fn

TINY = ["--set", "steps=30", "--set", "val_every=10", "--set", "val_tasks=20", "--set", "eval_episodes=50"]


def run(args, tracking_uri, cwd=None, **kwargs):
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    return subprocess.run([sys.executable, "-m", "distmeta.cli", *args], env=env, cwd=cwd,
                           capture_output=True, text=True, timeout=300, **kwargs)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def runs(tracking_uri):
    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.search_runs(search_all_experiments=True, output_format="list")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tracking_uri):
    out = tmp_path_factory.mktemp("train") / "run"
    proc = run(["train", *TINY, "--output", str(out), "--json"], tracking_uri)
    assert proc.returncode == 0, proc.stderr
    return out, last_json(proc.stdout)


def test_train_json_contract_and_outputs(trained, tracking_uri):
    out, result = trained
    assert result["steps"] == 30 and result["output"] == str(out)
    assert result["tasks_per_second"] > 0
    assert result["validation"]["metric"] == "mse" and result["validation"]["value"] > 0
    assert set(result["test"]) == {"metric", "mean", "ci95", "episodes"} and result["test"]["episodes"] == 50
    assert (out / "config.yaml").exists()
    checkpoint = load_checkpoint(out)
    assert checkpoint.step == 30 and checkpoint.run_id == result["run_id"]


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(tmp_path, tracking_uri):
    proc = run(["train", *TINY, "--output", str(tmp_path / "run")], tracking_uri)
    assert proc.returncode == 0, proc.stderr
    assert "maml sinusoid: step 30/30 (100%), loss " in proc.stderr and "tasks/s" in proc.stderr
    assert "\r" not in proc.stderr  # no redrawn bar filling a log
    assert "validation at step 10: mse " in proc.stderr  # validation reaches the console
    assert "INFO" not in proc.stderr and "Downloading artifacts" not in proc.stderr  # and MLflow's chatter does not


def test_train_is_recorded_in_mlflow(trained, tracking_uri):
    out, result = trained
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    run_ = client.get_run(result["run_id"])
    assert run_.info.status == "FINISHED"
    assert run_.data.params["inner_lr"] == "0.01" and run_.data.params["steps"] == "30"
    history = client.get_metric_history(run_.info.run_id, "train_loss")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [10, 20, 30]
    assert len(client.get_metric_history(run_.info.run_id, "val_mse")) == 3  # steps 10, 20 and the final one
    assert run_.data.metrics["test_mse"] == pytest.approx(result["test"]["mean"])
    artifacts = {a.path for a in client.list_artifacts(run_.info.run_id)}
    assert {"learning_curve.png", "sinusoid_fits.png"} <= artifacts
    # The logged meta-model predicts with the checkpoint's meta-parameters.
    model = mlflow.pyfunc.load_model(run_.data.tags["distmeta.meta_model_uri"])
    x = [-3.0, 0.0, 2.5]
    predicted = model.predict(pd.DataFrame({"x": x}))["y"].to_numpy()
    params = load_checkpoint(out).params
    expected = apply_fn(MLP())(params, torch.tensor(x).unsqueeze(1)).squeeze(1).detach().numpy()
    assert predicted == pytest.approx(expected, abs=1e-6)


def test_evaluate_reproduces_the_training_result(trained, tracking_uri):
    out, result = trained
    proc = run(["evaluate", "--checkpoint", str(out), "--episodes", "50", "--json"], tracking_uri)
    assert proc.returncode == 0, proc.stderr
    summary = last_json(proc.stdout)
    assert summary["metric"] == "mse" and summary["episodes"] == 50
    assert summary["mean"] == pytest.approx(result["test"]["mean"], rel=1e-6)
    assert summary["ci95"] == pytest.approx(result["test"]["ci95"], rel=1e-6)
    # --steps sets the adaptation steps: zero steps scores the unadapted meta-model.
    zero = last_json(run(["evaluate", "--checkpoint", str(out), "--episodes", "50", "--inner-steps", "0", "--json"], tracking_uri).stdout)
    assert zero["inner_steps"] == 0 and zero["mean"] != pytest.approx(summary["mean"], rel=1e-3)


@pytest.mark.parametrize("workers", [0, 2], ids=["single process", "2 Ray workers"])
def test_resume_after_sigkill_gives_the_uninterrupted_parameters(tmp_path, tracking_uri, workers):
    args = ["train", "--workers", str(workers), "--set", "steps=200", "--set", "checkpoint_every=5",
            "--set", "val_every=0", "--set", "eval_episodes=20", "--set", "val_tasks=20"]
    whole = run([*args, "--output", str(tmp_path / "whole")], tracking_uri)
    assert whole.returncode == 0, whole.stderr
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    victim = subprocess.Popen([sys.executable, "-m", "distmeta.cli", *args, "--output", str(tmp_path / "cut")],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "cut" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.parent.name >= "step-00000050" for p in checkpoints.glob("step-*/state.json")):
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = load_checkpoint(tmp_path / "cut").step
    assert 50 <= killed_at < 200
    resumed = run([*args, "--output", str(tmp_path / "cut"), "--resume", "--json"], tracking_uri)
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "cut")
    assert a.step == b.step == 200
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k]), k
    for k in a.optimizer_state:
        assert torch.equal(a.optimizer_state[k], b.optimizer_state[k]), k
    # The resumed command finished the very MLflow run the killed one started, one point per logged step.
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    assert client.get_run(last_json(resumed.stdout)["run_id"]).info.status == "FINISHED"
    assert last_json(resumed.stdout)["run_id"] == b.run_id
    logged = sorted(m.step for m in client.get_metric_history(b.run_id, "train_loss"))
    assert logged == list(range(10, 201, 10))


def test_sigterm_ends_the_run_killed(tmp_path, tracking_uri):
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    proc = subprocess.Popen([sys.executable, "-m", "distmeta.cli", "train", "--set", "steps=100000",
                             "--set", "checkpoint_every=10", "--output", str(tmp_path / "run")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "run" / "checkpoints").glob("step-*")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    run_id = load_checkpoint(tmp_path / "run").run_id
    mlflow.set_tracking_uri(tracking_uri)
    assert mlflow.MlflowClient().get_run(run_id).info.status == "KILLED"


BAD_TRAIN = [
    (["--set", "stepz=3"], "unknown config key 'stepz' (did you mean 'steps'?)"),
    (["--set", "inner_lr=0"], "inner_lr must be > 0, got 0"),
    (["--set", "outer_lr=-0.1"], "outer_lr must be > 0, got -0.1"),
    (["--set", "steps=0"], "steps must be >= 1, got 0"),
    (["--set", "meta_batch_size=ten"], "meta_batch_size must be int, got 'ten'"),
    (["--set", "shots=999", "--set", "queries=10"], "shots + queries must be <= 1000"),
    (["--config", "missing.yaml"], "config file not found: missing.yaml"),
    (["--resume"], "--resume needs --output DIR"),
    (["--workers", "-1"], "workers must be >= 0, got -1"),
    (["--workers", "30"], "workers (30) must be <= meta_batch_size (25)"),
    (["--mode", "asink"], "mode must be one of sync, async; got 'asink' (did you mean 'async'?)"),
    (["--worker-gpus", "-0.5"], "worker_gpus must be >= 0, got -0.5"),
    (["--set", "worker_reduce=true", "--set", "aggregate=median"], "worker_reduce sums on the workers, so it needs aggregate=mean"),
    (["--worker-gpus", "1000"], "2 workers x 1000 GPU need 2000 GPUs; the Ray cluster has"),
    (["--worker-cpus", "64"], "2 workers x 64 CPU need 128 CPUs; the Ray cluster has"),
]


@pytest.mark.parametrize("args, message", BAD_TRAIN, ids=[" ".join(a) for a, _ in BAD_TRAIN])
def test_bad_train_input_is_one_line_exit_2_and_writes_nothing(args, message, tmp_path, tracking_uri, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    before = len(runs(tracking_uri))
    mlflow.set_experiment("distmeta")
    capsys.readouterr()  # drop MLflow's store- and experiment-creation log lines
    out = ["--output", "out"] if "--resume" not in args else []
    try:
        assert main(["train", *args, *out]) == 2
    finally:
        if "ray" in sys.modules:  # the resource checks start Ray in this process
            sys.modules["ray"].shutdown()
    err = capsys.readouterr().err
    assert err.startswith("distmeta: error: ") and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
    assert len(runs(tracking_uri)) == before


def test_bad_evaluate_input(tmp_path, trained, tracking_uri, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    before = len(runs(tracking_uri))
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    source = Path(load_checkpoint(trained[0]).path)
    for name in ("state.json", "optimizer.safetensors"):
        (corrupt / name).write_bytes((source / name).read_bytes())
    (corrupt / "params.safetensors").write_bytes((source / "params.safetensors").read_bytes()[:100])
    assert main(["evaluate", "--checkpoint", str(corrupt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"distmeta: error: corrupt checkpoint {corrupt}") and err.count("\n") == 1
    assert main(["evaluate", "--checkpoint", str(trained[0]), "--episodes", "0"]) == 2
    assert "--episodes must be >= 1" in capsys.readouterr().err
    assert len(runs(tracking_uri)) == before


def test_unreachable_services_are_one_line_errors(tmp_path, capsys, monkeypatch, tracking_uri):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--tracking-uri", "nosuchscheme://store", "--set", "steps=1", "--output", "out"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("distmeta: error: MLflow tracking store nosuchscheme://store") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
    (tmp_path / "a-file").write_text("")
    assert main(["train", "--output", str(tmp_path / "a-file" / "run"), "--workers", "0", "--tracking-uri", tracking_uri]) == 2
    assert "cannot write to --output" in capsys.readouterr().err


def test_existing_output_is_never_overwritten(trained, tracking_uri, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    out, _ = trained
    before = load_checkpoint(out).params
    assert main(["train", *TINY, "--output", str(out)]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    assert main(["train", *TINY, "--set", "inner_lr=0.5", "--output", str(out), "--resume"]) == 2
    assert "inner_lr is 0.5 but the checkpoint was trained with 0.01" in capsys.readouterr().err
    after = load_checkpoint(out).params
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_version_and_a_closed_pipe():
    version = subprocess.run([sys.executable, "-m", "distmeta.cli", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("distmeta ")
    # the reader exits before distmeta writes (`| head` after its lines): no error, exit 0
    piped = subprocess.run(f"{sys.executable} -m distmeta.cli train --help-config | true; echo ${{PIPESTATUS[0]}}",
                           shell=True, executable="/bin/bash", capture_output=True, text=True)
    assert piped.stderr == "" and piped.stdout.strip() == "0"


def test_errors_stay_one_readable_line(capsys):
    assert main(["train", "--set", "algorithm=" + "x" * 5000]) == 2
    err = capsys.readouterr().err
    assert err.startswith("distmeta: error: algorithm must be one of") and err.endswith("...\n")
    assert err.count("\n") == 1 and len(err) <= len("distmeta: error: ") + 501


def test_help_config_lists_keys(capsys):
    assert main(["train", "--help-config"]) == 0
    out = capsys.readouterr().out
    for key in ("algorithm", "steps", "meta_batch_size", "inner_lr", "outer_lr", "inner_steps",
                "test_inner_steps", "shots", "queries", "seed"):
        assert f"  {key} " in out
