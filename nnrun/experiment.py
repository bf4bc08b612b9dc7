"""The one place a config becomes objects (data, preprocessor, loss, model, regularizer, optimizer),
and a saved run becomes them again (`load_run`).

Read top-down, this is what `nnrun train` assembles from an `ExperimentConfig`:

1. `load_data`: the dataset the config names, split with the `split` stream of its seed;
2. `prepare_data`: the targets the loss trains on, the preprocessing fitted on the training
   split alone and applied to every split, and the loss (fitted on the training targets);
3. `build_model`: the MLP, weights from the `init` stream;
4. `train_setup`: the optimizer, the regularizer, the learning-rate schedule (with its warmup),
   the training-batch augmentation and the loop's settings `nnrun.trainer.fit` needs.

`assemble(cfg)` does all four, on the device `train.device` names (`nnrun.backend`: the
preprocessing fitted there and the model moved there; the data stay host arrays until the
training loop uploads them). Library classes never see the config: each registry entry is
built with the config keys its constructor (or `create`) names, so adding an init scheme, an
activation, a loss, an optimizer, a schedule or a penalty needs no change here. The same
knowledge says which keys a config's choices read: `inactive_keys` (the keys that have no
effect, which `nnrun validate` marks) and `describe_choices` (a run's header).

`load_run(path)` reads a trained run directory back into a `TrainedRun`: the resolved config, the
fitted preprocessor (preprocess.npz), the loss (config plus targets.npz), the model built from the
config with the weights of model.npz, and the rows of each split (split.npz). It predicts and
scores raw data like a fitted scikit-learn estimator.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from nnrun.augment import Augmentation, Mirror, flip_average_problem
from nnrun.backend import device_memory, device_module, to_device, to_host
from nnrun.config import (
    AugmentConfig,
    DataConfig,
    ExperimentConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    PreprocessConfig,
    RegularizationConfig,
    TrainConfig,
    load_config,
)
from nnrun.datasets import DATASETS, SPLITS, TARGET_WORDS, DataOptions, Dataset, SplitRecord, load_dataset
from nnrun.errors import UserInputError
from nnrun.inputs import ModelInput
from nnrun.nn.init import INIT_SCHEMES, InitOptionError, init_weights
from nnrun.nn.layers import ACTIVATIONS
from nnrun.nn.losses import LOSSES, BinnedRegression, Loss, Targets, losses_for, resolve_decode
from nnrun.nn.model import MLP, build_mlp
from nnrun.nn.regularizers import PENALTIES, Regularizer, Strengths
from nnrun.optim import OPTIMIZERS, SCHEDULES, Optimizer, Schedule, with_warmup
from nnrun.preprocess import Preprocessor, PreprocessSettings, fit_preprocessor
from nnrun.resources import available_memory, human_bytes
from nnrun.rng import stream
from nnrun.rundir import MODEL_MEMBERS_PER_LAYER, RUN_LAYOUT_VERSION, RUNNING, RunDir
from nnrun.trainer import TrainSettings, TrainSetup, evaluate, evaluation_scores, step_flops, training_bytes

MEMORY_SHARE = 0.9
"""Share of the available memory a run may plan to use."""

INIT_OPTIONS = {"init_scale": "scale", "sparse_k": "k"}
"""Model config key -> the keyword of the init schemes' draw functions it is passed as."""


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
    """The dataset `cfg` names, split with the `split` stream of `cfg.seed`; nothing fitted yet. With
    `data.train_outliers`, that share of the training targets made outliers (`Dataset.with_train_outliers`, drawn
    with the `outliers` stream)."""
    data = load_dataset(cfg.data.dataset, data_options(cfg.data), cfg.seed)
    try:
        return data.with_train_outliers(cfg.data.train_outliers, stream(cfg.seed, "outliers"))
    except ValueError as e:
        raise UserInputError(f"data.train_outliers={cfg.data.train_outliers}: {e}") from None


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
    `bins`, a class loss is trained on quantile bins of a regression target, decoded as `decode` says.
    """
    targets = Targets(data.target_names_of_kind, data.y_train, data.name)
    loss_class = LOSSES[cfg.name]
    options = accepted_options(loss_class.create, cfg.model_dump())

    def create(t: Targets) -> Loss:
        return loss_class.create(t, **options)

    if cfg.bins is not None:
        return BinnedRegression.create(targets, bins=cfg.bins, inner=create, decode=cfg.decode)
    return create(targets)


def preprocessing_rows(cfg: PreprocessConfig, data: Dataset) -> np.ndarray:
    """The rows the preprocessing statistics are fitted on: the training split, or with `fit_on: all` (the
    deliberate leak, `allow_leak` confirmed by the config) train, val and test stacked in that order."""
    if cfg.fit_on == "all":
        return np.concatenate([data.X_train, data.X_val, data.X_test])
    return data.X_train


Phase = Callable[[str], AbstractContextManager[None]]
"""Marks a slow phase of setting up a run, by name, around its work (the CLI shows each as it runs)."""


def no_phase(label: str) -> AbstractContextManager[None]:
    """A `Phase` that shows nothing."""
    return nullcontext()


def prepare_data(cfg: ExperimentConfig, xp: ModuleType = np, phase: Phase = no_phase,
                 data: Dataset | None = None) -> PreparedData:
    """Load and split the data (or take `data`, a dataset already split, such as the study calibration's random
    one), switch to the loss's targets (failing early when they do not fit),
    fit the preprocessing on the training split alone (`preprocessing_rows`) and apply it to every
    split (in place: the raw float32 arrays are reused), then build the loss. With `xp` CuPy the
    preprocessing is fitted and applied on the GPU, each split coming back to the host. `phase` marks
    the loading, the fit and the transform (each can take tens of seconds on CIFAR-10)."""
    if data is None:
        with phase(f"loading {cfg.data.dataset}"):
            data = load_data(cfg)
    data = select_targets(data, cfg.loss)
    rows = preprocessing_rows(cfg.preprocess, data)
    with phase(f"fitting the preprocessing on {len(rows):,} rows of {rows.shape[1]:,} features"):
        preprocessor = fit_preprocessor(preprocess_settings(cfg.preprocess), rows, data.image_shape, xp=xp)

    def transform(X: np.ndarray) -> np.ndarray:
        if xp is np:
            return preprocessor.transform(X, copy=False)
        return to_host(preprocessor.transform(to_device(X, xp), copy=False))

    with phase("preprocessing every split"):
        data = data.with_features(*(transform(X) for X in (data.X_train, data.X_val, data.X_test)))
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
            W = init_weights(setting("init"), fan_in, fan_out, rng,
                             **{keyword: setting(key) for key, keyword in INIT_OPTIONS.items()})
        except InitOptionError as e:
            per_layer = own is not None and getattr(own, e.option, None) is not None
            key = f"model.layers.{i}.{e.option}" if per_layer else f"model.{e.option}"
            raise UserInputError(f"{key}: layer {i} {e}") from None
        weights.append((W, np.full(fan_out, setting("bias_init"), dtype=np.float32)))
    activation_class = ACTIVATIONS[cfg.activation]
    activation = functools.partial(activation_class, **accepted_options(activation_class, cfg.model_dump()))
    return build_mlp(weights, activation=activation, batchnorm=cfg.batchnorm, bn_momentum=cfg.bn_momentum,
                     bn_eps=cfg.bn_eps, dropout=cfg.dropout, dropout_mode=cfg.dropout_mode, dropout_rng=dropout_rng)


def network_sizes(cfg: ExperimentConfig, n_features: int, n_outputs: int) -> list[int]:
    """The layer widths of `cfg`'s network, inputs first, for `n_features` inputs and `n_outputs` outputs."""
    return [n_features, *cfg.model.hidden, n_outputs]


def training_need(cfg: ExperimentConfig, sizes: list[int]) -> int:
    """About how many bytes training a network of `sizes` with `cfg`'s optimizer and batches takes, data aside
    (`nnrun.trainer.training_bytes`)."""
    slots = len(OPTIMIZERS[cfg.optim.name].slots)
    return training_bytes(sizes, train_settings(cfg.train), slots, cfg.model.batchnorm)


def preprocessed_width(cfg: PreprocessConfig, n_features: int) -> int:
    """Features per example after the preprocessing `cfg` describes, known before fitting it: `pca` components
    (rotated back onto the `n_features` input axes by ZCA), else `n_features`."""
    return cfg.pca if cfg.pca is not None and cfg.whiten != "zca" else n_features


def upload_bytes(data: Dataset, n_features: int | None = None) -> int:
    """Bytes the training loop uploads to a GPU: the training and validation inputs as float32 (`n_features`
    columns, the width after preprocessing; default the data's own) and the training targets."""
    width = data.n_features if n_features is None else n_features
    return (len(data.X_train) + len(data.X_val)) * width * np.dtype(np.float32).itemsize + data.y_train.nbytes


def gpu_bytes(cfg: ExperimentConfig, data: Dataset, loss: Loss, n_features: int | None = None) -> int:
    """About how many bytes of GPU memory a run of `cfg` takes: training its network (`training_need`) plus the
    splits the loop uploads (`upload_bytes`). `data` as prepared, or raw (targets selected) with `n_features`
    the width after preprocessing (`preprocessed_width`), so that a run can be sized before it starts."""
    width = data.n_features if n_features is None else n_features
    sizes = network_sizes(cfg, width, loss.output_dim(data.n_targets))
    return training_need(cfg, sizes) + upload_bytes(data, width)


def model_for(cfg: ExperimentConfig, prepared: PreparedData, xp: ModuleType = np) -> MLP:
    """The model of `cfg` sized for the prepared data, weights from the `init` stream of `cfg.seed`, once the
    memory training it needs (weights, gradients, optimizer state, checkpoints, activations) is known to fit;
    moved to the device of the array module `xp` (its memory checked too: the model and the training and
    validation splits, which the loop uploads: `gpu_bytes`)."""
    data = prepared.data
    sizes = network_sizes(cfg, data.n_features, prepared.loss.output_dim(data.n_targets))
    what = (f"training a {'-'.join(map(str, sizes))} network with {cfg.optim.name} and batches of "
            f"{cfg.train.batch_size}")
    advice = "use fewer or narrower layers (model.hidden) or smaller batches"
    check_memory(training_need(cfg, sizes), what, advice)
    if xp is not np:
        free = device_memory(xp)
        need = gpu_bytes(cfg, data, prepared.loss)
        if free is not None and need > MEMORY_SHARE * free:
            raise UserInputError(f"train.device: gpu: {what} on the training and validation splits needs about "
                                 f"{human_bytes(need)} of GPU memory and the GPU has {human_bytes(free)} free; "
                                 f"{advice}, or train.device: cpu")
    model = build_model(cfg.model, sizes[0], sizes[-1], stream(cfg.seed, "init"))
    return model if xp is np else model.to(xp)


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
    """The learning-rate schedule `cfg.schedule` with the optim keys it names bound, behind a linear warmup of
    `cfg.warmup_epochs` epochs when set: `(epoch, epochs) -> lr`."""
    schedule = SCHEDULES[cfg.schedule]
    return with_warmup(functools.partial(schedule, **accepted_options(schedule, cfg.model_dump())), cfg.warmup_epochs)


def build_augmentation(cfg: AugmentConfig, prepared: PreparedData) -> Augmentation | None:
    """The training-batch augmentation of the augment section for the prepared data; None when it is off.

    After preprocessing that works pixel by pixel (centring, scaling) each batch is mapped back to
    raw pixels, moved and mapped forward again, so it equals the preprocessing of augmented raw
    images; after ZCA the whitened images are moved as they are (docs/augmentation.md).
    """
    if not cfg.active:
        return None
    data = prepared.data
    if data.image_shape is None:
        raise UserInputError(f"augment: flips and translations need images, and data.dataset={data.name} has no "
                             "image shape; set augment.flip: false and augment.translate: 0")
    _, height, width = data.image_shape
    if cfg.translate >= min(height, width):
        raise UserInputError(f"augment.translate: shifts of up to {min(height, width) - 1} pixels fit the "
                             f"{height}x{width} images of {data.name}, got {cfg.translate}")
    return Augmentation(data.image_shape, flip=cfg.flip, translate=cfg.translate, padding=cfg.padding,
                        pixel_affine=prepared.preprocessor.pixel_affine())


def flip_average_mirror(what: str, loss_name: str, loss: Loss, preprocessor: Preprocessor, dataset: str) -> Mirror:
    """The mirror of test-time flip averaging (`augment.test_flip`, `--flip-average`) for a run's fitted
    `preprocessor` and `loss`; a `UserInputError` starting with `what` (the key or option asked) when the loss
    gives no probabilities, the data are not images, or the preprocessing left no pixels (PCA, whitening).

    After preprocessing that works pixel by pixel the mirror is that of the raw image (mapped back, mirrored,
    mapped forward); after ZCA the whitened image is mirrored as it is, as augmentation's flips do
    (docs/augmentation.md).
    """
    settings = preprocessor.settings
    problem = flip_average_problem(loss_name, loss.has_proba, settings.pca, settings.whiten)
    if problem is None and preprocessor.image_shape is None:
        problem = f"flip averaging mirrors images, and data.dataset={dataset} has no image shape"
    if problem is not None:
        raise UserInputError(f"{what}: {problem}")
    return Mirror(preprocessor.image_shape, preprocessor.pixel_affine())


def train_settings(cfg: TrainConfig) -> TrainSettings:
    """The training loop's settings of the train section."""
    return TrainSettings(epochs=cfg.epochs, batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size,
                         eval_train_size=cfg.eval_train_size, patience=cfg.patience, restore_best=cfg.restore_best,
                         cuda_graph=cfg.cuda_graph)


def train_setup(cfg: ExperimentConfig, prepared: PreparedData | None = None) -> TrainSetup:
    """Everything the training loop needs besides model, loss and data: fresh optimizer state included.

    The augmentation needs the prepared data (`prepared`); a config with augmentation and no data is an error.
    """
    if cfg.augment.active and prepared is None:
        raise ValueError("train_setup: augment is on, so the prepared data are needed (prepared=...)")
    return TrainSetup(optimizer=build_optimizer(cfg.optim),
                      regularizer=build_regularizer(cfg.regularization, cfg.model),
                      schedule=build_schedule(cfg.optim), settings=train_settings(cfg.train), seed=cfg.seed,
                      augment=build_augmentation(cfg.augment, prepared) if prepared is not None else None)


# ---- everything --------------------------------------------------------------------------------

@dataclass
class Experiment:
    """A config assembled: the prepared data (with preprocessor and loss), the model, and the training setup."""

    cfg: ExperimentConfig
    prepared: PreparedData
    model: MLP
    setup: TrainSetup
    mirror: Mirror | None = None
    """With `augment.test_flip`: the mirror the final evaluation averages over (`nnrun.trainer.evaluate`)."""

    @property
    def data(self) -> Dataset:
        return self.prepared.data

    @property
    def loss(self) -> Loss:
        return self.prepared.loss

    @property
    def step_flops(self) -> float:
        """Floating-point operations of one training step (what the thread policy weighs)."""
        linears = list(self.model.linear_layers())
        sizes = [layer.W.value.shape[0] for layer in linears] + [linears[-1].W.value.shape[1]]
        return step_flops(sizes, self.cfg.train.batch_size)


def assemble(cfg: ExperimentConfig, phase: Phase = no_phase, *, data: Dataset | None = None) -> Experiment:
    """Prepare the data, build the model and the training setup of `cfg`, on its `train.device` (refused
    first, with a `UserInputError`, when that is a GPU this machine cannot use); `phase` marks the slow
    parts of preparing the data. `data`: a split dataset to use instead of the one `cfg.data` names."""
    xp = device_module(cfg.train.device)
    prepared = prepare_data(cfg, xp, phase, data)
    mirror = None
    if cfg.augment.test_flip:
        mirror = flip_average_mirror("augment.test_flip", cfg.loss.name, prepared.loss, prepared.preprocessor,
                                     prepared.data.name)
    return Experiment(cfg, prepared, model_for(cfg, prepared, xp), train_setup(cfg, prepared), mirror)


# ---- a saved run -------------------------------------------------------------------------------

RUN_FILES_NEEDED = {"config.yaml": "the resolved config", "preprocess.npz": "the fitted preprocessing",
                    "targets.npz": "what the outputs mean", "model.npz": "the trained weights"}
"""The files `load_run` reads, and what each holds."""


def restore_loss(cfg: LossConfig, names: list[str], state: dict[str, np.ndarray], dataset: str) -> Loss:
    """The loss `build_loss` made for a run, from the loss section and what it fitted (targets.npz arrays)."""
    targets = Targets(names, np.zeros(0), dataset)
    loss_class = LOSSES[cfg.name]
    options = accepted_options(loss_class.create, cfg.model_dump())

    def create(t: Targets) -> Loss:
        return loss_class.create(t, **options)

    if cfg.bins is not None:
        return BinnedRegression.restore(targets, state, inner=create)
    return loss_class.restore(targets, state, **options)


@dataclass
class TrainedRun:
    """A trained run read back from its directory, used like a fitted scikit-learn estimator.

    X is raw data in the dataset's own layout: (N, D) rows of any real dtype (CIFAR-10: 3,072 pixel
    values 0..255, uint8 or float; images may also come as (N, C, H, W)); the fitted preprocessing is
    applied inside, and the network runs in evaluation mode (BatchNorm running statistics, no
    dropout). y has the form of the run's targets: class labels (N,) in 0..C-1, a 0/1 attribute
    matrix (N, A), or regression targets (N, T) in their own units.

    `target_kind` is `classes`, `attributes` or `regression`; `target_names` the class, attribute or
    output names; `summary` the run's summary.json; `split` the rows of each split (None for a run
    written before split.npz existed). `flip_average` (the run's `augment.test_flip`; `with_flip_average`
    changes it): scores, predictions, probabilities and metrics average the probabilities of each image
    and its left-right mirror, as the run's final evaluation did.
    """

    path: Path
    cfg: ExperimentConfig
    preprocessor: Preprocessor
    model: MLP
    loss: Loss
    target_kind: str
    target_names: list[str]
    summary: dict[str, Any]
    split: SplitRecord | None
    flip_average: bool = False

    @property
    def n_features_in_(self) -> int:
        """Features of a raw input row (D)."""
        return int(self.preprocessor.n_features)

    @property
    def model_input(self) -> ModelInput:
        """What the model takes as input: features per raw row, image shape, the dataset (`nnrun.inputs`)."""
        return ModelInput(self.n_features_in_, self.preprocessor.image_shape, self.cfg.data.dataset)

    @property
    def classes_(self) -> np.ndarray | None:
        """The labels `predict` returns for class targets, 0..C-1 (names in `target_names`); else None."""
        return np.arange(len(self.target_names)) if self.target_kind == "classes" else None

    def check_X(self, X: Any) -> np.ndarray:
        """X as float32 (N, D), or a `UserInputError` saying what shape and dtype were expected."""
        X = np.asarray(X)
        d, shape = self.n_features_in_, self.preprocessor.image_shape
        if X.dtype.kind not in "biuf":
            raise UserInputError(f"X must hold real numbers (uint8 pixels or floats), got dtype {X.dtype}")
        if shape is not None and X.ndim == 4 and X.shape[1:] == tuple(shape):
            X = X.reshape(len(X), -1)
        if X.ndim != 2 or X.shape[1] != d:
            images = f" or (N, {', '.join(map(str, shape))}) images" if shape is not None else ""
            raise UserInputError(f"X must be (N, {d}) rows{images} for this model, got shape {X.shape}")
        with np.errstate(over="ignore", invalid="ignore"):
            X = np.asarray(X, dtype=np.float32)
        if not np.isfinite(X).all():
            raise UserInputError("X holds NaN or infinite values (after conversion to float32)")
        return X

    def check_y(self, y: Any, n: int) -> np.ndarray:
        """y in the form of the run's targets for n rows, or a `UserInputError` saying what was expected."""
        y = np.asarray(y)
        count = len(self.target_names)
        if self.target_kind == "classes":
            if y.shape != (n,) or y.dtype.kind not in "iu":
                raise UserInputError(f"y must be ({n},) integer class labels, got {y.dtype} of shape {y.shape}")
            if n and (y.min() < 0 or y.max() >= count):
                raise UserInputError(f"y holds labels outside 0..{count - 1} (the run's classes: "
                                     f"{', '.join(self.target_names)})")
            return y.astype(np.int64)
        if self.target_kind == "regression" and y.ndim == 1:
            y = y.reshape(-1, 1)
        what = "a 0/1 attribute matrix" if self.target_kind == "attributes" else "regression targets"
        if y.ndim != 2 or y.shape != (n, count) or y.dtype.kind not in "biuf":
            raise UserInputError(f"y must be {what} of shape ({n}, {count}), got {y.dtype} of shape {y.shape}")
        y = y.astype(np.float32)
        if self.target_kind == "attributes" and not np.isin(y, (0, 1)).all():
            raise UserInputError("y must hold 0/1 attribute values")
        return y

    def transform(self, X: Any) -> np.ndarray:
        """X raw (N, D) -> the network's input (N, D'): the fitted preprocessing applied (X is not modified)."""
        X32 = self.check_X(X)
        # transform in place only a copy made here, never the caller's array
        return self.preprocessor.transform(X32, copy=np.may_share_memory(X32, np.asarray(X)))

    def with_flip_average(self, on: bool, what: str = "flip_average") -> TrainedRun:
        """This run with test-time flip averaging on or off; turning it on where it cannot apply (a loss without
        probabilities, data without images, PCA) is a `UserInputError` starting with `what` (the option)."""
        if on:
            self.mirror(what)
        return dataclasses.replace(self, flip_average=on)

    def mirror(self, what: str = "augment.test_flip") -> Mirror:
        """The mirror flip averaging uses (`flip_average_mirror`; a `UserInputError` naming `what` where none)."""
        return flip_average_mirror(what, self.cfg.loss.name, self.loss, self.preprocessor, self.cfg.data.dataset)

    def scores(self, X: Any) -> np.ndarray:
        """The network's outputs (N, K) for raw X, in batches of `train.eval_batch_size`; with `flip_average`,
        the scores whose probabilities are the mean over each image and its mirror."""
        return evaluation_scores(self.model, self.loss, self.transform(X), self.cfg.train.eval_batch_size,
                                 self.mirror() if self.flip_average else None)

    def predict(self, X: Any) -> np.ndarray:
        """Class labels (N,) in 0..C-1, a 0/1 attribute matrix (N, A), or regression values (N, T) in the
        targets' own units (standardized targets mapped back; binned ones as their bin's centre)."""
        return self.loss.predict(self.scores(X))

    def decision_function(self, X: Any) -> np.ndarray:
        """A confidence per class (N, C) or attribute (N, A), larger meaning more likely: the scores
        (softmax, SVM, attribute losses) or log P(class) (hierarchical softmax). Not for regression."""
        if not self.loss.has_decision_function:
            raise AttributeError(f"the {self.cfg.loss.name} loss defines no decision function; use predict")
        return self.loss.decision_function(self.scores(X))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities per class (N, C, rows summing to 1: softmax, hierarchical softmax) or per
        attribute (N, A: attribute logistic). Losses without probabilities (SVM, hinges, regression)
        raise AttributeError."""
        if not self.loss.has_proba:
            raise AttributeError(f"the {self.cfg.loss.name} loss defines no probabilities; use decision_function")
        return self.loss.predict_proba(self.scores(X))

    def score(self, X: Any, y: Any) -> dict[str, float]:
        """The loss and the loss's metrics on (X, y), as summary.json reports them per split: `loss`,
        `accuracy` (mean attribute accuracy and `accuracy_NAME` per attribute), `mae`, `rmse`,
        `rmse_baseline` for regression. Unlike scikit-learn's `score`, every metric, in a dict."""
        Z = self.transform(X)
        return evaluate(self.model, self.loss, Z, self.check_y(y, len(Z)), self.cfg.train.eval_batch_size,
                        detail=True, mirror=self.mirror() if self.flip_average else None)

    def load_split(self, split: str, data_root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The raw rows (X (N, D) float32, y) of the run's own `split` (train, val or test), loaded as the run
        did (`data_root` replaces `data.root`) and checked against the rows split.npz recorded."""
        if split not in SPLITS:
            raise UserInputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        cfg = self.cfg
        if data_root is not None:
            cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": str(data_root)})})
        data = select_targets(load_data(cfg), cfg.loss)
        if self.split is not None and data.split is not None and not self.split.same_rows(data.split):
            raise UserInputError(
                f"{self.path / 'split.npz'}: the rows recorded there differ from the split of the data found now "
                f"(data.dataset={cfg.data.dataset}, {cfg.data.path or cfg.data.resolved_root()}); the data files "
                "changed since the run")
        return {"train": (data.X_train, data.y_train), "val": (data.X_val, data.y_val),
                "test": (data.X_test, data.y_test)}[split]


def load_run(path: str | Path) -> TrainedRun:
    """The trained run in `path` (see `TrainedRun`); one `UserInputError` names the file and what was expected
    when the folder is not a finished run directory: files missing, a newer layout, a run that failed before
    its first epoch or is still training."""
    path = Path(path)
    if not path.is_dir():
        raise UserInputError(f"run directory {path} does not exist")
    if not (path / "config.yaml").is_file():
        raise UserInputError(f"{path} is not a run directory: it has no config.yaml")
    run = RunDir(path)
    provenance = run.read_provenance() or {}
    layout = provenance.get("layout_version", 0)
    if not isinstance(layout, int) or layout > RUN_LAYOUT_VERSION:
        raise UserInputError(f"{path / 'provenance.json'}: layout_version {layout!r} is newer than this nnrun reads "
                             f"({RUN_LAYOUT_VERSION}); upgrade nnrun to use this run")
    summary = run.read_summary()
    if summary is None:
        if run.status() == RUNNING:
            raise UserInputError(f"{path} is still training (another process holds its lock); wait for it to end")
        raise UserInputError(f"{path} has no summary.json: the run stopped before it finished; "
                             f"continue it with: nnrun train --resume {path}")
    if not summary.get("epochs"):
        raise UserInputError(f"{path / 'summary.json'}: the run {summary.get('status', 'failed')} before training "
                             f"its first epoch ({summary.get('reason') or 'no reason recorded'}); "
                             "there is no trained model to use")
    for name, what in RUN_FILES_NEEDED.items():
        if not (path / name).is_file():
            raise UserInputError(f"{path} is missing {name} ({what}); a finished nnrun run directory has it")
    try:
        cfg = load_config(path / "config.yaml", compose=False)  # resolved: it names no other file
    except UserInputError as e:
        raise UserInputError(f"{path / 'config.yaml'} cannot be used by this nnrun: {e}") from None
    preprocessor = Preprocessor.from_statistics(run.read_arrays("preprocess.npz"), path / "preprocess.npz")
    targets = run.read_arrays("targets.npz")
    if "kind" not in targets or "names" not in targets:
        raise UserInputError(f"{path / 'targets.npz'}: expected the keys kind and names, found "
                             f"{', '.join(sorted(targets)) or 'none'}")
    kind, names = str(targets["kind"]), [str(n) for n in np.asarray(targets["names"]).reshape(-1).tolist()]
    if kind != cfg.loss.target_kind:
        raise UserInputError(f"{path / 'targets.npz'}: target kind {kind!r} does not fit loss.name={cfg.loss.name} "
                             f"of config.yaml, which trains on {cfg.loss.target_kind}")
    try:
        loss = restore_loss(cfg.loss, names, targets, cfg.data.dataset)
    except ValueError as e:
        raise UserInputError(f"{path / 'targets.npz'}: {e}") from None
    model = build_model(cfg.model, preprocessor.n_output, loss.output_dim(len(names)), np.random.default_rng(0))
    weights = run.read_arrays("model.npz", max_members=MODEL_MEMBERS_PER_LAYER * (len(cfg.model.hidden) + 1))
    expected = model.state_dict()
    unexpected = sorted(set(weights) - set(expected))
    try:
        if unexpected:
            raise KeyError(f"unexpected arrays {unexpected}")
        model.load_state_dict(weights)
    except (KeyError, ValueError) as e:
        raise UserInputError(f"{path / 'model.npz'} does not fit the model config.yaml describes "
                             f"({' -> '.join(str(v.shape[-1]) for k, v in expected.items() if k.endswith('.b'))} "
                             f"units): {e}") from None
    split = None
    if (path / "split.npz").is_file():
        try:
            split = SplitRecord.from_arrays(run.read_arrays("split.npz"))
        except ValueError as e:
            raise UserInputError(f"{path / 'split.npz'}: {e}") from None
    trained = TrainedRun(path, cfg, preprocessor, model, loss, kind, names, summary, split)
    return trained.with_flip_average(cfg.augment.test_flip, f"{path / 'config.yaml'}: augment.test_flip")
# ---- what a config's choices read --------------------------------------------------------------

def _init_keys(scheme: str) -> set[str]:
    """The model keys the init scheme `scheme` reads (`init_scale`, `sparse_k`)."""
    draw = INIT_SCHEMES[scheme].draw
    named = accepted_options(draw, {keyword: None for keyword in INIT_OPTIONS.values()})
    return {key for key, keyword in INIT_OPTIONS.items() if keyword in named}


def _registry_keys(registry: Mapping[str, Any], chosen: str, options: Mapping[str, Any],
                   entry_fn: Callable[[Any], Callable[..., Any]] = lambda e: e) -> tuple[set[str], set[str]]:
    """(the keys of `options` some entry of `registry` reads, the keys the `chosen` entry reads)."""
    some = {k for entry in registry.values() for k in accepted_options(entry_fn(entry), options)}
    return some, set(accepted_options(entry_fn(registry[chosen]), options))


def inactive_keys(cfg: ExperimentConfig) -> dict[str, str]:
    """The dotted config keys that have no effect under `cfg`'s choices, each with the reason.

    Keys read only by other registry entries (Adam's `beta1` under momentum, the `step` schedule's
    `step_epochs` under `constant`, `loss.margin` under softmax, `model.leaky_slope` under relu,
    `model.init_scale` under he, a data key the dataset's loader does not read, such as CIFAR-10's
    `test_size`), and keys of switched-off parts (BatchNorm's under `batchnorm: false`,
    `dropout_mode` without dropout, `preprocess.eps` without whitening, `regularize_bias` and
    `regularize_bn` without any penalty).
    """
    notes: dict[str, str] = {}
    data = cfg.data.model_dump()
    reads = DATASETS[cfg.data.dataset].options
    for key in DataOptions.__dataclass_fields__:
        if key in data and key not in reads:
            notes[f"data.{key}"] = f"data.dataset {cfg.data.dataset} does not read it"
    if not cfg.preprocess.whiten:
        notes["preprocess.eps"] = "preprocess.whiten is false"
    if cfg.train.device == "cpu":
        notes["train.cuda_graph"] = "train.device is cpu"
    if cfg.preprocess.fit_on == "train" and cfg.preprocess.allow_leak:
        notes["preprocess.allow_leak"] = "preprocess.fit_on is train"
    model = cfg.model.model_dump()
    some, used = _registry_keys(ACTIVATIONS, cfg.model.activation, model)
    notes.update({f"model.{k}": f"model.activation is {cfg.model.activation}" for k in sorted(some - used)})
    schemes = {cfg.model.init, *(layer.init for layer in cfg.model.layers.values() if layer.init is not None)}
    used = set().union(*(_init_keys(s) for s in schemes))
    for key in INIT_OPTIONS:
        overridden = any(getattr(layer, key) is not None for layer in cfg.model.layers.values())
        if key not in used and not overridden:
            notes[f"model.{key}"] = f"model.init is {', '.join(sorted(schemes))}"
    if not cfg.model.batchnorm:
        notes.update({f"model.{k}": "model.batchnorm is false" for k in ("bn_momentum", "bn_eps")})
    if cfg.model.dropout == 1:
        notes["model.dropout_mode"] = "model.dropout is 1 (no dropout)"
    penalties = [getattr(cfg.regularization, name) for name in PENALTIES]
    penalties += [getattr(layer, name) or 0 for layer in cfg.model.layers.values() for name in PENALTIES]
    if not any(penalties):
        notes["regularization.regularize_bias"] = "no penalty is set"
        notes["regularization.regularize_bn"] = "no penalty is set"
    elif not cfg.model.batchnorm:
        notes["regularization.regularize_bn"] = "model.batchnorm is false"
    some, used = _registry_keys(LOSSES, cfg.loss.name, cfg.loss.model_dump(), lambda e: e.create)
    notes.update({f"loss.{k}": f"loss.name is {cfg.loss.name}" for k in sorted(some - used)})
    if cfg.loss.bins is None:
        notes["loss.decode"] = "loss.bins is null"
    optim = cfg.optim.model_dump()
    some, used = _registry_keys(OPTIMIZERS, cfg.optim.name, optim)
    notes.update({f"optim.{k}": f"optim.name is {cfg.optim.name}" for k in sorted(some - used)})
    some, used_by_schedule = _registry_keys(SCHEDULES, cfg.optim.schedule, optim)
    notes.update({f"optim.{k}": f"optim.schedule is {cfg.optim.schedule}"
                  for k in sorted(some - used_by_schedule - used)})
    return notes


def config_cautions(cfg: ExperimentConfig) -> dict[str, str]:
    """Dotted keys whose value is valid but easily meant otherwise, each with what it does: a dropout keep
    probability below 0.5 (a PyTorch user's drop rate `0.1` keeps only 10 % of the units); a `one_cycle`
    schedule too short to start below its peak. `nnrun validate`
    puts each note beside its key and, with what the key means (`config.KEY_HINTS`), on stderr."""
    notes: dict[str, str] = {}
    if cfg.model.dropout < 0.5:
        notes["model.dropout"] = f"drops {(1 - cfg.model.dropout) * 100:g} % of the hidden units while training"
    o = cfg.optim
    if o.schedule == "one_cycle" and o.pct_start * (cfg.train.epochs - o.warmup_epochs) <= 1:
        first = build_schedule(o)(o.warmup_epochs, cfg.train.epochs)
        notes["optim.pct_start"] = (f"the rise to lr ends before the schedule's first epoch, which runs at {first:.3g} "
                                    f"(past the peak), not at lr / div_factor = {o.lr / o.div_factor:.3g}")
    return notes


def _options_text(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in options.items())


def describe_choices(cfg: ExperimentConfig) -> dict[str, str]:
    """The setup choices under study, one line each: preprocessing, network, init, BatchNorm, dropout,
    regularization, loss, optimizer and learning rate (with only the options each choice reads, and the
    warmup), training-batch augmentation (and test-time flip averaging), and the epochs, batch size and early
    stopping."""
    p, m, r, o = cfg.preprocess, cfg.model, cfg.regularization, cfg.optim
    steps = []
    if p.center != "none":
        steps.append(f"{p.center} centring")
    if p.scale != "none":
        steps.append(f"{p.scale} scaling")
    if p.pca is not None:
        steps.append(f"PCA to {p.pca}")
    if p.whiten:
        steps.append(f"whitened (eps {p.eps:g})")
    init = m.init
    options = {k: getattr(m, k) for k in sorted(_init_keys(m.init))}
    if options:
        init += f" ({_options_text(options)})"
    if m.bias_init:
        init += f", biases {m.bias_init:g}"
    overrides = {i: {k: v for k, v in layer.model_dump().items() if v is not None} for i, layer in m.layers.items()}
    overrides = {i: v for i, v in overrides.items() if v}
    if overrides:
        init += "; per layer: " + "; ".join(f"{i}: {_options_text(v)}" for i, v in sorted(overrides.items()))
    activation = accepted_options(ACTIVATIONS[m.activation], m.model_dump())
    network = f"hidden {m.hidden}, {m.activation}" + (f" ({_options_text(activation)})" if activation else "")
    penalties = {name: getattr(r, name) for name in PENALTIES if getattr(r, name)}
    if r.max_norm is not None:
        penalties["max_norm"] = r.max_norm
    regularization = _options_text(penalties) or "none"
    if penalties and (r.regularize_bias or r.regularize_bn):
        regularization += " (also on " + " and ".join(
            w for w, on in (("biases", r.regularize_bias), ("BatchNorm", r.regularize_bn)) if on) + ")"
    loss_options = accepted_options(LOSSES[cfg.loss.name].create, cfg.loss.model_dump())
    loss = cfg.loss.name + (f" ({_options_text({k: v for k, v in loss_options.items() if v is not None})})"
                            if any(v is not None for v in loss_options.values()) else "")
    if cfg.loss.bins is not None:
        decode = resolve_decode(cfg.loss.decode, LOSSES[cfg.loss.name].has_proba)
        loss += f" on {cfg.loss.bins} quantile bins, decoded by {decode}"
    optimizer = accepted_options(OPTIMIZERS[o.name], o.model_dump())
    schedule = {k: v for k, v in accepted_options(SCHEDULES[o.schedule], o.model_dump()).items() if k != "lr"}
    lr = f"{o.lr:g}, {o.schedule} schedule" + (f" ({_options_text(schedule)})" if schedule else "")
    if o.warmup_epochs:
        lr += f", after {o.warmup_epochs} linear warmup epoch{'s' if o.warmup_epochs > 1 else ''}"
    a, t = cfg.augment, cfg.train
    moves = (["random left-right flips"] if a.flip else []) + (
        [f"random shifts up to {a.translate} px ({a.padding} padding)"] if a.translate else []) + (
        ["final evaluation flip-averaged"] if a.test_flip else [])
    training = f"{t.epochs} epochs, batches of {t.batch_size}"
    if t.patience is not None:
        training += f", early stopping after {t.patience} epochs without improvement"
    return {
        "preprocessing": ", ".join(steps) or "none",
        "network": network,
        "init": init,
        "BatchNorm": f"on (momentum {m.bn_momentum:g}, eps {m.bn_eps:g})" if m.batchnorm else "off",
        "dropout": f"keep p={m.dropout:g}, {m.dropout_mode}" if m.dropout < 1 else "off",
        "regularization": regularization,
        "loss": loss,
        "optimizer": o.name + (f" ({_options_text(optimizer)})" if optimizer else ""),
        "lr": lr,
        "augmentation": ", ".join(moves) or "off",
        "training": training,
    }
