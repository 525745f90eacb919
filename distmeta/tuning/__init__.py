"""Ray Tune over the meta-hyperparameters: ``distmeta tune`` (spec.py reads the YAML, trial.py is one trial,
tuner.py the driver)."""

from distmeta.tuning.spec import TuneSpec, load_spec

__all__ = ["TuneSpec", "load_spec"]
