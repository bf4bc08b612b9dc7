"""Every registry entry has the properties its kind promises, and a new entry needs no change elsewhere.

The registries (init schemes, activations, losses, optimizers, schedules, penalties, datasets)
are the one source of names: these tests iterate over whatever is registered instead of pinning
the names, and register a new init scheme the way a plugin would.
"""

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nnrun.cli import app
from nnrun.config import ExperimentConfig, OptimConfig, load_config, registry_aliases
from nnrun.datasets import DATASETS, TARGET_KINDS, DataOptions
from nnrun.errors import UserInputError
from nnrun.experiment import build_optimizer, build_schedule
from nnrun.nn.init import INIT_SCHEMES, InitScheme, init_weights
from nnrun.nn.layers import ACTIVATIONS, Parameter
from nnrun.nn.losses import LOSSES, Targets
from nnrun.nn.numeric import numeric_gradient, relative_error
from nnrun.nn.regularizers import PENALTIES
from nnrun.optim import OPTIMIZERS, SCHEDULES

ROOT = Path(__file__).resolve().parents[1]
FAN_IN, FAN_OUT, SCALE, K = 400, 300, 0.05, 10


# ---- init schemes ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(INIT_SCHEMES))
def test_every_init_scheme_draws_the_variance_it_states(name):
    W = init_weights(name, FAN_IN, FAN_OUT, np.random.default_rng(0), scale=SCALE, k=K)
    assert W.shape == (FAN_IN, FAN_OUT) and W.dtype == np.float32
    stated = INIT_SCHEMES[name].variance(FAN_IN, FAN_OUT, scale=SCALE, k=K)
    squares = W.astype(np.float64) ** 2
    if stated == 0:
        assert not W.any()
        return
    # the mean of W**2 estimates the variance (the mean is 0); 5 standard errors of that estimate
    assert abs(squares.mean() - stated) < 5 * squares.std() / np.sqrt(W.size), (squares.mean(), stated)


@pytest.mark.parametrize("name", list(INIT_SCHEMES))
def test_every_init_scheme_is_seeded(name):
    a = init_weights(name, 20, 10, np.random.default_rng(4), scale=SCALE, k=3)
    b = init_weights(name, 20, 10, np.random.default_rng(4), scale=SCALE, k=3)
    assert np.array_equal(a, b)


def uniform_draw(fan_in, fan_out, rng, *, scale, **_):
    """A plugin's scheme: uniform on [-scale, scale]."""
    return rng.uniform(-scale, scale, (fan_in, fan_out)).astype(np.float32)


@pytest.fixture
def plugin_scheme(monkeypatch):
    """A scheme registered at run time, the way a plugin would, without touching config.py or cli.py."""
    monkeypatch.setitem(INIT_SCHEMES, "plugin_uniform",
                        InitScheme(uniform_draw, lambda fan_in, fan_out, *, scale, **_: scale ** 2 / 3))
    return "plugin_uniform"


def test_a_registered_scheme_validates_appears_in_the_schema_and_trains(plugin_scheme, tmp_path):
    cfg = load_config("configs/quickstart.yaml", [f"model.init={plugin_scheme}", "model.init_scale=0.2"])
    assert cfg.model.init == plugin_scheme
    schema = ExperimentConfig.model_json_schema()
    assert plugin_scheme in schema["$defs"]["ModelConfig"]["properties"]["init"]["enum"]
    result = CliRunner().invoke(app, ["train", "configs/quickstart.yaml", "--set", f"model.init={plugin_scheme}",
                                      "--set", "model.init_scale=0.2", "--set", "train.epochs=3",
                                      "--out", str(tmp_path / "run"), "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed" and summary["test_accuracy"] > 0.5
    result = CliRunner().invoke(app, ["compare-inits", "--schemes", f"he,{plugin_scheme}", "--no-train",
                                      "--depth", "2", "--width", "16", "--examples", "50",
                                      "--out", str(tmp_path / "ci"), "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["forward"]["schemes"]) == {"he", plugin_scheme}


def test_an_unregistered_scheme_is_refused_with_the_registered_ones(plugin_scheme):
    result = CliRunner().invoke(app, ["validate", "configs/quickstart.yaml", "--set", "model.init=nope"])
    assert result.exit_code == 2
    for name in INIT_SCHEMES:
        assert repr(name) in result.output


# ---- activations -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_every_activation_stays_in_its_range_and_its_dead_test_matches_a_zero_gradient(name):
    x = np.random.default_rng(1).normal(scale=4.0, size=(50, 30))
    layer = ACTIVATIONS[name]()
    a = layer.forward(x.copy(), True)
    low, high = layer.output_range
    assert low is None or a.min() >= low
    assert high is None or a.max() <= high
    dx = layer.backward(np.ones_like(a))
    dead = layer.dead_mask(a)
    assert (dead is None) == (layer.dead_criterion is None)
    if dead is not None:
        # dead or saturated entries pass a gradient under 0.02; the others at least that much
        assert np.all(np.abs(dx[dead]) < 0.02) and np.all(np.abs(dx[~dead]) >= 0.0099)


# ---- losses ------------------------------------------------------------------------------------

def targets_of(kind: str, rng: np.random.Generator, n: int = 12) -> tuple[Targets, np.ndarray, int]:
    """Targets of `kind`, a batch of them and the number of targets (classes, attributes or outputs)."""
    if kind == "classes":
        y = np.arange(n) % 4
        return Targets(["a", "b", "c", "d"], y, "test"), y, 4
    if kind == "attributes":
        y = rng.integers(0, 2, (n, 3)).astype(np.float32)
        return Targets(["x", "y", "z"], y, "test"), y, 3
    y = rng.normal(5, 2, (n, 2)).astype(np.float32)
    return Targets(["t0", "t1"], y, "test"), y, 2


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_builds_from_targets_and_its_gradient_matches_centered_differences(name):
    rng = np.random.default_rng(7)
    targets, y, n_targets = targets_of(LOSSES[name].target_kind, rng)
    loss = LOSSES[name].create(targets)
    scores = rng.normal(size=(len(y), loss.output_dim(n_targets))) * 2
    value, grad = loss.loss_and_grad(scores.copy(), y)
    assert np.isfinite(value) and grad.shape == scores.shape
    numeric = numeric_gradient(lambda: loss.loss(scores.copy(), y), scores, h=1e-6)
    kinks = loss.kinks(scores, y)
    assert kinks is None or kinks.shape == scores.shape
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)
    assert loss.primary_metric in loss.metrics(scores, y)


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_restores_from_its_saved_state_and_its_probabilities_are_probabilities(name):
    rng = np.random.default_rng(8)
    targets, y, n_targets = targets_of(LOSSES[name].target_kind, rng)
    loss = LOSSES[name].create(targets)
    scores = rng.normal(size=(len(y), loss.output_dim(n_targets))).astype(np.float32) * 2
    empty = Targets(targets.names, np.zeros(0), "test")  # a run read back has no training targets
    restored = LOSSES[name].restore(empty, {k: np.asarray(v) for k, v in loss.state().items()})
    assert restored.loss(scores, y) == loss.loss(scores, y)
    assert restored.metrics(scores, y, detail=True) == loss.metrics(scores, y, detail=True)
    np.testing.assert_array_equal(restored.predict(scores), loss.predict(scores))
    if loss.has_decision_function:
        confidence = loss.decision_function(scores)
        assert confidence.shape == (len(y), n_targets)
        if loss.target_kind == "classes":
            np.testing.assert_array_equal(confidence.argmax(axis=1), loss.predict(scores))
    if loss.has_proba:
        proba = loss.predict_proba(scores)
        assert proba.shape == (len(y), n_targets) and np.all((proba >= 0) & (proba <= 1))
        if loss.target_kind == "classes":
            np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    else:
        with pytest.raises(NotImplementedError):
            loss.predict_proba(scores)


# ---- optimizers, schedules, penalties ----------------------------------------------------------

@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_built_from_the_config_descends_a_quadratic(name):
    optimizer = build_optimizer(OptimConfig(name=name))
    p = Parameter("w", np.full(5, 3.0, dtype=np.float32), "weight", 0)
    start = float(np.sum(p.value ** 2))
    for _ in range(50):
        p.grad[...] = 2 * p.value
        optimizer.step([p], 0.01)
    assert float(np.sum(p.value ** 2)) < start and p.value.dtype == np.float32


@pytest.mark.parametrize("warmup", [0, 2])
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_every_schedule_peaks_near_lr_early_then_never_increases_and_stays_positive(name, warmup):
    schedule = build_schedule(OptimConfig(lr=0.3, schedule=name, min_lr=0.001, warmup_epochs=warmup))
    rates = [schedule(epoch, 10) for epoch in range(10)]
    peak = int(np.argmax(rates))
    # a rise over whole epochs may step past lr without landing on it (one_cycle peaks between two epochs)
    assert 0.9 * 0.3 <= rates[peak] <= 0.3 * (1 + 1e-12) and peak < 5 and all(r > 0 for r in rates)
    assert all(b <= a + 1e-12 for a, b in zip(rates[peak:], rates[peak + 1:], strict=False))  # never increase
    assert all(b >= a - 1e-12 for a, b in zip(rates[:peak], rates[1:peak + 1], strict=False))  # rise to it


@pytest.mark.parametrize("name", list(PENALTIES))
def test_every_penalty_gradient_matches_centered_differences_and_is_a_config_key(name):
    w = np.random.default_rng(3).normal(size=(6, 4))
    w[np.abs(w) < 1e-3] = 0.1  # away from kinks at 0
    value, grad = PENALTIES[name](w, 0.3)
    numeric = numeric_gradient(lambda: PENALTIES[name](w, 0.3)[0], w)
    assert value > 0 and relative_error(grad, numeric).max() < 1e-7
    assert getattr(load_config(None, [f"regularization.{name}=0.25"]).regularization, name) == 0.25
    assert getattr(load_config(None, [f"model.layers.0.{name}=0.5"]).model.layers[0], name) == 0.5


# ---- datasets ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(DATASETS))
def test_every_dataset_states_its_targets_and_a_summary(name):
    entry = DATASETS[name]
    assert entry.summary and callable(entry.load)
    assert entry.target_kinds is None or set(entry.target_kinds) <= set(TARGET_KINDS)
    assert entry.options and set(entry.options) <= set(DataOptions.__dataclass_fields__)


REGISTRIES = {"model.init": INIT_SCHEMES, "model.activation": ACTIVATIONS, "optim.name": OPTIMIZERS,
              "optim.schedule": SCHEDULES, "loss.name": LOSSES, "data.dataset": DATASETS}


@pytest.mark.parametrize("key", list(REGISTRIES))
def test_aliases_name_no_other_entry_and_are_suggested(key):
    registry = REGISTRIES[key]
    aliases = registry_aliases(registry)
    assert not set(aliases) & set(registry)
    for alias, name in aliases.items():
        with pytest.raises(UserInputError, match=f"did you mean '{name}'"):
            load_config(None, [f"{key}={alias}"])


# ---- docs and modules --------------------------------------------------------------------------

DOCUMENTED = [
    ("docs/model.md", "`{}`", INIT_SCHEMES),
    ("docs/model.md", "`{}`", ACTIVATIONS),
    ("docs/model.md", "`{}`", OPTIMIZERS),
    ("docs/model.md", "`{}`", SCHEDULES),
    ("docs/model.md", "`regularization.{}`", PENALTIES),
    ("docs/losses.md", "`{}`", LOSSES),
    ("README.md", "`{}`", DATASETS),
]


@pytest.mark.parametrize("doc, pattern, registry", DOCUMENTED, ids=[f"{d}:{p}" for d, p, _ in DOCUMENTED])
def test_docs_describe_every_registered_name(doc, pattern, registry):
    text = (ROOT / doc).read_text()
    missing = [name for name in registry if pattern.format(name) not in text]
    assert not missing, f"{doc} does not describe {missing}"


def test_every_module_opens_with_a_docstring_naming_its_job():
    for path in sorted((ROOT / "nnrun").rglob("*.py")):
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        assert docstring and len(docstring.split()) >= 4, path
