"""`distmeta tune`: real Ray Tune runs of the real trainers, real MLflow, every bad input refused up front."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import ray
import yaml
from ray.util.state import list_actors

from distmeta.cli import main
from distmeta.config import ConfigError
from distmeta.tracking import child_runs
from distmeta.tuning import load_spec
from distmeta.tuning.tuner import tune_run
from conftest import start_local_ray

TINY = {"steps": 80, "val_every": 20, "val_tasks": 50, "eval_episodes": 20, "checkpoint_every": 0, "meta_batch_size": 8,
        "seed": 3}


def write_spec(folder: Path, name: str = "spec", **fields) -> Path:
    config = {**TINY, **fields.pop("config", {})}
    spec = {"config": config, "metric": "val_mse", "mode": "min", "samples": 1, **fields}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    start_local_ray(num_cpus=4, include_dashboard=True)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def asha(tmp_path_factory, tracking_uri):
    """Four trials with one Ray worker each, two at a time; the last has an absurd outer learning rate."""
    folder = tmp_path_factory.mktemp("asha")
    path = write_spec(folder, config={"workers": 1}, space={"outer_lr": {"grid": [0.003, 0.001, 0.01, 30.0]}},
                      max_concurrent=2, scheduler={"name": "asha", "grace_period": 20, "reduction_factor": 2})
    result = tune_run(load_spec(path), str(folder / "out"), tracking_uri=tracking_uri, progress=False)
    return folder, result


def test_asha_finishes_and_stops_the_hopeless_trial_early(asha):
    _, result = asha
    assert result["trials"] == 4
    rows = {row["outer_lr"]: row for row in result["rows"]}
    assert rows[30.0]["status"] == "stopped early" and rows[30.0]["steps"] < 80
    assert result["best_config"]["outer_lr"] != 30.0 and rows[result["best_config"]["outer_lr"]]["steps"] == 80
    assert result["value"] < rows[30.0]["val_mse"]
    assert result["registered_model"] == "tune-spec" and result["version"] == "1"


def test_one_nested_run_per_trial_none_left_running(asha, tracking_uri):
    _, result = asha
    mlflow.set_tracking_uri(tracking_uri)
    parent = mlflow.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.metrics["best_val_mse"] == result["value"]
    assert {"best.yaml", "trials.md", "tuning.png"} <= {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id)}
    children = child_runs(result["parent_run_id"])
    assert len(children) == 4 and len({c.data.tags["distmeta.tune_trial"] for c in children}) == 4
    assert {c.info.status for c in children} == {"FINISHED"}
    early = [c for c in children if c.data.tags["distmeta.stopped_early"] == "True"]
    assert 30.0 in [float(c.data.params["outer_lr"]) for c in early]
    best = mlflow.get_run(result["best_run_id"])
    assert best.data.metrics["val_mse"] == result["value"]  # the trial's own curve ends at what Tune saw


def test_trial_actors_run_inside_their_trials_placement_groups(asha):
    _, result = asha
    actors = list_actors(detail=True, limit=10000, raise_on_missing_output=False)
    groups: dict[str, list[str]] = {}
    for actor in actors:
        if actor.class_name in ("ParameterServer", "MetaWorker"):
            groups.setdefault(actor.placement_group_id, []).append(actor.class_name)
    assert None not in groups and len(groups) == 4  # every trial's actors in one group of its own
    table = ray.util.placement_group_table()
    for group, members in groups.items():
        assert sorted(members) == ["MetaWorker", "ParameterServer"]
        assert list(table[group]["bundles"].values()) == [{"CPU": 1.0}, {"CPU": 1.0}]  # a trial's: driver + worker
    trial_actors = {a.placement_group_id for a in actors if a.class_name == "ImplicitFunc"}
    assert trial_actors <= set(groups)  # (the state API may leave some dead actors out of its answer)
    # and trials did run concurrently (two at a time): some two trials' runs overlap in time
    spans = sorted((c.info.start_time, c.info.end_time) for c in child_runs(result["parent_run_id"]))
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))


def test_best_config_retrains_to_the_best_trials_validation(asha, tracking_uri, capsys):
    folder, result = asha
    best = Path(result["best_config_file"])
    assert yaml.safe_load(best.read_text())["outer_lr"] == result["best_config"]["outer_lr"]
    code = main(["train", "--config", str(best), "--output", str(folder / "retrain"), "--tracking-uri", tracking_uri,
                 "--json"])
    assert code == 0
    retrained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert retrained["validation"]["value"] == pytest.approx(result["value"], rel=1e-6)


def test_pbt_continues_from_another_trials_checkpoint_in_its_own_run(tmp_path, tracking_uri):
    path = write_spec(tmp_path, config={"workers": 0, "steps": 1000, "val_every": 100}, samples=1,
                      space={"outer_lr": {"grid": [0.0001, 0.01]}},
                      scheduler={"name": "pbt", "quantile_fraction": 0.5, "resample_probability": 0.0})
    result = tune_run(load_spec(path), str(tmp_path / "out"), tracking_uri=tracking_uri, progress=False)
    children = {c.info.run_id: c for c in child_runs(result["parent_run_id"])}
    assert len(children) == 2
    continued = [c for c in children.values() if "distmeta.continued_from_run" in c.data.tags]
    assert continued, "no trial exploited the other"
    for run in continued:
        assert run.data.tags["distmeta.continued_from_run"] in children
        assert run.data.tags["distmeta.continued_from_run"] != run.info.run_id  # it logs into its own run
        rates = {m.value for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "hp_outer_lr")}
        assert len(rates) > 1  # the learning rate was mutated
        steps = [m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_mse")]
        assert max(steps) == 1000


def test_fewshot_trials_share_the_dataset(tmp_path, tracking_uri, glyph_file):
    config = {"algorithm": "protonet", "task": "fewshot", "dataset": str(glyph_file), "split_by": "group",
              "split_sizes": [2, 1, 1], "ways": 5, "shots": 1, "queries": 2, "filters": 8, "steps": 4, "val_every": 2,
              "val_tasks": 10, "meta_batch_size": 2, "workers": 1}
    path = write_spec(tmp_path, config=config, metric="val_accuracy", mode="max", scheduler="fifo",
                      space={"outer_lr": {"grid": [0.001, 0.003]}})
    result = tune_run(load_spec(path), str(tmp_path / "out"), tracking_uri=tracking_uri, progress=False)
    assert result["trials"] == 2 and 0.0 <= result["value"] <= 1.0


def test_resume_after_killing_the_driver_does_not_rerun_finished_trials(tmp_path, tracking_uri):
    path = write_spec(tmp_path, config={"workers": 0, "steps": 600, "val_every": 200}, scheduler="fifo",
                      max_concurrent=1, space={"outer_lr": {"grid": [0.001, 0.002, 0.003]}})
    out = tmp_path / "out"
    command = [sys.executable, "-m", "distmeta.cli", "tune", str(path), "--output", str(out), "--tracking-uri",
               tracking_uri, "--json"]
    victim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mlflow.set_tracking_uri(tracking_uri)
    finished, deadline = [], time.time() + 240
    while not finished and time.time() < deadline and victim.poll() is None:
        time.sleep(0.2)
        if (out / "tuning.json").exists():
            parent = json.loads((out / "tuning.json").read_text())["parent_run_id"]
            finished = [c for c in child_runs(parent) if c.info.status == "FINISHED"]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert 1 <= len(finished) < 3, "killed too late to test resuming"
    first = finished[0]
    resumed = subprocess.run([sys.executable, "-m", "distmeta.cli", "tune", "--resume", "--output", str(out),
                              "--tracking-uri", tracking_uri, "--json"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert result["trials"] == 3 and result["parent_run_id"] == parent
    children = child_runs(parent)
    assert len(children) == 3 and {c.info.status for c in children} == {"FINISHED"}
    again = mlflow.get_run(first.info.run_id)
    assert again.info.end_time == first.info.end_time  # not reopened, not rerun
    history = mlflow.MlflowClient().get_metric_history(first.info.run_id, "val_mse")
    assert sorted(m.step for m in history) == [200, 400, 600]


BAD_SPECS = [
    ({"space": {"inner_lrr": {"uniform": [0.1, 1]}}}, "unknown config key 'inner_lrr'"),
    ({"space": {"inner_lr": {"uniform": [1, 0.1]}}}, "empty or inverted range"),
    ({"space": {"inner_lr": {"uniform": [0.1, 0.1]}}}, "empty or inverted range"),
    ({"space": {"inner_lr": {"loguniform": [0, 1]}}}, "positive lower bound"),
    ({"space": {"inner_lr": {"gaussian": [0, 1]}}}, "unknown distribution 'gaussian'"),
    ({"space": {"inner_lr": {"choice": []}}}, "non-empty list"),
    ({"space": {}}, "space is empty"),
    ({"space": {"inner_lr": {"uniform": [0.1, 1]}}, "scheduler": "hyperband"}, "unknown scheduler 'hyperband'"),
    ({"space": {"inner_lr": {"uniform": [0.1, 1]}}, "searcher": "bayesopt"}, "searcher must be one of"),
    ({"space": {"inner_lr": {"uniform": [0.1, 1]}}, "mode": "maximize"}, "mode must be one of min, max"),
    ({"space": {"meta_batch_size": {"choice": [1, 8]}}, "config": {"workers": 2}}, "workers (2) must be <= meta_batch_size (1)"),
    ({"space": {"inner_lr": {"uniform": [0.1, 1]}}, "config": {"inner_steps": 0}}, "base config: inner_steps must be >= 1"),
    ({"space": {"steps": {"choice": [10, 20]}}}, "steps cannot be searched"),
    ({"space": {"inner_steps": {"uniform": [1, 2.5]}}}, "integer key"),
    ({"space": {"inner_lr": {"uniform": [0.1, 1]}}, "samples": 0}, "samples must be an integer >= 1"),
]


@pytest.mark.parametrize("fields, message", BAD_SPECS, ids=[m for _, m in BAD_SPECS])
def test_bad_spec_is_one_clear_error(tmp_path, fields, message):
    with pytest.raises(ConfigError) as caught:
        load_spec(write_spec(tmp_path, **fields))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_bad_input_fails_before_anything_is_written(tmp_path, tracking_uri):
    space = {"outer_lr": {"uniform": [0.001, 0.01]}}
    cases = [
        (write_spec(tmp_path, "metric", space=space, metric="val_accuracy"), "metric 'val_accuracy' is never reported"),
        (write_spec(tmp_path, "gpus", space=space, config={"workers": 1, "worker_gpus": 1}), "needs 1 GPUs"),
        (write_spec(tmp_path, "cpus", space=space, config={"workers": 4, "meta_batch_size": 8}), "needs 5 CPUs"),
    ]
    for path, message in cases:
        with pytest.raises(ConfigError) as caught:
            tune_run(load_spec(path), str(tmp_path / "out"), tracking_uri=tracking_uri, progress=False)
        assert message in str(caught.value)
    with pytest.raises(ConfigError, match="--resume: no tuning run in"):
        tune_run(None, str(tmp_path / "out"), resume=True, tracking_uri=tracking_uri)
    assert not (tmp_path / "out").exists()


def test_tuning_never_selects_on_the_test_split(tmp_path, tracking_uri, glyph_file):
    config = {"algorithm": "protonet", "task": "fewshot", "dataset": str(glyph_file), "split_by": "group",
              "split_sizes": [3, 0, 1], "shots": 1, "queries": 2, "workers": 0}
    path = write_spec(tmp_path, config=config, metric="val_accuracy", mode="max", space={"outer_lr": {"uniform": [0.001, 0.01]}})
    with pytest.raises(ConfigError, match="no validation split"):
        tune_run(load_spec(path), str(tmp_path / "out"), tracking_uri=tracking_uri)
    assert not (tmp_path / "out").exists()


def test_optuna_missing_names_the_extra(tmp_path, tracking_uri, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if not installed
    path = write_spec(tmp_path, searcher="optuna", space={"outer_lr": {"loguniform": [0.001, 0.01]}})
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[optuna\]'"):
        tune_run(load_spec(path), str(tmp_path / "out"), tracking_uri=tracking_uri)


def test_cli_bad_spec_exits_2_with_one_line(tmp_path, tracking_uri):
    path = write_spec(tmp_path, space={"inner_lr": {"loguniform": [-1, 1]}})
    proc = subprocess.run([sys.executable, "-m", "distmeta.cli", "tune", str(path), "--output", str(tmp_path / "out"),
                           "--tracking-uri", tracking_uri], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "positive lower bound" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_shipped_tune_configs_are_valid():
    folder = Path(__file__).parent.parent / "tune_configs"
    shipped = sorted(folder.glob("*.yaml"))
    assert shipped
    for path in shipped:
        spec = load_spec(path)
        assert spec.space and path.read_text().startswith("# distmeta tune tune_configs/")
