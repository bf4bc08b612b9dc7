"""`nnrun compare-inits`: compare weight init schemes on real data, forward statistics and short training runs.

`compare_inits(cfg, out=...)` is what `nnrun compare-inits` runs. For each init scheme it builds
the same deep network (`depth` hidden layers of `width` units; the config's model with
`model.init` set to the scheme) and

1. passes one batch of `examples` preprocessed training examples through it in training mode,
   recording per hidden layer the mean and standard deviation of the activations (over all
   examples and units), the share of dead or saturated units, and, after one backward pass of
   the configured data loss, the norm of the gradient reaching the layer;
2. trains it for `epochs` epochs with `nnrun.trainer.fit` (the config's loss, optimizer, batch
   size and penalties), without and with BatchNorm, and records the training loss of every
   batch, the mean training loss of every epoch, the final validation accuracy and the number
   of distinct hidden units per layer.

Every network of a comparison uses the same data, split, preprocessing and seed: the weights of
each scheme come from the experiment's `init` stream, so the forward pass and the training run
of a scheme start from the same weights (when both use the same BatchNorm setting).

Dead and saturated (computed on the activation outputs `a` of the batch) is each activation's
own test (`nnrun.nn.layers.Activation.dead_mask`): relu and leaky_relu `a <= 0`, tanh
`|a| > 0.99`, sigmoid `a < 0.01` or `a > 0.99`, identity never. `dead_units` is the fraction
of a layer's units for which this holds on *every* example of the batch (a unit that passes no
gradient for the whole batch); `dead_activations` the fraction of all (example, unit) entries
for which it holds.

Gradient norms: `grad_norm` is the Frobenius norm of dL/dh_l, the gradient of the batch-mean
data loss with respect to hidden layer l's activation output h_l: (N, width); `weight_grad_norm`
the Frobenius norm of dL/dW_l for the Linear layer feeding it.

Distinct units: hidden units j and k of a layer count as one when their incoming vectors
`[W[:, j]; b[j]]` are within `rtol * max_j ||[W[:, j]; b[j]]||` of each other (Euclidean
distance, rtol = 1e-5 by default); groups are formed greedily (the first unit not yet grouped
takes every ungrouped unit that close to it), and the count is the number of groups.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.text import Text

from nnrun import plots
from nnrun.config import ExperimentConfig, validate_config
from nnrun.errors import RunFailed, UserInputError
from nnrun.experiment import PreparedData, build_model, prepare_data, train_setup
from nnrun.io import check_output_folder, write_json
from nnrun.nn.init import INIT_SCHEMES
from nnrun.nn.layers import ACTIVATIONS, Activation
from nnrun.nn.losses import Loss
from nnrun.nn.model import MLP
from nnrun.rng import stream
from nnrun.tables import DataTable, fmt, pct
from nnrun.trainer import Diverged, History, SilentReporter, fit, set_up_kernels
from nnrun.workers import (
    ThreadPolicy,
    available_cores,
    blas_threads_in_use,
    open_executor,
    requested_threads,
    use_threads,
)

DEFAULT_DEPTH = 10
"""Hidden layers of the compared network."""
DEFAULT_WIDTH = 500
"""Units per hidden layer."""
DEFAULT_EPOCHS = 5
"""Epochs of each training run."""
DEFAULT_EXAMPLES = 1000
"""Training examples in the batch of the forward statistics."""
DISTINCT_RTOL = 1e-5
"""Relative tolerance under which two hidden units' incoming vectors count as the same."""
HISTOGRAM_BINS = 40
"""Bins of each activation histogram."""
HISTOGRAM_QUANTILE = 99.5
"""For unbounded activations, a scheme's histogram range reaches this percentile of |a| (widest layer)."""
TRAIN_BLAS_THREADS = 1
"""BLAS threads of each training run: one, so that results do not depend on `jobs` (BLAS sums in
another order with another thread count, and training amplifies such rounding differences)."""
EVAL_TRAIN_CAP = 1000
"""Training runs evaluate train accuracy on at most this many examples (`train.eval_train_size`)."""
FILES = {"activations": "activations.png", "loss_curves": "loss_curves.png", "statistics": "compare_inits.json"}
"""What `compare_inits` writes into `out`."""


# ---- checks and configs -------------------------------------------------------------------------

def parse_schemes(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """'zeros,he' (or a list) -> ['zeros', 'he']; unknown or repeated names are a `UserInputError`."""
    items = text.split(",") if isinstance(text, str) else list(text)
    schemes = [s.strip() for s in items if s.strip()]
    if not schemes:
        raise UserInputError(f"--schemes: give at least one init scheme; allowed: {', '.join(INIT_SCHEMES)}")
    unknown = [s for s in schemes if s not in INIT_SCHEMES]
    if unknown:
        raise UserInputError(f"--schemes: unknown init scheme {', '.join(map(repr, unknown))}; "
                             f"allowed: {', '.join(INIT_SCHEMES)}")
    repeated = sorted({s for s in schemes if schemes.count(s) > 1})
    if repeated:
        raise UserInputError(f"--schemes: {', '.join(repeated)} given more than once")
    return schemes


def network_config(cfg: ExperimentConfig, *, scheme: str, depth: int, width: int, activation: str,
                   batchnorm: bool, epochs: int | None = None) -> ExperimentConfig:
    """`cfg` with the compared network: `depth` x `width` hidden layers, init `scheme`, no dropout.

    `model.hidden`, `model.init`, `model.activation`, `model.batchnorm` are set, dropout is off
    and per-layer overrides (`model.layers`) are dropped; the other model keys (bias_init,
    init_scale, sparse_k, leaky_slope, bn_momentum, bn_eps) are kept. With `epochs` the training
    keys are set for a comparison run: that many epochs, no early stopping, the last epoch's
    weights kept, train accuracy evaluated on at most `EVAL_TRAIN_CAP` examples.
    """
    raw = cfg.model_dump(mode="json")
    raw["model"].update(hidden=[width] * depth, init=scheme, activation=activation, batchnorm=batchnorm,
                        dropout=1.0, layers={})
    if epochs is not None:
        raw["train"].update(epochs=epochs, patience=None, restore_best=False,
                            eval_train_size=min(raw["train"]["eval_train_size"], EVAL_TRAIN_CAP))
    return validate_config(raw, source="compare-inits")


def _check_options(*, depth: int, width: int, activation: str, epochs: int, examples: int) -> None:
    if depth < 1:
        raise UserInputError(f"--depth: needs at least 1 hidden layer, got {depth}")
    if width < 1:
        raise UserInputError(f"--width: needs at least 1 unit per layer, got {width}")
    if activation not in ACTIVATIONS:
        raise UserInputError(f"--activation: unknown activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")
    if epochs < 1:
        raise UserInputError(f"--epochs: needs at least 1, got {epochs}")
    if examples < 2:
        raise UserInputError(f"--examples: needs at least 2 (BatchNorm statistics), got {examples}")


def build_network(cfg: ExperimentConfig, prepared: PreparedData) -> MLP:
    """The network `cfg` describes for the prepared data, weights from the `init` stream of `cfg.seed`."""
    data = prepared.data
    return build_model(cfg.model, data.n_features, prepared.loss.output_dim(data.n_targets), stream(cfg.seed, "init"),
                       dropout_rng=stream(cfg.seed, "dropout"))


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


# ---- forward statistics -------------------------------------------------------------------------

def forward_statistics(model: MLP, loss_fn: Loss, X: np.ndarray,
                       y: np.ndarray) -> tuple[float, list[dict[str, Any]], list[np.ndarray]]:
    """One training-mode forward pass of X: (N, D) and one backward pass of the data loss.

    Returns (loss, one statistics dict per hidden layer, the hidden activations (N, H) each).
    Keys: `layer` (1 = first hidden layer), `mean`, `std` (over all N x H entries),
    `dead_units`, `dead_activations` (fractions; None for identity), `grad_norm` (||dL/dh||_F),
    `weight_grad_norm` (||dL/dW||_F of the Linear layer before it).
    """
    hidden: list[np.ndarray] = []
    positions: list[int] = []
    activations: list[Activation] = []
    x = X
    with np.errstate(over="ignore", invalid="ignore"):
        for i, layer in enumerate(model.layers):
            x = layer.forward(x, train=True)
            if isinstance(layer, Activation) and i < len(model.layers) - 1:
                hidden.append(x.copy())
                positions.append(i)
                activations.append(layer)
        loss, dout = loss_fn.loss_and_grad(x, y)
        grad_norms: dict[int, float] = {}
        for i in range(len(model.layers) - 1, -1, -1):
            if i in positions:
                grad_norms[i] = float(np.linalg.norm(dout))
            dout = model.layers[i].backward(dout)
    linears = list(model.linear_layers())
    layers = []
    for index, (a, position, layer) in enumerate(zip(hidden, positions, activations, strict=True)):
        a64 = a.astype(np.float64)
        mask = layer.dead_mask(a)
        layers.append({
            "layer": index + 1,
            "mean": _finite(a64.mean()),
            "std": _finite(a64.std()),
            "dead_units": None if mask is None else float(mask.all(axis=0).mean()),
            "dead_activations": None if mask is None else float(mask.mean()),
            "grad_norm": _finite(grad_norms[position]),
            "weight_grad_norm": _finite(np.linalg.norm(linears[index].W.grad)),
        })
    return float(loss), layers, hidden


def histogram_range(activation: str, hidden: list[np.ndarray]) -> tuple[float, float]:
    """The x-range shared by one scheme's histograms: the activation's output range where it is bounded
    ([-1, 1] for tanh, [0, 1] for sigmoid), else up to the widest layer's `HISTOGRAM_QUANTILE`
    percentile of |a| (from the lower bound where there is one: [0, hi] for relu)."""
    low, high = ACTIVATIONS[activation].output_range
    if low is not None and high is not None:
        return low, high
    finite = [np.abs(a[np.isfinite(a)]) for a in hidden]
    hi = max((float(np.percentile(f, HISTOGRAM_QUANTILE)) for f in finite if f.size), default=0.0)
    hi = hi if hi > 0 else 1.0
    return (low, hi) if low is not None else (-hi, hi)


def histogram(a: np.ndarray, lo: float, hi: float, bins: int = HISTOGRAM_BINS) -> dict[str, list]:
    """Counts of a's entries in `bins` equal bins over [lo, hi]; values outside fall into the end bins."""
    values = np.clip(a[np.isfinite(a)], lo, hi)
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    return {"edges": edges.tolist(), "counts": counts.tolist()}


# ---- training runs ------------------------------------------------------------------------------

class BatchLosses(SilentReporter):
    """A reporter that keeps each batch's training loss."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def batch_end(self, loss: float) -> None:
        self.losses.append(float(loss))


def count_distinct_units(W: np.ndarray, b: np.ndarray, rtol: float = DISTINCT_RTOL) -> int:
    """W: (fan_in, H), b: (H,) -> how many distinct hidden units (module docstring).

    Distances come from the Gram matrix in float64: `d2 = |u|^2 + |v|^2 - 2 u.v`, accurate to
    ~1e-8 of the largest norm, far below `rtol`.
    """
    M = np.vstack([W, b[None, :]]).astype(np.float64)
    gram = M.T @ M
    sq = np.diag(gram)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * gram, 0.0)
    tol = rtol * math.sqrt(float(sq.max())) if sq.size else 0.0
    same = d2 <= tol * tol
    left = np.ones(M.shape[1], dtype=bool)
    groups = 0
    while left.any():
        first = int(np.argmax(left))
        left &= ~same[first]
        groups += 1
    return groups


def distinct_units(model: MLP, rtol: float = DISTINCT_RTOL) -> list[int]:
    """Distinct units of each hidden layer of `model`, input side first."""
    return [count_distinct_units(layer.W.value, layer.b.value, rtol) for layer in list(model.linear_layers())[:-1]]


def train_network(cfg: ExperimentConfig, prepared: PreparedData) -> tuple[MLP, dict[str, Any]]:
    """Build the network `cfg` describes and train it with `nnrun.trainer.fit`; never raises on divergence.

    Returns (model, record) with `status` (completed or diverged), `reason`, `epochs` (rows:
    epoch, train_loss, val_loss, val_accuracy), `batch_losses`, `final_val_loss`,
    `final_val_accuracy` (None without an accuracy metric or a finished epoch),
    `distinct_units` (per hidden layer, after training; before it when the first epoch failed)
    and `seconds`.
    """
    started = time.perf_counter()
    model = build_network(cfg, prepared)
    set_up = time.perf_counter()
    set_up_kernels(model, prepared.data.X_train, cfg.train.batch_size)
    started += time.perf_counter() - set_up  # the worker's one-time kernel set-up counts in no scheme's seconds
    reporter = BatchLosses()
    history = History()
    status, reason = "completed", None
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            fit(model, prepared.loss, prepared.data, train_setup(cfg, prepared), reporter, history)
        except Diverged as e:
            status, reason = "diverged", str(e)
            model.load_state_dict(history.last_good)
    rows = [{"epoch": r["epoch"], "train_loss": _finite(r["train_loss"]), "val_loss": _finite(r["val_loss"]),
             "val_accuracy": r.get("val_accuracy")} for r in history.rows]
    last = rows[-1] if rows else {}
    return model, {"status": status, "reason": reason, "epochs": rows,
                   "batch_losses": [_finite(v) for v in reporter.losses],
                   "final_val_loss": last.get("val_loss"), "final_val_accuracy": last.get("val_accuracy"),
                   "distinct_units": distinct_units(model), "seconds": time.perf_counter() - started}


_PREPARED: dict[str, PreparedData] = {}
"""Per process: the prepared data by the JSON of the data, preprocess, loss and seed settings."""


def _prepared(cfg: ExperimentConfig) -> PreparedData:
    key = json.dumps({k: cfg.model_dump(mode="json")[k] for k in ("seed", "data", "preprocess", "loss")},
                     sort_keys=True)
    if key not in _PREPARED:
        _PREPARED.clear()
        _PREPARED[key] = prepare_data(cfg)
    return _PREPARED[key]


def train_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Worker entry point: train one network. `payload`: `config` (a resolved config as a plain
    dict), `scheme`, `batchnorm`, `blas_threads` (BLAS thread cap). Returns the record of
    `train_network` with `scheme`, `batchnorm` and `blas_threads` added."""
    limit = payload["blas_threads"]
    with use_threads(limit):
        cfg = validate_config(payload["config"], source="compare-inits")
        prepared = _prepared(cfg)
        # again: loading the data may have loaded more BLAS/OpenMP libraries (scikit-learn's, SciPy's)
        with use_threads(limit):
            _, record = train_network(cfg, prepared)
            threads = blas_threads_in_use()
    return {"scheme": payload["scheme"], "batchnorm": payload["batchnorm"], **record, "blas_threads": threads}


def _run_jobs(payloads: list[dict[str, Any]], jobs: int,
              on_run_end: Callable[[dict[str, Any], int, int], None] | None) -> list[dict[str, Any]]:
    """Run `train_job` on each payload: in this process for one job, else in local worker processes."""
    results: list[dict[str, Any] | None] = [None] * len(payloads)
    total = len(payloads)
    if jobs == 1:
        for i, payload in enumerate(payloads):
            results[i] = train_job(payload)
            if on_run_end:
                on_run_end(results[i], i + 1, total)
        return results
    from concurrent.futures import as_completed

    with open_executor("local", min(jobs, total), None) as pool:
        futures = {pool.submit(train_job, payload): i for i, payload in enumerate(payloads)}
        try:
            for done, fut in enumerate(as_completed(futures), start=1):
                results[futures[fut]] = fut.result()
                if on_run_end:
                    on_run_end(results[futures[fut]], done, total)
        except KeyboardInterrupt:
            for fut in futures:
                fut.cancel()
            raise RunFailed("compare-inits interrupted; no figures were written") from None
    return results


# ---- the comparison -----------------------------------------------------------------------------

def compare_inits(cfg: ExperimentConfig, *, out: str | Path, schemes: list[str] | tuple[str, ...] | None = None,
                  depth: int = DEFAULT_DEPTH, width: int = DEFAULT_WIDTH, activation: str | None = None,
                  batchnorm: bool | None = None, epochs: int = DEFAULT_EPOCHS, examples: int = DEFAULT_EXAMPLES,
                  jobs: int | None = None, train: bool = True, overwrite: bool = False, threads: int | None = None,
                  on_run_end: Callable[[dict[str, Any], int, int], None] | None = None) -> dict[str, Any]:
    """Forward statistics and training runs of each init scheme on `cfg`'s data; figures into `out`.

    `activation`: the hidden non-linearity (default: `cfg.model.activation`). `batchnorm`: None
    trains every scheme without and with BatchNorm and takes the forward statistics without it;
    True or False uses only that setting for both. `examples`: size of the forward batch (a
    seeded choice from the training split). `jobs`: training runs at a time (default: one per
    core, at most one per run), in worker processes when more than one; every run uses one BLAS
    thread (`TRAIN_BLAS_THREADS`), so jobs x threads <= cores and the numbers do not depend on `jobs`.
    `train`: False skips the training runs and the loss figure. `threads`: threads of the forward statistics
    (`--threads`; default: the thread policy of `nnrun.workers.choose_threads`). `on_run_end(run, done, total)`
    is called as each training run finishes.

    Writes `FILES` into `out` (an error if they exist, unless `overwrite`) and returns a plain,
    JSON-ready dict: settings, `forward` (loss and per-layer statistics and histograms per
    scheme), `training` (one record per run, see `train_network`), `files` and `seconds`.
    """
    started = time.perf_counter()
    schemes = parse_schemes(list(INIT_SCHEMES) if schemes is None else schemes)
    activation = activation or cfg.model.activation
    _check_options(depth=depth, width=width, activation=activation, epochs=epochs, examples=examples)
    n_runs = len(schemes) * (2 if batchnorm is None else 1) if train else 0
    cores = available_cores()
    if jobs is None:
        jobs = max(min(cores, n_runs), 1)
    if not 1 <= jobs <= cores:
        raise UserInputError(f"--jobs: needs 1 to {cores} (the CPU cores available; each run uses one BLAS thread), "
                             f"got {jobs}")
    out = check_output_folder(out, tuple(FILES.values()), overwrite)
    variants = [False, True] if batchnorm is None else [batchnorm]
    forward_bn = bool(batchnorm)


    with ThreadPolicy(requested_threads(threads)):
        base = network_config(cfg, scheme=schemes[0], depth=depth, width=width, activation=activation,
                              batchnorm=forward_bn)
        prepared = _prepared(base)  # kept for training runs in this process (--jobs 1)
        data, loss_fn = prepared.data, prepared.loss
        n = min(examples, len(data.X_train))
        idx = np.sort(stream(cfg.seed, "compare_inits").choice(len(data.X_train), n, replace=False))
        X, y = data.X_train[idx], data.y_train[idx]
        forward: dict[str, Any] = {}
        for scheme in schemes:
            scheme_cfg = network_config(cfg, scheme=scheme, depth=depth, width=width, activation=activation,
                                        batchnorm=forward_bn)
            model = build_network(scheme_cfg, prepared)
            loss, layers, hidden = forward_statistics(model, loss_fn, X, y)
            lo, hi = histogram_range(activation, hidden)
            for layer, a in zip(layers, hidden, strict=True):
                layer["histogram"] = histogram(a, lo, hi)
            forward[scheme] = {"loss": _finite(loss), "layers": layers}
            del hidden, model
    input_std = float(X.astype(np.float64).std())
    sizes, features = data.sizes(), data.n_features
    del prepared, data, X, y

    runs: list[dict[str, Any]] = []
    try:
        if train:
            payloads = [{"config": network_config(cfg, scheme=s, depth=depth, width=width, activation=activation,
                                                  batchnorm=bn, epochs=epochs).model_dump(mode="json"),
                         "scheme": s, "batchnorm": bn, "blas_threads": TRAIN_BLAS_THREADS}
                        for bn in variants for s in schemes]
            runs = _run_jobs(payloads, jobs, on_run_end)
    finally:
        _PREPARED.clear()

    result: dict[str, Any] = {
        "dataset": cfg.data.dataset, "n_train": sizes["train"], "n_val": sizes["val"],
        "features": features, "seed": cfg.seed,
        "activation": activation, "depth": depth, "width": width, "schemes": schemes,
        "batchnorm": batchnorm, "epochs": epochs if train else 0, "jobs": jobs, "blas_threads": TRAIN_BLAS_THREADS,
        "loss": cfg.loss.name, "optim": cfg.optim.name, "lr": cfg.optim.lr, "batch_size": cfg.train.batch_size,
        "dead_criterion": ACTIVATIONS[activation].dead_criterion or "never", "distinct_rtol": DISTINCT_RTOL,
        "forward": {"batchnorm": forward_bn, "examples": n, "input_std": _finite(input_std), "schemes": forward},
        "training": runs,
    }
    files = {"activations": str(plots.activation_histograms(result, out / FILES["activations"]))}
    if runs:
        files["loss_curves"] = str(plots.loss_curves(result, out / FILES["loss_curves"]))
    files["statistics"] = str(out / FILES["statistics"])
    result["files"] = files
    result["out"] = str(out)
    result["seconds"] = time.perf_counter() - started
    write_json(out / FILES["statistics"], result)
    return result


# ---- tables -------------------------------------------------------------------------------------

def forward_table(result: dict[str, Any]) -> DataTable:
    """A table of the forward statistics: one row per scheme and hidden layer."""
    fwd = result["forward"]
    bn = " with BatchNorm" if fwd["batchnorm"] else ""
    input_std = fmt(fwd["input_std"], 3)
    table = DataTable(f"forward pass at init: {result['depth']} x {result['width']} {result['activation']}{bn}, "
                      f"{fwd['examples']} {result['dataset']} training examples (input std {input_std})",
                      caption=f"std/std1: std relative to the first hidden layer's; dead/saturated "
                              f"({result['dead_criterion']}): units on every example, and all activations; "
                              f"|dL/dh|, |dL/dW|: Frobenius norms after one backward pass of the {result['loss']} loss")
    table.add_column("scheme", "label", key=True)
    table.add_column("layer", key=True)
    for column in ("mean", "std", "std/std1", "dead units", "dead acts", "|dL/dh|", "|dL/dW|"):
        table.add_column(column, digits=3)
    for scheme, stats in fwd["schemes"].items():
        layers = stats["layers"]
        first = layers[0]["std"]
        for i, layer in enumerate(layers):
            ratio = layer["std"] / first if first and layer["std"] is not None else None
            table.add_row(scheme if i == 0 else "", layer["layer"], layer["mean"], layer["std"], ratio,
                          pct(layer["dead_units"]), pct(layer["dead_activations"]), layer["grad_norm"],
                          layer["weight_grad_norm"], end_section=i == len(layers) - 1)
    return table


def epochs_shown(epochs: int, most: int = 8) -> list[int]:
    """The epochs the training table has a column for: all, or `most` spread out ending with the last."""
    if epochs <= most:
        return list(range(1, epochs + 1))
    return sorted({int(round(e)) for e in np.linspace(1, epochs, most)})


def training_table(result: dict[str, Any]) -> DataTable:
    """A table of the training runs: mean training loss per epoch, final val accuracy, distinct units."""
    shown = epochs_shown(result["epochs"])
    table = DataTable(f"training: {result['depth']} x {result['width']} {result['activation']}, {result['epochs']} "
                      f"epochs of {result['optim']} (lr {result['lr']:g}, batch {result['batch_size']}) on "
                      f"{result['n_train']} {result['dataset']} examples, seed {result['seed']}",
                      caption="loss eN: mean training loss over epoch N's batches; distinct units: hidden units per "
                              "layer with different incoming weights after training (one number: every layer)")
    table.add_column("scheme", "label", key=True)
    table.add_column("BN", "label", key=True)
    for e in shown:
        table.add_column(f"loss e{e}")
    table.add_column("val loss")
    table.add_column("val acc")
    table.add_column("distinct units", "label")
    table.add_column("s", digits=3)
    table.add_column("status", "label")
    runs = result["training"]
    for i, run in enumerate(runs):
        losses = {r["epoch"]: r["train_loss"] for r in run["epochs"]}
        units = run["distinct_units"]
        distinct = str(units[0]) if len(set(units)) == 1 else ",".join(map(str, units))
        acc = run["final_val_accuracy"]
        status = Text("ok", style="green") if run["status"] == "completed" else Text(run["status"], style="bold red")
        last_of_variant = i == len(runs) - 1 or runs[i + 1]["batchnorm"] != run["batchnorm"]
        table.add_row(run["scheme"], "yes" if run["batchnorm"] else "no", *(losses.get(e) for e in shown),
                      run["final_val_loss"], pct(acc), distinct, run["seconds"], status, end_section=last_of_variant)
    return table
