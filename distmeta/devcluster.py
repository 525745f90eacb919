"""``distmeta cluster up | status | env | down``: a real multi-node Ray cluster on this machine, for development
and the tests, with what a real one has around it.

- a ``ray start --head`` (token authentication on, its own generated token;
  dashboard and Jobs API on 127.0.0.1; no CPUs, as a KubeRay head) and N
  ``ray start`` worker nodes, each with its own logical CPUs (and logical GPUs
  where asked, so GPU placement can be tried without a GPU);
- an MLflow tracking server (sqlite store, artifacts served) on 127.0.0.1;
- an S3-compatible object store on 127.0.0.1 (moto's server, from the test
  extra) with a bucket ``distmeta``.

Every process is started in a session of its own (``ray start --block`` keeps
its node's processes as children), its process group recorded in
``DIR/cluster.json``; ``down`` ends those groups, and nothing else.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from distmeta.config import ConfigError

STATE = "cluster.json"
BUCKET = "distmeta"
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "distmeta", "AWS_SECRET_ACCESS_KEY": "distmeta", "AWS_DEFAULT_REGION": "us-east-1"}


def up(folder, nodes: int = 2, cpus: float = 2, gpus: float = 0, timeout: float = 180) -> dict:
    """Start the cluster, the MLflow server and the S3 store; returns the state (endpoints, processes)."""
    folder = Path(folder).resolve()
    if (folder / STATE).exists() and _alive(json.loads((folder / STATE).read_text())):
        raise ConfigError(f"a cluster is already up in {folder}; `distmeta cluster down --dir {folder}` first")
    if nodes < 1 or cpus <= 0 or gpus < 0:
        raise ConfigError("a cluster needs --nodes >= 1, --cpus-per-node > 0 and --gpus-per-node >= 0")
    ray, mlflow, moto = _tool("ray"), _tool("mlflow"), _tool("moto_server")  # all there before anything starts
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "logs").mkdir(exist_ok=True)
    token = secrets.token_hex(32)
    # each node its own (short: socket paths are limited) temporary folder, as separate machines have: nodes
    # sharing one would unpack and delete each other's copies of a job's working directory
    scratch = tempfile.mkdtemp(prefix="dm-", dir="/tmp")
    port, dashboard, tracking, s3 = (_free_port() for _ in range(4))
    state = {"folder": str(folder), "token": token, "gcs": f"127.0.0.1:{port}", "jobs": f"http://127.0.0.1:{dashboard}",
             "mlflow": f"http://127.0.0.1:{tracking}", "s3": f"127.0.0.1:{s3}", "nodes": nodes, "scratch": scratch,
             "processes": {}}
    _write(folder, state)
    try:
        _start(state, "head", [ray, "start", "--head", "--block", f"--port={port}", "--num-cpus=0",
                               "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                               "--node-ip-address=127.0.0.1", "--disable-usage-stats", f"--temp-dir={scratch}/h"])
        _wait(lambda: _reachable("127.0.0.1", port), timeout, "the Ray head")
        for index in range(nodes):
            _start(state, f"node-{index}", [ray, "start", "--block", f"--address=127.0.0.1:{port}",
                                            f"--num-cpus={cpus:g}", f"--num-gpus={gpus:g}", "--node-ip-address=127.0.0.1",
                                            f"--temp-dir={scratch}/{index}"])
        _start(state, "mlflow", [mlflow, "server", "--host", "127.0.0.1", "--port", str(tracking),
                                 "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                                 "--artifacts-destination", str(folder / "mlartifacts"), "--workers", "1"])
        _start(state, "s3", [moto, "-H", "127.0.0.1", "-p", str(s3)])
        _wait(lambda: _http_ok(f"{state['mlflow']}/health"), timeout, "the MLflow server")
        _wait(lambda: _reachable("127.0.0.1", s3), timeout, "the S3 store")
        _make_bucket(state)
        _wait(lambda: len(_alive_nodes(state)) == nodes + 1, timeout, f"{nodes + 1} Ray nodes")
        _write(folder, state)
        return state
    except BaseException:
        down(folder)
        raise


def status(folder) -> dict:
    """The endpoints, each process and whether it is alive, and the Ray nodes with their resources."""
    state = _read(folder)
    processes = {name: _group_alive(pgid) for name, pgid in state["processes"].items()}
    nodes = _alive_nodes(state) if processes.get("head") else []
    return {**{k: state[k] for k in ("gcs", "jobs", "mlflow", "s3")}, "processes": processes, "ray_nodes": nodes,
            "s3_uri": s3_uri(state, "PATH")}


def environment(folder) -> dict:
    """What a shell (or a test) needs to use the cluster: ``eval "$(distmeta cluster env)"``."""
    state = _read(folder)
    return {"RAY_ADDRESS": state["gcs"], "RAY_API_SERVER_ADDRESS": state["jobs"], "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": state["token"], "MLFLOW_TRACKING_URI": state["mlflow"], **S3_CREDENTIALS}


def s3_uri(state: dict, path: str) -> str:
    return f"s3://{BUCKET}/{path}?endpoint_override={state['s3']}&scheme=http&region=us-east-1"


def down(folder, timeout: float = 10) -> list[str]:
    """End every process group the cluster started (SIGTERM, then SIGKILL); returns their names."""
    folder = Path(folder).resolve()
    if not (folder / STATE).exists():
        raise ConfigError(f"no cluster in {folder}")
    state = json.loads((folder / STATE).read_text())
    groups = state["processes"]
    for pgid in groups.values():
        _signal(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_group_alive(g) for g in groups.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pgid in groups.values():
        _signal(pgid, signal.SIGKILL)
    shutil.rmtree(state["scratch"], ignore_errors=True)
    (folder / STATE).unlink()
    return list(groups)


def _start(state: dict, name: str, command: list[str]) -> None:
    env = {**os.environ, **_process_env(state)}
    with open(Path(state["folder"]) / "logs" / f"{name}.log", "ab") as log:  # the child keeps its own copy
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)  # its own process group: down ends it and its children
    state["processes"][name] = process.pid
    _write(Path(state["folder"]), state)


def _process_env(state: dict) -> dict:
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": state["token"], **S3_CREDENTIALS}


def _alive_nodes(state: dict) -> list[dict]:
    """The cluster's live nodes and their resources, asked of the head (with the cluster's token)."""
    probe = ("import json, ray; ray.init(address=%r, logging_level='ERROR'); "
             "print(json.dumps([n['Resources'] for n in ray.nodes() if n['Alive']]))" % state["gcs"])
    env = {**os.environ, **_process_env(state)}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 and done.stdout.strip() else []


def _make_bucket(state: dict) -> None:
    import pyarrow.fs as pafs

    for key, value in S3_CREDENTIALS.items():
        os.environ.setdefault(key, value)
    fs, _ = pafs.FileSystem.from_uri(s3_uri(state, "") + "&allow_bucket_creation=true")
    fs.create_dir(BUCKET)


def _read(folder) -> dict:
    path = Path(folder).resolve() / STATE
    if not path.exists():
        raise ConfigError(f"no cluster in {path.parent} (`distmeta cluster up --dir {path.parent}` starts one)")
    return json.loads(path.read_text())


def _write(folder: Path, state: dict) -> None:
    path = folder / STATE
    path.write_text(json.dumps(state, indent=1))
    path.chmod(0o600)  # it holds the cluster's token


def _alive(state: dict) -> bool:
    return any(_group_alive(g) for g in state["processes"].values())


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _signal(pgid: int, sig) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait(ready, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise ConfigError(f"{what} did not come up within {timeout:g} s (see the logs in the cluster folder)")
        time.sleep(0.5)


def _reachable(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).with_name(name))
    if not Path(found).exists():
        hint = " (pip install -e '.[test]' installs moto)" if name == "moto_server" else ""
        raise ConfigError(f"{name} not found{hint}")
    return found
