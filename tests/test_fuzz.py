"""Fuzzing the input surface with hypothesis: configs, `--set`, `--grid`, `--space`, and every data reader.

Any exception other than `UserInputError` (exit 2), a traceback in CLI output, an exit code other
than 0/1/2, or an example slower than its deadline fails. `make test` runs a few hundred examples
(profile `suite`); `make fuzz` runs thousands with a fixed seed (profile `fuzz`).
"""

import io
import os
import pickle
import string
import tempfile
from pathlib import Path

import numpy as np
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from nnrun.cli import app
from nnrun.config import ExperimentConfig, flatten, load_config
from nnrun.datasets.cifar10 import read_cifar10_batch
from nnrun.datasets.npz import read_npz
from nnrun.errors import UserInputError
from nnrun.sweep.space import expand_points, parse_grid, parse_space
from tests.cifar_fixtures import batch_dict

settings.register_profile("suite", max_examples=60, deadline=10_000, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("fuzz", max_examples=2500, deadline=10_000, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("NNRUN_FUZZ_PROFILE", "suite"))
FUZZ_CORRUPTIONS = int(os.environ.get("NNRUN_FUZZ_CORRUPTIONS", "0") or 0)

KEYS = sorted(flatten(ExperimentConfig().model_dump(mode="json")))
"""Every dotted key of the config, so generated configs hit real keys as well as wrong ones."""
runner = CliRunner()

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True),
    st.text(string.printable, max_size=20), st.sampled_from(["he", "relu", "softmax", "adam", "cifar10", "npz",
                                                             "per_feature", "std", "-1", "1e400", ".nan"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=25)
keys = st.one_of(st.sampled_from(KEYS), st.text(string.ascii_letters + "._-0123456789", min_size=1, max_size=30))


def nested(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[parts[-1]] = value
    return out


def only_user_errors(fn, *args, **kw) -> None:
    try:
        fn(*args, **kw)
    except UserInputError:
        pass


@given(st.dictionaries(keys, values, max_size=8), st.sampled_from(["dump", "mangle"]), st.integers(0, 10**6))
def test_config_files(flat, how, where):
    text = yaml.safe_dump(nested(flat), sort_keys=False)
    if how == "mangle" and text:
        i = where % len(text)
        text = text[:i] + "\n  - &x [*x, {: ]\n"[where % 7:] + text[i:]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(text)
        only_user_errors(load_config, path)


@given(st.lists(st.tuples(keys, st.text(max_size=40)), max_size=4))
def test_set_overrides_through_the_cli(items):
    args = [a for key, text in items for a in ("--set", f"{key}={text}")]
    result = runner.invoke(app, ["validate", "configs/quickstart.yaml", *args])
    assert result.exit_code in (0, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


@given(st.lists(st.text(max_size=40), max_size=3), st.lists(st.text(max_size=40), max_size=3),
       st.one_of(st.none(), st.integers(-3, 50)))
def test_grid_and_space(grid, space, n_random):
    try:
        expand_points(parse_grid(grid), parse_space(space), n_random, seed=0)
    except UserInputError:
        pass


def mutate(data: bytes, cuts: list[tuple[int, int, int]]) -> bytes:
    """Flip, delete or insert bytes of `data` at positions drawn by hypothesis."""
    out = bytearray(data)
    for where, what, value in cuts:
        if not out:
            break
        i = where % len(out)
        if what == 0:
            out[i] ^= value or 1
        elif what == 1:
            del out[i:i + 1 + value % 64]
        else:
            out[i:i] = bytes([value]) * (1 + value % 8)
    return bytes(out)


def valid_npz() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buf, X=rng.standard_normal((20, 6)).astype(np.float32), y=np.arange(20) % 3,
             attributes=rng.integers(0, 2, (20, 2)), class_names=np.array(["a", "b", "c"]))
    return buf.getvalue()


NPZ = valid_npz()
BATCH = pickle.dumps(batch_dict(6, 0), protocol=2)
cuts = st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 2), st.integers(0, 255)), min_size=1, max_size=6)


@settings(max_examples=FUZZ_CORRUPTIONS or settings().max_examples)
@given(cuts)
def test_corrupted_npz_files(changes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.npz"
        path.write_bytes(mutate(NPZ, changes))
        only_user_errors(read_npz, path)


@settings(max_examples=FUZZ_CORRUPTIONS or settings().max_examples)
@given(cuts)
def test_corrupted_cifar_batches(changes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data_batch_1"
        path.write_bytes(mutate(BATCH, changes))
        only_user_errors(read_cifar10_batch, path)


NOTATIONS = {"0x": "0123456789abcdefABCDEF", "0X": "0123456789ABCDEF", "0b": "01", "0o": "01234567",
             "0": "01234567", "": "0123456789"}
"""YAML 1.1's integer prefixes and their digits (`0o` is text to YAML 1.1: it must stay harmless too)."""
hex_integers = st.sampled_from(sorted(NOTATIONS)).flatmap(lambda prefix: st.builds(
    lambda sign, digits, sep, n: sign + prefix + sep.join([digits] * n) if sep else sign + prefix + digits * n,
    st.sampled_from(["", "-", "+"]), st.text(NOTATIONS[prefix], min_size=1, max_size=40),
    st.sampled_from(["", "", "_", ":"]), st.sampled_from([1, 2, 10, 200, 2000]))).filter(lambda t: len(t) < 100_000)
"""Integer literals in YAML 1.1's notations (hex, binary, octal, sexagesimal), up to thousands of digits."""


@given(hex_integers, st.sampled_from(["seed", "model.hidden", "train.epochs", "optim.lr"]))
def test_integer_literals_in_every_notation(literal, key):
    text = yaml.safe_dump(nested({key: 0})).replace("0", literal, 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(text)
        only_user_errors(load_config, path)
    only_user_errors(load_config, None, [f"{key}={literal}"])
    only_user_errors(parse_grid, [f"{key}=1,{literal}"])
    only_user_errors(parse_space, [f"{key}=randint(0,{literal})"])
    only_user_errors(lambda: expand_points({}, parse_space([f"{key}=uniform(-{literal},{literal})"]), 2))


def _stopped_run() -> tuple[Path, bytes]:
    """A digits run (Adam, BatchNorm) stopped after epoch 1 of 2, in a folder that lives as long as the session,
    and its checkpoint.npz bytes."""
    from nnrun.errors import RunFailed
    from nnrun.rundir import RunDir
    from nnrun.signals import Interrupted
    from nnrun.train import run_experiment
    from nnrun.trainer import SilentReporter

    class StopAfterOne(SilentReporter):
        def epoch_end(self, row):
            raise Interrupted("SIGTERM")

    folder = Path(tempfile.mkdtemp(prefix="nnrun-fuzz-")) / "run"
    cfg = load_config(None, ["model.hidden=[8]", "model.batchnorm=true", "optim.name=adam", "train.epochs=2",
                             "train.batch_size=256", "train.eval_train_size=100"])
    with RunDir.create(folder) as run:
        try:
            run_experiment(cfg, run, StopAfterOne())
        except RunFailed:
            pass
    return folder, (folder / "checkpoint.npz").read_bytes()


_RUN: list = []


def stopped_run() -> tuple[Path, bytes]:
    if not _RUN:
        _RUN.extend(_stopped_run())
    return _RUN[0], _RUN[1]


def _entries(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data)) as z:
        return dict(z)


ARRAY_CHANGES = st.sampled_from(["drop", "float64", "int", "reshape", "nan", "text", "scalar", "rename"])
"""What a structured corruption does to one entry of the checkpoint."""


def restructure(arrays: dict[str, np.ndarray], picks: list[tuple[int, str]]) -> dict[str, np.ndarray]:
    """`arrays` with entries dropped, renamed, or given other dtypes, shapes or values (the JSON state included)."""
    out = dict(arrays)
    for where, how in picks:
        key = sorted(out)[where % len(out)] if out else None
        if key is None:
            break
        value = out[key]
        if how == "drop":
            del out[key]
        elif how == "rename":
            out[key.replace("fc", "fc9", 1) if "fc" in key else "#" + key] = out.pop(key)
        elif how == "float64":
            out[key] = value.astype(np.float64) if value.dtype.kind != "U" else np.array(0.5)
        elif how == "int":
            out[key] = np.ones(value.shape, np.int64)
        elif how == "reshape":
            out[key] = value.reshape(-1)[: max(value.size - 1, 0)]
        elif how == "nan":
            out[key] = np.full(value.shape, np.nan, np.float32)
        elif how == "text":
            out[key] = np.array(str(value)[: where % 50])
        else:
            out[key] = np.array(where % 7 - 3)
    return out


def resume_refuses_or_completes(data: bytes) -> None:
    """Resume the stopped run from checkpoint bytes `data`: a refusal (exit 2) with one message and no file
    changed, or a completed run (exit 0); never a traceback or another exit code."""
    import shutil

    folder, _ = stopped_run()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(folder, run, ignore=shutil.ignore_patterns(".lock"))
        (run / "checkpoint.npz").write_bytes(data)
        before = {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"}
        result = runner.invoke(app, ["train", "--resume", str(run), "--quiet"])
        assert result.exit_code in (0, 2), result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert "Traceback" not in result.output and len(result.output) < 3000
        if result.exit_code == 2:
            assert "checkpoint.npz" in result.output
            assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"} == before


@settings(max_examples=FUZZ_CORRUPTIONS or max(settings().max_examples // 4, 10))
@given(cuts)
def test_corrupted_checkpoint_bytes(changes):
    resume_refuses_or_completes(mutate(stopped_run()[1], changes))


@settings(max_examples=FUZZ_CORRUPTIONS or max(settings().max_examples // 4, 10))
@given(st.lists(st.tuples(st.integers(0, 10**6), ARRAY_CHANGES), min_size=1, max_size=3))
def test_checkpoints_with_wrong_keys_shapes_and_dtypes(picks):
    arrays = restructure(_entries(stopped_run()[1]), picks)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    resume_refuses_or_completes(buf.getvalue())
