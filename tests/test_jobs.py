"""`distmeta submit` / `distmeta jobs` against a real `ray start --head` with token authentication on."""

import json
import os
import secrets
import shutil
import subprocess
import sys
import time

import mlflow
import pytest

from distmeta.checkpoint import latest_checkpoint, load_checkpoint

pytestmark = pytest.mark.cluster  # real Ray processes; `pytest -m cluster` runs these alone

RAY = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
TINY = ["--workers", "0", "--set", "val_every=0", "--set", "eval_episodes=20"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A head node with the dashboard (and so the Jobs API) on 127.0.0.1 and a token of its own."""
    home = tmp_path_factory.mktemp("home")  # no ~/.ray/auth_token of the machine's seen by anyone here
    token = secrets.token_hex(32)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))} | {"HOME": str(home)}
    env = {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    port, dashboard = free_port(), free_port()
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=true",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--disable-usage-stats"],
                   check=True, capture_output=True, env=env, timeout=180)
    yield {"gcs": f"127.0.0.1:{port}", "jobs": f"http://127.0.0.1:{dashboard}", "env": env, "anonymous": base}
    subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env, timeout=120)


def distmeta(args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "distmeta.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def last_json(stdout: str):
    return json.loads(stdout.strip().splitlines()[-1])


def test_a_submitted_training_job_succeeds_and_its_results_outlive_it(head, tmp_path, tracking_uri):
    out = tmp_path / "run"
    proc = distmeta(["submit", "--address", head["jobs"], "--wait", "--name", "tiny", "--",
                     "train", *TINY, "--set", "steps=30", "--output", str(out), "--tracking-uri", tracking_uri], head["env"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "held-out mse after 10 steps" in proc.stdout and "submitted job tiny" in proc.stderr
    assert load_checkpoint(out).step == 30
    mlflow.set_tracking_uri(tracking_uri)
    [run] = [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
             if r.data.tags.get("distmeta.output") == str(out)]
    assert run.info.status == "FINISHED"
    listed = last_json(distmeta(["jobs", "--address", head["jobs"], "list", "--json"], head["env"]).stdout)
    assert {"job_id": "tiny", "status": "SUCCEEDED"}.items() <= next(j for j in listed if j["job_id"] == "tiny").items()
    logs = distmeta(["jobs", "--address", head["jobs"], "logs", "tiny"], head["env"])
    assert "held-out mse" in logs.stdout


def test_a_job_refuses_outputs_in_its_temporary_working_directory(head, tracking_uri):
    proc = distmeta(["submit", "--address", head["jobs"], "--wait", "--", "train", *TINY, "--set", "steps=5",
                     "--tracking-uri", tracking_uri], head["env"])
    assert proc.returncode == 1  # the job FAILED
    assert "would be deleted with the job's working directory; pass --output s3://" in proc.stdout


def test_stopping_a_job_checkpoints_ends_its_run_killed_and_resume_continues(head, tmp_path, tracking_uri):
    out = tmp_path / "long"
    args = ["train", "--workers", "0", "--set", "steps=100000", "--set", "val_every=0", "--set", "checkpoint_every=200",
            "--set", "eval_episodes=20", "--output", str(out), "--tracking-uri", tracking_uri]
    submitted = distmeta(["submit", "--address", head["jobs"], "--name", "long", "--", *args], head["env"])
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    deadline = time.time() + 180
    while latest_checkpoint(out) is None and time.time() < deadline:
        time.sleep(0.5)
    periodic = load_checkpoint(out).step
    stopped = distmeta(["jobs", "--address", head["jobs"], "stop", "long"], head["env"])
    assert stopped.returncode == 0 and "stopping" in stopped.stdout
    while time.time() < deadline:
        status = last_json(distmeta(["jobs", "--address", head["jobs"], "status", "long", "--json"], head["env"]).stdout)
        if status["status"] not in ("PENDING", "RUNNING"):
            break
        time.sleep(0.5)
    assert status["status"] == "STOPPED"
    final = load_checkpoint(out)
    assert final.step > periodic  # written on SIGTERM, not only every 200 steps
    mlflow.set_tracking_uri(tracking_uri)
    assert mlflow.get_run(final.run_id).info.status == "KILLED"
    resumed = distmeta(["train", *args[1:], "--resume", "--set", f"steps={final.step + 20}", "--json"], head["env"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    result = last_json(resumed.stdout)
    assert result["steps"] == final.step + 20 and result["run_id"] == final.run_id


def test_clients_without_the_token_are_refused(head, tracking_uri):
    anonymous, wrong = head["anonymous"], {**head["anonymous"], "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}
    missing = distmeta(["jobs", "--address", head["jobs"], "list"], anonymous)
    assert missing.returncode == 2 and "Missing authentication token" in missing.stderr
    assert missing.stderr.count("\n") == 1
    forged = distmeta(["jobs", "--address", head["jobs"], "list"], wrong)
    assert forged.returncode == 2 and "Invalid authentication token" in forged.stderr
    # and at the cluster itself (a refusal takes Ray about 20 s of retries): no driver gets in without it
    train = distmeta(["train", *TINY, "--address", head["gcs"], "--workers", "1", "--tracking-uri", tracking_uri], wrong)
    # (Ray's core logs its retries above; distmeta's own word is the last line)
    assert train.returncode == 2 and "Failed to connect to Ray cluster" in train.stderr.strip().splitlines()[-1]


def test_bad_addresses_and_job_ids_are_one_line(head):
    dead = distmeta(["jobs", "--address", "http://127.0.0.1:9", "list"], head["env"])
    assert dead.returncode == 2 and "Failed to connect" in dead.stderr and dead.stderr.count("\n") == 1
    for command in (["status", "nosuchjob"], ["logs", "nosuchjob"], ["stop", "nosuchjob"]):
        proc = distmeta(["jobs", "--address", head["jobs"], *command], head["env"])
        assert proc.returncode == 2 and "nosuchjob does not exist" in proc.stderr and proc.stderr.count("\n") == 1
    empty = distmeta(["submit", "--address", head["jobs"], "--"], head["env"])
    assert empty.returncode == 2 and "give the distmeta command" in empty.stderr
