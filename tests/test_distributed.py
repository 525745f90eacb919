"""The Ray trainer against the single-process one: exact, robust, bounded.

Real actors on a real local Ray cluster (one per module, 4 logical CPUs).
"""

import os
import signal
import threading

import numpy as np
import pytest
import ray
import torch

from distmeta import TEST, MetaTrainer, resolve
from distmeta.distributed import release, reserve, start_server, start_workers
from distmeta.setup import build
from distmeta.training.distributed import DistributedTrainer
from conftest import start_local_ray

BASE = ["steps=20", "meta_batch_size=8", "seed=5", "val_every=0"]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    start_local_ray(num_cpus=4, include_dashboard=False)
    yield
    ray.shutdown()


def train(overrides, hook=None):
    """(final parameters, each step's metrics, trainer); ``hook(trainer)`` runs after every step."""
    config = resolve(overrides=[*BASE, *overrides])
    trainer = MetaTrainer(config) if config.workers == 0 else DistributedTrainer(config)
    try:
        steps = []
        while trainer.step < config.steps:
            steps.append(trainer.meta_step())
            if hook:
                hook(trainer)
        return trainer.flat.clone(), steps, trainer
    finally:
        trainer.close()


def assert_relative(a, b, tol=1e-5):
    assert ((a - b).norm() / b.norm()).item() < tol


def test_workers_agree_with_the_single_process_trainer():
    reference, _, _ = train(["workers=0"])
    for workers in (1, 2, 4):
        params, _, _ = train([f"workers={workers}"])
        assert_relative(params, reference)
    assert not torch.equal(reference, build(resolve(overrides=BASE)).initial_state()[0])  # it did train


# The step loop on the server over a compiled graph (the default), and the actor-call path.
PATHS = {"compiled graph": [], "actor calls": ["compiled_graph=false"]}


def test_reducing_on_the_workers_gives_the_same_update():
    per_task, _, _ = train(["workers=2"])
    reduced, _, _ = train(["workers=2", "worker_reduce=true"])
    assert_relative(reduced, per_task)


def test_the_compiled_graph_and_the_actor_calls_give_the_same_parameters():
    for reduce in ("true", "false"):
        compiled, _, _ = train(["workers=2", f"worker_reduce={reduce}"])
        actor_calls, _, _ = train(["workers=2", f"worker_reduce={reduce}", "compiled_graph=false"])
        assert torch.equal(compiled, actor_calls)


@pytest.mark.parametrize("reduce", ["false", "true"])
def test_non_finite_tasks_in_a_compiled_run_are_dropped_and_counted(reduce):
    diverging = ["inner_lr=0.5", "inner_steps=5", "steps=6"]  # some tasks' adapted loss overflows, not all
    reference, expected, _ = train(["workers=0", *diverging])
    params, steps, _ = train(["workers=2", *diverging, f"worker_reduce={reduce}"])
    dropped = [s["dropped_tasks"] for s in steps]
    assert dropped == [s["dropped_tasks"] for s in expected] and 0 < sum(dropped) < 6 * 8
    assert torch.isfinite(params).all()
    assert_relative(params, reference)


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS)
def test_killed_workers_are_restarted_and_no_step_is_lost(path):
    reference, _, _ = train(["workers=2", *path])
    killed = []

    def kill_one(trainer):
        pid = trainer.worker_locations()[trainer.step % 2]["pid"]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    def hook(trainer):
        if trainer.step in (3, 9):  # killed before the step's calls reach it
            kill_one(trainer)
        if trainer.step == 14:  # killed while the step runs
            threading.Timer(0.001, kill_one, [trainer]).start()

    params, steps, trainer = train(["workers=2", *path], hook)
    assert len(killed) == 3 and len(steps) == 20
    assert all(s["dropped_tasks"] == 0 for s in steps)
    assert torch.equal(params, reference)


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS)
def test_a_killed_parameter_server_is_replaced_and_no_step_is_lost(tmp_path, path):
    reference, _, _ = train(["workers=2", *path])
    killed = []

    def kill_server(trainer):
        pid = ray.get(trainer.server.pid.remote())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    def hook(trainer):
        if trainer.step == 6:  # the state a replacement starts from, replaying the steps since
            trainer.save(tmp_path)
        if trainer.step in (3, 9):  # killed between steps (from the initial state, then from step 6's)
            kill_server(trainer)
        if trainer.step == 14:  # killed while the step runs
            threading.Timer(0.001, kill_server, [trainer]).start()

    params, steps, trainer = train(["workers=2", *path], hook)
    assert len(set(killed)) == 3 and len(steps) == 20
    assert all(s["dropped_tasks"] == 0 for s in steps)
    assert torch.equal(params, reference)


def test_non_finite_task_gradients_are_dropped_and_counted():
    config = resolve(overrides=[*BASE, "workers=2"])
    setup = build(config)
    flat, opt_state, _ = setup.initial_state()
    group, first = reserve(config)
    state = {"flat": flat.numpy(), "optimizer_state": {k: v.numpy() for k, v in opt_state.items()}, "step": 0}
    server = start_server(config, setup.spec, state, group)
    workers = start_workers(config, group, first)
    weights = server.weights.remote()
    for step in range(3):
        shards = ray.get([w.compute.remote(weights, step, step, [2 * i, 2 * i + 1]) for i, w in enumerate(workers)])
        grads = [g.copy() for _, g in shards]
        grads[0][1, 7] = np.nan  # poison one task per step
        grads[1][0, 0] = np.inf if step == 1 else grads[1][0, 0]
        weights, stats = server.apply.options(num_returns=2).remote(*grads)
        stats = ray.get(stats)
        assert np.isfinite(ray.get(weights)).all()
        assert stats["kept"].tolist() == [True, False, step != 1, True]
    assert stats["dropped_total"] == 4
    # A step with every task dropped leaves the parameters exactly as they were.
    before = ray.get(weights)
    poisoned = [np.full_like(g, np.nan) for g in grads]
    weights, stats = server.apply.options(num_returns=2).remote(*poisoned)
    assert np.array_equal(ray.get(weights), before) and ray.get(stats)["dropped_total"] == 8
    for actor in [server, *workers]:
        ray.kill(actor)
    release(group, first)


def test_async_stays_within_staleness_and_close_to_sync():
    common = ["workers=2", "steps=1200", "meta_batch_size=10", "seed=0", "val_every=0"]
    sync = DistributedTrainer(resolve(overrides=common))
    asynchronous = DistributedTrainer(resolve(overrides=[*common, "mode=async", "max_staleness=1", "steps=2400"]))
    try:
        while sync.step < sync.config.steps:
            sync.meta_step()
        staleness = []
        while asynchronous.step < asynchronous.config.steps:
            staleness.append(asynchronous.meta_step()["staleness"])  # the server's version minus the gradient's
        # Same number of applied tasks: 1200 x 10 = 2400 x 5.
        assert max(staleness) == 1 and min(staleness) == 0  # stale gradients are applied, never beyond the bound
        assert asynchronous.recomputed > 0  # and older ones were recomputed instead
        a = asynchronous.evaluate(TEST, episodes=600)
        s = sync.evaluate(TEST, episodes=600)
        assert a.mean < 1.2 * s.mean, (a, s)
    finally:
        sync.close()
        asynchronous.close()


@pytest.mark.parametrize("algorithm", ["protonet", "fomaml"])
def test_few_shot_training_agrees_and_workers_share_the_dataset(glyph_file, algorithm):
    few_shot = ["task=fewshot", f"dataset={glyph_file}", f"algorithm={algorithm}", "ways=5", "shots=1", "queries=3",
                "filters=8", "split_by=group", "split_sizes=[2, 1, 1]", "rotations=true", "steps=3", "inner_lr=0.4"]
    # One thread, like each worker: float32 convolutions then sum in the same order (with
    # two threads the gradients differ by 1e-5 relative, and Adam magnifies that on the
    # conv biases ahead of batch norm, whose true gradient is 0).
    reference, _, _ = train([*few_shot, "workers=0", "threads=1"])
    locations = []
    params, _, _ = train([*few_shot, "workers=2"], hook=lambda trainer: locations.extend(trainer.worker_locations()))
    assert_relative(params, reference)
    # every worker maps the images from Ray's object store (read-only, zero-copy), never a copy of its own
    assert len(locations) == 6 and all(where["dataset_shared"] for where in locations)


@pytest.mark.parametrize("overrides", [
    ["algorithm=bmaml", "task=noisy_sinusoid", "particles=3", "inner_steps=2"],
    ["algorithm=emaml", "task=noisy_sinusoid", "particles=3"],
    ["algorithm=rl2", "task=bandit", "arms=4", "pulls=8", "hidden=[16]"],
    ["algorithm=rl2", "task=tabular_mdp", "states=3", "actions=2", "horizon=4", "episodes=3", "hidden=[16]"],
    ["algorithm=rl2", "task=tabular_mdp", "states=3", "actions=2", "horizon=4", "episodes=3", "hidden=[16]",
     "policy_loss=ppo", "ppo_epochs=2", "ppo_minibatches=2"],  # 5 steps: into the second iteration
], ids=["bmaml", "emaml", "rl2-bandit", "rl2-mdp", "rl2-mdp-ppo"])
def test_particles_and_policies_train_unchanged_on_workers(overrides):
    """Stacked particles and policy gradients are per-task meta-gradients like any other: 2 workers = 1 process."""
    reference, _, _ = train([*overrides, "workers=0", "steps=5"])
    params, steps, _ = train([*overrides, "workers=2", "steps=5"])
    assert_relative(params, reference)
    assert not torch.equal(reference, build(resolve(overrides=[*BASE, *overrides])).initial_state()[0])
    assert all(s["dropped_tasks"] == 0 for s in steps)
