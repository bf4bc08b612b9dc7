"""The one place a config becomes objects: data, preprocessor, loss, model, regularizer, optimizer.

Read top-down, this is what `nnrun train` assembles from an `ExperimentConfig`:

1. `load_data`: the dataset the config names, split with the `split` stream of its seed;
2. `prepare_data`: the targets the loss trains on, the preprocessing fitted on the training
   split alone and applied to every split, and the loss (fitted on the training targets);
3. `build_model`: the MLP, weights from the `init` stream;
4. `train_setup`: the optimizer, the regularizer, the learning-rate schedule and the loop's
   settings `nnrun.trainer.fit` needs.

`assemble(cfg)` does all four. Library classes never see the config: each registry entry is
built with the config keys its constructor (or `create`) names, so adding an init scheme, an
activation, a loss, an optimizer, a schedule or a penalty needs no change here.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnrun.config import (
    DataConfig,
    ExperimentConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    PreprocessConfig,
    RegularizationConfig,
    TrainConfig,
)
from nnrun.datasets import TARGET_WORDS, DataOptions, Dataset, load_dataset
from nnrun.errors import UserInputError
from nnrun.nn.init import InitOptionError, init_weights
from nnrun.nn.layers import ACTIVATIONS
from nnrun.nn.losses import LOSSES, BinnedRegression, Loss, Targets, losses_for
from nnrun.nn.model import MLP, build_mlp
from nnrun.nn.regularizers import PENALTIES, Regularizer, Strengths
from nnrun.optim import OPTIMIZERS, SCHEDULES, Optimizer, Schedule
from nnrun.preprocess import Preprocessor, PreprocessSettings, fit_preprocessor
from nnrun.resources import available_memory, human_bytes
from nnrun.rng import stream
from nnrun.trainer import TrainSettings, TrainSetup, training_bytes

MEMORY_SHARE = 0.9
"""Share of the available memory a run may plan to use."""


def accepted_options(fn: Callable[..., Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of `options` that `fn` (a function or class) takes as keyword arguments."""
    parameters = inspect.signature(fn).parameters
    keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {name: options[name] for name, p in parameters.items() if p.kind in keyword and name in options}


# ---- data --------------------------------------------------------------------------------------

@dataclass
class PreparedData:
    """The data ready to train on: splits preprocessed (statistics from the training split alone),
    targets of the kind the loss trains on, the fitted preprocessor, and the loss."""

    data: Dataset
    preprocessor: Preprocessor
    loss: Loss


def data_options(cfg: DataConfig) -> DataOptions:
    """Where the data lives and how it is split, from the data section."""
    return DataOptions(root=cfg.resolved_root(), path=cfg.path, download=cfg.download, url=cfg.url,
                       val_size=cfg.val_size, test_size=cfg.test_size, train_size=cfg.train_size)


def preprocess_settings(cfg: PreprocessConfig) -> PreprocessSettings:
    """The preprocessing steps of the preprocess section."""
    return PreprocessSettings(center=cfg.center, scale=cfg.scale, pca=cfg.pca, whiten=cfg.whiten, eps=cfg.eps)


def load_data(cfg: ExperimentConfig) -> Dataset:
    """The dataset `cfg` names, split with the `split` stream of `cfg.seed`; nothing fitted yet."""
    return load_dataset(cfg.data.dataset, data_options(cfg.data), cfg.seed)


def select_targets(data: Dataset, loss: LossConfig) -> Dataset:
    """`data` training on the kind of targets `loss` needs, or a `UserInputError` saying which losses fit it."""
    kind = loss.target_kind
    if kind not in data.target_kinds():
        offered = " and ".join(TARGET_WORDS[k] for k in data.target_kinds())
        raise UserInputError(
            f"loss.name={loss.name} needs {TARGET_WORDS[kind]} targets, but data.dataset={data.name} "
            f"provides {offered} targets only; choose a loss for those "
            f"({', '.join(losses_for(data.target_kinds()))}) or a dataset with {TARGET_WORDS[kind]} targets")
    return data.with_targets(kind)


def build_loss(cfg: LossConfig, data: Dataset) -> Loss:
    """The loss `cfg` names for `data`'s current targets, fitted on its training targets.

    The loss class's `create` receives the loss keys it names (`margin`, `tree`, ...); with
    `bins`, a class loss is trained on quantile bins of a regression target.
    """
    targets = Targets(data.target_names_of_kind, data.y_train, data.name)
    loss_class = LOSSES[cfg.name]
    options = accepted_options(loss_class.create, cfg.model_dump())

    def create(t: Targets) -> Loss:
        return loss_class.create(t, **options)

    if cfg.bins is not None:
        return BinnedRegression.create(targets, bins=cfg.bins, inner=create)
    return create(targets)


def prepare_data(cfg: ExperimentConfig) -> PreparedData:
    """Load and split the data, switch to the loss's targets (failing early when they do not fit),
    fit the preprocessing on the training split alone and apply it to every split (in place: the
    raw float32 arrays are reused), then build the loss."""
    data = select_targets(load_data(cfg), cfg.loss)
    preprocessor = fit_preprocessor(preprocess_settings(cfg.preprocess), data.X_train, data.image_shape)
    data = data.with_features(*(preprocessor.transform(X, copy=False) for X in (data.X_train, data.X_val,
                                                                                  data.X_test)))
    return PreparedData(data, preprocessor, build_loss(cfg.loss, data))


# ---- model -------------------------------------------------------------------------------------

def build_model(cfg: ModelConfig, n_inputs: int, n_outputs: int, rng: np.random.Generator,
                dropout_rng: np.random.Generator | None = None) -> MLP:
    """The MLP the model section describes, float32, weights drawn from `rng` layer by layer.

    Linear layer i uses `cfg.layers[i]`'s settings where given, else the network-wide ones. The
    activation class receives the model keys its constructor names (leaky_relu: `leaky_slope`).
    """
    sizes = [n_inputs, *cfg.hidden, n_outputs]
    n_params = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:], strict=False))
    check_memory(8 * n_params, f"the weights and gradients of a {'-'.join(map(str, sizes))} network "
                               f"({n_params:,} parameters)", "use fewer or narrower layers (model.hidden)")
    weights = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        own = cfg.layers.get(i)

        def setting(key: str, own: Any = own) -> Any:
            value = getattr(own, key) if own is not None else None
            return getattr(cfg, key) if value is None else value

        try:
            W = init_weights(setting("init"), fan_in, fan_out, rng, scale=setting("init_scale"),
                             k=setting("sparse_k"))
        except InitOptionError as e:
            per_layer = own is not None and getattr(own, e.option, None) is not None
            key = f"model.layers.{i}.{e.option}" if per_layer else f"model.{e.option}"
            raise UserInputError(f"{key}: layer {i} {e}") from None
        weights.append((W, np.full(fan_out, setting("bias_init"), dtype=np.float32)))
    activation_class = ACTIVATIONS[cfg.activation]
    activation = functools.partial(activation_class, **accepted_options(activation_class, cfg.model_dump()))
    return build_mlp(weights, activation=activation, batchnorm=cfg.batchnorm, bn_momentum=cfg.bn_momentum,
                     bn_eps=cfg.bn_eps, dropout=cfg.dropout, dropout_mode=cfg.dropout_mode, dropout_rng=dropout_rng)


def model_for(cfg: ExperimentConfig, prepared: PreparedData) -> MLP:
    """The model of `cfg` sized for the prepared data, weights from the `init` stream of `cfg.seed`, once the
    memory training it needs (weights, gradients, optimizer state, checkpoints, activations) is known to fit."""
    data = prepared.data
    sizes = [data.n_features, *cfg.model.hidden, prepared.loss.output_dim(data.n_targets)]
    slots = len(OPTIMIZERS[cfg.optim.name].slots)
    need = training_bytes(sizes, train_settings(cfg.train), slots, cfg.model.batchnorm)
    check_memory(need, f"training a {'-'.join(map(str, sizes))} network with {cfg.optim.name} and batches of "
                       f"{cfg.train.batch_size}", "use fewer or narrower layers (model.hidden) or smaller batches")
    return build_model(cfg.model, sizes[0], sizes[-1], stream(cfg.seed, "init"))


def check_memory(need: int, what: str, advice: str) -> None:
    """Refuse (`UserInputError`, with the figures) to start something that needs more memory than is available."""
    available = available_memory()
    if available is not None and need > MEMORY_SHARE * available:
        raise UserInputError(f"{what} needs about {human_bytes(need)} of memory and this machine has "
                             f"{human_bytes(available)} available; {advice}")


# ---- training ----------------------------------------------------------------------------------

def build_regularizer(reg: RegularizationConfig, model: ModelConfig) -> Regularizer:
    """Penalties (one strength per `PENALTIES` name) and max-norm, with the per-layer overrides of `model.layers`."""
    default = Strengths({name: getattr(reg, name) for name in PENALTIES}, reg.max_norm)
    per_layer = {}
    for index, layer in model.layers.items():
        strengths = {name: default.strength(name) if getattr(layer, name) is None else getattr(layer, name)
                     for name in PENALTIES}
        per_layer[index] = Strengths(strengths, default.max_norm if layer.max_norm is None else layer.max_norm)
    return Regularizer(default, per_layer, reg.regularize_bias, reg.regularize_bn)


def build_optimizer(cfg: OptimConfig) -> Optimizer:
    """The update rule `cfg.name`, constructed with the optim keys it names (`momentum`, `beta1`, ...)."""
    optimizer_class = OPTIMIZERS[cfg.name]
    return optimizer_class(**accepted_options(optimizer_class, cfg.model_dump()))


def build_schedule(cfg: OptimConfig) -> Schedule:
    """The learning-rate schedule `cfg.schedule` with the optim keys it names bound: `(epoch, epochs) -> lr`."""
    schedule = SCHEDULES[cfg.schedule]
    return functools.partial(schedule, **accepted_options(schedule, cfg.model_dump()))


def train_settings(cfg: TrainConfig) -> TrainSettings:
    """The training loop's settings of the train section."""
    return TrainSettings(epochs=cfg.epochs, batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size,
                         eval_train_size=cfg.eval_train_size, patience=cfg.patience, restore_best=cfg.restore_best)


def train_setup(cfg: ExperimentConfig) -> TrainSetup:
    """Everything the training loop needs besides model, loss and data: fresh optimizer state included."""
    return TrainSetup(optimizer=build_optimizer(cfg.optim),
                      regularizer=build_regularizer(cfg.regularization, cfg.model),
                      schedule=build_schedule(cfg.optim), settings=train_settings(cfg.train), seed=cfg.seed)


# ---- everything --------------------------------------------------------------------------------

@dataclass
class Experiment:
    """A config assembled: the prepared data (with preprocessor and loss), the model, and the training setup."""

    cfg: ExperimentConfig
    prepared: PreparedData
    model: MLP
    setup: TrainSetup

    @property
    def data(self) -> Dataset:
        return self.prepared.data

    @property
    def loss(self) -> Loss:
        return self.prepared.loss


def assemble(cfg: ExperimentConfig) -> Experiment:
    """Prepare the data, build the model and the training setup of `cfg`."""
    prepared = prepare_data(cfg)
    return Experiment(cfg, prepared, model_for(cfg, prepared), train_setup(cfg))
