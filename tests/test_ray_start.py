"""`distmeta train --address` against a real `ray start` cluster (head + one more node)."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

RAY = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_start_cluster():
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"],
                   check=True, capture_output=True, env={**env, "RAY_AUTH_MODE": "token"}, timeout=120)
    subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1"],
                   check=True, capture_output=True, env={**env, "RAY_AUTH_MODE": "token"}, timeout=120)
    yield f"127.0.0.1:{port}", env
    subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)


def test_train_joins_a_running_cluster(ray_start_cluster, tmp_path, tracking_uri):
    address, env = ray_start_cluster
    proc = subprocess.run(
        [sys.executable, "-m", "distmeta.cli", "train", "--address", address, "--workers", "2",
         "--set", "steps=30", "--set", "val_every=0", "--set", "eval_episodes=20", "--output", str(tmp_path / "run"), "--json"],
        capture_output=True, text=True, timeout=300, env={**env, "MLFLOW_TRACKING_URI": tracking_uri},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["steps"] == 30 and result["test"]["episodes"] == 20
    # It joined this cluster (rather than starting its own): its actors are in this cluster's GCS.
    probe = ("import ray; ray.init(address=%r, logging_level='ERROR'); "
             "print(*[a['ActorClassName'] for a in ray._private.state.actors().values()])" % address)
    listed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            env={**env, "RAY_AUTH_MODE": "token"})
    classes = listed.stdout.split()
    assert classes.count("MetaWorker") == 2 and classes.count("ParameterServer") == 1, listed.stderr[-1000:]
