"""Losses: numeric gradient checks, values against PyTorch and float64 formulas, label trees, metrics."""

import itertools

import numpy as np
import pytest

from nnrun.errors import UserInputError
from nnrun.nn.losses import (
    LOSSES,
    AttributeHinge,
    AttributeLogistic,
    BinnedRegression,
    HierarchicalSoftmax,
    L1Loss,
    L2Loss,
    MulticlassSVM,
    SoftmaxCrossEntropy,
    SquaredHinge,
    balanced_tree,
    check_tree_spec,
    fit_bins,
    tree_from_spec,
    tree_leaves,
)
from nnrun.nn.numeric import numeric_gradient

N, C, A, T = 7, 5, 4, 3


def targets_for(loss, rng: np.random.Generator, n: int = N):
    """Random targets of the loss's kind, and the number of scores it needs."""
    if isinstance(loss, BinnedRegression):
        return rng.normal(150, 60, size=(n, 1)), loss.output_dim(1)
    if loss.target_kind == "classes":
        n_classes = loss.n_classes if isinstance(loss, HierarchicalSoftmax) else C
        y = rng.integers(0, n_classes, size=n)
        y[:n_classes] = np.arange(min(n, n_classes))  # every class (every tree path) appears
        return y, loss.output_dim(n_classes)
    if loss.target_kind == "attributes":
        return rng.integers(0, 2, size=(n, A)).astype(np.float32), A
    return rng.normal(size=(n, T)) * 3 + 1, T


def fitted_l2():
    return L2Loss().fit(np.random.default_rng(5).normal(50, 20, size=(40, T)))


def binned_softmax():
    y = np.random.default_rng(6).normal(150, 60, size=(60, 1))
    edges, centres = fit_bins(y, 4)
    return BinnedRegression(SoftmaxCrossEntropy(), edges, centres, float(y.mean()))


LOSS_CASES = {
    "softmax": SoftmaxCrossEntropy,
    "svm": MulticlassSVM,
    "svm_margin_0.3": lambda: MulticlassSVM(margin=0.3),
    "squared_hinge": SquaredHinge,
    "squared_hinge_margin_2": lambda: SquaredHinge(margin=2.0),
    "softmax_label_smoothing": lambda: SoftmaxCrossEntropy(label_smoothing=0.2),
    "hierarchical_balanced": lambda: HierarchicalSoftmax.balanced(C),
    "hierarchical_chain": lambda: HierarchicalSoftmax((0, (1, (2, (3, 4))))),
    "hierarchical_two": lambda: HierarchicalSoftmax((1, 0)),
    "attribute_hinge": AttributeHinge,
    "attribute_logistic": AttributeLogistic,
    "l2": lambda: L2Loss(standardize=False),
    "l2_standardized": fitted_l2,
    "l1": lambda: L1Loss(standardize=False),
    "binned_softmax": binned_softmax,
}


def test_every_registered_loss_has_a_gradient_check():
    covered = {type(factory()) for factory in LOSS_CASES.values()}
    assert set(LOSSES.values()) <= covered


@pytest.mark.parametrize("case", list(LOSS_CASES))
def test_numeric_gradient(case):
    loss = LOSS_CASES[case]()
    rng = np.random.default_rng(sum(map(ord, case)))
    y, k = targets_for(loss, rng)
    scores = rng.normal(size=(N, k)) * 2
    value, dscores = loss.loss_and_grad(scores.copy(), y)
    assert dscores.shape == scores.shape and dscores.dtype == np.float64
    assert value == pytest.approx(loss.loss(scores.copy(), y), rel=1e-12)
    point = scores.copy()
    expected = numeric_gradient(lambda: loss.loss_and_grad(point.copy(), y)[0], point, h=1e-6)
    np.testing.assert_allclose(dscores, expected, rtol=1e-5, atol=1e-8)
    assert np.abs(dscores).sum() > 0


@pytest.mark.parametrize("case", list(LOSS_CASES))
def test_float32_in_float32_out_and_inputs_untouched(case):
    loss = LOSS_CASES[case]()
    rng = np.random.default_rng(1)
    y, k = targets_for(loss, rng, n=32)
    scores = rng.normal(size=(32, k)).astype(np.float32)
    before = scores.copy()
    value, dscores = loss.loss_and_grad(scores, y)
    assert dscores.dtype == np.float32 and np.isfinite(value)
    np.testing.assert_array_equal(scores, before)
    ref, _ = loss.loss_and_grad(scores.astype(np.float64), y)
    assert value == pytest.approx(ref, rel=1e-4)


# ---- values against PyTorch ------------------------------------------------------------------

@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def autograd(torch, fn, scores: np.ndarray):
    s = torch.tensor(scores, dtype=torch.float64, requires_grad=True)
    out = fn(s)
    out.backward()
    return out.item(), s.grad.numpy()


def test_softmax_matches_torch_cross_entropy(torch):
    rng = np.random.default_rng(2)
    scores, y = rng.normal(size=(16, 10)) * 3, rng.integers(0, 10, 16)
    ref, ref_grad = autograd(torch, lambda s: torch.nn.functional.cross_entropy(s, torch.tensor(y)), scores)
    value, grad = SoftmaxCrossEntropy().loss_and_grad(scores.copy(), y)
    assert value == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("e", [0.1, 0.35])
def test_label_smoothing_matches_torch_cross_entropy(torch, e):
    rng = np.random.default_rng(4)
    scores, y = rng.normal(size=(16, 10)) * 3, rng.integers(0, 10, 16)
    ref, ref_grad = autograd(
        torch, lambda s: torch.nn.functional.cross_entropy(s, torch.tensor(y), label_smoothing=e), scores)
    loss = SoftmaxCrossEntropy.create(None, label_smoothing=e)
    value, grad = loss.loss_and_grad(scores.copy(), y)
    assert value == pytest.approx(ref, rel=1e-12) and loss.loss(scores, y) == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)
    # the gradient is softmax minus the smoothed target q: zero at scores log(q), not at ever larger margins
    q = np.full((16, 10), e / 10)
    q[np.arange(16), y] += 1 - e
    np.testing.assert_allclose(loss.loss_and_grad(np.log(q), y)[1], 0, atol=1e-15)


@pytest.mark.parametrize(("cls", "p"), [(MulticlassSVM, 1), (SquaredHinge, 2)])
@pytest.mark.parametrize("margin", [1.0, 0.4])
def test_hinge_losses_match_torch_multi_margin_times_classes(torch, cls, p, margin):
    rng = np.random.default_rng(3)
    scores, y = rng.normal(size=(16, C)), rng.integers(0, C, 16)
    ref, ref_grad = autograd(torch, lambda s: C * torch.nn.functional.multi_margin_loss(
        s, torch.tensor(y), p=p, margin=margin), scores)
    value, grad = cls(margin=margin).loss_and_grad(scores.copy(), y)
    assert ref > 0
    assert value == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)


def test_attribute_logistic_matches_bce_with_logits_times_attributes(torch):
    rng = np.random.default_rng(4)
    scores, y = rng.normal(size=(16, A)) * 4, rng.integers(0, 2, (16, A)).astype(np.float64)
    ref, ref_grad = autograd(torch, lambda s: A * torch.nn.functional.binary_cross_entropy_with_logits(
        s, torch.tensor(y)), scores)
    value, grad = AttributeLogistic().loss_and_grad(scores.copy(), y)
    assert value == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize(("cls", "fn"), [(L2Loss, "mse_loss"), (L1Loss, "l1_loss")])
def test_regression_losses_match_torch_times_outputs(torch, cls, fn):
    rng = np.random.default_rng(5)
    scores, y = rng.normal(size=(16, T)), rng.normal(size=(16, T))
    ref, ref_grad = autograd(torch, lambda s: T * getattr(torch.nn.functional, fn)(s, torch.tensor(y)), scores)
    value, grad = cls(standardize=False).loss_and_grad(scores.copy(), y)
    assert value == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)


# ---- values against float64 formulas ---------------------------------------------------------

def test_svm_against_loop_formula():
    rng = np.random.default_rng(6)
    scores, y = rng.normal(size=(9, C)), rng.integers(0, C, 9)
    for margin, squared in itertools.product((1.0, 0.25), (False, True)):
        expected = 0.0
        for i in range(9):
            for j in range(C):
                if j != y[i]:
                    term = max(0.0, scores[i, j] - scores[i, y[i]] + margin)
                    expected += term ** 2 if squared else term
        loss = (SquaredHinge if squared else MulticlassSVM)(margin=margin)
        assert loss.loss(scores.copy(), y) == pytest.approx(expected / 9, rel=1e-12)


def test_attribute_hinge_against_formula():
    rng = np.random.default_rng(7)
    scores, y = rng.normal(size=(9, A)) * 2, rng.integers(0, 2, (9, A))
    t = 2.0 * y - 1
    expected = np.maximum(0, 1 - t * scores).sum() / 9
    assert AttributeHinge().loss(scores, y) == pytest.approx(expected, rel=1e-12)
    assert AttributeHinge().loss(t * 5.0, y) == 0.0  # every attribute beyond the margin


def test_regression_loss_normalization():
    scores = np.array([[1.0, 2.0], [0.0, -1.0]])
    y = np.array([[0.0, 0.0], [0.0, 1.0]])
    assert L2Loss(standardize=False).loss(scores, y) == pytest.approx((1 + 4 + 0 + 4) / 2)
    assert L1Loss(standardize=False).loss(scores, y) == pytest.approx((1 + 2 + 0 + 2) / 2)


def test_standardized_regression_trains_on_scaled_targets_and_reports_original_units():
    y_train = np.array([[10.0], [20.0], [30.0], [40.0]])
    loss = L2Loss().fit(y_train)
    mean, std = 25.0, np.sqrt(125.0)
    np.testing.assert_allclose(loss.mean, [mean]) and np.testing.assert_allclose(loss.std, [std], rtol=1e-6)
    perfect = (y_train - mean) / std
    assert loss.loss(perfect, y_train) == pytest.approx(0, abs=1e-10)
    np.testing.assert_allclose(loss.predict(perfect), y_train, rtol=1e-6)
    metrics = loss.metrics(perfect + 2 / std, y_train, detail=True)  # every prediction 2 units high
    assert metrics["mae"] == pytest.approx(2, rel=1e-5) and metrics["rmse"] == pytest.approx(2, rel=1e-5)
    assert metrics["rmse_baseline"] == pytest.approx(std, rel=1e-6)
    assert "rmse_baseline" not in loss.metrics(perfect, y_train)
    assert set(loss.state()) == {"target_mean", "target_std", "target_train_mean"}


def test_hierarchical_against_explicit_path_products():
    # tree: ((0, 3), (1, (2, 4))); nodes in pre-order: root=0, (0,3)=1, (1,(2,4))=2, (2,4)=3
    loss = HierarchicalSoftmax(((0, 3), (1, (2, 4))))
    rng = np.random.default_rng(8)
    s = rng.normal(size=(6, 4)) * 2
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    paths = {0: [(0, 1), (1, 1)], 3: [(0, 1), (1, -1)], 1: [(0, -1), (2, 1)],
             2: [(0, -1), (2, -1), (3, 1)], 4: [(0, -1), (2, -1), (3, -1)]}
    probs = np.array([[np.prod([sig(d * s[i, n]) for n, d in paths[c]]) for c in range(5)] for i in range(6)])
    np.testing.assert_allclose(np.exp(loss.leaf_log_probs(s)), probs, rtol=1e-12)
    y = np.array([0, 1, 2, 3, 4, 2])
    assert loss.loss(s, y) == pytest.approx(-np.mean(np.log(probs[np.arange(6), y])), rel=1e-12)
    np.testing.assert_array_equal(loss.predict(s), probs.argmax(axis=1))


def test_hierarchical_over_two_classes_is_binary_logistic_regression(torch):
    rng = np.random.default_rng(9)
    s, y = rng.normal(size=(20, 1)) * 3, rng.integers(0, 2, 20)
    loss = HierarchicalSoftmax.balanced(2)
    assert loss.output_dim(2) == 1
    target = torch.tensor((y == 0).astype(np.float64)[:, None])  # left leaf = class 0 = sigma(s)
    ref, ref_grad = autograd(torch, lambda t: torch.nn.functional.binary_cross_entropy_with_logits(t, target), s)
    value, grad = loss.loss_and_grad(s.copy(), y)
    assert value == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(loss.predict(s), np.where(s[:, 0] > 0, 0, 1))


def random_tree(items: list, rng: np.random.Generator):
    if len(items) == 1:
        return items[0]
    cut = int(rng.integers(1, len(items)))
    return (random_tree(items[:cut], rng), random_tree(items[cut:], rng))


@pytest.mark.parametrize("n_classes", [2, 3, 7, 10, 16])
def test_leaf_probabilities_of_any_tree_sum_to_one(n_classes):
    rng = np.random.default_rng(n_classes)
    for _ in range(5):
        tree = random_tree(list(rng.permutation(n_classes)), rng)
        loss = HierarchicalSoftmax(tree)
        s = rng.normal(size=(8, n_classes - 1)) * 5
        assert loss.leaf_log_probs(s).shape == (8, n_classes)
        np.testing.assert_allclose(np.exp(loss.leaf_log_probs(s)).sum(axis=1), 1, rtol=1e-12)
        counts = np.abs(loss.directions).sum(axis=1)
        assert counts.min() >= 1 and np.abs(loss.directions).sum(axis=0).min() >= 2


def test_losses_are_stable_for_huge_scores():
    big = np.array([[1e4, -1e4, 0.0], [-3e4, 2e4, 1e4]])
    for loss, y in ((SoftmaxCrossEntropy(), np.array([1, 0])),
                    (HierarchicalSoftmax.balanced(4), np.array([3, 0])),
                    (AttributeLogistic(), np.array([[0, 1, 1], [1, 0, 1]]))):
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            value, grad = loss.loss_and_grad(big.copy(), y)
        assert np.isfinite(value) and np.isfinite(grad).all() and value > 1e3


# ---- label trees -----------------------------------------------------------------------------

def test_balanced_tree_and_spec_conversion():
    assert balanced_tree([0, 1, 2, 3, 4]) == (((0, 1), 2), (3, 4))
    names = ["a", "b", "c", "d", "e"]
    tree = tree_from_spec([["a", "b", "c"], [["d"], "e"]], names)
    assert tree == (((0, 1), 2), (3, 4))
    assert tree_from_spec([[0, 1], 2], ["0", "1", "2"]) == ((0, 1), 2)  # YAML integers name digits
    assert sorted(tree_leaves(tree)) == list(range(5))


@pytest.mark.parametrize(("spec", "message"), [
    (["a", "b", "zebra"], "unknown class 'zebra'"),
    (["a", "b"], "missing from the label tree: c"),
    ([["a", "b"], ["b", "c"]], "more than once: b"),
    (["a", [], "b", "c"], "empty list"),
])
def test_tree_spec_errors_name_the_problem(spec, message):
    with pytest.raises(UserInputError, match="loss.tree") as err:
        tree_from_spec(spec, ["a", "b", "c"])
    assert message in str(err.value)


def test_tree_spec_structure_check():
    assert check_tree_spec([["x", 1], "y"]) == [["x", 1], "y"]
    for bad, text in (("abc", "must be a list"), ([["a"], []], "empty list"), (["a"], "at least two"),
                      (["a", {"b": 1}], "only class names"), (["a", ["a", "b"]], "more than once")):
        with pytest.raises(ValueError, match=text):
            check_tree_spec(bad)


# ---- metrics and bins ------------------------------------------------------------------------

def test_attribute_metrics_per_attribute_and_mean():
    y = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 1]], dtype=np.float32)
    scores = np.array([[2.0, -1, 1], [1, -1, -1], [1, -1, -1], [-1, 1, -1]])  # column accuracies 3/4, 3/4, 2/4
    loss = AttributeLogistic(["fur", "wheels", "wings"])
    metrics = loss.metrics(scores, y, detail=True)
    assert metrics == pytest.approx({"accuracy": 2 / 3, "accuracy_fur": 0.75, "accuracy_wheels": 0.75,
                                     "accuracy_wings": 0.5})
    assert loss.metrics(scores, y) == pytest.approx({"accuracy": 2 / 3})
    np.testing.assert_array_equal(AttributeHinge().predict(scores), (scores > 0).astype(int))


def test_class_losses_report_top1_accuracy():
    scores = np.array([[3.0, 1, 0], [0, 1, 2], [5, 6, 0]])
    for loss in (SoftmaxCrossEntropy(), MulticlassSVM(), SquaredHinge()):
        assert loss.metrics(scores, np.array([0, 2, 0])) == {"accuracy": pytest.approx(2 / 3)}


def test_fit_bins_quantile_edges_and_centres():
    y = np.arange(1.0, 13.0)  # 1..12
    edges, centres = fit_bins(y, 4)
    np.testing.assert_allclose(edges, np.quantile(y, [0.25, 0.5, 0.75]))
    bins = np.searchsorted(edges, y, side="right")
    np.testing.assert_array_equal(np.bincount(bins), [3, 3, 3, 3])
    np.testing.assert_allclose(centres, [2, 5, 8, 11])
    edges, centres = fit_bins(np.array([1.0] * 5 + [5.0] * 5), 4)  # ties: empty bins merge
    assert edges.tolist() == [5.0] and centres.tolist() == [1.0, 5.0]
    edges, centres = fit_bins(np.array([1.0] * 8 + [5.0] * 2), 4)  # every quantile is 1: one bin
    assert len(edges) == 0 and centres.tolist() == [1.8]


def test_binned_regression_maps_targets_and_reports_centre_errors():
    loss = BinnedRegression(SoftmaxCrossEntropy(), np.array([10.0, 20.0]), np.array([5.0, 15.0, 25.0]), 15.0)
    y = np.array([[4.0], [10.0], [19.0], [30.0]])
    np.testing.assert_array_equal(loss.to_bins(y), [0, 1, 1, 2])
    scores = np.eye(3)[[0, 1, 2, 2]] * 10  # predicts bins 0, 1, 2, 2
    metrics = loss.metrics(scores, y, detail=True)
    errors = np.array([1.0, 5.0, 6.0, 5.0])
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["mae"] == pytest.approx(errors.mean()) and metrics["rmse"] == pytest.approx(
        np.sqrt((errors ** 2).mean()))
    assert metrics["rmse_baseline"] == pytest.approx(np.sqrt(np.mean((y[:, 0] - 15) ** 2)))
    np.testing.assert_array_equal(loss.predict(scores)[:, 0], [5, 15, 25, 25])
    assert loss.loss(scores, y) == pytest.approx(SoftmaxCrossEntropy().loss(scores, np.array([0, 1, 1, 2])))
