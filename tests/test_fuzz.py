"""Fuzzing the input surface with hypothesis: configs, `--set`, `--grid`, `--space`, and every data reader.

Any exception other than `UserInputError` (exit 2), a traceback in CLI output, an exit code other
than 0/1/2, or an example slower than its deadline fails. `make test` runs a few hundred examples
(profile `suite`); `make fuzz` runs thousands with a fixed seed (profile `fuzz`).
"""

import io
import json
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
FUZZ = os.environ.get("NNRUN_FUZZ_PROFILE") == "fuzz"
FUZZ_RUN_DIRS = 400 if FUZZ else 0
"""Examples of the slow generators under `make fuzz` (four commands each): tampered run directories; PNG files
and study plans get 1,000 each. With the 2,500 of each fast generator, `make fuzz` runs about 18,650."""

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


# ---- run directories: every file of a completed run tampered with ------------------------------------------

def _completed_run() -> tuple[Path, Path]:
    """A completed one-epoch digits run (quickstart, one hidden layer of 8) and an .npz of three rows to predict
    on, in a folder that lives as long as the session."""
    from tests.helpers import train_run

    base = Path(tempfile.mkdtemp(prefix="nnrun-fuzz-"))
    np.savez(base / "rows.npz", X=np.zeros((3, 64), np.float32))
    run = train_run(base / "run", "train.epochs=1", "model.hidden=[8]", config="configs/quickstart.yaml")
    return run, base / "rows.npz"


_COMPLETED: list = []


def completed_run() -> tuple[Path, Path]:
    if not _COMPLETED:
        _COMPLETED.extend(_completed_run())
    return _COMPLETED[0], _COMPLETED[1]


RUN_FILES = ("config.yaml", "summary.json", "metrics.jsonl", "model.npz", "split.npz", "preprocess.npz",
             "targets.npz", "provenance.json", ".lock", "checkpoint.npz")
TAMPERINGS = ("truncate", "bits", "remove", "value", "field", "deep", "huge", "arrays", "empty", "folder")
"""What a tampering does to one file: cut it, flip/delete/insert bytes, remove it, replace it by a random
JSON/YAML value, set one of its fields (or one dotted config key, or one metrics row's key) to a random value,
nest it thousands deep, give a field a number of thousands of digits (or 1e999), restructure an .npz's arrays
(dropped, renamed, other dtypes, shapes, NaN), empty it, or make a folder of that name."""
huge_numbers = st.sampled_from(["9" * 5000, "-" + "9" * 400, "1e999", "-1e999", "NaN", "Infinity", "0x" + "f" * 5000,
                                "1" * 4300, "1e-400", str(2**64), str(-2**63 - 1), "0.0"])
tamperings = st.lists(st.tuples(st.sampled_from(RUN_FILES), st.sampled_from(TAMPERINGS), st.integers(0, 10**9),
                                values, huge_numbers, cuts), min_size=1, max_size=3)


def _set_field(text: str, name: str, where: int, value, literal: str | None) -> str:
    """`text` (the file `name`) with one field set to `value` (or the raw `literal`), or the text itself when it
    has no field to set."""
    marker = "@@LITERAL@@"
    new = marker if literal is not None else value
    if name == "config.yaml":
        data = yaml.safe_load(text) or {}
        flat = flatten(data) if isinstance(data, dict) else {}
        key = sorted(flat)[where % len(flat)] if flat else "seed"
        out = yaml.safe_dump(nested({**flat, key: new}), sort_keys=False)
        return out.replace(repr(marker), literal).replace(marker, literal) if literal is not None else out
    if name == "metrics.jsonl":
        lines = text.splitlines() or ["{}"]
        i = where % len(lines)
        lines[i] = _set_field(lines[i], "row.json", where // 7, value, literal)
        return "\n".join(lines) + "\n"
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if not isinstance(data, dict) or not data:
        return text
    key = sorted(data)[where % len(data)]
    data[key] = new
    out = json.dumps(data, allow_nan=True, default=str)
    return out.replace(json.dumps(marker), literal) if literal is not None else out


def tamper(run: Path, changes) -> None:
    """Apply `changes` (from `tamperings`) to the files of the run directory `run`."""
    import shutil

    for name, how, where, value, literal, byte_cuts in changes:
        path = run / name
        if how == "remove" or how == "folder":
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            if how == "folder":
                (path / "inside").mkdir(parents=True)
            continue
        if path.is_dir():
            continue
        data = path.read_bytes() if path.exists() else b""
        if how == "truncate":
            data = data[: where % (len(data) + 1)]
        elif how == "bits":
            data = mutate(data, byte_cuts)
        elif how == "empty":
            data = b""
        elif how == "deep":
            n = 1000 + where % 100_000
            data = (("[" * n + "]" * n) if name.endswith(("json", "jsonl")) else ("a: " + "[" * n + "]" * n)).encode()
        elif how == "arrays" and name.endswith(".npz"):
            try:
                arrays = restructure(_entries(data), [(where, ["drop", "float64", "int", "reshape", "nan", "text",
                                                                "scalar", "rename"][where % 8])])
            except Exception:  # already corrupted by an earlier change: leave it as it is
                arrays = None
            if arrays is not None:
                buf = io.BytesIO()
                np.savez(buf, **arrays)
                data = buf.getvalue()
        elif name.endswith(".npz"):
            data = mutate(data, byte_cuts)
        elif how == "value":
            data = (yaml.safe_dump(value) if name.endswith(".yaml") else json.dumps(value, allow_nan=True)).encode()
        else:  # field, huge: one field set to a random value or a number of thousands of digits
            text = data.decode("utf-8", "replace")
            data = _set_field(text, name, where, value, literal if how == "huge" else None).encode()
        path.write_bytes(data)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def harmless(args: list[str], codes=(0, 1, 2), seconds: float = 5.0):
    """Run `nnrun ARGS` in-process: an exit code among `codes`, no traceback, an exception only SystemExit, done
    within `seconds`."""
    import time

    started = time.perf_counter()
    result = runner.invoke(app, [str(a) for a in args])
    elapsed = time.perf_counter() - started
    assert result.exit_code in codes, (args, result.exit_code, result.output[-3000:])
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
    assert "Traceback" not in result.output, (args, result.output[-3000:])
    assert elapsed < seconds, (args, elapsed)
    return result


@settings(max_examples=max(settings().max_examples // 6, 10) if not FUZZ_RUN_DIRS else FUZZ_RUN_DIRS)
@given(tamperings, st.sampled_from([[], ["--json"]]), st.booleans())
def test_tampered_run_directories(changes, json_flag, first):
    import shutil

    original, rows = completed_run()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "runs" / "run"
        shutil.copytree(original, run)
        tamper(run, changes)
        before = snapshot(run.parent)
        pair = [run, original] if first else [original, run]
        for args in (["runs", run.parent, *json_flag], ["evaluate", run, *json_flag], ["diff", *pair],
                     ["predict", run, rows, *json_flag]):
            harmless(args)
            assert snapshot(run.parent) == before, args


# ---- PNG images to predict on -----------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int, depth: int, color: int, idat: bytes) -> bytes:
    """A PNG whose header claims `width` x `height` (any size) of bit `depth` and `color` type, followed by the
    few bytes of `idat` (compressed or not): nothing may allocate what the header claims."""
    import struct
    import zlib

    return (PNG_SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(idat) if len(idat) % 2 else idat) + png_chunk(b"IEND", b""))


def valid_png(mode: str, width: int, height: int, seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    bands = {"1": 1, "L": 1, "P": 1, "LA": 2, "RGB": 3, "RGBA": 4, "I;16": 1}[mode]
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 2**16, (height, width)).astype(np.uint16))
    else:
        pixels = rng.integers(0, 256, (height, width, bands), dtype=np.uint8)
        image = Image.fromarray(pixels[..., 0] if bands == 1 else pixels, "L" if bands == 1 else mode)
        if mode in ("1", "P"):
            image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


DIMENSIONS = st.one_of(st.integers(0, 64), st.sampled_from([2**16, 2**24, 2**31 - 1, 2**31, 2**32 - 1, 80_000_000,
                                                            6325, 12_000]))
png_files = st.one_of(
    st.builds(valid_png, st.sampled_from(["1", "L", "P", "LA", "RGB", "RGBA", "I;16"]), st.integers(1, 96),
              st.integers(1, 96), st.integers(0, 2**32 - 1)),
    st.builds(lambda data: PNG_SIGNATURE + data, st.binary(max_size=300)),
    st.builds(png_header_only, DIMENSIONS, DIMENSIONS, st.sampled_from([1, 2, 4, 8, 16, 3, 0, 255]),
              st.sampled_from([0, 2, 3, 4, 6, 1, 7]), st.binary(max_size=64)),
    st.builds(lambda w, h: ("zeros", w, h), st.integers(1, 3000), st.integers(1, 300)),
)
"""Valid small images of every PNG mode and random size; random bytes after a PNG signature; headers claiming
sizes up to 2**32 - 1 with a few bytes of data; black images up to 900,000 pixels (`png_of_zeros`)."""


@settings(max_examples=1000 if FUZZ else max(settings().max_examples // 3, 10))
@given(png_files, st.one_of(st.just([]), st.lists(cuts, max_size=1)))
def test_png_files_to_predict_on(png, damage):
    from tests.hostile_cases import png_of_zeros

    original, _ = completed_run()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "img.png"
        if isinstance(png, tuple):
            png_of_zeros(path, png[1], png[2])
        else:
            path.write_bytes(png)
        for changes in damage:
            path.write_bytes(mutate(path.read_bytes(), changes))
        harmless(["predict", original, path], codes=(0, 2))


# ---- study plans ------------------------------------------------------------------------------------------

names = st.one_of(st.sampled_from(["a", "b", "relu", "adam", "quick", "full", "x.y", "-bad", ""]),
                  st.text(string.ascii_letters + string.digits + "_.+-", min_size=1, max_size=12))
study_keys = st.one_of(st.sampled_from(["optim.lr", "seed", "model.hidden", "train.epochs", "optim.name",
                                        "model.activation", "regularization.l2", "data.train_size", "select",
                                        "model.dropout", "preprocess.whiten", "loss.name", "no.such.key"]),
                       keys)
override_values = st.one_of(st.sampled_from([0.01, 1e-3, 1, 2, [8], [4, 4], "adam", "momentum", "leaky_relu", True,
                                             100, 0.5, "softmax", "svm"]), scalars)
grids = st.builds(lambda n, values: [values[i % len(values)] for i in range(n)],
                  st.sampled_from([0, 1, 2, 3, 10, 1000, 1001]),
                  st.lists(override_values, min_size=1, max_size=4))
"""Selection lists of up to 1,001 values (a claim whose keys multiply them plans billions of runs). Not longer:
the YAML reader stops at 50,000 values (nnrun.safeyaml.MAX_NODES, counted while parsing), but reaching that
takes about 2 s of parsing, and several such lists in one file would make this generator's time bound flaky."""
selects = st.dictionaries(study_keys, grids, max_size=4)
overrides = st.dictionaries(study_keys, override_values, max_size=3)
arms = st.dictionaries(names, st.builds(lambda o, s: {**o, "select": s} if s is not None else o, overrides,
                                        st.one_of(st.none(), selects)), min_size=0, max_size=4)
metrics_names = st.one_of(st.sampled_from(["test_accuracy", "val_loss", "last.val_accuracy", "max.train_loss",
                                           "diverged", "near_zero_weights", "distinct_units@1", "distinct_units@9",
                                           "init_activation_std@1", "init_preactivation_std", "test_rmse", "epochs",
                                           "min.nothing", "seconds"]), st.text(max_size=20))
seeds = st.one_of(st.integers(-3, 12), st.sampled_from([1000, 1001, 10**6, 10**40]), scalars)
expectations = st.fixed_dictionaries(
    {"a": names, "relation": st.sampled_from(["greater", "less", "about_equal", "at_least", "at_most", "diverges",
                                              "equal"])},
    optional={"b": names, "value": st.one_of(st.floats(), scalars), "margin": st.one_of(st.floats(), scalars),
              "metric": metrics_names})
claims = st.fixed_dictionaries(
    {"id": names, "statement": st.sampled_from(["It holds.", "", "x" * 3000]), "metric": metrics_names,
     "arms": arms, "expect": st.lists(expectations, max_size=3)},
    optional={"set": overrides, "select": selects, "select_by": metrics_names, "seeds": seeds,
              "budgets": st.dictionaries(names, st.fixed_dictionaries({}, optional={"seeds": seeds,
                                                                                    "set": overrides}), max_size=2),
              "diverged_value": st.one_of(st.floats(), scalars), "note": st.text(max_size=20)})
budgets = st.dictionaries(names, st.fixed_dictionaries({"seeds": seeds}, optional={
    "set": overrides, "max_minutes": st.one_of(st.floats(), st.integers(-1, 10**9), scalars),
    "description": st.text(max_size=20)}), max_size=3)
BASE = {"data": {"dataset": "digits"}, "model": {"hidden": [8]}, "train": {"epochs": 1}}
studies = st.fixed_dictionaries(
    {"name": names, "budgets": budgets, "claims": st.lists(claims, max_size=3)},
    optional={"base": st.one_of(st.just(BASE), st.dictionaries(keys, values, max_size=3).map(nested)),
              "config": st.sampled_from([str(Path("configs/quickstart.yaml").resolve()), "../no.yaml", "", "/",
                                         "/dev/zero", "/proc/self/mem"]),
              "default_budget": names, "title": st.text(max_size=20), "description": st.text(max_size=20)})
"""Study files in the schema's shape, each part mostly plausible and sometimes wrong in kind, names or size."""


def study_noise(study: dict, where: int, value) -> dict:
    """`study` with the value at one random path replaced by a random value."""
    import copy

    out = copy.deepcopy(study)
    node, path = out, []
    for depth in range(where % 5):
        if isinstance(node, dict) and node:
            key = sorted(node, key=str)[(where >> depth) % len(node)]
        elif isinstance(node, list) and node:
            key = (where >> depth) % len(node)
        else:
            break
        path.append((node, key))
        node = node[key]
    if path:
        parent, key = path[-1]
        parent[key] = value
    return out


_CALIBRATION: dict = {}


def calibrated_once(threads: int, with_eigh: bool) -> dict[str, float]:
    """The study planner's machine calibration, measured once per session (a plan's estimate stays the same)."""

    key = (threads, with_eigh)
    if key not in _CALIBRATION:
        _CALIBRATION[key] = _REAL_CALIBRATE(threads, with_eigh)
    return dict(_CALIBRATION[key])


from nnrun.study import plan as _study_plan  # noqa: E402

_REAL_CALIBRATE = _study_plan.calibrate


@settings(max_examples=1000 if FUZZ else max(settings().max_examples // 4, 10))
@given(studies, st.one_of(st.none(), st.tuples(st.integers(0, 10**6), values)),
       st.one_of(st.none(), names, st.just("quick")), st.sampled_from([[], ["--json"]]),
       st.sampled_from(["dump", "anchors"]))
def test_study_plans_dry_run(study, noise, budget, json_flag, how):
    import resource
    from unittest import mock

    if noise is not None:
        study = study_noise(study, *noise)
    text = yaml.safe_dump(study, sort_keys=False, allow_unicode=True)
    if how == "anchors":  # one select list shared by every key: a few lines that plan a product of thousands
        text = yaml.dump(study, sort_keys=False, allow_unicode=True,
                         Dumper=type("Anchoring", (yaml.SafeDumper,), {"ignore_aliases": lambda *_: False}))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(_study_plan, "calibrate", calibrated_once):
        path = Path(tmp) / "study.yaml"
        path.write_text(text)
        args = ["study", path, "--dry-run", "--out", Path(tmp) / "out", *json_flag]
        harmless(args + (["--budget", budget] if budget is not None else []), codes=(0, 2))
        assert not (Path(tmp) / "out").exists() or not any((Path(tmp) / "out").rglob("*.npz"))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 300 * 1024, "a plan took over 300 MiB"
