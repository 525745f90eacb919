"""Several Ray nodes on one machine (ray.cluster_utils.Cluster): spread, and survive losing one."""

import threading
import time

import pytest
import ray
import torch
from ray.cluster_utils import Cluster

from distmeta import MetaTrainer, resolve
from distmeta.config import ConfigError
from distmeta.training.distributed import DistributedTrainer

OVERRIDES = ["steps=12", "meta_batch_size=8", "seed=2", "val_every=0", "workers=2"]


@pytest.fixture
def cluster():
    ray.shutdown()  # in case an earlier in-process test left one running
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
    yield cluster, nodes
    ray.shutdown()
    cluster.shutdown()


def test_workers_spread_and_training_survives_a_lost_node(cluster):
    cluster, nodes = cluster
    reference = MetaTrainer(resolve(overrides=[*OVERRIDES, "workers=0"]))
    while reference.step < reference.config.steps:
        reference.meta_step()

    trainer = DistributedTrainer(resolve(overrides=OVERRIDES))
    try:
        placed = {w["node"] for w in trainer.worker_locations()}
        assert placed == {n.node_id for n in nodes}  # one worker per worker node
        # lose the node without the parameter server (it shares the first worker's bundle; losing it ends the run)
        server_node = ray.util.placement_group_table(trainer.group)["bundles_to_node_id"][0]
        [kept] = [n for n in nodes if n.node_id == server_node]
        [lost] = [n for n in nodes if n.node_id != server_node]
        steps = []
        while trainer.step < trainer.config.steps:
            if trainer.step == 4:
                cluster.remove_node(lost)
            steps.append(trainer.meta_step())
        assert trainer.step == 12 and len(steps) == 12
        assert all(s["dropped_tasks"] == 0 for s in steps)
        assert {w["node"] for w in trainer.worker_locations()} == {kept.node_id}  # the lost one moved
        params = trainer.flat
        assert ((params - reference.flat).norm() / reference.flat.norm()).item() < 1e-5
    finally:
        trainer.close()


def test_a_run_larger_than_the_cluster_waits_for_a_node_or_fails_in_one_line(cluster):
    """As on an autoscaling cluster: the pending placement group is the request for nodes."""
    cluster, _ = cluster  # 4 CPUs on two worker nodes; the head has none
    wide = [*OVERRIDES, "workers=6", "steps=2"]
    with pytest.raises(ConfigError, match=r"did not make room for 6 workers x 1 CPU within placement_timeout=2 s"):
        DistributedTrainer(resolve(overrides=[*wide, "placement_timeout=2"]))
    with pytest.raises(ConfigError, match="6 workers x 1 CPU need 6 CPUs; the Ray cluster has 4"):
        DistributedTrainer(resolve(overrides=wide))  # placement_timeout 0: at once
    made = []
    waiting = threading.Thread(target=lambda: made.append(DistributedTrainer(resolve(overrides=[*wide, "placement_timeout=120"]))))
    waiting.start()
    time.sleep(3.0)
    assert not made  # it waits for room
    cluster.add_node(num_cpus=2)
    waiting.join(timeout=120)
    [trainer] = made
    try:
        while trainer.step < trainer.config.steps:
            trainer.meta_step()
        assert len({w["node"] for w in trainer.worker_locations()}) == 3
    finally:
        trainer.close()
