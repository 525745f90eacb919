"""Config resolution and validation; every shipped config validates."""

from pathlib import Path

import pytest

from distmeta.config import Config, ConfigError, describe, from_dict, resolve

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def test_defaults_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 50\ninner_lr: 0.1\nhidden: [8, 8]\n")
    config = resolve(path, ["steps=7", "seed=3"])
    assert (config.steps, config.inner_lr, config.hidden, config.seed) == (7, 0.1, [8, 8], 3)
    assert resolve().algorithm == "maml" and resolve().meta_batch_size == 25


def test_ints_are_accepted_for_floats():
    assert from_dict({"inner_lr": 1}).inner_lr == 1.0


def test_numpy_scalars_from_searchers_become_plain_values():
    import numpy as np
    import yaml

    config = from_dict({"inner_lr": np.float64(0.05), "inner_steps": np.int64(3), "hidden": [np.int64(8)],
                        "outer_lr": np.float32(0.5), "worker_reduce": True})
    assert (config.inner_lr, config.inner_steps, config.hidden) == (0.05, 3, [8])
    assert type(config.inner_lr) is float and type(config.inner_steps) is int and type(config.hidden[0]) is int
    assert yaml.safe_load(yaml.safe_dump(config.to_dict())) == config.to_dict()  # a best config writes as plain YAML
    with pytest.raises(ConfigError, match="inner_steps must be >= 1"):
        from_dict({"inner_steps": np.int64(0)})


@pytest.mark.parametrize("values, message", [
    ({"stepz": 3}, "unknown config key 'stepz' (did you mean 'steps'?)"),
    ({"steps": "many"}, "steps must be int, got 'many'"),
    ({"steps": 0}, "steps must be >= 1, got 0"),
    ({"inner_lr": 0.0}, "inner_lr must be > 0, got 0.0"),
    ({"outer_lr": -1e-3}, "outer_lr must be > 0, got -0.001"),
    ({"inner_lr": float("inf")}, "inner_lr must be a finite number, got inf"),
    ({"minutes": float("nan")}, "minutes must be a finite number, got nan"),
    ({"algorithm": "mamml"}, "algorithm must be one of maml, fomaml, metasgd, reptile, pretrain, protonet, matchingnet, bmaml, emaml, rl2; got 'mamml' (did you mean 'maml'?)"),
    ({"hidden": [40, "x"]}, "hidden must be a list of ints, got [40, 'x']"),
    ({"split_sizes": "20,3,7"}, "split_sizes must be a list in brackets, e.g. split_sizes=[20,3,7], got '20,3,7'"),
    ({"shots": 995, "queries": 10}, "shots + queries must be <= 1000 points per sinusoid task"),
    ({"inner_steps": True}, "inner_steps must be int, got True"),
    ({"task": "fewshot"}, "task=fewshot needs dataset=FILE.parquet (make one with `distmeta data import`)"),
    ({"task": "fewshot", "dataset": "o.parquet", "split_sizes": [10, 2]},
     "split_sizes must be three counts (train, val, test), got [10, 2]"),
    ({"algorithm": "protonet"}, "protonet classifies: it needs a classification task (fewshot or random_episodes)"),
    ({"rotations": True}, "rotations is for task=fewshot; task is sinusoid"),
    ({"batch_norm": "frozen"}, "batch_norm=frozen is for image tasks and maml, fomaml, metasgd, protonet, matchingnet; "
                               "got algorithm=maml, task=sinusoid"),
    ({"batch_norm": "fixed"}, "batch_norm must be one of transductive, frozen; got 'fixed'"),
    ({"test_ways": 5}, "test_ways is for classification tasks; a sinusoid task has no classes"),
    ({"task": "bandit", "test_ways": 5}, "test_ways is for classification tasks; a bandit task has no classes"),
    ({"algorithm": "rl2"}, "rl2 needs a reinforcement-learning task (bandit or tabular_mdp), and those need rl2; "
                           "got algorithm=rl2, task=sinusoid"),
    ({"task": "tabular_mdp"}, "rl2 needs a reinforcement-learning task (bandit or tabular_mdp), and those need rl2; "
                              "got algorithm=maml, task=tabular_mdp"),
    ({"algorithm": "bmaml", "task": "random_episodes"}, "bmaml is built for regression (sinusoid, noisy_sinusoid); task is random_episodes"),
    ({"algorithm": "emaml", "particles": 0}, "particles must be >= 1, got 0"),
    ({"algorithm": "rl2", "task": "bandit", "arms": 1}, "arms must be >= 2, got 1"),
    ({"task": "random_episodes", "ways": 5, "test_ways": 20},
     "maml has a 5-way output layer, so test_ways must be 5 (train a 20-way model for 20-way tests)"),
])
def test_bad_values_name_the_problem(values, message):
    with pytest.raises(ConfigError) as err:
        from_dict(values)
    assert str(err.value) == message


def test_hostile_and_undecodable_files_are_one_short_line(tmp_path):
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    (tmp_path / "laughs.yaml").write_text(laughs)  # 9^9 strings if expanded; 72 aliases in the text
    with pytest.raises(ConfigError, match=r"laughs.yaml uses 72 YAML aliases, more than 50: refused"):
        from distmeta import config

        limit, config.MAX_ALIASES = config.MAX_ALIASES, 50
        try:
            resolve(tmp_path / "laughs.yaml")
        finally:
            config.MAX_ALIASES = limit
    (tmp_path / "latin1.yaml").write_bytes("steps: 10 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="latin1.yaml is not UTF-8 text"):
        resolve(tmp_path / "latin1.yaml")


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        resolve(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        resolve(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="expects key=value"):
        resolve(overrides=["steps"])


def test_every_key_is_documented():
    text = describe()
    for key in Config.__dataclass_fields__:
        assert f"  {key} " in text


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate_and_say_how_to_run(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# distmeta train --config configs/" + path.name)
    resolve(path)


def test_there_are_shipped_configs():
    assert len(CONFIGS) >= 5
