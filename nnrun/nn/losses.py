"""Losses on the network's scores. Each returns its own gradient.

Convention: `scores` is (N, K) as produced by `x @ W + b`; every loss is averaged over the N
examples of the batch, and `loss_and_grad` returns `(loss, dscores)` with dscores: (N, K).
Each loss states the kind of targets it needs (`target_kind`):

- `classes`: int class labels y: (N,) in 0..C-1 (softmax, svm, squared_hinge, hierarchical_softmax);
- `attributes`: binary attribute matrix Y: (N, A) of 0/1 (attribute_hinge, attribute_logistic);
- `regression`: float targets Y: (N, T) (l2, l1, and any class loss with `bins`).

Each loss also names its headline metric (`primary_metric`, with `higher_is_better`) for
early stopping and model selection. `Loss.create(targets, **options)` builds a loss for a
dataset's targets (`Targets`: their names and training array), fitting what it needs from the
training targets only; its keyword options are loss config keys (`margin`, `tree`, ...).
Losses with kinks (hinges, L1) report which side of each kink the scores are on (`kinks`), so
gradient checks skip centered differences that straddle one.
`Loss.restore(targets, state, **options)` builds the loss again from what `state()` saved (a
trained run's targets.npz) instead of the training targets.

For a trained model, class and attribute losses give a `decision_function` (a confidence per
class or attribute, larger is more likely) and the losses that define probabilities give
`predict_proba` (`has_proba`): softmax (the softmax of the scores), hierarchical softmax (the
leaf path probabilities) and attribute logistic (an independent sigmoid per attribute). Training
never calls them. The same losses average probabilities (`mean_proba_scores(a, b)`: the scores whose
probabilities are the mean of those of a and b), which test-time flip averaging uses.
Softmax and sigmoid are computed stably (row max subtracted; `logaddexp`; `tanh` form).

`loss_and_grad` computes with the array module of the scores (`nnrun.backend.xp_of`): NumPy, or
CuPy when training on a GPU, where the loss comes back as a 0-d array (`loss_scalar`) so that no
step waits for the GPU, and softmax cross-entropy runs as one fused kernel. Evaluation (`loss`,
`metrics`, `predict`, ...) runs on host arrays.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnrun.backend import is_device_array, loss_scalar, xp_of
from nnrun.errors import UserInputError
from nnrun.metrics import (
    COVERAGE_LEVELS,
    accuracy,
    attribute_accuracies,
    binned_nll,
    central_interval,
    coverage_key,
    expected_value,
    interval_coverage,
    regression_errors,
    rmse,
)
from nnrun.nn import kernels


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function `1 / (1 + exp(-x))`, computed as `0.5 * tanh(x / 2) + 0.5` (no overflow)."""
    out = xp_of(x).tanh(x * 0.5)
    out *= 0.5
    out += 0.5
    return out


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """scores: (N, C) -> log softmax (N, C), the row max subtracted first (host arrays)."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softplus(x: np.ndarray) -> np.ndarray:
    """`log(1 + exp(x))` without overflow: `logaddexp(0, x)`; note `-softplus(-x) = log sigmoid(x)`."""
    return xp_of(x).logaddexp(0, x)


@dataclass(frozen=True)
class Targets:
    """What a loss is built for: the names of the targets (classes, attributes or outputs), the
    training targets (to fit statistics on), and the dataset's name (for messages)."""

    names: list[str]
    y_train: np.ndarray
    dataset: str


class Loss:
    """Base class. Subclasses set `target_kind` and implement the methods below; `aliases` are other
    names the loss goes by (messages suggest the loss for them)."""

    target_kind = "classes"
    primary_metric = "accuracy"
    higher_is_better = True
    has_proba = False
    """Whether `predict_proba` gives probabilities."""
    has_decision_function = False
    """Whether `decision_function` gives a confidence per class or attribute."""
    has_intervals = False
    """Whether `interval` gives central predictive intervals (binned regression over probabilities)."""
    aliases: tuple[str, ...] = ()

    @classmethod
    def create(cls, targets: Targets) -> Loss:
        """The loss for `targets`; subclasses with options take them as keywords named like the config keys."""
        return cls()

    @classmethod
    def restore(cls, targets: Targets, state: dict[str, np.ndarray], **options: Any) -> Loss:
        """The loss `create(targets, **options)` built, with what it fitted taken from its saved `state()`
        (`targets.y_train` may be empty: nothing is fitted here). A `ValueError` names a missing entry."""
        return cls.create(targets, **options)

    def output_dim(self, n_targets: int) -> int:
        """Number of scores the network must produce for `n_targets` classes, attributes or outputs."""
        return n_targets

    def fit(self, y_train: np.ndarray) -> Loss:
        """Learn what the loss needs from the training targets alone (most losses need nothing)."""
        return self

    def loss_and_grad(self, scores: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """scores: (N, K), y: targets -> (loss, dscores (N, K)); on a GPU the loss is a 0-d array (`loss_scalar`)."""
        raise NotImplementedError

    def on_device_of(self, name: str, like: Any) -> Any:
        """The constant array attribute `name` (fitted on the host) on the device of `like`: itself on the host,
        a copy made once on a GPU."""
        value = getattr(self, name)
        if not is_device_array(like):
            return value
        cache = self.__dict__.setdefault("_device_copies", {})
        key = (name, id(value))
        if key not in cache:
            cache[key] = xp_of(like).asarray(value)
        return cache[key]

    def loss(self, scores: np.ndarray, y: np.ndarray) -> float:
        """The loss alone (no gradient), for evaluation."""
        return self.loss_and_grad(scores, y)[0]

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """scores: (N, K) -> predictions in the targets' form."""
        raise NotImplementedError

    def decision_function(self, scores: np.ndarray) -> np.ndarray:
        """scores: (N, K) -> a confidence per class (N, C) or attribute (N, A); only where `has_decision_function`."""
        raise NotImplementedError(f"{type(self).__name__} defines no decision function")

    def predict_proba(self, scores: np.ndarray) -> np.ndarray:
        """scores: (N, K) -> probabilities per class (N, C, rows sum to 1) or attribute (N, A); only where
        `has_proba`."""
        raise NotImplementedError(f"{type(self).__name__} defines no probabilities")

    def mean_proba_scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a, b: (N, K) scores of two views of the same examples -> the scores (N, K) whose probabilities are the
        mean of theirs, `predict_proba(result) = (predict_proba(a) + predict_proba(b)) / 2` (to rounding), so
        that the loss, the metrics and the predictions of the result are those of the averaged probabilities;
        only where `has_proba`. Host arrays."""
        raise NotImplementedError(f"{type(self).__name__} defines no probabilities to average")

    def metrics(self, scores: np.ndarray, y: np.ndarray, detail: bool = False) -> dict[str, float]:
        """Metrics that fit the targets; `detail` adds the final-summary ones (per attribute, baseline)."""
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        """What the loss fitted on the training targets, as arrays (saved beside the model)."""
        return {}

    def kinks(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray | None:
        """Which side of each kink of the loss the scores are on (a bool array), or None for smooth losses.

        Gradient checks compare this pattern between `x + h` and `x - h` and skip the entry where it differs.
        """
        return None


class ClassLoss(Loss):
    """A loss on integer class labels y: (N,); the prediction is the arg-max score."""

    target_kind = "classes"
    has_decision_function = True

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """scores: (N, C) -> predicted class (N,)."""
        return scores.argmax(axis=1)

    def decision_function(self, scores: np.ndarray) -> np.ndarray:
        """scores: (N, C) -> the scores themselves, (N, C)."""
        return scores

    def metrics(self, scores: np.ndarray, y: np.ndarray, detail: bool = False) -> dict[str, float]:
        """Metrics for classes: top-1 accuracy."""
        return {"accuracy": accuracy(self.predict(scores), y)}


class SoftmaxCrossEntropy(ClassLoss):
    """Softmax cross-entropy: `L = mean_i [-s_{i,y_i} + log sum_j exp(s_ij)]`.

    Gradient `(softmax(s) - onehot(y)) / N`; the softmax subtracts the row max for stability.
    Targets are integer class labels (N,). `predict_proba` is `softmax(s)`.

    With label smoothing e > 0 the target distribution is `q = (1 - e) onehot(y) + e / C`:
    `L = mean_i [log sum_j exp(s_ij) - (1 - e) s_{i,y_i} - (e / C) sum_j s_ij]`, gradient
    `(softmax(s) - q) / N` (PyTorch's `cross_entropy(..., label_smoothing=e)`). Evaluation reports
    the same smoothed loss.
    """

    has_proba = True

    def __init__(self, label_smoothing: float = 0.0) -> None:
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    @classmethod
    def create(cls, targets: Targets, *, label_smoothing: float = 0.0) -> SoftmaxCrossEntropy:
        """Softmax cross-entropy, on targets smoothed by `label_smoothing` (0: one-hot)."""
        return cls(label_smoothing=label_smoothing)

    def predict_proba(self, scores: np.ndarray) -> np.ndarray:
        """scores: (N, C) -> softmax probabilities (N, C), rows summing to 1."""
        exp = np.exp(scores - scores.max(axis=1, keepdims=True))
        exp /= exp.sum(axis=1, keepdims=True)
        return exp

    def mean_proba_scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a, b: (N, C) -> log of the mean softmax, `logaddexp(log_softmax(a), log_softmax(b)) - log 2` (finite,
        rows of its softmax summing to 1): softmax of it is the mean of the two softmaxes."""
        return (np.logaddexp(log_softmax(a), log_softmax(b)) - np.log(2)).astype(a.dtype, copy=False)

    aliases = ("cross_entropy", "crossentropy", "nll")

    def loss_and_grad(self, scores: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """scores: (N, C), y: (N,) int -> (loss, dscores (N, C))."""
        if is_device_array(scores):
            return kernels.softmax_xent(scores, y, self.label_smoothing)
        xp = xp_of(scores)
        n = scores.shape[0]
        shifted = scores - scores.max(axis=1, keepdims=True)
        exp = xp.exp(shifted)
        sums = exp.sum(axis=1, keepdims=True)
        rows = xp.arange(n)
        e = self.label_smoothing
        if e:
            smooth = e / scores.shape[1]
            loss = loss_scalar(xp.mean(xp.log(sums[:, 0]) - (1 - e) * shifted[rows, y] - smooth * shifted.sum(axis=1)))
            probs = xp.divide(exp, sums, out=exp)
            probs -= smooth
            probs[rows, y] -= 1 - e
            probs /= n
            return loss, probs
        loss = loss_scalar(xp.mean(xp.log(sums[:, 0]) - shifted[rows, y]))
        probs = xp.divide(exp, sums, out=exp)
        probs[rows, y] -= 1
        probs /= n
        return loss, probs

    def loss(self, scores: np.ndarray, y: np.ndarray) -> float:
        """The loss alone (no gradient), for evaluation."""
        shifted = scores - scores.max(axis=1, keepdims=True)
        log_z = np.log(np.exp(shifted).sum(axis=1))
        target = shifted[np.arange(scores.shape[0]), y]
        e = self.label_smoothing
        if e:
            return float(np.mean(log_z - (1 - e) * target - (e / scores.shape[1]) * shifted.sum(axis=1)))
        return float(np.mean(log_z - target))


class MulticlassSVM(ClassLoss):
    """Weston-Watkins multiclass hinge: `L_i = sum_{j != y_i} max(0, s_ij - s_{i,y_i} + margin)`.

    Averaged over N. Gradient: `1/N` for each j != y_i with a positive margin term, and minus the
    count of those terms at y_i. PyTorch's `multi_margin_loss` is this divided by the number of
    classes C. Targets are integer class labels (N,).
    """

    squared = False
    aliases = ("hinge", "multiclass_hinge", "multi_margin")

    def __init__(self, margin: float = 1.0) -> None:
        self.margin = float(margin)

    @classmethod
    def create(cls, targets: Targets, *, margin: float = 1.0) -> MulticlassSVM:
        """The hinge with margin delta = `margin`."""
        return cls(margin=margin)

    def kinks(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(N, C) bool: which margin terms `s_j - s_y + margin` are positive (the true class's is False)."""
        rows = np.arange(scores.shape[0])
        terms = scores - scores[rows, y][:, None] + self.margin
        terms[rows, y] = 0
        return terms > 0

    def _terms(self, scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The clamped margin terms (N, C), zero at the true class, and the row index."""
        xp = xp_of(scores)
        rows = xp.arange(scores.shape[0])
        terms = scores - scores[rows, y][:, None]
        terms += self.margin
        terms[rows, y] = 0
        xp.maximum(terms, 0, out=terms)
        return terms, rows

    def loss_and_grad(self, scores: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """scores: (N, C), y: (N,) int -> (loss, dscores (N, C))."""
        n = scores.shape[0]
        terms, rows = self._terms(scores, y)
        if self.squared:
            loss = loss_scalar(xp_of(scores).einsum("ij,ij->", terms, terms)) / n
            dscores = terms
            dscores *= 2.0 / n
        else:
            loss = loss_scalar(terms.sum()) / n
            dscores = (terms > 0).astype(scores.dtype)
            dscores /= n
        dscores[rows, y] = -dscores.sum(axis=1)
        return loss, dscores

    def loss(self, scores: np.ndarray, y: np.ndarray) -> float:
        """The loss alone (no gradient), for evaluation."""
        terms, _ = self._terms(scores, y)
        if self.squared:
            return float(np.einsum("ij,ij->", terms, terms)) / scores.shape[0]
        return float(terms.sum()) / scores.shape[0]


class SquaredHinge(MulticlassSVM):
    """Squared multiclass hinge: `L_i = sum_{j != y_i} max(0, s_ij - s_{i,y_i} + margin)^2`.

    Averaged over N. Gradient `2 * term / N` for each j != y_i and minus their sum at y_i.
    PyTorch's `multi_margin_loss(p=2)` is this divided by C. Targets are integer class labels (N,).
    """

    squared = True
    aliases = ()


TreeNode = int | tuple  # a class index (leaf) or a pair (left, right) of nodes


class HierarchicalSoftmax(ClassLoss):
    """Hierarchical softmax: a binary logistic classifier at each internal node of a label tree.

    The C classes are the leaves of a binary tree with C - 1 internal nodes, numbered in
    pre-order (root = 0); node n owns score column n. Going left at n has probability
    `sigma(s_n)`, going right `sigma(-s_n) = 1 - sigma(s_n)`, so
    `log P(class c) = sum_{n on c's path} log sigma(d_cn * s_n)` with d_cn = +1 (left) or -1
    (right); the leaf probabilities sum to 1. `L = mean_i [-log P(y_i)]`; its gradient is
    `-d_{y_i,n} * sigma(-d_{y_i,n} * s_n) / N` on the path's nodes and 0 elsewhere. The prediction
    is the leaf with the highest path probability. Targets are integer class labels (N,).
    With two classes this is binary logistic regression with `P(class 0) = sigma(s_0)`.
    `decision_function` gives `log P(class c)` (N, C) and `predict_proba` `P(class c)`.
    """

    has_proba = True

    def __init__(self, tree: TreeNode) -> None:
        leaves = tree_leaves(tree)
        n_classes = len(leaves)
        if sorted(leaves) != list(range(n_classes)) or n_classes < 2:
            raise ValueError(f"the tree's leaves must be the classes 0..C-1 once each (C >= 2), got {leaves}")
        self.tree = tree
        self.n_classes = n_classes
        directions = np.zeros((n_classes, n_classes - 1), dtype=np.float32)
        counter = iter(range(n_classes - 1))

        def walk(node: TreeNode) -> list[int]:
            if not isinstance(node, tuple):
                return [node]
            index = next(counter)
            left, right = walk(node[0]), walk(node[1])
            directions[left, index] = 1.0
            directions[right, index] = -1.0
            return left + right

        walk(tree)
        self.directions = directions
        """d: (C, C-1), d[c, n] = +1 when class c lies left of node n, -1 right, 0 off its path."""
        self.left = (directions > 0).astype(np.float32)
        self.right = (directions < 0).astype(np.float32)

    @classmethod
    def create(cls, targets: Targets, *, tree: list | None = None) -> HierarchicalSoftmax:
        """The tree `tree` (nested lists of class names, see `tree_from_spec`) or, with None, a balanced one."""
        if len(targets.names) < 2:
            raise UserInputError(
                f"loss.name=hierarchical_softmax needs at least two classes (data.dataset={targets.dataset})")
        if tree is None:
            return cls.balanced(len(targets.names))
        return cls(tree_from_spec(tree, targets.names, f"loss.tree (data.dataset={targets.dataset})"))

    @classmethod
    def balanced(cls, n_classes: int) -> HierarchicalSoftmax:
        """The default tree: classes 0..C-1 in order, halved recursively."""
        return cls(balanced_tree(list(range(n_classes))))

    def output_dim(self, n_targets: int) -> int:
        """One score per internal node: C - 1."""
        return self.n_classes - 1

    def loss_and_grad(self, scores: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """scores: (N, C-1), y: (N,) int -> (loss, dscores (N, C-1))."""
        n = scores.shape[0]
        xp = xp_of(scores)
        d = self.on_device_of("directions", scores)[y].astype(scores.dtype, copy=False)
        z = d * scores
        loss = loss_scalar(xp.sum(softplus(-z) * xp.abs(d))) / n
        dscores = sigmoid(-z)
        dscores *= d
        dscores *= -1.0 / n
        return loss, dscores

    def leaf_log_probs(self, scores: np.ndarray) -> np.ndarray:
        """scores: (N, C-1) -> log P(class c) for every class: (N, C)."""
        log_left = -softplus(-scores)
        log_right = -softplus(scores)
        return log_left @ self.left.T.astype(scores.dtype) + log_right @ self.right.T.astype(scores.dtype)

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """scores: (N, C-1) -> the class with the highest path probability (N,)."""
        return self.leaf_log_probs(scores).argmax(axis=1)

    def decision_function(self, scores: np.ndarray) -> np.ndarray:
        """scores: (N, C-1) -> log P(class c) (N, C)."""
        return self.leaf_log_probs(scores)

    def predict_proba(self, scores: np.ndarray) -> np.ndarray:
        """scores: (N, C-1) -> P(class c) (N, C), the products of the branch probabilities on each path."""
        return np.exp(self.leaf_log_probs(scores))

    def mean_proba_scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a, b: (N, C-1) -> the node scores of the mean leaf probabilities p: going left at node n has the
        probability (mass of p left of n) / (mass below n), so `s_n = log(mass left) - log(mass right)` (in
        float64, each mass at least the smallest normal float64, so the scores stay finite)."""
        log_p = np.logaddexp(self.leaf_log_probs(a.astype(np.float64)), self.leaf_log_probs(b.astype(np.float64)))
        p = np.exp(log_p - log_p.max(axis=1, keepdims=True))
        tiny = np.finfo(np.float64).tiny
        left = np.maximum(p @ self.left.astype(np.float64), tiny)
        right = np.maximum(p @ self.right.astype(np.float64), tiny)
        return (np.log(left) - np.log(right)).astype(a.dtype)


class AttributeLoss(Loss):
    """A loss on a binary attribute matrix Y: (N, A) of 0/1; attribute j is predicted present when s_j > 0.

    Metrics: the mean over attributes of the per-attribute accuracy (`accuracy`); with `detail`
    also `accuracy_<name>` for each attribute.
    """

    target_kind = "attributes"
    has_decision_function = True

    def __init__(self, attribute_names: Sequence[str] | None = None) -> None:
        self.attribute_names = list(attribute_names) if attribute_names is not None else None

    @classmethod
    def create(cls, targets: Targets) -> AttributeLoss:
        """The loss for these attributes; metric keys use the names made safe (`metric_key`)."""
        return cls([metric_key(n) for n in targets.names])

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """scores: (N, A) -> 0/1 attribute matrix (N, A)."""
        return (scores > 0).astype(np.int8)

    def decision_function(self, scores: np.ndarray) -> np.ndarray:
        """scores: (N, A) -> the scores themselves (N, A); attribute j is predicted present where > 0."""
        return scores

    def metrics(self, scores: np.ndarray, y: np.ndarray, detail: bool = False) -> dict[str, float]:
        """Mean per-attribute accuracy, and with `detail` each attribute's accuracy."""
        names = self.attribute_names or [f"a{j}" for j in range(y.shape[1])]
        values = attribute_accuracies(self.predict(scores), y, names)
        return values if detail else {"accuracy": values["accuracy"]}


class AttributeHinge(AttributeLoss):
    """Attribute hinge: `L_i = sum_j max(0, 1 - t_ij * s_ij)` with t = 2Y - 1 in {-1, +1}.

    Averaged over N. Gradient `-t_ij / N` where the term is positive, else 0.
    """

    def kinks(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(N, A) bool: which terms `1 - t_ij s_ij` are positive."""
        return 1 - (2 * y.astype(scores.dtype, copy=False) - 1) * scores > 0

    def loss_and_grad(self, scores: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """scores: (N, A), y: (N, A) 0/1 -> (loss, dscores (N, A))."""
        n = scores.shape[0]
        xp = xp_of(scores)
        t = 2 * y.astype(scores.dtype, copy=False) - 1
        terms = 1 - t * scores
        xp.maximum(terms, 0, out=terms)
        loss = loss_scalar(terms.sum()) / n
        dscores = xp.where(terms > 0, -t / n, 0).astype(scores.dtype, copy=False)
        return loss, dscores


class AttributeLogistic(AttributeLoss):
    """Attribute logistic: an independent sigmoid per attribute,
    `L_i = -sum_j [y_ij log sigma(s_ij) + (1 - y_ij) log(1 - sigma(s_ij))] = sum_j [softplus(s_ij) - y_ij s_ij]`.

    Averaged over N. Gradient `(sigma(s) - y) / N`. PyTorch's `BCEWithLogits` (mean) is this / A.
    `predict_proba` is `sigma(s)`: each attribute's probability of being present (rows need not sum to 1).
    """

    has_proba = True

    def predict_proba(self, scores: np.ndarray) -> np.ndarray:
        """scores: (N, A) -> sigma(s) (N, A)."""
        return sigmoid(scores)

    def mean_proba_scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a, b: (N, A) -> the logit of each attribute's mean probability, `log p - log(1 - p)` with
        `log p = logaddexp(log sigma(a), log sigma(b)) - log 2` (and `log(1 - p)` from `-a`, `-b`): finite."""
        log_p = np.logaddexp(-softplus(-a), -softplus(-b))
        log_q = np.logaddexp(-softplus(a), -softplus(b))
        return (log_p - log_q).astype(a.dtype, copy=False)

    def loss_and_grad(self, scores: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """scores: (N, A), y: (N, A) 0/1 -> (loss, dscores (N, A))."""
        n = scores.shape[0]
        y = y.astype(scores.dtype, copy=False)
        loss = loss_scalar(xp_of(scores).sum(softplus(scores) - y * scores)) / n
        dscores = sigmoid(scores)
        dscores -= y
        dscores /= n
        return loss, dscores


class RegressionLoss(Loss):
    """A loss on float targets Y: (N, T). Metrics are in the targets' original units.

    With `standardize`, `fit(y_train)` learns the per-output mean m and std sd of the training
    targets, and the network is trained to output `(y - m) / sd` (the loss is in those units);
    `predict` maps scores back with `s * sd + m`. `fit` also records the training mean as the
    predict-the-mean baseline: detailed metrics report `rmse_baseline` beside `rmse` and `mae`.
    """

    target_kind = "regression"
    primary_metric = "rmse"
    higher_is_better = False

    def __init__(self, standardize: bool = True) -> None:
        self.standardize = standardize
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.train_mean: np.ndarray | None = None

    @classmethod
    def create(cls, targets: Targets, *, standardize_targets: bool = True) -> RegressionLoss:
        """The loss fitted on the training targets (their mean, and with `standardize_targets` their std)."""
        return cls(standardize=standardize_targets).fit(targets.y_train)

    @classmethod
    def restore(cls, targets: Targets, state: dict[str, np.ndarray], *,
                standardize_targets: bool = True) -> RegressionLoss:
        """The fitted loss from `state()`: `target_mean`, `target_std` (standardizing) and `target_train_mean`
        (the baseline; older runs without it report no baseline unless standardized)."""
        loss = cls(standardize=standardize_targets)
        if standardize_targets:
            if "target_mean" not in state or "target_std" not in state:
                raise ValueError("target_mean and target_std are missing (the run standardized its targets)")
            loss.mean = np.asarray(state["target_mean"], dtype=np.float32).reshape(-1)
            loss.std = np.asarray(state["target_std"], dtype=np.float32).reshape(-1)
        if "target_train_mean" in state:
            loss.train_mean = np.asarray(state["target_train_mean"], dtype=np.float64).reshape(-1)
        elif loss.mean is not None:
            loss.train_mean = loss.mean.astype(np.float64)
        return loss

    def fit(self, y_train: np.ndarray) -> RegressionLoss:
        """Learn the training targets' mean (the baseline) and, with `standardize`, their std."""
        y64 = np.asarray(y_train, dtype=np.float64).reshape(len(y_train), -1)
        self.train_mean = y64.mean(axis=0)
        if self.standardize:
            std = y64.std(axis=0)
            self.mean = self.train_mean.astype(np.float32)
            self.std = np.where(std > 0, std, 1.0).astype(np.float32)
        return self

    def _scaled(self, y: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """Targets in the units the network is trained in, (N, T) of `dtype`."""
        y = y.reshape(len(y), -1).astype(dtype, copy=False)
        if self.mean is None:
            return y
        return (y - self.on_device_of("mean", y).astype(dtype)) / self.on_device_of("std", y).astype(dtype)

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """scores: (N, T) -> predictions in the targets' units (N, T)."""
        if self.mean is None:
            return scores
        return scores * self.std + self.mean

    def metrics(self, scores: np.ndarray, y: np.ndarray, detail: bool = False) -> dict[str, float]:
        """MAE and RMSE over all outputs; `detail` adds the training-mean baseline RMSE when fitted."""
        y = y.reshape(len(y), -1)
        values = regression_errors(self.predict(scores), y)
        if detail and self.train_mean is not None:
            values["rmse_baseline"] = rmse(np.broadcast_to(self.train_mean, y.shape), y)
        return values

    def state(self) -> dict[str, np.ndarray]:
        """`target_mean` and `target_std` when standardizing (predictions are `s * std + mean`), and
        `target_train_mean` (T,) float64, the baseline's prediction."""
        state = {} if self.train_mean is None else {"target_train_mean": self.train_mean}
        if self.mean is None:
            return state
        return {"target_mean": self.mean, "target_std": self.std, **state}


class L2Loss(RegressionLoss):
    """Squared L2 norm of the error: `L_i = ||s_i - y_i||^2 = sum_t (s_it - y_it)^2`.

    Averaged over N (not over T, no 1/2). Gradient `2 (s - y) / N`. PyTorch's `mse_loss`
    (mean) is this / T.
    """

    aliases = ("mse", "squared_error")

    def loss_and_grad(self, scores: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """scores: (N, T), y: (N, T) or (N,) float -> (loss, dscores (N, T))."""
        n = scores.shape[0]
        diff = scores - self._scaled(y, scores.dtype)
        loss = loss_scalar(xp_of(scores).einsum("ij,ij->", diff, diff)) / n
        diff *= 2.0 / n
        return loss, diff


class L1Loss(RegressionLoss):
    """L1 norm of the error: `L_i = ||s_i - y_i||_1 = sum_t |s_it - y_it|`.

    Averaged over N. Gradient `sign(s - y) / N`. PyTorch's `l1_loss` (mean) is this / T.
    """

    aliases = ("mae", "absolute_error")

    def kinks(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(N, T) bool: where the error `s - y` is positive."""
        return scores - self._scaled(y, scores.dtype) > 0

    def loss_and_grad(self, scores: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """scores: (N, T), y: (N, T) or (N,) float -> (loss, dscores (N, T))."""
        n = scores.shape[0]
        diff = scores - self._scaled(y, scores.dtype)
        xp = xp_of(scores)
        loss = loss_scalar(xp.abs(diff).sum()) / n
        dscores = xp.sign(diff)
        dscores /= n
        return loss, dscores


DECODE_MODES = ("auto", "expectation", "argmax")
"""How binned regression turns bin scores into a value: `expectation` (the bin centres weighted by the bin
probabilities), `argmax` (the likeliest bin's centre), `auto` (expectation where the class loss gives
probabilities, argmax otherwise)."""


def resolve_decode(decode: str, has_proba: bool) -> str:
    """`expectation` or `argmax` for the config's `decode` and whether the class loss gives probabilities."""
    if decode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}, got {decode!r}")
    if decode == "auto":
        return "expectation" if has_proba else "argmax"
    return decode


class BinnedRegression(Loss):
    """A class loss trained on a 1-D regression target cut into K bins.

    `edges` (K-1,) are increasing inner bin edges: bin k holds `edges[k-1] <= y < edges[k]`.
    `centres` (K,) are the mean training target in each bin. `decode` says what a prediction is:
    `expectation` (the default where the class loss gives probabilities: softmax, hierarchical
    softmax) `sum_k p_k centres[k]`, the mean of the predictive distribution; `argmax` the centre of
    the likeliest bin (`inner.predict`; the only decoding for SVM scores, and what runs saved before
    the option existed used). `bounds` (K+1,): the training minimum, the edges and the training
    maximum, the support of the piecewise-uniform predictive distribution (`nnrun.metrics`; None for
    runs saved before they were recorded: no NLL or intervals then).
    Metrics: `accuracy` of the bin (arg-max), and `mae`, `rmse` of the decoded values; with `detail`
    also the training-mean `rmse_baseline` and, with probabilities and bounds, `nll` (mean `-log(p_k /
    width_k)` at the target's bin) and `coverage_80`, `coverage_95` (the fraction of targets inside the
    central 80 % and 95 % intervals of the predictive CDF), all in the targets' original units.
    Targets: float (N, 1).
    """

    target_kind = "regression"
    primary_metric = "rmse"
    higher_is_better = False

    def __init__(self, inner: ClassLoss, edges: np.ndarray, centres: np.ndarray, train_mean: float | None, *,
                 decode: str = "argmax", bounds: np.ndarray | None = None) -> None:
        self.inner = inner
        self.edges = np.asarray(edges, dtype=np.float64)
        self.centres = np.asarray(centres, dtype=np.float64)
        self.train_mean = None if train_mean is None else float(train_mean)
        self.decode = resolve_decode(decode, inner.has_proba)
        if self.decode == "expectation" and not inner.has_proba:
            raise ValueError(f"decode expectation needs bin probabilities, which {type(inner).__name__} does not "
                             "define; decode by argmax")
        self.bounds = None if bounds is None else np.asarray(bounds, dtype=np.float64).reshape(-1)
        if self.bounds is not None and (len(self.bounds) != len(self.centres) + 1
                                        or not np.all(np.diff(self.bounds) > 0)):
            raise ValueError(f"bin bounds must be {len(self.centres) + 1} increasing values, got {self.bounds}")

    @property
    def has_proba(self) -> bool:
        """Probabilities of the bins where the inner loss defines them."""
        return self.inner.has_proba

    @property
    def has_decision_function(self) -> bool:
        return self.inner.has_decision_function

    @classmethod
    def create(cls, targets: Targets, *, bins: int, inner: Callable[[Targets], ClassLoss],
               decode: str = "auto") -> BinnedRegression:
        """Quantile bins of the single training target (`fit_bins`, `fit_bounds`) and the class loss
        `inner(Targets)` over them, decoding as `decode` says (one of `DECODE_MODES`)."""
        y = targets.y_train
        if y.reshape(len(y), -1).shape[1] != 1:
            raise UserInputError(
                f"loss.bins needs a single regression target, but data.dataset={targets.dataset} has "
                f"{y.shape[1]}; drop loss.bins or use one target column")
        edges, centres = fit_bins(y, bins)
        if len(centres) < 2:
            raise UserInputError(
                f"loss.bins={bins}: the training targets of data.dataset={targets.dataset} take a single value")
        inner_loss = inner(Targets(bin_names(len(centres)), np.searchsorted(edges, y.reshape(len(y)), side="right"),
                                   targets.dataset))
        return cls(inner_loss, edges, centres, float(np.mean(y, dtype=np.float64)), decode=decode,
                   bounds=fit_bounds(y, edges))

    @classmethod
    def restore(cls, targets: Targets, state: dict[str, np.ndarray], *,
                inner: Callable[[Targets], ClassLoss]) -> BinnedRegression:
        """The binned loss from `state()`: `bin_edges`, `bin_centres`, `target_train_mean` (the baseline),
        `bin_decode` and `bin_bounds`. A run saved before `bin_decode` existed decoded by argmax, and is
        restored so (its summary's metrics stay reproducible); without `bin_bounds` it has no NLL or intervals."""
        if "bin_edges" not in state or "bin_centres" not in state:
            raise ValueError("bin_edges and bin_centres are missing (the run trained on loss.bins)")
        centres = np.asarray(state["bin_centres"], dtype=np.float64).reshape(-1)
        train_mean = float(state["target_train_mean"]) if "target_train_mean" in state else None
        decode = str(state["bin_decode"]) if "bin_decode" in state else "argmax"
        if decode not in ("expectation", "argmax"):
            raise ValueError(f"bin_decode must be expectation or argmax, got {decode!r}")
        return cls(inner(Targets(bin_names(len(centres)), np.zeros(0, dtype=np.int64), targets.dataset)),
                   np.asarray(state["bin_edges"], dtype=np.float64).reshape(-1), centres, train_mean,
                   decode=decode, bounds=state.get("bin_bounds"))

    def output_dim(self, n_targets: int) -> int:
        """The inner class loss's output size for K classes."""
        return self.inner.output_dim(len(self.centres))

    def to_bins(self, y: np.ndarray) -> np.ndarray:
        """y: (N, 1) or (N,) float -> bin index (N,) int in 0..K-1 (on the device of y)."""
        return xp_of(y).searchsorted(self.on_device_of("edges", y), y.reshape(len(y)), side="right")

    def loss_and_grad(self, scores: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """scores: (N, K'), y: (N, 1) float -> the inner loss on the bin indices."""
        return self.inner.loss_and_grad(scores, self.to_bins(y))

    def loss(self, scores: np.ndarray, y: np.ndarray) -> float:
        """The inner loss on the bin indices."""
        return self.inner.loss(scores, self.to_bins(y))

    def kinks(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray | None:
        """The inner loss's kinks on the bin indices."""
        return self.inner.kinks(scores, self.to_bins(y))

    def _proba64(self, scores: np.ndarray) -> np.ndarray:
        """The bin probabilities (N, K) in float64 (so that small ones keep their logarithm)."""
        return self.inner.predict_proba(np.asarray(scores, dtype=np.float64))

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """scores -> the decoded value (N, 1) float64: the expectation of the bin centres under the bin
        probabilities, or the likeliest bin's centre (`decode`)."""
        return self._decoded(scores, None, None)

    def _decoded(self, scores: np.ndarray, bins: np.ndarray | None, proba: np.ndarray | None) -> np.ndarray:
        """`predict`, from the likeliest bins or the float64 probabilities when they are at hand already."""
        if self.decode == "expectation":
            return expected_value(self._proba64(scores) if proba is None else proba, self.centres)[:, None]
        return self.centres[self.inner.predict(scores) if bins is None else bins][:, None]

    @property
    def has_intervals(self) -> bool:
        """Whether `interval` (and the NLL and coverage metrics) are defined: bin probabilities and bounds."""
        return self.inner.has_proba and self.bounds is not None

    def interval(self, scores: np.ndarray, level: float) -> np.ndarray:
        """scores -> the central interval of `level` of each row's predictive distribution: (N, 2) float64,
        lower and upper end in the targets' units (`nnrun.metrics.central_interval`)."""
        if not self.has_intervals:
            raise NotImplementedError("intervals need bin probabilities and the bin bounds (bin_bounds)")
        return central_interval(self._proba64(scores), self.bounds, level)

    def decision_function(self, scores: np.ndarray) -> np.ndarray:
        """scores -> the inner loss's confidence per bin (N, K)."""
        return self.inner.decision_function(scores)

    def predict_proba(self, scores: np.ndarray) -> np.ndarray:
        """scores -> the inner loss's probability per bin (N, K)."""
        return self.inner.predict_proba(scores)

    def mean_proba_scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The inner loss's scores of the mean bin probabilities."""
        return self.inner.mean_proba_scores(a, b)

    def metrics(self, scores: np.ndarray, y: np.ndarray, detail: bool = False) -> dict[str, float]:
        """Bin accuracy, MAE and RMSE of the decoded values; `detail` adds the training-mean baseline RMSE and,
        where defined (`has_intervals`), `nll` and the coverage of the central intervals (`COVERAGE_LEVELS`)."""
        y = y.reshape(len(y), 1)
        bins = self.inner.predict(scores)
        intervals = detail and self.has_intervals
        proba = self._proba64(scores) if intervals or self.decode == "expectation" else None  # computed once
        values = {"accuracy": accuracy(bins, self.to_bins(y))}
        values.update(regression_errors(self._decoded(scores, bins, proba), y))
        if detail and self.train_mean is not None:
            values["rmse_baseline"] = rmse(np.full_like(y, self.train_mean, dtype=np.float64), y)
        if intervals:
            values["nll"] = binned_nll(proba, self.bounds, y)
            values.update({coverage_key(level): interval_coverage(proba, self.bounds, y, level)
                           for level in COVERAGE_LEVELS})
        return values

    def state(self) -> dict[str, np.ndarray]:
        """`bin_edges` (K-1,), `bin_centres` (K,), `target_train_mean` (the baseline's prediction), `bin_decode`
        (`expectation` or `argmax`) and `bin_bounds` (K+1,) when known."""
        state = {"bin_edges": self.edges, "bin_centres": self.centres, "bin_decode": np.array(self.decode)}
        if self.bounds is not None:
            state["bin_bounds"] = self.bounds
        if self.train_mean is not None:
            state["target_train_mean"] = np.array(self.train_mean)
        return state


def fit_bounds(y_train: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The support of the binned predictive distribution: (K+1,) float64, the training minimum, the K - 1
    inner `edges` and the training maximum. When the top bin would have no width (at least a K-th of the
    targets share the maximum, so the last edge is the maximum) it gets the mean width of the bins below."""
    y = np.asarray(y_train, dtype=np.float64).reshape(-1)
    low, high = float(y.min()), float(y.max())
    if len(edges) and high <= edges[-1]:
        high = float(edges[-1]) + (float(edges[-1]) - low) / len(edges)
    return np.concatenate([[low], np.asarray(edges, dtype=np.float64), [high]])


def bin_names(n_bins: int) -> list[str]:
    """The class names of K bins: bin0, bin1, ..."""
    return [f"bin{k}" for k in range(n_bins)]


def fit_bins(y_train: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantile bins of a 1-D training target -> (inner edges (K-1,), centres (K,)).

    The edges are the k/K quantiles (k = 1..K-1) of the training targets. Repeated values
    (ties) can leave a bin empty; such a bin is merged into the one below, so K can come out
    smaller than asked. A bin's centre is the mean of the training targets inside it.
    """
    y = np.asarray(y_train, dtype=np.float64).reshape(len(y_train))
    edges = np.unique(np.quantile(y, np.arange(1, n_bins) / n_bins))
    edges = edges[edges > y.min()]
    while True:
        index = np.searchsorted(edges, y, side="right")
        counts = np.bincount(index, minlength=len(edges) + 1)
        empty = np.flatnonzero(counts == 0)
        if not len(empty):
            break
        edges = np.delete(edges, empty[0] - 1)  # bin 0 is never empty: every edge exceeds min(y)
    centres = np.bincount(index, weights=y) / counts
    return edges, centres


# ---- label trees ------------------------------------------------------------------------------

def tree_leaves(node: TreeNode) -> list[int]:
    """The leaves of a binary tree, left to right."""
    if isinstance(node, tuple):
        return tree_leaves(node[0]) + tree_leaves(node[1])
    return [node]


def balanced_tree(children: list) -> TreeNode:
    """A binary tree over `children` (leaves or subtrees) by halving the list recursively."""
    if len(children) == 1:
        return children[0]
    half = (len(children) + 1) // 2
    return (balanced_tree(children[:half]), balanced_tree(children[half:]))


def tree_from_spec(spec: list, class_names: Sequence[str], where: str = "loss.tree") -> TreeNode:
    """A config tree (nested lists of class names) -> a binary tree of class indices.

    A list with more than two children is split into a balanced binary subtree (first half
    left); a one-element list is its element. Every class must appear exactly once.
    """
    index = {name: i for i, name in enumerate(class_names)}
    seen: list[str] = []

    def convert(node: Any) -> TreeNode:
        if isinstance(node, list):
            if not node:
                raise UserInputError(f"{where}: empty list in the label tree")
            return balanced_tree([convert(child) for child in node])
        name = str(node)
        if name not in index:
            raise UserInputError(
                f"{where}: unknown class {name!r}; the classes are: {', '.join(class_names)}")
        seen.append(name)
        return index[name]

    tree = convert(spec)
    duplicates = sorted({n for n in seen if seen.count(n) > 1})
    if duplicates:
        raise UserInputError(f"{where}: classes listed more than once: {', '.join(duplicates)}")
    missing = [n for n in class_names if n not in seen]
    if missing:
        raise UserInputError(f"{where}: classes missing from the label tree: {', '.join(missing)}")
    return tree


def check_tree_spec(spec: Any) -> list:
    """Structural check of a config tree: nested non-empty lists of names, no name twice."""
    if not isinstance(spec, list):
        raise ValueError("must be a list (nested lists of class names)")
    names: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            if not node:
                raise ValueError("holds an empty list")
            for child in node:
                walk(child)
        elif isinstance(node, (str, int)) and not isinstance(node, bool):
            names.append(str(node))
        else:
            raise ValueError(f"holds {node!r}; only class names and lists are allowed")

    walk(spec)
    if len(names) < 2:
        raise ValueError("needs at least two classes")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"lists classes more than once: {', '.join(duplicates)}")
    return spec


# ---- registry ---------------------------------------------------------------------------------

LOSSES: dict[str, type[Loss]] = {
    "softmax": SoftmaxCrossEntropy,
    "svm": MulticlassSVM,
    "squared_hinge": SquaredHinge,
    "hierarchical_softmax": HierarchicalSoftmax,
    "attribute_hinge": AttributeHinge,
    "attribute_logistic": AttributeLogistic,
    "l2": L2Loss,
    "l1": L1Loss,
}
"""Registry: config name -> loss class (built with `create(targets, **options)`)."""


def losses_for(kinds: Sequence[str]) -> list[str]:
    """Names of the losses that train on any of these target kinds."""
    return [name for name, loss in LOSSES.items() if loss.target_kind in kinds]


def metric_key(name: str) -> str:
    """A name made safe for metric keys: lower case letters, digits and underscores."""
    return re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_") or "x"
