"""Tuning specifications: tune_configs/*.yaml, read and checked without Ray.

    # distmeta tune tune_configs/sinusoid_maml.yaml      (the command, and what it costs)
    base: ../configs/sinusoid_maml_k5.yaml   # a training config, relative to this file (optional)
    config: {steps: 2000, workers: 0}        # training keys on top of it (optional)
    space:                                   # any training key: one distribution each
      inner_lr: {loguniform: [0.001, 1.0]}
      outer_lr: {loguniform: [0.0001, 0.01]}
      inner_steps: {choice: [1, 2, 5]}
    metric: val_mse                          # val_<metric> of the task, or train_loss
    mode: min
    samples: 16
    scheduler: asha                          # asha (default), pbt, fifo; or {name: asha, grace_period: 500, ...}
    searcher: random                         # random (default), grid, optuna (pip install -e '.[optuna]')
    max_concurrent: 2                        # trials at once (default: as many as the cluster fits)
    time_budget_minutes: 30                  # stop the whole search then (default: no limit)
    top: 5                                   # rows of the result table
    seed: 0                                  # the searcher's draws (default: fresh ones each run)

Distributions: ``loguniform: [low, high]``, ``uniform: [low, high]``,
``quniform: [low, high, q]``, ``randint: [low, high]`` (both ends included),
``choice: [a, b, ...]``, ``grid: [a, b, ...]`` (every value, ``samples``
times). On an integer key the ranges draw integers. Every value the space can
produce is checked against the training config before any trial starts.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import NamedTuple

from distmeta.config import FIELDS, Config, ConfigError, from_dict, load_yaml, parse_overrides, read_yaml

DISTRIBUTIONS = {"loguniform": 2, "uniform": 2, "quniform": 3, "randint": 2, "choice": None, "grid": None}
RANGES = ("loguniform", "uniform", "quniform", "randint")
SCHEDULERS = ("asha", "pbt", "fifo")
SEARCHERS = ("random", "grid", "optuna")
MODES = ("min", "max")
SCHEDULER_OPTIONS = {"asha": {"grace_period", "reduction_factor"},
                     "pbt": {"perturbation_interval", "mutations", "quantile_fraction", "resample_probability"},
                     "fifo": set()}
TOP_LEVEL = {"base", "config", "space", "metric", "mode", "samples", "scheduler", "searcher", "max_concurrent",
             "time_budget_minutes", "top", "seed"}
LEARNING_RATES = ("inner_lr", "outer_lr")  # what PBT mutates unless told otherwise
MAX_CORNERS = 4096  # combinations of extreme values checked against the config


class Dimension(NamedTuple):
    """One searched key: ``kind`` is a key of DISTRIBUTIONS; ``values`` its bounds (and q) or its choices."""
    kind: str
    values: list
    integer: bool  # the config key is an int: ranges draw integers

    def extremes(self) -> list:
        """The values that bound what this dimension produces (both ends of a range, every choice)."""
        return self.values[:2] if self.kind in RANGES else self.values


class TuneSpec(NamedTuple):
    name: str
    base: dict  # the training config every trial starts from (validated, plain values)
    space: dict[str, Dimension]
    metric: str
    mode: str
    samples: int
    scheduler: str
    scheduler_options: dict
    searcher: str
    max_concurrent: int
    time_budget_minutes: float
    top: int
    seed: int | None

    def trial_config(self, values: dict) -> Config:
        """The training config of a trial: the base with the trial's sampled ``values``."""
        return from_dict({**self.base, **values})

    def to_dict(self) -> dict:
        return {**self._asdict(), "space": {k: {d.kind: d.values} for k, d in self.space.items()}}


def load_spec(path, overrides=(), samples: int | None = None) -> TuneSpec:
    """Read and check a tuning YAML; ``overrides`` (``key=value``) change the base training config."""
    path = Path(path)
    raw = _read(path)
    unknown = set(raw) - TOP_LEVEL
    if unknown:
        raise ConfigError(f"{path}: unknown tuning key {sorted(unknown)[0]!r} (expected {', '.join(sorted(TOP_LEVEL))})")
    base = raw.get("base")
    inline = raw.get("config") or {}
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"{path}: base must be the path of a training config, got {base!r}")
    if not isinstance(inline, dict):
        raise ConfigError(f"{path}: config must be a mapping of training keys, got {inline!r}")
    values = {**(read_yaml(_base_file(path, base)) if base else {}), **inline, **parse_overrides(overrides)}
    try:
        config = from_dict(values)
    except ConfigError as err:
        raise ConfigError(f"{path}: base config: {err}") from None
    space = {key: _dimension(path, key, value) for key, value in _mapping(path, raw, "space").items()}
    if not space:
        raise ConfigError(f"{path}: space is empty: name at least one training key to search")
    scheduler, options = _scheduler(path, raw.get("scheduler", "asha"), space, config)
    spec = TuneSpec(
        name=path.stem,
        base=config.to_dict(),
        space=space,
        metric=_text(path, raw, "metric"),
        mode=_choice(path, raw, "mode", MODES, None),
        samples=_count(path, "samples", samples if samples is not None else raw.get("samples", 8), 1),
        scheduler=scheduler,
        scheduler_options=options,
        searcher=_choice(path, raw, "searcher", SEARCHERS, "random"),
        max_concurrent=_count(path, "max_concurrent", raw.get("max_concurrent", 0), 0),
        time_budget_minutes=_minutes(path, raw.get("time_budget_minutes", 0)),
        top=_count(path, "top", raw.get("top", 5), 1),
        seed=None if raw.get("seed") is None else _count(path, "seed", raw["seed"], 0),
    )
    _check_searcher(path, spec)
    check_space(spec)
    return spec


def check_space(spec: TuneSpec) -> None:
    """Every combination of extreme values must be a valid training config (e.g. workers <= meta_batch_size)."""
    for values in corners(spec):
        try:
            spec.trial_config(values)
        except ConfigError as err:
            shown = ", ".join(f"{k}={v}" for k, v in values.items())
            raise ConfigError(f"search space: a trial with {shown} is not a valid config: {err}") from None


def corners(spec: TuneSpec) -> list[dict]:
    """The space's combinations of extreme values (each dimension alone when there are too many)."""
    keys = list(spec.space)
    extremes = [spec.space[k].extremes() for k in keys]
    combos = list(itertools.islice(itertools.product(*extremes), MAX_CORNERS + 1))
    if len(combos) > MAX_CORNERS:
        combos = [tuple(v if j == i else extremes[j][0] for j in range(len(keys))) for i in range(len(keys)) for v in extremes[i]]
    return [dict(zip(keys, combo)) for combo in combos]


def _read(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"tuning config not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"tuning config {path} is not UTF-8 text") from None
    raw = load_yaml(text, f"tuning config {path}")
    if not isinstance(raw, dict):
        raise ConfigError(f"tuning config {path} must hold a mapping")
    return raw


def _base_file(path: Path, base: str) -> Path:
    """``base`` relative to the tuning file's folder."""
    found = (path.parent / base).resolve()
    if not found.is_file():
        raise ConfigError(f"{path}: base config not found: {found}")
    return found


def _mapping(path: Path, raw: dict, key: str) -> dict:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {key} must be a mapping, got {value!r}")
    return value


def _dimension(path: Path, key: str, value) -> Dimension:
    where = f"{path}: space.{key}"
    if key not in FIELDS:
        raise ConfigError(f"{where}: unknown config key {key!r} (see `distmeta train --help-config`)")
    if not isinstance(value, dict) or len(value) != 1:
        raise ConfigError(f"{where}: give one distribution, e.g. {{loguniform: [0.001, 0.1]}}; got {value!r}")
    [(kind, values)] = value.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: unknown distribution {kind!r} (expected {', '.join(DISTRIBUTIONS)})")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: {kind} needs a non-empty list, got {values!r}")
    integer = FIELDS[key].type == "int"
    if kind in RANGES:
        if len(values) != DISTRIBUTIONS[kind] or not all(_number(v) for v in values):
            shape = "[low, high, q]" if kind == "quniform" else "[low, high]"
            raise ConfigError(f"{where}: {kind} takes {shape} numbers, got {values!r}")
        low, high = values[:2]
        if not low < high:
            raise ConfigError(f"{where}: empty or inverted range [{low}, {high}]")
        if kind == "loguniform" and low <= 0:
            raise ConfigError(f"{where}: loguniform needs a positive lower bound, got {low}")
        if kind == "quniform" and not values[2] > 0:
            raise ConfigError(f"{where}: quniform needs q > 0, got {values[2]}")
        if integer and not all(float(v).is_integer() for v in values):
            raise ConfigError(f"{where}: {key} is an integer key: give integer bounds, got {values!r}")
    return Dimension(kind, values, integer)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scheduler(path: Path, value, space: dict, config: Config) -> tuple[str, dict]:
    options = dict(value) if isinstance(value, dict) else {"name": value}
    name = options.pop("name", "asha")
    if name not in SCHEDULERS:
        raise ConfigError(f"{path}: unknown scheduler {name!r} (expected {', '.join(SCHEDULERS)})")
    unknown = set(options) - SCHEDULER_OPTIONS[name]
    if unknown:
        raise ConfigError(f"{path}: scheduler {name} has no option {sorted(unknown)[0]!r}")
    if name == "fifo":
        return name, options
    if "steps" in space:
        raise ConfigError(f"{path}: {name} measures trials in meta-steps, so steps cannot be searched (use scheduler fifo)")
    if not 0 < config.val_every < config.steps:
        raise ConfigError(f"{path}: {name} compares trials at their validations: set val_every between 1 and "
                          f"steps ({config.steps}), got {config.val_every}")
    if name == "asha":
        options.setdefault("grace_period", config.val_every)
        options.setdefault("reduction_factor", 3)
        if not 0 < options["grace_period"] <= config.steps or not options["reduction_factor"] > 1:
            raise ConfigError(f"{path}: asha needs 0 < grace_period <= steps and reduction_factor > 1")
    else:
        options.setdefault("perturbation_interval", config.val_every)
        options.setdefault("mutations", [k for k in LEARNING_RATES if k in space])
        if not options["mutations"] or any(k not in space for k in options["mutations"]):
            raise ConfigError(f"{path}: pbt mutates keys of the space; mutations: {options['mutations']}")
        if options["perturbation_interval"] % config.val_every:
            raise ConfigError(f"{path}: pbt's perturbation_interval must be a multiple of val_every ({config.val_every})")
    return name, options


def _check_searcher(path: Path, spec: TuneSpec) -> None:
    grids = [k for k, d in spec.space.items() if d.kind == "grid"]
    if spec.searcher == "grid" and len(grids) != len(spec.space):
        raise ConfigError(f"{path}: searcher grid needs every dimension as grid; not: {', '.join(sorted(set(spec.space) - set(grids)))}")
    if spec.searcher == "optuna" and grids:
        raise ConfigError(f"{path}: searcher optuna samples its own points: use choice instead of grid for {grids[0]}")
    if spec.searcher == "optuna" and spec.scheduler == "pbt":
        raise ConfigError(f"{path}: pbt draws and mutates its own points: use searcher random with it")


def _text(path: Path, raw: dict, key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}: {key} must name what to optimise (e.g. val_mse), got {value!r}")
    return value


def _choice(path: Path, raw: dict, key: str, choices, default):
    value = raw.get(key, default)
    if value not in choices:
        raise ConfigError(f"{path}: {key} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _count(path: Path, key: str, value, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{path}: {key} must be an integer >= {low}, got {value!r}")
    return value


def _minutes(path: Path, value) -> float:
    if not _number(value) or not 0 <= value < float("inf"):
        raise ConfigError(f"{path}: time_budget_minutes must be a finite number >= 0, got {value!r}")
    return float(value)
