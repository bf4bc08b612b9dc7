"""Typed, validated experiment configuration.

An experiment is one YAML file with the sections below. `load_config(path, overrides)` reads
it, applies dotted `--set` overrides (values parsed as YAML), and validates it: unknown keys
and bad values raise `UserInputError` naming the dotted key, the value given and what is
allowed. `ExperimentConfig.model_json_schema()` gives the JSON schema editors use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nnrun.errors import UserInputError
from nnrun.nn.init import INIT_SCHEMES
from nnrun.nn.layers import ACTIVATIONS
from nnrun.nn.losses import LOSSES
from nnrun.optim import OPTIMIZERS

DATA_ROOT_ENV = "NNRUN_DATA_ROOT"
"""Environment variable that sets the default `data.root`."""


def one_of(names: dict | tuple) -> Any:
    """A `Literal` type of the registry's names: validation lists them, the schema has an enum."""
    return Literal[tuple(names)]  # type: ignore[valid-type]


class Section(BaseModel):
    """A config section: unknown keys are errors, values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    """Which dataset, where it lives, and how it is split."""

    dataset: Literal["digits", "cifar10"] = Field(
        "digits", description="Dataset name: digits (bundled, 8x8) or cifar10 (32x32 colour).")
    root: str | None = Field(
        None, description=f"Folder holding dataset files; default ${DATA_ROOT_ENV} or 'data'.")
    download: bool = Field(
        False, description="Download the official CIFAR-10 archive when it is not under root.")
    val_size: int | float = Field(
        0.1, gt=0, description="Validation examples carved from the training pool: a count, or a fraction < 1.")
    test_size: int | float = Field(
        0.2, gt=0, description="Test examples for datasets without an official test split: a count or fraction.")
    train_size: int | None = Field(
        None, gt=0, description="Keep only this many training examples (a seeded subset); null keeps all.")

    def resolved_root(self) -> Path:
        """The data folder: `root`, else the environment variable, else `data`."""
        return Path(self.root or os.environ.get(DATA_ROOT_ENV) or "data")


class PreprocessConfig(Section):
    """Preprocessing, fitted on the training split only and applied to val and test."""

    center: Literal["none", "per_feature"] = Field(
        "per_feature", description="Mean subtraction: none, or per_feature (subtract the mean image).")


class ModelConfig(Section):
    """The MLP: hidden layer sizes, activation, weight and bias initialization."""

    hidden: list[int] = Field([100], description="Hidden layer widths, input side first; [] is a linear model.")
    activation: one_of(ACTIVATIONS) = Field("relu", description="Non-linearity after each hidden layer.")
    init: one_of(INIT_SCHEMES) = Field("he", description="Weight init scheme for every Linear layer.")
    bias_init: float = Field(0.0, description="Constant every bias starts at (0 or a small value such as 0.01).")


class RegularizationConfig(Section):
    """Penalties on the weights."""

    l2: float = Field(0.0, ge=0, description="L2 strength: adds 0.5 * l2 * sum(W**2) per weight matrix.")


class LossConfig(Section):
    """The data loss on the network's scores."""

    name: one_of(LOSSES) = Field("softmax", description="Loss function on the output scores.")


class OptimConfig(Section):
    """The update rule."""

    name: one_of(OPTIMIZERS) = Field("momentum", description="Update rule.")
    lr: float = Field(0.01, gt=0, description="Learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum coefficient (momentum).")


class TrainConfig(Section):
    """The training loop."""

    epochs: int = Field(10, ge=1, description="Passes over the training split.")
    batch_size: int = Field(128, ge=1, description="Examples per minibatch.")
    eval_batch_size: int = Field(4096, ge=1, description="Examples per forward pass when evaluating.")
    eval_train_size: int = Field(
        5000, ge=1, description="Training examples (a fixed seeded subset) evaluated each epoch for train accuracy.")


class ExperimentConfig(Section):
    """One experiment: everything `nnrun train` needs."""

    name: str = Field("experiment", min_length=1, description="Experiment name; names the run directory.")
    seed: int = Field(0, ge=0, description="Seed of every random stream (split, init, shuffle, dropout).")
    data: DataConfig = Field(default_factory=DataConfig, description="Dataset and split.")
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig, description="Preprocessing.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Network.")
    regularization: RegularizationConfig = Field(default_factory=RegularizationConfig, description="Penalties.")
    loss: LossConfig = Field(default_factory=LossConfig, description="Data loss.")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimizer.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training loop.")

    def to_yaml(self) -> str:
        """The resolved config as YAML, in field order."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read `path` (YAML; None means all defaults), apply `a.b=value` overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml_mapping(Path(path))
    for item in overrides:
        apply_override(raw, item)
    return validate_config(raw, source=str(path) if path is not None else "defaults")


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The YAML mapping in `path`; a missing file or malformed YAML is a `UserInputError`."""
    if not path.is_file():
        raise UserInputError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(e, "problem", None) or str(e)
        raise UserInputError(f"config file {path} is not valid YAML{where}: {problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserInputError(f"config file {path} must hold a mapping of sections, got {type(raw).__name__}")
    return raw


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `raw[a][b] = value` for `item` = 'a.b=value', the value parsed as YAML."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserInputError(f"--set expects KEY=VALUE with a dotted key such as optim.lr=0.01, got {item!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserInputError(f"--set {item}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def validate_config(raw: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Validate a raw mapping into an `ExperimentConfig`, or raise one readable `UserInputError`."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        lines = [f"invalid config ({source}):"]
        for err in e.errors():
            lines.append("  " + describe_error(err))
        raise UserInputError("\n".join(lines)) from None


def describe_error(err: dict[str, Any]) -> str:
    """One line for a pydantic error: dotted key, what was given, what is allowed."""
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    given = err.get("input")
    if err["type"] == "extra_forbidden":
        parent = ExperimentConfig
        for part in err["loc"][:-1]:
            field = parent.model_fields.get(str(part)) if isinstance(parent, type) else None
            annotation = field.annotation if field else None
            parent = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
            if parent is None:
                break
        allowed = f"; allowed keys here: {', '.join(parent.model_fields)}" if parent else ""
        return f"{loc}: unknown key{allowed}"
    message = err["msg"]
    return f"{loc}: {message} (got {given!r})"
