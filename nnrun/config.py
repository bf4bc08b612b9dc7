"""Typed, validated experiment configuration.

An experiment is one YAML file with the sections below. `load_config(path, overrides)` reads
it (composed with the files its `defaults:` names, `nnrun.compose`), applies dotted `--set`
overrides (values parsed as YAML), and validates it: unknown keys and bad values raise
`UserInputError` naming the dotted key, the value given, what is allowed and, for a value that
came from a base file, that file and the files that included it. `compose_config` also returns
the files read (`ConfigSource`). `ExperimentConfig.model_json_schema()` gives the JSON schema
editors use (with the `defaults` key).

Names (datasets, init schemes, activations, losses, optimizers, schedules, penalties) are read
from the library's registries when a config is validated, so an entry registered later (a
plugin, a test) is accepted without touching this module.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from nnrun.augment import PADDING_MODES, flip_average_problem
from nnrun.backend import DEVICES
from nnrun.compose import BARE_OVERRIDE_RE as BARE_OVERRIDE_RE
from nnrun.compose import DEFAULTS_KEY, Composed, ConfigSource, OriginTree, compose_file, origin_note
from nnrun.compose import read_yaml_mapping as read_yaml_mapping
from nnrun.datasets import DATASETS, TARGET_WORDS
from nnrun.errors import UserInputError, close_matches, did_you_mean, echo, shorten
from nnrun.nn.init import INIT_SCHEMES
from nnrun.nn.layers import ACTIVATIONS
from nnrun.nn.losses import DECODE_MODES, LOSSES, check_tree_spec, losses_for
from nnrun.nn.regularizers import PENALTIES
from nnrun.optim import OPTIMIZERS, SCHEDULES
from nnrun.preprocess import CENTER_MODES, SCALE_MODES
from nnrun.safeyaml import YamlLimitError, safe_load

DATA_ROOT_ENV = "NNRUN_DATA_ROOT"
"""Environment variable that sets the default `data.root`."""
MAX_VALUE_CHARS = 10_000
"""Longest `--set`, `--grid` or `--space` value."""
BIG = 10**9
"""Upper bound of counts (examples, epochs, units): far above any real use, far below an overflow."""
NUMBER_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
"""A number as typed on a command line (`1e-3` included, which YAML 1.1 reads as text)."""




def _expected(names: list[str]) -> str:
    """`'a', 'b' or 'c'`, as pydantic lists the allowed values of a `Literal`."""
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


@dataclass(frozen=True, eq=False)
class _RegistryEnum:
    """Schema metadata: the JSON schema of a registry name is an enum of the names registered when it is made."""

    registry: Mapping[str, Any]

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema = handler(core_schema)
        schema["enum"] = list(self.registry)
        return schema


def registry_aliases(registry: Mapping[str, Any]) -> dict[str, str]:
    """Other names of a registry's entries (their `aliases`, lower case) -> the registered name."""
    aliases: dict[str, str] = {}
    for name, entry in registry.items():
        for alias in getattr(entry, "aliases", ()):
            aliases.setdefault(alias.lower(), name)
    return aliases


def registry_name(registry: Mapping[str, Any]) -> Any:
    """The type of a config value that must be a key of `registry`, checked when a config is validated."""
    def check(value: str) -> str:
        if value not in registry:
            raise PydanticCustomError(
                "literal_error", "Input should be {expected}",
                {"expected": _expected(list(registry)),
                 "suggestion": did_you_mean(value, registry, registry_aliases(registry))})
        return value
    return Annotated[str, AfterValidator(check), _RegistryEnum(registry)]


def names_of(registry: Mapping[str, Any]) -> str:
    """`a, b, c`: a registry's names for descriptions and messages."""
    return ", ".join(registry)


def one_of(names: tuple[str, ...]) -> Any:
    """A `Literal` type of fixed names (modes that are not registries)."""
    return Literal[names]  # type: ignore[valid-type]


class Section(BaseModel):
    """A config section: unknown keys are errors, values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataConfig(Section):
    """Which dataset, where it lives, and how it is split."""

    dataset: registry_name(DATASETS) = Field(
        "digits", description="Dataset name: " + "; ".join(f"{n} ({e.summary})" for n, e in DATASETS.items()) + ".")
    path: str | None = Field(
        None, max_length=4096,
        description="The .npz file of dataset npz (keys X and y / attributes / targets; see docs/losses.md).")
    root: str | None = Field(
        None, max_length=4096, description=f"Folder holding dataset files; default ${DATA_ROOT_ENV} or 'data'.")
    download: bool = Field(
        False, description="Download the official CIFAR-10 archive when it is not under root.")
    url: str | None = Field(
        None, max_length=2048,
        description="Where data.download fetches the CIFAR-10 archive (a mirror, a local server); default "
                    "$NNRUN_CIFAR10_URL, else the official address. The official md5 is checked whatever the source.")
    val_size: int | float = Field(
        0.1, gt=0, le=BIG, description="Validation examples carved from the training pool: a count, or a fraction < 1.")
    test_size: int | float = Field(
        0.2, gt=0, le=BIG,
        description="Test examples for datasets without an official test split: a count or fraction.")
    train_size: int | None = Field(
        None, gt=0, le=BIG, description="Keep only this many training examples (a seeded subset); null keeps all.")
    train_outliers: float = Field(
        0.0, ge=0, lt=1, description="Regression targets: the share of training rows whose target is made an outlier "
                                     "(10 standard deviations of the training targets added; val and test stay "
                                     "clean), to measure a loss's robustness; 0: off.")

    @model_validator(mode="after")
    def _path_for_npz(self) -> DataConfig:
        if self.dataset == "npz" and not self.path:
            raise ValueError("data.path is required when data.dataset is npz (the .npz file to load)")
        if self.dataset != "npz" and self.path:
            raise ValueError(f"data.path is only read for data.dataset=npz, not {self.dataset}")
        return self

    def resolved_root(self) -> Path:
        """The data folder: `root`, else the environment variable, else `data`."""
        return Path(self.root or os.environ.get(DATA_ROOT_ENV) or "data")


class PreprocessConfig(Section):
    """Preprocessing, fitted on the training split only and applied to val and test (docs/preprocessing.md).

    Steps in order: centre, scale, then optionally PCA (rotate onto the top `pca` eigenvectors of
    the covariance) and whitening (divide each kept component by sqrt(eigenvalue + eps)).
    `fit_on: all` (with `allow_leak: true`) fits the statistics on every split instead: the leak,
    kept only so that a study can measure it.
    `whiten: true` with `pca: null` whitens all components (the output keeps every dimension);
    `whiten: zca` also rotates the whitened components back onto the input axes (images stay images).
    PCA and whitening need `center: per_feature`: the covariance is taken about the per-feature mean.
    """

    center: one_of(CENTER_MODES) = Field(
        "per_feature", description="Mean subtraction: none, per_feature (the mean image), global (one scalar) "
                                   "or per_channel (one mean per colour channel).")
    scale: one_of(SCALE_MODES) = Field(
        "none", description="Scaling after centring: none, std (divide each feature by its standard deviation), "
                            "global (divide every feature by one scalar: the standard deviation of all training "
                            "values about their grand mean, ddof 0) or minmax (each feature's training range onto "
                            "[-1, 1]).")
    pca: int | None = Field(
        None, ge=1, le=BIG, strict=True, description="Keep this many principal components (eigenvectors by descending "
                                             "eigenvalue); null: no reduction.")
    whiten: bool | Literal["zca"] = Field(
        False, description="true: divide each kept principal component by sqrt(eigenvalue + eps) (with pca null, "
                           "all components are kept and whitened); zca: whiten, then rotate back onto the input "
                           "axes, Xc @ U diag(1/sqrt(S + eps)) U.T (the output keeps every input feature); "
                           "false: off.")
    eps: float = Field(
        1e-5, ge=0, allow_inf_nan=False, description="Added to each eigenvalue before the square root when whitening.")
    fit_on: Literal["train", "all"] = Field(
        "train", description="Rows the statistics are fitted on: train (the training split alone, always right) or "
                             "all (train, val and test together: the classic leak, only to measure what it does; "
                             "needs allow_leak).")
    allow_leak: bool = Field(
        False, description="Confirm fit_on: all, which lets the validation and test rows shape the preprocessing.")

    @model_validator(mode="after")
    def _leak_is_explicit(self) -> PreprocessConfig:
        if self.fit_on == "all" and not self.allow_leak:
            raise ValueError(
                "preprocess.fit_on=all fits the preprocessing statistics on the validation and test rows too, "
                "which leaks them into training (their scores are no longer an honest estimate); it exists only "
                "to measure that leak: set preprocess.allow_leak: true to run it anyway, or fit_on: train")
        return self

    @model_validator(mode="after")
    def _pca_needs_feature_mean(self) -> PreprocessConfig:
        if (self.pca is not None or self.whiten) and self.center != "per_feature":
            raise ValueError(
                f"preprocess.center must be per_feature when preprocess.pca or preprocess.whiten is set "
                f"(PCA diagonalizes the covariance about the per-feature mean), got center={self.center}; "
                f"set center: per_feature, or pca: null and whiten: false")
        return self


class AugmentConfig(Section):
    """Random changes to each training batch of image data, drawn from the `augment` stream; val and test are
    never augmented (docs/augmentation.md). Off by default."""

    flip: bool = Field(False, description="Mirror each training image left-right with probability 1/2.")
    translate: int = Field(
        0, ge=0, le=BIG, description="Shift each training image by up to this many pixels in each direction "
                                     "(pad and crop; below the image height and width); 0: off.")
    padding: one_of(PADDING_MODES) = Field(
        "zero", description="What translations move in from outside: zero (value 0 of the raw image) or reflect "
                            "(the image mirrored at its border).")
    test_flip: bool = Field(
        False, description="Test-time flip averaging: the final evaluation of every split (and nnrun evaluate and "
                           "predict on the run, unless --no-flip-average) averages the probabilities of each image "
                           "and its left-right mirror; needs images and a loss with probabilities. Per-epoch "
                           "validation does not use it.")

    @property
    def active(self) -> bool:
        """Whether any augmentation of training batches is on (`test_flip` is not: it changes no training batch)."""
        return self.flip or self.translate > 0


def _penalty_description(name: str) -> str:
    """The first line of a penalty's docstring: what its strength key adds."""
    return (PENALTIES[name].__doc__ or name).strip().splitlines()[0]


class _LayerConfigBase(Section):
    """Settings of one Linear layer that override the network-wide ones (null keeps those)."""

    init: registry_name(INIT_SCHEMES) | None = Field(None, description="Weight init scheme of this layer.")
    init_scale: float | None = Field(None, gt=0, description="Std of the small, small_uniform and sparse draws here.")
    sparse_k: int | None = Field(None, ge=1, le=BIG, description="Nonzero incoming weights per neuron for sparse here.")
    bias_init: float | None = Field(None, description="Constant this layer's biases start at.")


LayerConfig = create_model(
    "LayerConfig", __base__=_LayerConfigBase, __doc__=_LayerConfigBase.__doc__,
    **{name: (float | None, Field(None, ge=0, description=f"This layer's {_penalty_description(name)}"))
       for name in PENALTIES},
    max_norm=(float | None, Field(None, gt=0, description="Max-norm bound of this layer's weight columns.")))
"""Per-layer overrides: init settings, one strength per penalty in `PENALTIES`, max_norm."""


class ModelConfig(Section):
    """The MLP: hidden layer sizes, activation, weight and bias initialization, BatchNorm, dropout.

    Layout per hidden layer i: Linear -> BatchNorm (if on) -> activation -> Dropout (if keep < 1).
    """

    hidden: list[Annotated[int, Field(ge=1, le=BIG)]] = Field(
        [100], description="Hidden layer widths (each >= 1), input side first; [] is a linear model.")
    activation: registry_name(ACTIVATIONS) = Field(
        "relu", description=f"Non-linearity after each hidden layer: {names_of(ACTIVATIONS)}.")
    leaky_slope: float = Field(0.01, gt=0, lt=1, description="Slope of leaky_relu for negative inputs.")
    init: registry_name(INIT_SCHEMES) = Field(
        "he", description=f"Weight init scheme for every Linear layer: {names_of(INIT_SCHEMES)}.")
    init_scale: float = Field(0.01, gt=0, description="Std of the small, small_uniform and sparse schemes' draws.")
    sparse_k: int = Field(10, ge=1, le=BIG,
        description="Nonzero incoming weights per output neuron for the sparse scheme.")
    bias_init: float = Field(0.0, description="Constant every bias starts at (0 or a small value such as 0.01).")
    batchnorm: bool = Field(False, description="BatchNorm after each hidden Linear layer, before the activation.")
    bn_momentum: float = Field(
        0.1, gt=0, le=1, description="Running-average momentum: running = (1 - m) * running + m * batch (PyTorch).")
    bn_eps: float = Field(1e-5, gt=0, description="Added to the variance before the square root in BatchNorm.")
    dropout: float = Field(
        1.0, gt=0, le=1, description="Keep probability p of dropout after each hidden activation; 1 disables it.")
    dropout_mode: Literal["inverted", "vanilla"] = Field(
        "inverted", description="inverted: scale by 1/p while training; vanilla: scale by p at test time.")
    layers: dict[int, LayerConfig] = Field(
        default_factory=dict,
        description="Per-layer overrides by Linear layer index: 0 = first hidden, len(hidden) = output layer.")

    @model_validator(mode="after")
    def _layers_exist(self) -> ModelConfig:
        n = len(self.hidden)
        for index in self.layers:
            if not 0 <= index <= n:
                raise ValueError(
                    f"model.layers.{index}: no such Linear layer; allowed indices 0..{n} "
                    f"(0 = first hidden layer, {n} = output layer, for hidden = {self.hidden})")
        return self


class _RegularizationConfigBase(Section):
    """Penalties on the weights (per-layer strengths go in model.layers)."""


RegularizationConfig = create_model(
    "RegularizationConfig", __base__=_RegularizationConfigBase, __doc__=_RegularizationConfigBase.__doc__,
    **{name: (float, Field(0.0, ge=0, description=_penalty_description(name))) for name in PENALTIES},
    max_norm=(float | None, Field(
        None, gt=0, description="Project each neuron's incoming weight vector to norm <= max_norm after each update.")),
    regularize_bias=(bool, Field(False, description="Apply the penalties to biases too.")),
    regularize_bn=(bool, Field(False, description="Apply the penalties to BatchNorm gamma and beta too.")))
"""One strength per penalty in `PENALTIES` (l2, l1), max_norm, and whether biases and BatchNorm are penalized."""


class LossConfig(Section):
    """The data loss on the network's scores and the options of each loss (see docs/losses.md).

    Options a loss does not use are ignored (so a sweep over `loss.name` can share them),
    except `bins`, which only class losses accept.
    """

    name: registry_name(LOSSES) = Field(
        "softmax", description="Loss: " + "; ".join(
            f"{', '.join(losses_for([kind]))} ({TARGET_WORDS[kind]} targets)" for kind in TARGET_WORDS
            if losses_for([kind])) + ".")
    margin: float = Field(1.0, gt=0, description="svm, squared_hinge: the margin delta in max(0, s_j - s_y + delta).")
    tree: list[Any] | None = Field(
        None, description="hierarchical_softmax: label tree as nested lists of class names (a list of more than "
                          "two is split in halves); null: a balanced tree over the classes in order.")
    bins: int | None = Field(
        None, ge=2, le=BIG, description="Class losses on a 1-D regression target: cut it into this many quantile bins "
                                "fitted on the training split and train a classifier; null: off.")
    decode: one_of(DECODE_MODES) = Field(
        "auto", description="With bins: the prediction is the expectation of the bin centres under the bin "
                            "probabilities (expectation), or the likeliest bin's centre (argmax); auto: expectation "
                            "where the loss gives probabilities (softmax, hierarchical_softmax), else argmax.")
    standardize_targets: bool = Field(
        True, description="l2, l1: train on (y - mean) / std of the training targets; metrics stay in y's units.")
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="softmax: train on the target distribution (1 - e) * onehot(y) + e / C "
                                     "instead of onehot(y); 0: off.")

    @field_validator("tree")
    @classmethod
    def _tree_shape(cls, tree: list[Any] | None) -> list[Any] | None:
        return None if tree is None else check_tree_spec(tree)

    @model_validator(mode="after")
    def _bins_need_class_loss(self) -> LossConfig:
        if self.bins is not None and LOSSES[self.name].target_kind != "classes":
            raise ValueError(f"loss.bins works with class losses ({', '.join(losses_for(['classes']))}), "
                             f"not {self.name}; remove loss.bins or change loss.name")
        if self.bins is not None and self.decode == "expectation" and not LOSSES[self.name].has_proba:
            raise ValueError(f"loss.decode=expectation weights the bin centres by the bin probabilities, which "
                             f"{self.name} does not give; use loss.decode: argmax (or auto), or a loss with "
                             f"probabilities ({', '.join(n for n in losses_for(['classes']) if LOSSES[n].has_proba)})")
        return self

    @property
    def target_kind(self) -> str:
        """The kind of targets this loss trains on: classes, attributes or regression (a class loss with bins)."""
        return "regression" if self.bins is not None else LOSSES[self.name].target_kind


def check_loss_fits_data(loss: LossConfig, data: DataConfig) -> None:
    """Raise `UserInputError` when the loss needs targets the dataset cannot have (npz is checked on load)."""
    offered = DATASETS[data.dataset].target_kinds
    kind = loss.target_kind
    if offered is None or kind in offered:
        return
    what = f"loss.bins={loss.bins} (with loss.name={loss.name})" if loss.bins is not None else f"loss.name={loss.name}"
    raise UserInputError(
        f"{what} needs {TARGET_WORDS[kind]} targets, but data.dataset={data.dataset} provides "
        f"{' and '.join(TARGET_WORDS[k] for k in offered)} targets only. Losses for them: "
        f"{', '.join(losses_for(offered))}" + ("; loss.bins turns a regression target into classes"
                                                if "regression" in offered else "") + ".")


class OptimConfig(Section):
    """The update rule and the learning-rate schedule."""

    name: registry_name(OPTIMIZERS) = Field("momentum", description=f"Update rule: {names_of(OPTIMIZERS)}.")
    lr: float = Field(0.01, gt=0, description="Learning rate. With a schedule: the rate of the first epoch.")
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum coefficient mu (momentum, nesterov).")
    beta1: float = Field(0.9, ge=0, lt=1, description="Adam: decay of the first-moment average.")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam: decay of the second-moment average.")
    decay_rate: float = Field(0.99, ge=0, lt=1, description="RMSprop: decay of the squared-gradient average.")
    eps: float = Field(1e-8, gt=0, description="Adam, RMSprop: added to the root of the second moment.")
    schedule: registry_name(SCHEDULES) = Field(
        "constant", description=f"Learning-rate schedule over epochs: {names_of(SCHEDULES)}.")
    step_epochs: int = Field(3, ge=1, le=BIG, description="step schedule: epochs between decays.")
    lr_decay: float = Field(0.1, gt=0, le=1, description="step and exponential schedules: factor per decay.")
    min_lr: float = Field(0.0, ge=0, description="cosine schedule: learning rate reached after the last epoch.")
    pct_start: float = Field(
        0.3, gt=0, lt=1, description="one_cycle schedule: share of the epochs spent rising to lr.")
    div_factor: float = Field(
        25.0, ge=1, description="one_cycle schedule: the rate rises from lr / div_factor, the first epoch's rate when "
                                "pct_start * (train.epochs - warmup_epochs) > 1; with fewer epochs the first one is "
                                "already past the peak (as PyTorch's OneCycleLR stepped once per epoch).")
    final_div_factor: float = Field(
        1e4, ge=1, description="one_cycle schedule: the last epoch's rate is lr / (div_factor * final_div_factor).")
    warmup_epochs: int = Field(
        0, ge=0, le=BIG, description="Linear warmup in front of the schedule: epoch e < warmup_epochs uses "
                                     "first * (e + 1) / (warmup_epochs + 1), first being the schedule's own first "
                                     "rate (lr; one_cycle: its rate at its epoch 0, lr / div_factor when it starts "
                                     "below the peak), then the schedule runs over the remaining epochs; 0: off.")
    weight_decay: float = Field(
        0.0, ge=0, description="adamw, sgdw: decoupled weight decay, w -= lr * weight_decay * w on each weight "
                               "matrix every step, apart from the gradient (unlike regularization.l2).")


class TrainConfig(Section):
    """The training loop."""

    epochs: int = Field(10, ge=1, le=BIG, description="Passes over the training split.")
    batch_size: int = Field(128, ge=1, le=BIG, description="Examples per minibatch.")
    eval_batch_size: int = Field(4096, ge=1, le=BIG, description="Examples per forward pass when evaluating.")
    eval_train_size: int = Field(
        2000, ge=1, le=BIG,
        description="Training examples (a fixed seeded subset) evaluated each epoch for train accuracy.")
    patience: int | None = Field(
        None, ge=1, le=BIG,
        description="Early stopping: stop after this many epochs without a better validation score; "
                    "null: off.")
    restore_best: bool = Field(
        True, description="End with the weights of the epoch with the best validation score (else the last epoch's).")
    checkpoint_every: int = Field(
        1, ge=1, le=BIG,
        description="Save the training state (checkpoint.npz) every this many epochs, and whenever a run "
                    "stops; nnrun train --resume continues from it.")
    save_predictions: bool = Field(
        False, description="Write the test split's predictions and scores to predictions.npz in the run directory.")
    device: one_of(DEVICES) = Field(
        "cpu", description="Where to compute: cpu, or gpu (an NVIDIA GPU through CuPy: pip install 'nnrun[gpu]'). "
                           "Each is deterministic; they agree to float32 rounding, not bit for bit.")
    cuda_graph: bool = Field(
        True, description="device gpu: record the training step once as a CUDA graph and replay it for every "
                          "batch (the same results, far fewer launches); false launches every kernel each step. "
                          "A step that cannot be recorded runs unrecorded, and the summary's step_path says why.")


def _schema_with_defaults_key(schema: dict[str, Any]) -> None:
    """Add the `defaults` key of config files (`nnrun.compose`) to the JSON schema, so an editor accepts it."""
    schema.setdefault("properties", {})[DEFAULTS_KEY] = {
        "description": "Config files this one is composed of (paths relative to this file's folder), merged in "
                       "order, this file's keys over them: mappings key by key, lists and other values replaced.",
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}


class ExperimentConfig(Section):
    """One experiment: everything `nnrun train` needs."""

    model_config = ConfigDict(**Section.model_config, json_schema_extra=_schema_with_defaults_key)

    name: str = Field("experiment", pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$", max_length=100,
                      description="Experiment name (letters, digits, . _ -, not starting with ., at most 100 "
                                  "characters); names the run directory.")
    seed: int = Field(0, ge=0, lt=2**63, description="Seed of every random stream (split, init, shuffle, dropout).")
    data: DataConfig = Field(default_factory=DataConfig, description="Dataset and split.")
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig, description="Preprocessing.")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="Training-batch augmentation.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Network.")
    regularization: RegularizationConfig = Field(default_factory=RegularizationConfig, description="Penalties.")
    loss: LossConfig = Field(default_factory=LossConfig, description="Data loss.")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimizer.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training loop.")

    @model_validator(mode="after")
    def _loss_fits_data(self) -> ExperimentConfig:
        check_loss_fits_data(self.loss, self.data)
        return self

    @model_validator(mode="after")
    def _warmup_leaves_epochs(self) -> ExperimentConfig:
        if self.optim.warmup_epochs >= self.train.epochs:
            raise ValueError(f"optim.warmup_epochs={self.optim.warmup_epochs} leaves no epoch for the schedule "
                             f"(train.epochs={self.train.epochs}); allowed: 0..{self.train.epochs - 1}")
        return self

    @model_validator(mode="after")
    def _augment_needs_pixels(self) -> ExperimentConfig:
        p = self.preprocess
        if self.augment.active and (p.whiten is True or (p.pca is not None and p.whiten != "zca")):
            raise ValueError(
                "augment.flip and augment.translate move pixels, but preprocess.pca / preprocess.whiten: true turn "
                "the images into principal components; use whiten: zca (whitened images stay images) or "
                "pca: null and whiten: false, or switch the augmentation off")
        return self

    @model_validator(mode="after")
    def _outliers_need_regression(self) -> ExperimentConfig:
        if self.data.train_outliers and self.loss.target_kind != "regression":
            raise ValueError(f"data.train_outliers makes outliers of regression targets, but "
                             f"loss.name={self.loss.name} trains on {self.loss.target_kind}; use a regression loss "
                             "(or loss.bins), or data.train_outliers: 0")
        return self

    @model_validator(mode="after")
    def _test_flip_fits(self) -> ExperimentConfig:
        if self.augment.test_flip:
            problem = flip_average_problem(self.loss.name, LOSSES[self.loss.name].has_proba, self.preprocess.pca,
                                           self.preprocess.whiten)
            if problem:
                raise ValueError(f"augment.test_flip: {problem}; or set augment.test_flip: false")
        return self

    def to_yaml(self, notes: Mapping[str, str] | None = None) -> str:
        """The resolved config as YAML, in field order; `notes` (dotted key -> text) become comments
        at the end of their keys' lines (`# no effect: ...`)."""
        text = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
        return annotate_yaml(text, notes) if notes else text


YAML_KEY_RE = re.compile(r"^(\s*)([^\s#:\-][^:]*):(\s|$)")
"""A mapping key at the start of a line of block-style YAML, with its indentation."""


def annotate_yaml(text: str, notes: Mapping[str, str]) -> str:
    """Append `  # NOTE` to the line of each dotted key of `notes` in block-style YAML `text`."""
    lines = text.splitlines()
    path: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        match = YAML_KEY_RE.match(line)
        if not match:
            continue
        indent = len(match.group(1))
        while path and path[-1][0] >= indent:
            path.pop()
        path.append((indent, match.group(2).strip()))
        key = ".".join(k for _, k in path)
        if key in notes:
            lines[i] = f"{line}  # {notes[key]}"
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config and the files it was composed of (the top file first; empty without a file)."""

    config: ExperimentConfig
    sources: tuple[ConfigSource, ...] = ()

    def files(self) -> list[dict[str, Any]]:
        """The sources as `provenance.json` records them (`config_files`)."""
        return [source.as_json() for source in self.sources]


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), *,
                compose: bool = True) -> ExperimentConfig:
    """Read `path` (YAML; None means all defaults) composed with its `defaults` files, apply `a.b=value`
    overrides, validate. `compose=False` reads the file alone: a `defaults` key is then an unknown key (a run
    directory's config.yaml is resolved, and names no other file to read)."""
    return compose_config(path, overrides, compose=compose).config


def compose_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), *,
                   compose: bool = True) -> LoadedConfig:
    """`load_config`, with the files the config was composed of."""
    composed = compose_raw(path, overrides, compose=compose)
    cfg = validate_config(composed.raw, source=str(path) if path is not None else "defaults",
                          origins=composed.origins)
    return LoadedConfig(cfg, tuple(composed.sources))


def compose_raw(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), *,
                compose: bool = True) -> Composed:
    """The raw mapping of `path` composed (`nnrun.compose.compose_file`; the file alone with `compose=False`)
    with `overrides` applied, and each value's origin; not validated."""
    if path is None:
        composed = Composed()
    elif compose:
        composed = compose_file(Path(path))
    else:
        composed = Composed(read_yaml_mapping(Path(path)))
    for item in overrides:
        apply_override(composed.raw, item)
        key = item.partition("=")[0].strip()
        if key.split(".")[0] == DEFAULTS_KEY:
            raise UserInputError(f"--set {shorten(key)}: {DEFAULTS_KEY} names the files a config file is composed "
                                 "of, and is read only at the top of a config file; write it there")
        composed.set_origin(key, (f"--set {shorten(item)}",))
    return composed


def parse_yaml_value(text: str, what: str) -> Any:
    """A command-line value as YAML within `nnrun.safeyaml`'s limits; text that is not YAML stays text, a
    value that breaks a limit is a `UserInputError` naming `what` (the option)."""
    if len(text) > MAX_VALUE_CHARS:
        raise UserInputError(f"{what}: a value of {len(text)} characters (at most {MAX_VALUE_CHARS})")
    try:
        return safe_load(text)
    except YamlLimitError as e:
        raise UserInputError(f"{what}: {e.problem}") from None
    except yaml.YAMLError:
        return text


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `raw[a][b] = value` for `item` = 'a.b=value', the value parsed as YAML."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserInputError(f"--set expects KEY=VALUE with a dotted key such as optim.lr=0.01, got {item!r}")
    value = parse_yaml_value(text, f"--set {shorten(key)}") if text.strip() else None
    set_dotted(raw, key, value, what=f"--set {shorten(item)}")


def split_top_level(text: str) -> list[str]:
    """Split `text` on commas outside brackets and quotes: `'[64,32],[128]'` -> `['[64,32]', '[128]']`."""
    parts, depth, quote, current = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def parse_value(text: str) -> Any:
    """A command-line value parsed like `--set` values (YAML), with `1e-3` read as a number, not text."""
    text = text.strip()
    if NUMBER_RE.match(text):
        if re.fullmatch(r"[-+]?\d+", text):  # a decimal integer (leading zeros too), within YAML's digit limit
            sign, digits = ("-", text[1:]) if text[0] == "-" else ("", text.lstrip("+"))
            return parse_yaml_value(sign + (digits.lstrip("0") or "0"), "a command-line value")
        return float(text)
    return parse_yaml_value(text, "a command-line value")


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{'optim': {'lr': 0.1}}` -> `{'optim.lr': 0.1}` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def differing_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two nested mappings (or that only one has), sorted."""
    fa, fb = flatten(a), flatten(b)
    return sorted(k for k in set(fa) | set(fb) if fa.get(k, object()) != fb.get(k, object()))


def set_dotted(raw: dict[str, Any], key: str, value: Any, what: str | None = None) -> None:
    """`raw[a][b] = value` for `key` 'a.b', creating missing sections; `what` names the source in errors."""
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserInputError(f"{what or key}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def validate_config(raw: dict[str, Any], source: str = "config",
                    origins: OriginTree | None = None) -> ExperimentConfig:
    """Validate a raw mapping into an `ExperimentConfig`, or raise one readable `UserInputError`; `origins`
    (from `nnrun.compose`) adds to each error the file its value came from when that is not `source`."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        lines = [f"invalid config ({source}):"]
        for err in e.errors():
            line = describe_error(err)
            if origins:
                line += origin_note(origins, tuple(err["loc"]), line)
            lines.append("  " + line)
        raise UserInputError("\n".join(lines)) from None


DROPOUT_MEANING = ("model.dropout is the keep probability p of each hidden unit: 1 keeps every unit (no dropout), "
                   "0.5 drops half; PyTorch's nn.Dropout(p=0.1) drops 10 %, which is model.dropout=0.9 here")
"""What `model.dropout` means, for its error messages and `nnrun validate`'s note."""
ONE_CYCLE_PEAK = ("one_cycle rises from lr / div_factor to lr at epoch pct_start * E - 1 (E: train.epochs - "
                  "optim.warmup_epochs), as PyTorch's OneCycleLR stepped once per epoch; raise pct_start or the "
                  "epochs to start below the peak")
"""When `one_cycle`'s rise ends before its first epoch, for `nnrun validate`'s note."""
KEY_HINTS = {"model.dropout": DROPOUT_MEANING, "optim.pct_start": ONE_CYCLE_PEAK}
"""Dotted key -> what its value means, added to every error about the key."""


def describe_error(err: dict[str, Any]) -> str:
    """One line for a pydantic error: dotted key, what was given, what is allowed, and what was
    most likely meant for a misspelled key or name ("did you mean"); for a key whose meaning is easily
    mistaken (`model.dropout`, a keep probability), what it means."""
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        section = section_at(err["loc"][:-1])
        allowed = f"; allowed keys here: {', '.join(section.model_fields)}" if section else ""
        return f"{loc}: unknown key{allowed}{key_suggestion(err['loc'], section)}"
    if err["type"] == "value_error" and (not err["loc"] or section_at(err["loc"])):
        # Checks across a section's fields name their keys themselves; the whole section is no useful "got".
        return err["msg"].removeprefix("Value error, ")
    line = f"{loc}: {err['msg']} (got {echo(err.get('input'))})"
    if err["type"] == "literal_error":
        ctx = err.get("ctx") or {}
        line += ctx.get("suggestion") or did_you_mean(str(err.get("input")),
                                                        re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
    if loc in KEY_HINTS:
        line += f"; {KEY_HINTS[loc]}"
    return line


def config_keys(model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """Every dotted key of the config schema (`optim.lr`; `model.layers.N.l2` for per-layer keys)."""
    keys: list[str] = []
    for name, info in (model or ExperimentConfig).model_fields.items():
        annotation = info.annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += config_keys(annotation, f"{prefix}{name}.")
        elif typing.get_origin(annotation) is dict and args and isinstance(args[-1], type) \
                and issubclass(args[-1], BaseModel):
            keys += config_keys(args[-1], f"{prefix}{name}.N.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def key_suggestion(loc: tuple, section: type[BaseModel] | None) -> str:
    """"; did you mean ..." for the unknown key at `loc`: a close key of its own section, else a key of
    another section with (nearly) the same last part (`optim.l2` -> `regularization.l2`)."""
    word = str(loc[-1])
    if section is not None:
        near = close_matches(word, section.model_fields)
        if near:
            where = ".".join(str(p) for p in loc[:-1])
            return f"; did you mean {' or '.join(repr(f'{where}.{k}' if where else k) for k in near)}?"
    elsewhere = [k for k in config_keys() if close_matches(word, [k.rsplit(".", 1)[-1]])]
    return f"; did you mean {' or '.join(repr(k) for k in elsewhere[:3])}?" if elsewhere else ""


def section_at(loc: tuple, root: type[BaseModel] | None = None) -> type[BaseModel] | None:
    """The model found by following an error's `loc` from `root` (default `ExperimentConfig`): list
    indices and dict keys are stepped over, optional and annotated types unwrapped."""
    node: Any = root or ExperimentConfig
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        if not (isinstance(node, type) and issubclass(node, BaseModel)) or str(part) not in node.model_fields:
            return None
        node = node.model_fields[str(part)].annotation
        origin = typing.get_origin(node)
        args = [a for a in typing.get_args(node) if a is not type(None)]
        if origin in (list, dict):
            node = args[-1]
            if parts:
                parts.pop(0)
            else:
                return None
        elif args and origin is not Literal and origin is not Annotated:
            node = args[0]
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None
