"""cluster/: the cloud launcher configs against Ray's own schema, the KubeRay manifests against the fields KubeRay
requires, token authentication everywhere, and the Ray version that pyproject pins."""

import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LAUNCHER = ["aws.yaml", "gcp.yaml"]
KUBERAY = ["kuberay-raycluster.yaml", "kuberay-rayjob.yaml"]


def pinned_ray() -> str:
    [version] = re.findall(r'"ray\[[^\]]*\]==([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    return version


def test_the_pinned_ray_is_the_installed_one():
    assert pinned_ray() == ray.__version__


@pytest.mark.parametrize("name", [*LAUNCHER, *KUBERAY, "Dockerfile"])
def test_every_file_opens_with_its_command_and_names_the_pinned_ray(name):
    text = (CLUSTER / name).read_text()
    assert re.match(r"# (ray up|kubectl|docker build) ", text.splitlines()[0])
    assert pinned_ray() in text


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_configs_follow_rays_schema(name):
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((CLUSTER / name).read_text())
    jsonschema.validate(config, schema)
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"]["CPU"] == 0  # the head carries no training work
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert all(t["min_workers"] == 0 and t["max_workers"] > 0 for t in workers)  # autoscaling from zero
    assert any(t["resources"].get("GPU") for t in workers) and any(not t["resources"].get("GPU") for t in workers)
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in command:
            assert command.startswith("RAY_AUTH_MODE=token ray start")
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
    assert any("pip install -e ~/distmeta" in c for c in config["setup_commands"])


def ray_cluster_spec_ok(spec: dict) -> None:
    """What KubeRay's RayCluster CRD requires, and what distmeta asks of a cluster."""
    assert spec["rayVersion"] == pinned_ray()
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    groups = [head["template"], *(g["template"] for g in spec["workerGroupSpecs"])]
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for template in groups:
        [container] = template["spec"]["containers"]
        assert container["name"] and container["image"].endswith(":0.1.0")
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "ray-auth-token"
        limits = container["resources"]["limits"]
        assert container["resources"]["requests"] == limits


def test_kuberay_raycluster():
    manifest = yaml.safe_load((CLUSTER / "kuberay-raycluster.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"], manifest["metadata"]["name"]) == ("ray.io/v1", "RayCluster", "distmeta")
    spec = manifest["spec"]
    ray_cluster_spec_ok(spec)
    assert spec["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert groups["cpu"]["minReplicas"] == groups["gpu"]["minReplicas"] == 0  # from zero
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1"


def test_kuberay_rayjob_runs_a_shipped_config_into_lasting_storage():
    manifest = yaml.safe_load((CLUSTER / "kuberay-rayjob.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayJob")
    spec = manifest["spec"]
    ray_cluster_spec_ok(spec["rayClusterSpec"])
    args = shlex.split(spec["entrypoint"])
    assert args[:2] == ["distmeta", "train"]
    options = dict(zip(args[2::2], args[3::2]))
    assert (ROOT / options["--config"]).is_file()
    assert options["--output"].startswith("s3://") and options["--tracking-uri"].startswith("http://")
    from distmeta.cli import _parser

    _parser().parse_args(args[1:])  # the entrypoint is a valid distmeta command
