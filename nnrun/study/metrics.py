"""The metrics a claim can compare: what a run's files say, and measurements derived from them.

Metric names:

- a key of `summary.json`: `test_accuracy`, `val_rmse`, `epochs`, `seconds`, ... (`SUMMARY_KEYS` and
  `{train,val,test}_{loss,METRIC}` for the loss's metrics);
- `last.KEY`, `min.KEY`, `max.KEY`: the last, smallest or largest value over the epochs of a
  `metrics.jsonl` key (`max.val_accuracy`, `last.train_loss`);
- derived:
  - `diverged`: 1 when the run diverged (a loss that was not finite; its summary says so), else 0;
  - `near_zero_weights`: the fraction of the entries of every Linear layer's W (all layers together)
    whose magnitude is at most `NEAR_ZERO_RTOL` (1 %) of the largest magnitude in their layer:
    sparse weight vectors give a large fraction, diffuse ones a small one;
  - `distinct_units@L`: the distinct units of hidden layer L after training
    (`nnrun.compare_inits.count_distinct_units`: incoming vectors within 1e-5 of the largest norm
    count as one unit);
  - `init_activation_std@L`, `init_preactivation_std@L`: the standard deviation, over all entries,
    of hidden layer L's activation output (after the non-linearity) or of its Linear layer's
    output, at initialization, on `INIT_EXAMPLES` training examples preprocessed as the run does
    (the weights of the run's `init` stream; BatchNorm with batch statistics, no dropout);
  - `init_grad_norm@L`: the Frobenius norm of the gradient of the mean data loss on those examples
    (no penalty) with respect to the weights W of hidden layer L's Linear layer, at initialization:
    the "gradient signal" that reaches the layer;
  - `init_dead_units@L`: the share of hidden layer L's units that are dead on every one of those
    examples at initialization (`Activation.dead_mask`: ReLU output <= 0; tanh, sigmoid saturated);
  - `fresh_accuracy`: the trained network's accuracy on up to `FRESH_EXAMPLES` rows of its dataset
    that are in none of the run's splits (rows `data.train_size` left out of the training pool),
    preprocessed with the run's fitted statistics: data that no fit of the run has seen, even
    with `preprocess.fit_on: all`. `test_optimism`: `test_accuracy - fresh_accuracy`, by how much the
    test split overstates the accuracy on fresh data (both recomputed from the saved weights).
    They need class targets and `data.train_size` below the training pool;
  - `mc_dropout_agreement`, `mc_dropout_gap`: for a network trained with dropout, the test split
    scored by the deterministic (analytic) prediction the run reports (inverted: no mask; vanilla:
    activations times p) and by the average of `MC_SAMPLES` sampled predictions (each a training-
    mode dropout mask, BatchNorm with its running statistics; probabilities averaged where the loss
    gives them, else scores). Agreement: the share of test examples whose predicted class is the
    same; gap: the sampled average's accuracy minus the deterministic one's. Class targets only; a
    network without dropout has neither.
  L counts hidden layers from 1 (the first); without `@L` the last hidden layer is meant.

A run that diverged has no metric but `diverged` and the init statistics (a claim's
`diverged_value` stands in for it); one that failed otherwise, or was interrupted, has none.
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnrun.compare_inits import build_network, count_distinct_units
from nnrun.config import ExperimentConfig, validate_config
from nnrun.datasets import SPLITS, Dataset
from nnrun.errors import UserInputError
from nnrun.experiment import PreparedData, TrainedRun, build_loss, load_data, load_run, prepare_data, select_targets
from nnrun.nn.layers import Activation, BatchNorm, Dropout, Linear
from nnrun.rng import stream
from nnrun.rundir import MODEL_MEMBERS_PER_LAYER, RunDir

SUMMARY_KEYS = ("epochs", "best_epoch", "seconds", "seconds_per_epoch", "parameters", "n_train", "n_val", "n_test")
"""Summary keys every completed run has, besides the per-split loss and metrics."""
ROW_KEYS = ("epoch", "lr", "train_loss", "reg_loss", "seconds")
"""Keys of every metrics.jsonl row, besides the train and val metrics."""
CURVE_PREFIXES = ("last", "min", "max")
"""How a metrics.jsonl key is reduced over epochs."""
INIT_METRICS = ("init_activation_std", "init_preactivation_std", "init_grad_norm", "init_dead_units")
"""Derived metrics of the network at initialization, which need the data (computed in the study's process,
cached)."""
LAYER_METRICS = ("distinct_units", *INIT_METRICS)
"""Derived metrics of one hidden layer (`NAME@L`)."""
FRESH_METRICS = ("fresh_accuracy", "test_optimism")
"""Derived metrics of the trained network on rows outside every split of the run."""
MC_METRICS = ("mc_dropout_agreement", "mc_dropout_gap")
"""Derived metrics comparing the deterministic and the sampled (Monte Carlo) dropout predictions."""
TRAINED_DATA_METRICS = (*FRESH_METRICS, *MC_METRICS)
"""Derived metrics of the trained network that need the data (computed in the study's process, cached)."""
DERIVED = ("diverged", "near_zero_weights", *LAYER_METRICS, *TRAINED_DATA_METRICS)
"""Every derived metric."""
NEAR_ZERO_RTOL = 0.01
"""A weight is near zero when its magnitude is at most this share of the largest in its layer."""
INIT_EXAMPLES = 500
"""Training examples passed through a network at initialization for the init statistics."""
FRESH_EXAMPLES = 10_000
"""Most rows outside the run's splits that `fresh_accuracy` scores (drawn with the `study_fresh` stream)."""
MC_SAMPLES = 100
"""Dropout masks whose predictions `mc_dropout_*` average."""
METRIC_RE = re.compile(r"^(?:(last|min|max)\.)?([A-Za-z_][A-Za-z0-9_]*)(?:@(\d+))?$")


@dataclass(frozen=True)
class MetricName:
    """A parsed metric name: `kind` (`summary`, `curve` or `derived`), the `key`, the curve reduction
    `reduce` (last, min, max) and the hidden `layer` (1-based; None: the last)."""

    text: str
    kind: str
    key: str
    reduce: str | None = None
    layer: int | None = None


def parse_metric(text: str) -> MetricName:
    """`test_accuracy`, `max.val_accuracy`, `distinct_units@2` -> a `MetricName`; bad syntax is a
    `UserInputError`."""
    match = METRIC_RE.match(text or "")
    if not match:
        raise UserInputError(f"metric {text!r}: expected a summary key (test_accuracy), last./min./max. and a "
                             f"metrics.jsonl key (max.val_accuracy), or a derived metric "
                             f"({', '.join(DERIVED)}; layer metrics take @L)")
    reduce, key, layer = match.groups()
    if layer is not None:
        if key not in LAYER_METRICS:
            raise UserInputError(f"metric {text!r}: only {', '.join(LAYER_METRICS)} take a layer (@L)")
        if int(layer) < 1:
            raise UserInputError(f"metric {text!r}: hidden layers count from 1")
    if reduce is not None:
        return MetricName(text, "curve", key, reduce=reduce)
    if key in DERIVED:
        return MetricName(text, "derived", key, layer=None if layer is None else int(layer))
    return MetricName(text, "summary", key)


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of `metric` is better (accuracies); losses, errors and times are lower-better."""
    key = parse_metric(metric).key
    return "accuracy" in key


# ---- what a run produces ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Produced:
    """What runs on one data section and loss produce, found by loading the data once (`probe`).

    `summary`, `rows`: the summary and metrics.jsonl keys; `primary`: the loss's validation metric
    (`val_accuracy`, `val_rmse`) and whether higher is better; `sizes`: examples per split;
    `n_features`: raw features per example; `outputs`: the network's outputs; `load_seconds`: how
    long loading took (for the estimate).
    """

    summary: frozenset[str]
    rows: frozenset[str]
    primary: str
    higher_is_better: bool
    sizes: dict[str, int]
    n_features: int
    outputs: int
    load_seconds: float


def probe_key(config: dict[str, Any]) -> str:
    """What decides the produced metrics and the data's size: the data and loss sections."""
    return json.dumps([config["data"], config["loss"]], sort_keys=True)


def probe(cfg: ExperimentConfig) -> Produced:
    """Load `cfg`'s data (a missing root or bad file is a `UserInputError`), build its loss and list what its
    runs will write."""
    import time

    started = time.perf_counter()
    data = select_targets(load_data(cfg), cfg.loss)
    seconds = time.perf_counter() - started
    loss = build_loss(cfg.loss, data)
    y = data.y_train[:2]
    scores = np.zeros((len(y), loss.output_dim(data.n_targets)), dtype=np.float32)
    with np.errstate(all="ignore"):
        detail = list(loss.metrics(scores, y, detail=True))
        brief = list(loss.metrics(scores, y))
    summary = {f"{split}_{k}" for split in SPLITS for k in ("loss", *detail)} | set(SUMMARY_KEYS)
    rows = set(ROW_KEYS) | {f"train_{k}" for k in brief} | {f"val_{k}" for k in ("loss", *brief)}
    return Produced(frozenset(summary), frozenset(rows), f"val_{loss.primary_metric}", loss.higher_is_better,
                    data.sizes(), data.n_features, loss.output_dim(data.n_targets), seconds)


def check_metric(metric: str, produced: Produced, hidden: list[int]) -> str | None:
    """Why runs with hidden layers `hidden` that produce `produced` cannot give `metric`, or None when they can."""
    name = parse_metric(metric)
    if name.kind == "summary" and name.key not in produced.summary:
        return (f"runs of this loss and data write no {name.key} to summary.json; they write "
                f"{', '.join(sorted(produced.summary))}")
    if name.kind == "curve" and name.key not in produced.rows:
        return (f"runs of this loss and data write no {name.key} to metrics.jsonl; they write "
                f"{', '.join(sorted(produced.rows))}")
    if name.kind == "derived" and name.key in TRAINED_DATA_METRICS and "test_accuracy" not in produced.summary:
        return f"{name.key} needs class targets (an accuracy); runs of this loss and data have none"
    if name.kind == "derived" and name.key in LAYER_METRICS:
        if not hidden:
            return f"{name.key} needs a hidden layer, and this network has none (model.hidden: [])"
        if name.layer is not None and name.layer > len(hidden):
            return f"layer {name.layer} does not exist: the network has {len(hidden)} hidden layers"
    return None


# ---- reading a run -----------------------------------------------------------------------------------

def run_outcome(summary: dict[str, Any] | None) -> str:
    """`completed`, `diverged` (a failed run whose loss was not finite), `failed` or `missing` (no summary or
    an interrupted run)."""
    if not summary:
        return "missing"
    status = summary.get("status")
    if status == "completed":
        return "completed"
    if status == "failed":
        return "diverged" if summary.get("diverged") else "failed"
    return "missing"


class Measurer:
    """Reads metrics from run directories; derived measurements are cached in `cache_path` (JSON, by run
    hash) so that a rerun computes none again. Prepared data for the init statistics is kept for the last
    data section, preprocessing and seed, since the arms of a claim usually share them."""

    def __init__(self, cache_path: Path | None = None) -> None:
        self.cache_path = cache_path
        self.cache: dict[str, dict[str, Any]] = {}
        if cache_path is not None and cache_path.is_file():
            try:
                loaded = json.loads(cache_path.read_text())
                self.cache = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self.cache = {}
        self._prepared: OrderedDict[str, PreparedData] = OrderedDict()
        self._whole: OrderedDict[str, Dataset] = OrderedDict()
        self.changed = False

    def value(self, metric: str, *, key: str, config: dict[str, Any], run_dir: Path,
              summary: dict[str, Any] | None) -> float | None:
        """`metric` of the run `key` (its resolved `config`, directory and summary), or None when the run has none."""
        name = parse_metric(metric)
        outcome = run_outcome(summary)
        if name.kind == "derived" and name.key == "diverged":
            return {"completed": 0.0, "diverged": 1.0}.get(outcome)
        if name.kind == "derived" and name.key in INIT_METRICS:
            return self._layer(self._derived(key, name.key, config, run_dir), name.layer)
        if outcome != "completed":
            return None
        if name.kind == "summary":
            return _number(summary.get(name.key))
        if name.kind == "curve":
            values = [_number(row.get(name.key)) for row in _rows(run_dir)]
            values = [v for v in values if v is not None]
            if not values:
                return None
            return {"last": values[-1], "min": min(values), "max": max(values)}[name.reduce]
        value = self._derived(key, name.key, config, run_dir)
        return self._layer(value, name.layer) if name.key in LAYER_METRICS else value

    def layers(self, metric: str, *, key: str, config: dict[str, Any], run_dir: Path,
               summary: dict[str, Any] | None) -> list[float] | None:
        """A layer metric's value for every hidden layer (for the per-layer figures), or None."""
        name = parse_metric(metric)
        if name.key not in LAYER_METRICS or (name.key not in INIT_METRICS and run_outcome(summary) != "completed"):
            return None
        values = self._derived(key, name.key, config, run_dir)
        return values if isinstance(values, list) else None

    def prefetch_init(self, runs: list[tuple[str, dict[str, Any]]]) -> None:
        """Compute the init statistics of `(run hash, config)` pairs not cached yet, grouped by data section,
        preprocessing and seed, so that each prepared dataset is made once."""
        todo = [(key, config) for key, config in runs
                if any(name not in self.cache.get(key, {}) for name in INIT_METRICS)]
        todo.sort(key=lambda item: json.dumps([item[1]["data"], item[1]["preprocess"], item[1]["loss"],
                                               item[1]["seed"]], sort_keys=True))
        for key, config in todo:
            self.cache.setdefault(key, {}).update(self._init_statistics(config))
            self.changed = True

    def save(self) -> None:
        """Write the cache when something new was measured."""
        if self.cache_path is not None and self.changed:
            from nnrun.io import write_json

            write_json(self.cache_path, self.cache)
            self.changed = False

    @staticmethod
    def _layer(values: Any, layer: int | None) -> float | None:
        if not isinstance(values, list) or not values:
            return None
        index = len(values) if layer is None else layer
        return _number(values[index - 1]) if 1 <= index <= len(values) else None

    def _derived(self, key: str, name: str, config: dict[str, Any], run_dir: Path) -> Any:
        entry = self.cache.setdefault(key, {})
        if name not in entry:
            if name in INIT_METRICS:
                entry.update(self._init_statistics(config))
            elif name == "near_zero_weights":
                entry[name] = near_zero_fraction(_weights(run_dir, config))
            elif name == "distinct_units":
                weights = _weights(run_dir, config)
                n = sum(1 for k in weights if k.endswith(".W")) - 1
                entry[name] = [count_distinct_units(weights[f"fc{i}.W"], weights[f"fc{i}.b"]) for i in range(n)]
            elif name in FRESH_METRICS:
                trained = load_run(run_dir)
                entry.update(fresh_statistics(trained, self._whole_data(trained.cfg)))
            elif name in MC_METRICS:
                trained = load_run(run_dir)
                data = self._whole_data(trained.cfg)
                entry.update(mc_dropout_statistics(trained, trained.transform(data.X_test), data.y_test))
            self.changed = True
        return entry.get(name)

    def _whole_data(self, cfg: ExperimentConfig) -> Dataset:
        """`cfg`'s dataset split as its runs split it, but with every training row (`data.train_size` off), its
        targets the loss's; one kept at a time (the arms of a claim share it)."""
        whole = cfg.model_copy(update={"data": cfg.data.model_copy(update={"train_size": None})})
        key = json.dumps([whole.data.model_dump(), cfg.loss.model_dump(), cfg.seed], sort_keys=True)
        data = self._whole.get(key)
        if data is None:
            self._whole.clear()
            data = self._whole[key] = select_targets(load_data(whole), cfg.loss)
        return data

    def _init_statistics(self, config: dict[str, Any]) -> dict[str, list[float]]:
        cfg = validate_config(config, source="study run config")
        data_key = json.dumps([config["data"], config["preprocess"], config["loss"], config["seed"]], sort_keys=True)
        prepared = self._prepared.get(data_key)
        if prepared is None:
            self._prepared.clear()  # one prepared dataset at a time: CIFAR-10 splits are large
            prepared = self._prepared[data_key] = prepare_data(cfg)
        return init_statistics(cfg, prepared)


def init_statistics(cfg: ExperimentConfig, prepared: PreparedData,
                    examples: int = INIT_EXAMPLES) -> dict[str, list[float | None]]:
    """The std of each hidden layer's Linear output (`init_preactivation_std`) and activation output
    (`init_activation_std`) at initialization, on `examples` training rows drawn with the `study_init`
    stream of `cfg.seed`; lists input side first, None where a value is not finite."""
    model = build_network(cfg, prepared)
    X = prepared.data.X_train
    idx = np.sort(stream(cfg.seed, "study_init").permutation(len(X))[:min(examples, len(X))])
    x = X[idx]
    pre: list[float | None] = []
    post: list[float | None] = []
    dead: list[float | None] = []
    linears = list(model.linear_layers())
    passed: list[Any] = []
    seen = 0
    with np.errstate(all="ignore"):
        for layer in model.layers:
            if isinstance(layer, Dropout):
                continue
            x = layer.forward(x, train=isinstance(layer, BatchNorm))
            passed.append(layer)
            if isinstance(layer, Linear):
                seen += 1
                if seen < len(linears):
                    pre.append(_std(x))
            elif isinstance(layer, Activation) and seen < len(linears):
                post.append(_std(x))
                mask = layer.dead_mask(x)
                dead.append(None if mask is None else float(np.asarray(mask).all(axis=0).mean()))
        _, dout = prepared.loss.loss_and_grad(x, prepared.data.y_train[idx])
        for layer in reversed(passed):
            dout = layer.backward(dout)
            if dout is None:
                break
        grads = [_finite(np.linalg.norm(layer.W.grad.astype(np.float64))) for layer in linears[:-1]]
    return {"init_preactivation_std": pre, "init_activation_std": post, "init_grad_norm": grads,
            "init_dead_units": dead}


def fresh_rows(trained: TrainedRun, whole: Dataset) -> np.ndarray:
    """The rows of `whole` (the run's dataset with every training row: `Measurer._whole_data`) that are in
    none of the run's splits: indices into `whole.X_train`, sorted, at most `FRESH_EXAMPLES` (drawn with the
    `study_fresh` stream of the run's seed). Empty when the run trained on the whole training pool."""
    if trained.split is None or whole.split is None:
        return np.zeros(0, dtype=np.int64)
    pool = whole.split.indices["train"]
    used = np.concatenate([trained.split.indices[s] for s in SPLITS
                           if trained.split.pools[s] == whole.split.pools["train"]])
    free = np.flatnonzero(~np.isin(pool, used))
    pick = stream(trained.cfg.seed, "study_fresh").permutation(len(free))[:FRESH_EXAMPLES]
    return np.sort(free[pick])


def fresh_statistics(trained: TrainedRun, whole: Dataset) -> dict[str, float | None]:
    """`fresh_accuracy` and `test_optimism` (module docstring) of a trained run; None where it has no fresh rows
    or no accuracy."""
    rows = fresh_rows(trained, whole)
    if not len(rows) or trained.target_kind != "classes":
        return dict.fromkeys(FRESH_METRICS)
    fresh = _number(trained.score(whole.X_train[rows], whole.y_train[rows]).get("accuracy"))
    test = _number(trained.score(whole.X_test, whole.y_test).get("accuracy"))
    optimism = None if fresh is None or test is None else test - fresh
    return {"fresh_accuracy": fresh, "test_optimism": optimism}


def mc_dropout_average(model: Any, X: np.ndarray, samples: int, rng: np.random.Generator,
                       proba: Any = None) -> np.ndarray:
    """The mean over `samples` dropout masks (drawn from `rng`) of `proba(scores)` (default: the scores) for
    X: (N, D) preprocessed rows -> (N, K). Each pass runs the Dropout layers in training mode (a fresh mask,
    scaled as their mode says) and every other layer in evaluation mode (BatchNorm's running statistics); the
    layers before the first Dropout run once."""
    proba = proba or (lambda s: s)
    first = next((i for i, layer in enumerate(model.layers) if isinstance(layer, Dropout)), None)
    if first is None:
        raise ValueError("the network has no dropout")
    model.set_dropout_rng(rng)
    h = X
    with np.errstate(all="ignore"):
        for layer in model.layers[:first]:
            h = layer.forward(h, train=False)
        total = None
        for _ in range(samples):
            x = h
            for layer in model.layers[first:]:
                x = layer.forward(x, train=isinstance(layer, Dropout))
            p = np.asarray(proba(x), dtype=np.float64)
            total = p if total is None else total + p
    return total / samples


def mc_dropout_statistics(trained: TrainedRun, X: np.ndarray, y: np.ndarray,
                          samples: int = MC_SAMPLES) -> dict[str, float | None]:
    """`mc_dropout_agreement` and `mc_dropout_gap` (module docstring) on preprocessed rows X (N, D) with class
    labels y (N,); None for a network without dropout or targets that are not classes."""
    model, loss = trained.model, trained.loss
    if not model.dropout_layers() or trained.target_kind != "classes":
        return dict.fromkeys(MC_METRICS)
    proba = loss.predict_proba if loss.has_proba else None
    deterministic = loss.predict(model.scores(X, trained.cfg.train.eval_batch_size))
    sampled = mc_dropout_average(model, X, samples, stream(trained.cfg.seed, "study_mc_dropout"), proba).argmax(1)
    y = np.asarray(y).reshape(-1)
    return {"mc_dropout_agreement": float(np.mean(sampled == deterministic)),
            "mc_dropout_gap": float(np.mean(sampled == y) - np.mean(deterministic == y))}


def near_zero_fraction(weights: dict[str, np.ndarray], rtol: float = NEAR_ZERO_RTOL) -> float | None:
    """The share of all Linear weight entries (`fcI.W`) with |w| <= rtol * max |w| of their layer."""
    near = total = 0
    for name, W in weights.items():
        if not name.endswith(".W") or not name.startswith("fc"):
            continue
        magnitude = np.abs(np.asarray(W, dtype=np.float64))
        top = float(magnitude.max()) if magnitude.size else 0.0
        near += int(np.count_nonzero(magnitude <= rtol * top))
        total += magnitude.size
    return near / total if total else None


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _std(a: np.ndarray) -> float | None:
    value = float(np.asarray(a, dtype=np.float64).std())
    return value if math.isfinite(value) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _weights(run_dir: Path, config: dict[str, Any]) -> dict[str, np.ndarray]:
    hidden = (config.get("model") or {}).get("hidden")
    layers = len(hidden) + 1 if isinstance(hidden, list) else 1
    return RunDir(run_dir).read_arrays("model.npz", max_members=MODEL_MEMBERS_PER_LAYER * layers)


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl (lines that do not parse are skipped)."""
    return RunDir(run_dir).read_metrics()


def curve(run_dir: Path, key: str) -> list[float | None]:
    """The values of metrics.jsonl's `key`, epoch by epoch (for the learning-curve figures)."""
    return [_number(row.get(key)) for row in _rows(run_dir)]
