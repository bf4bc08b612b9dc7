"""Helpers shared by test modules."""

from nnrun.config import DataConfig
from nnrun.datasets import Dataset, load_dataset
from nnrun.experiment import data_options


def load(cfg: DataConfig, seed: int) -> Dataset:
    """The dataset a data section names, split with `seed` (what `nnrun.experiment.load_data` does)."""
    return load_dataset(cfg.dataset, data_options(cfg), seed)


def train_run(out, *sets: str, config=None):
    """Train a run of `config` (None: defaults) with `--set`-style overrides into `out`; returns `out`."""
    from nnrun.config import load_config
    from nnrun.train import train_new

    train_new(load_config(config, list(sets)), out=out)
    return out
