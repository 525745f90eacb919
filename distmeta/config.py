"""Typed, validated training configuration.

One flat dataclass: every key works the same as a YAML key and as
``distmeta train --set key=value``. Validation happens before anything runs,
so a bad value costs one clear line and nothing on disk or in MLflow.

>>> cfg = resolve(overrides=["steps=100", "inner_lr=0.02"])
>>> cfg.steps, cfg.inner_lr
(100, 0.02)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

POLICY_LOSSES = ("a2c", "ppo")
ALGORITHMS = ("maml", "fomaml", "metasgd", "reptile", "pretrain", "protonet", "matchingnet", "bmaml", "emaml", "rl2")
BATCH_NORM = ("transductive", "frozen")  # which statistics normalise queries: their batch's, or the support set's
QUERY_LOSS = ("maml", "fomaml", "metasgd", "protonet", "matchingnet")  # meta-gradient: the query loss after adapting
METRIC_BASED = ("protonet", "matchingnet")  # no inner loop: classify by distances in an embedding
PARTICLE_BASED = ("bmaml", "emaml")  # the meta-parameters are a stack of model particles
TASKS = ("sinusoid", "noisy_sinusoid", "fewshot", "random_episodes", "bandit", "tabular_mdp")
REGRESSION = ("sinusoid", "noisy_sinusoid")
CLASSIFICATION = ("fewshot", "random_episodes")
REINFORCEMENT = ("bandit", "tabular_mdp")
SPLITS = ("class", "group")
EXECUTIONS = ("auto", "vmap", "loop")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine")
MODES = ("sync", "async")
AGGREGATES = ("mean", "trimmed_mean", "median")


# Bounds on what costs time without showing progress: one inner loop, one meta-step's or one evaluation's
# tasks (what costs memory is estimated against the machine instead, see setup.check_memory).
MAX_STEPS = 10_000
MAX_TASKS = 100_000


class ConfigError(ValueError):
    """A configuration problem, reported to users as one line."""


def _key(default, doc, **checks):
    return field(default=default, metadata={"doc": doc, **checks})


def _list_key(default, doc, **checks):
    return field(default_factory=lambda: list(default), metadata={"doc": doc, **checks})


@dataclass(frozen=True)
class Config:
    # What is learned.
    algorithm: str = _key("maml", "meta-learner: " + ", ".join(ALGORITHMS), choices=ALGORITHMS)
    task: str = _key("sinusoid", "task distribution: sinusoid, noisy_sinusoid (Bayesian MAML's), fewshot (episodes from `dataset`), random_episodes (Omniglot-shaped random images, for speed tests), bandit or tabular_mdp (RL^2)", choices=TASKS)
    shots: int = _key(10, "K, support examples per task (per class for classification)", min=1)
    queries: int = _key(10, "query examples per task (per class for classification)", min=1)
    ways: int = _key(5, "N, classes per training episode (classification tasks)", min=2)
    test_ways: int = _key(0, "N at validation and meta-test (0: same as ways)", min=0)
    test_shots: int = _key(0, "K at validation and meta-test (0: same as shots)", min=0)
    # Few-shot datasets (task=fewshot).
    dataset: str = _key("", "Parquet dataset from `distmeta data import` (task=fewshot)")
    split_by: str = _key("class", "split classes into train/val/test by class, or by group (e.g. Omniglot alphabet)", choices=SPLITS)
    split_sizes: list = _list_key([], "train, val, test counts of classes (or groups) in file order; [] = 70/10/20%", min=0)
    rotations: bool = _key(False, "add each class rotated by 90, 180, 270 degrees as new classes (Omniglot)")
    batch_norm: str = _key("transductive", "Conv4's batch norm of queries in training and testing: transductive (each "
                           "query batch's own statistics, the papers') or frozen (the support set's, each query on its "
                           "own, as generated models answer)", choices=BATCH_NORM)
    test_dataset: str = _key("", "meta-test on every class of this Parquet file instead of the test split")
    hidden: list = _list_key([40, 40], "MLP hidden layer widths (RL^2: GRU units = the first)", min=1)
    filters: int = _key(64, "Conv4 filters per layer (image tasks)", min=1)
    # Inner loop.
    inner_lr: float = _key(0.01, "inner-loop (fast) SGD learning rate", positive=True)
    inner_steps: int = _key(1, "inner SGD steps during meta-training", min=1, max=MAX_STEPS)
    test_inner_steps: int = _key(10, "inner SGD steps at meta-test and validation", min=0, max=MAX_STEPS)
    # Bayesian MAML and ensemble MAML.
    particles: int = _key(5, "bmaml/emaml: model particles (SVGD particles, or ensemble members)", min=1, max=1000)
    leader_steps: int = _key(1, "bmaml: extra SVGD steps of the leader, on support plus query", min=1, max=MAX_STEPS)
    # RL^2 (task=bandit or tabular_mdp; a trial is `episodes` episodes of `horizon` steps).
    arms: int = _key(5, "bandit: arms, success probabilities U[0, 1]", min=2)
    pulls: int = _key(10, "bandit: pulls per trial", min=1, max=MAX_STEPS)
    states: int = _key(10, "tabular_mdp: states", min=1)
    actions: int = _key(5, "tabular_mdp: actions", min=2)
    horizon: int = _key(10, "tabular_mdp: steps per episode", min=1, max=MAX_STEPS)
    episodes: int = _key(10, "tabular_mdp: episodes per trial (the GRU's memory spans them)", min=1, max=MAX_STEPS)
    discount: float = _key(0.99, "rl2: discount over the steps of a trial", positive=True)
    gae_lambda: float = _key(0.3, "rl2: GAE lambda", min=0)
    entropy_coef: float = _key(0.01, "rl2: entropy bonus weight", min=0)
    value_coef: float = _key(0.5, "rl2: value-loss weight", min=0)
    policy_loss: str = _key("a2c", "rl2: the outer objective, a2c (one gradient per trial) or ppo (clipped surrogate, "
                            "several epochs over each iteration's trials)", choices=POLICY_LOSSES)
    ppo_epochs: int = _key(4, "rl2 ppo: epochs over each iteration's trials", min=1, max=MAX_STEPS)
    ppo_minibatches: int = _key(4, "rl2 ppo: minibatches of meta_batch_size trials per epoch (an iteration plays "
                                "ppo_minibatches x meta_batch_size trials and takes ppo_epochs x ppo_minibatches steps)",
                                min=1, max=MAX_STEPS)
    ppo_clip: float = _key(0.2, "rl2 ppo: probability-ratio clip", positive=True, max=1)
    # Outer loop.
    steps: int = _key(20000, "meta-training steps", min=1)
    minutes: float = _key(0.0, "stop meta-training after this many minutes, even before `steps` (0: no limit)", min=0)
    meta_batch_size: int = _key(25, "tasks per meta-step", min=1, max=MAX_TASKS)
    outer_lr: float = _key(0.001, "outer optimizer learning rate", positive=True)
    outer_optimizer: str = _key("adam", "outer optimizer: adam, sgd", choices=OPTIMIZERS)
    outer_lr_schedule: str = _key("constant", "outer lr schedule: constant, cosine (to 0 at the last step)", choices=SCHEDULES)
    aggregate: str = _key("mean", "how task gradients combine: mean, trimmed_mean (10% each side), median", choices=AGGREGATES)
    seed: int = _key(0, "run seed; a task is a pure function of (seed, split, step, index)", min=0, max=2**63 - 1)
    # Distribution over Ray (workers=0: one process, no Ray).
    workers: int = _key(2, "MetaWorker actors (0: single process, no Ray)", min=0)
    worker_cpus: float = _key(1.0, "CPUs per worker (its torch threads)", positive=True)
    worker_gpus: float = _key(0.0, "GPUs per worker; fractions share a GPU", min=0)
    mode: str = _key("sync", "sync: every step waits for all tasks; async: apply shards as they arrive", choices=MODES)
    max_staleness: int = _key(2, "async: recompute a gradient more than this many versions old", min=0)
    worker_reduce: bool = _key(False, "workers send the sum and count of their tasks, not per-task gradients "
                               "(aggregate=mean; changes float32 round-off)")
    compiled_graph: bool = _key(True, "sync mode: the server runs the steps over a Ray compiled graph of the "
                                "workers (false: a round of actor calls per step)")
    placement_timeout: float = _key(0.0, "seconds to wait for an autoscaling cluster to make room for the workers "
                                    "(0: fail at once if it cannot now)", min=0)
    step_timeout: float = _key(900.0, "seconds a meta-step waits for its workers before the run fails (0: no limit)", min=0)
    # Execution and bookkeeping.
    execution: str = _key("auto", "per-task path: vmap, loop, or auto (fastest measured)", choices=EXECUTIONS)
    threads: int = _key(0, "torch intra-op threads (0: auto, 1 for MLP and GRU models, one per core for Conv4)", min=0)
    val_every: int = _key(1000, "validate every N steps (0: only at the end)", min=0)
    val_tasks: int = _key(200, "held-out validation tasks per validation", min=1, max=MAX_TASKS)
    eval_episodes: int = _key(600, "held-out test tasks for the final result", min=1, max=MAX_TASKS)
    checkpoint_every: int = _key(1000, "checkpoint every N steps (0: only at the end)", min=0)
    keep_checkpoints: int = _key(2, "how many step checkpoints to keep", min=1)
    log_every: int = _key(10, "log metrics to MLflow every N steps", min=1)
    experiment: str = _key("distmeta", "MLflow experiment name")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def describe() -> str:
    """Every key with its type, default and meaning, for ``--help-config``."""
    rows = []
    for f in dataclasses.fields(Config):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append(f"  {f.name:<18} {_type_name(f):<6} {str(default):<10} {f.metadata['doc']}")
    return "keys (YAML or --set key=value):\n" + "\n".join(rows)


def resolve(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> Config:
    """Defaults, then the YAML file at ``path``, then ``key=value`` overrides."""
    values = read_yaml(Path(path)) if path is not None else {}
    return from_dict({**values, **parse_overrides(overrides)})


def parse_overrides(overrides: typing.Iterable[str]) -> dict:
    """``["key=value", ...]`` as a dict, each value read as YAML."""
    values = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        values[key.strip()] = load_yaml(raw, f"--set {key.strip()}") if raw.strip() else ""
    return values


MAX_ALIASES = 100  # a few anchors are YAML style; nested aliases multiply into gigabytes ("billion laughs")


def load_yaml(text: str, where: str):
    """``yaml.safe_load``, refusing documents with more than ``MAX_ALIASES`` aliases (counted without expanding)."""
    try:
        aliases = sum(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text))
        if aliases > MAX_ALIASES:
            raise ConfigError(f"{where} uses {aliases} YAML aliases, more than {MAX_ALIASES}: refused")
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{where} is not valid YAML: {str(err).splitlines()[0]}") from None


def from_dict(values: dict) -> Config:
    """Build a Config from plain values, checking names, types and ranges."""
    for key in values:
        if key not in FIELDS:
            close = difflib.get_close_matches(key, FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown config key {key!r}{hint}")
    checked = {key: _check(FIELDS[key], value) for key, value in values.items()}
    config = Config(**checked)
    _check_combination(config)
    return config


def read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    values = load_yaml(text, f"config file {path}") or {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return values


def _type_name(f) -> str:
    return {int: "int", float: "float", str: "str", list: "list", bool: "bool"}[_base_type(f)]


def _base_type(f):
    return {"int": int, "float": float, "str": str, "list": list, "bool": bool}[str(f.type)]


def _plain(value):
    """Python scalars for numpy ones (what Tune's searchers return), inside lists too."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def _check(f, value):
    kind = _base_type(f)
    value = _plain(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is list and isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        if kind is list and isinstance(value, str):  # `--set split_sizes=20,3,7`: show the YAML form
            raise ConfigError(f"{f.name} must be a list in brackets, e.g. {f.name}=[{value}], got {value!r}")
        raise ConfigError(f"{f.name} must be {_type_name(f)}, got {value!r}")
    if kind is float and not math.isfinite(value):  # .inf or .nan from YAML would pass every range check
        raise ConfigError(f"{f.name} must be a finite number, got {value!r}")
    items = value if kind is list else [value]
    meta = f.metadata
    for item in items:
        if kind is list and (not isinstance(item, int) or isinstance(item, bool)):
            raise ConfigError(f"{f.name} must be a list of ints, got {value!r}")
        if "choices" in meta and item not in meta["choices"]:
            close = difflib.get_close_matches(str(item), meta["choices"], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{f.name} must be one of {', '.join(meta['choices'])}; got {item!r}{hint}")
        if "min" in meta and item < meta["min"]:
            raise ConfigError(f"{f.name} must be >= {meta['min']}, got {item!r}")
        if "max" in meta and item > meta["max"]:
            raise ConfigError(f"{f.name} must be <= {meta['max']}, got {item!r}")
        if meta.get("positive") and not item > 0:
            raise ConfigError(f"{f.name} must be > 0, got {item!r}")
    return value


def _check_combination(config: Config) -> None:
    if config.task in REGRESSION and config.shots + config.queries > 1000:
        raise ConfigError("shots + queries must be <= 1000 points per sinusoid task")
    if config.task == "fewshot" and not config.dataset:
        raise ConfigError("task=fewshot needs dataset=FILE.parquet (make one with `distmeta data import`)")
    few_shot_keys = [k for k in ("dataset", "test_dataset", "split_sizes", "rotations") if getattr(config, k)]
    if config.task != "fewshot" and few_shot_keys:
        raise ConfigError(f"{few_shot_keys[0]} is for task=fewshot; task is {config.task}")
    if config.task not in CLASSIFICATION and config.test_ways:
        raise ConfigError(f"test_ways is for classification tasks; a {config.task} task has no classes")
    if config.split_sizes and len(config.split_sizes) != 3:
        raise ConfigError(f"split_sizes must be three counts (train, val, test), got {config.split_sizes}")
    if (config.algorithm == "rl2") != (config.task in REINFORCEMENT):
        raise ConfigError("rl2 needs a reinforcement-learning task (bandit or tabular_mdp), and those need rl2; "
                          f"got algorithm={config.algorithm}, task={config.task}")
    if config.algorithm in PARTICLE_BASED and config.task not in REGRESSION:
        raise ConfigError(f"{config.algorithm} is built for regression (sinusoid, noisy_sinusoid); task is {config.task}")
    if config.batch_norm == "frozen" and (config.task not in CLASSIFICATION or config.algorithm not in QUERY_LOSS):
        raise ConfigError(f"batch_norm=frozen is for image tasks and {', '.join(QUERY_LOSS)}; "
                          f"got algorithm={config.algorithm}, task={config.task}")
    if config.algorithm in METRIC_BASED and config.task in REGRESSION:
        raise ConfigError(f"{config.algorithm} classifies: it needs a classification task (fewshot or random_episodes)")
    if config.algorithm not in METRIC_BASED and config.task in CLASSIFICATION and config.test_ways not in (0, config.ways):
        raise ConfigError(f"{config.algorithm} has a {config.ways}-way output layer, so test_ways must be {config.ways} "
                          f"(train a {config.test_ways}-way model for {config.test_ways}-way tests)")
    if config.workers > config.meta_batch_size:
        raise ConfigError(f"workers ({config.workers}) must be <= meta_batch_size ({config.meta_batch_size})")
    if config.worker_reduce and config.aggregate != "mean":
        raise ConfigError("worker_reduce sums on the workers, so it needs aggregate=mean")
