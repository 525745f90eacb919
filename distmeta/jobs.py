"""Ray Jobs: ``distmeta submit`` runs any distmeta command on a cluster, ``distmeta jobs`` follows it.

The job's working directory is this project (code and configs; run outputs,
MLflow stores, datasets, virtual environments and .git stay behind), and its
environment carries the MLflow tracking URI. Inside the job, ``distmeta
train`` refuses to write into that temporary directory (``training.run.in_ray_job``).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from pathlib import Path

from distmeta.config import ConfigError

EXCLUDES = ["runs/", "mlruns/", "mlartifacts/", "mlflow.db", "*.parquet", "data/", ".git/", ".venv/", "venv/",
            "__pycache__/", "*.egg-info/", ".pytest_cache/"]
EXIT_CODES = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 130}


def client(address: str | None = None):
    """A Jobs client for ``address`` (else $RAY_API_SERVER_ADDRESS, $RAY_ADDRESS), or one line saying why not."""
    from ray.job_submission import JobSubmissionClient

    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    try:
        return JobSubmissionClient(address)
    except Exception as err:  # ConnectionError, AuthenticationError, ValueError: all mean "cannot use it"
        raise ConfigError(f"Ray Jobs API at {address or 'the local cluster'}: {_line(err)}") from None


def submit(command: list[str], address: str | None = None, name: str | None = None, pip: list[str] = (),
           env: dict | None = None, working_dir: str | None = None) -> tuple[str, str]:
    """Submit ``distmeta COMMAND...`` as a Ray job; returns (job id, dashboard URL)."""
    if not command:
        raise ConfigError("give the distmeta command to run after --, e.g. distmeta submit -- train --config FILE")
    jobs = client(address)
    folder = Path(working_dir or os.getcwd()).resolve()
    if not folder.is_dir():
        raise ConfigError(f"--working-dir {folder} is not a folder")
    runtime_env = {"working_dir": str(folder), "excludes": EXCLUDES, "env_vars": _job_env(env)}
    if pip:
        runtime_env["pip"] = list(pip)
    entrypoint = shlex.join(["python", "-m", "distmeta.cli", *command])
    try:
        job_id = jobs.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=name)
    except Exception as err:
        raise ConfigError(f"job not submitted: {_line(err)}") from None
    return job_id, f"{jobs.get_address()}/#/jobs/{job_id}"


def _job_env(extra: dict | None) -> dict:
    """What the job needs from here: the MLflow tracking URI, the auth mode, and ``extra``."""
    env = {key: os.environ[key] for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME",
                                            "MLFLOW_TRACKING_PASSWORD") if key in os.environ}
    return {**env, **(extra or {})}


def wait(job_id: str, address: str | None = None, out=sys.stdout) -> int:
    """Stream the job's logs until it ends; its exit code (0 SUCCEEDED, 1 FAILED, 130 STOPPED)."""
    jobs = client(address)
    _info(jobs, job_id)  # one line for an unknown id

    async def follow():
        async for lines in jobs.tail_job_logs(job_id):
            out.write(lines)
            out.flush()

    asyncio.run(follow())
    return EXIT_CODES.get(str(jobs.get_job_status(job_id)), 1)


def list_jobs(address: str | None = None) -> list[dict]:
    return [{"job_id": j.submission_id or j.job_id, "status": str(j.status), "entrypoint": j.entrypoint,
             "start_time": j.start_time, "end_time": j.end_time, "message": j.message}
            for j in client(address).list_jobs()]


def status(job_id: str, address: str | None = None) -> dict:
    info = _info(client(address), job_id)
    return {"job_id": job_id, "status": str(info.status), "entrypoint": info.entrypoint, "message": info.message,
            "start_time": info.start_time, "end_time": info.end_time}


def logs(job_id: str, address: str | None = None, follow: bool = False, out=sys.stdout) -> int:
    if follow:
        return wait(job_id, address, out)
    jobs = client(address)
    _info(jobs, job_id)  # one line for an unknown id
    out.write(jobs.get_job_logs(job_id))
    return 0


def stop(job_id: str, address: str | None = None) -> bool:
    """Ask the job to stop (SIGTERM, then SIGKILL after Ray's grace period); False if it had ended already."""
    jobs = client(address)
    _info(jobs, job_id)  # one line for an unknown id
    return jobs.stop_job(job_id)


def _info(jobs, job_id: str):
    try:
        return jobs.get_job_info(job_id)
    except Exception as err:
        raise ConfigError(f"job {job_id}: {_line(err)}") from None


def _line(err: Exception) -> str:
    text = str(err).strip()
    for line in text.splitlines():  # the most telling line of Ray's multi-line errors
        if "does not exist" in line or "auth" in line.lower() or "connect" in line.lower():
            return line.strip()[:300]
    return (text.splitlines()[0] if text else type(err).__name__)[:300]
