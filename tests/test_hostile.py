"""Hostile and broken input: every case is one message and exit 2 (1 for faults during a run), never a
traceback, never a resource bomb, and nothing left behind.

`hostile_cases.py` builds the files; the acceptance script `tests/hostile_cases.py --measure` runs the
same cases as subprocesses and reports time, peak memory and leftovers.
"""

import errno
import io
import json
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from nnrun.cli import app
from nnrun.config import load_config
from nnrun.datasets import safe
from nnrun.datasets.cifar10 import read_cifar10_batch
from nnrun.datasets.npz import read_npz
from nnrun.errors import UserInputError
from tests import hostile_cases
from tests.cifar_fixtures import batch_dict, write_cifar_folder

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize("name", list(hostile_cases.CONFIG_CASES))
def test_hostile_config_files_exit_2_with_one_message(name, tmp_path):
    path, expected = hostile_cases.CONFIG_CASES[name](tmp_path)
    result = invoke("validate", str(path))
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert len(result.output) < 2000  # the message never echoes an expanded input


@pytest.mark.parametrize("name", list(hostile_cases.OVERRIDE_CASES))
def test_hostile_overrides_exit_2_with_one_message(name):
    items, expected = hostile_cases.OVERRIDE_CASES[name]
    args = [arg for item in items for arg in ("--set", item)]
    result = invoke("validate", "configs/quickstart.yaml", *args)
    assert result.exit_code == 2, result.output
    assert expected in result.output and len(result.output) < 2000


@pytest.mark.parametrize("name", list(hostile_cases.NPZ_CASES))
def test_hostile_npz_files_are_refused_before_allocation(name, tmp_path, monkeypatch):
    monkeypatch.setattr(safe, "MAX_BOMB_FREE_BYTES", 1 << 20)  # a 2 MiB bomb stands for a 6 GB one
    path, expected = hostile_cases.NPZ_CASES[name](tmp_path)
    with pytest.raises(UserInputError, match=expected):
        read_npz(path)


@pytest.mark.parametrize("name", list(hostile_cases.BATCH_CASES))
def test_hostile_cifar_batches_are_refused(name, tmp_path):
    path, expected = hostile_cases.BATCH_CASES[name](tmp_path)
    with pytest.raises(UserInputError, match=expected):
        read_cifar10_batch(path)



@pytest.mark.parametrize("name", list(hostile_cases.IMAGE_CASES))
def test_images_past_the_pixel_budget_are_refused_before_decoding(name, tiny_run, tmp_path):
    path, expected = hostile_cases.IMAGE_CASES[name](tmp_path)
    result = invoke("predict", str(tiny_run[0]), str(path))  # a digits run: its rows are 8 x 8 images
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and str(path) in result.stderr and result.stdout == ""

def test_the_memo_bomb_is_refused_without_touching_the_unpickler(tmp_path, monkeypatch):
    path, _ = hostile_cases.BATCH_CASES["memo_bomb"](tmp_path)
    monkeypatch.setattr(safe._ArrayOnlyUnpickler, "load", lambda self: pytest.fail("unpickled a bomb"))
    with pytest.raises(UserInputError, match="memo slot"):
        read_cifar10_batch(path)


def test_an_empty_test_batch_fails_at_load_time_and_is_never_cached(tmp_path):
    folder = write_cifar_folder(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}))
    result = invoke("train", "configs/quickstart.yaml", "--set", "data.dataset=cifar10", "--set",
                    f"data.root={tmp_path}", "--set", "data.val_size=10", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "0 images" in result.output
    assert not (tmp_path / "run").exists()


def test_a_model_too_big_for_the_machine_is_refused_with_figures(tmp_path):
    result = invoke("train", "configs/quickstart.yaml", "--set", "model.hidden=[1000000000]",
                    "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "TiB of memory" in result.output and "available" in result.output
    assert not (tmp_path / "run").exists()


def test_a_truncated_archive_leaves_no_extracted_files(tmp_path, monkeypatch):
    import hashlib

    from nnrun.datasets import cifar10
    from tests.cifar_fixtures import cifar_tarball_bytes

    archive = tmp_path / "root" / cifar10.CIFAR10_ARCHIVE
    archive.parent.mkdir()
    archive.write_bytes(cifar_tarball_bytes(tmp_path / "build")[:-3000])  # the gzip stream ends early
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    result = invoke("train", "configs/quickstart.yaml", "--set", "data.dataset=cifar10", "--set",
                    f"data.root={archive.parent}", "--set", "data.val_size=10", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "cannot extract" in result.output
    assert sorted(p.name for p in archive.parent.iterdir()) == [cifar10.CIFAR10_ARCHIVE]


# ---- faults during a run ------------------------------------------------------------------------

@pytest.mark.parametrize("fail_at, nth", [("checkpoint.npz", 2), ("model.npz", 1), ("summary.json", 1)])
def test_a_full_disk_during_a_run_exits_1_keeps_whole_files_and_resumes(tmp_path, monkeypatch, fail_at, nth):
    import nnrun.io as io

    real = io.atomic_write
    calls = {"n": 0}

    def full_disk(path, write):
        if path.name == fail_at:
            calls["n"] += 1
            if calls["n"] == nth:  # this write of that file finds the disk full
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, write)

    monkeypatch.setattr(io, "atomic_write", full_disk)
    run = tmp_path / "run"
    result = invoke("train", "configs/quickstart.yaml", "--set", "train.epochs=3", "--out", str(run), "--quiet")
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.output
    if fail_at == "summary.json":  # the summary itself could not be written: the message says so
        assert "summary" in result.output and (run / "model.npz").is_file()
    else:
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "failed" and "No space left" in summary["reason"]
    assert not list(run.glob(".*.tmp"))
    monkeypatch.setattr(io, "atomic_write", real)  # space was freed
    resumed = invoke("train", "--resume", str(run), "--quiet", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["epochs"] == 3


def test_a_run_directory_that_cannot_be_written_exits_1_and_trains_nothing(tmp_path, monkeypatch):
    import nnrun.io as io

    def read_only(path, write):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(io, "atomic_write", read_only)
    result = invoke("train", "configs/quickstart.yaml", "--out", str(tmp_path / "run"))
    assert result.exit_code == 1 and "Read-only file system" in result.output


def test_batches_of_the_fixture_stay_readable():
    assert batch_dict(3, 0)[b"data"].dtype == np.uint8  # the cases below start from this valid batch


def test_yaml_limits_are_the_config_limits():
    cfg = load_config(None, ["loss.tree=" + "[" * 40 + "a, b" + "]" * 40, "loss.name=hierarchical_softmax"])
    assert cfg.loss.tree is not None  # 40 levels are fine; hostile_cases nests past the limit


# ---- paths that cannot be written, outside a training run ------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A trained digits run and an .npz of three rows to predict on: (run directory, input file)."""
    from tests.helpers import TINY_RUN, train_run

    base = tmp_path_factory.mktemp("tiny")
    np.savez(base / "rows.npz", X=np.zeros((3, 64), np.float32))
    return train_run(base / "run", *TINY_RUN), base / "rows.npz"


UNWRITABLE_CASES = {
    # name: (arguments, given the run, the input rows and a regular file; text of the message)
    "sweep_runs_dir_under_a_file": (lambda run, rows, f: ["sweep", "configs/quickstart.yaml", "--grid", "seed=0,1",
                                                          "--runs-dir", f / "sub", "--quiet"], "is a file"),
    "sweep_runs_dir_is_a_file": (lambda run, rows, f: ["sweep", "configs/quickstart.yaml", "--grid", "seed=0,1",
                                                       "--runs-dir", f, "--quiet"], "is a file"),
    "preprocess_out_under_a_file": (lambda run, rows, f: ["preprocess", "--out", f / "pp", "--json"], "is a file"),
    "preprocess_out_in_proc": (lambda run, rows, f: ["preprocess", "--out", "/proc/nnrun-pp", "--json"],
                               "/proc/nnrun-pp"),
    "compare_inits_out_under_a_file": (lambda run, rows, f: ["compare-inits", "--no-train", "--depth", "2", "--width",
                                                             "16", "--out", f / "ci", "--json"], "is a file"),
    "plot_out_in_proc": (lambda run, rows, f: ["plot", run, "--out", "/proc/nnrun-plot.png"], "/proc/nnrun-plot.png"),
    "predict_out_in_proc": (lambda run, rows, f: ["predict", run, rows, "--out", "/proc/x.csv"], "/proc/x.csv"),
    "predict_out_under_a_file": (lambda run, rows, f: ["predict", run, rows, "--out", f / "x.csv"],
                                 "is not a folder"),
}
"""Commands whose output goes where nothing can be written: exit 2, one message naming the path."""


@pytest.mark.parametrize("name", list(UNWRITABLE_CASES))
def test_an_output_path_that_cannot_be_written_exits_2_naming_it(name, tiny_run, tmp_path):
    run, rows = tiny_run
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    make_args, expected = UNWRITABLE_CASES[name]
    result = invoke(*[str(a) for a in make_args(run, rows, a_file)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert expected in result.stderr and result.stderr.count("error:") == 1 and result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing left behind


def test_evaluate_plot_onto_a_folder_exits_2_naming_the_figure(tiny_run):
    run, _ = tiny_run
    (run / "evaluate-test.png").mkdir()  # where the figure goes cannot take a file
    try:
        result = invoke("evaluate", str(run), "--plot")
    finally:
        (run / "evaluate-test.png").rmdir()
    assert result.exit_code == 2, result.output
    assert "evaluate-test.png" in result.stderr and "Is a directory" in result.stderr
    assert not list(run.glob(".*.tmp"))


@pytest.mark.parametrize("length", [241, 242, 250, 255])
def test_predict_writes_a_file_whose_name_is_as_long_as_the_system_allows(tiny_run, tmp_path, length):
    run, rows = tiny_run
    out = tmp_path / ("p" * (length - 4) + ".csv")
    result = invoke("predict", str(run), str(rows), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("id,source,row,") and [p.name for p in tmp_path.iterdir()] == [out.name]


def test_a_name_too_long_for_the_system_exits_2_naming_it(tiny_run, tmp_path):
    run, rows = tiny_run
    result = invoke("predict", str(run), str(rows), "--out", str(tmp_path / ("p" * 300 + ".csv")))
    assert result.exit_code == 2 and "File name too long" in result.stderr and "ppp.csv" in result.stderr


def test_a_full_disk_outside_a_run_exits_1_naming_the_file(tiny_run, tmp_path, monkeypatch):
    import nnrun.io as io

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", full)
    run, rows = tiny_run
    result = invoke("predict", str(run), str(rows), "--out", str(tmp_path / "p.csv"))
    assert result.exit_code == 1, result.output
    assert f"{tmp_path / 'p.csv'}: No space left on device" in result.stderr and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


# ---- integers past the YAML digit limit, at every entry point -----------------------------------

HEX = "0x" + "f" * 5000
"""A 5000-digit hex integer (6021 decimal digits: past Python's 4300-digit limit on writing one out)."""


def _hex_entry(entry: str, folder) -> list[str]:
    """The command line that hands `HEX` to nnrun through `entry`."""
    if entry == "config":
        (folder / "c.yaml").write_text(f"seed: {HEX}\n")
        return ["validate", str(folder / "c.yaml")]
    if entry == "set":
        return ["validate", "configs/quickstart.yaml", "--set", f"seed={HEX}"]
    if entry == "grid":
        return ["sweep", "configs/quickstart.yaml", "--grid", f"seed=1,{HEX}", "--runs-dir", str(folder / "runs")]
    if entry == "space":
        return ["sweep", "configs/quickstart.yaml", "--random", "2", "--space", f"seed=randint(0,{HEX})",
                "--runs-dir", str(folder / "runs")]
    if entry == "filter":
        return ["runs", str(folder), "--filter", f"seed={HEX}"]
    if entry == "study":
        (folder / "s.yaml").write_text(f"name: s\nbase:\n  seed: {HEX}\n")
        return ["study", str(folder / "s.yaml"), "--out", str(folder / "out")]
    (folder / "run").mkdir()  # a run directory whose config.yaml was edited
    (folder / "run" / "config.yaml").write_text(f"seed: {HEX}\n")
    return ["train", "--resume", str(folder / "run")]


@pytest.mark.parametrize("entry", ["config", "set", "grid", "space", "filter", "study", "run_config"])
def test_a_hex_integer_past_the_digit_limit_is_one_message_at_every_yaml_entry_point(entry, tmp_path):
    args = _hex_entry(entry, tmp_path)
    before = set(tmp_path.rglob("*"))
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "5000 hex digits" in result.output and len(result.output) < 2000
    assert set(tmp_path.rglob("*")) == before  # nothing left behind


@pytest.mark.parametrize("space, expected", [
    ("seed=randint(0,100000000000000000000)", "64-bit integers"),
    ("seed=randint(-99999999999999999999,0)", "64-bit integers"),
    ("optim.lr=uniform(-1e308,1e308)", "finite bounds"),
    ("optim.lr=uniform(0,.inf)", "finite bounds"),
    ("optim.lr=loguniform(1e-3,.inf)", "finite bounds"),
])
def test_space_bounds_a_draw_cannot_use_are_refused(space, expected, tmp_path):
    result = invoke("sweep", "configs/quickstart.yaml", "--random", "3", "--space", space,
                    "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 2, result.output
    assert expected in result.output and not (tmp_path / "runs").exists()


def test_loguniform_up_to_the_largest_float_draws_finite_values():
    from nnrun.sweep.space import expand_points, parse_space

    points = expand_points({}, parse_space(["optim.lr=loguniform(1e300,1.7976931348623157e308)"]), 50, seed=0)
    assert all(np.isfinite(p["optim.lr"]) for p in points)


def test_an_error_message_describes_an_integer_python_will_not_print():
    from nnrun.errors import echo

    assert "too long to print" in echo([10**5000]) and echo(3) == "3"


def test_a_summary_nested_100000_deep_is_an_unreadable_summary_not_a_traceback(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "deep"
    shutil.copytree(tiny_run[0], run, ignore=shutil.ignore_patterns(".lock"))
    (run / "summary.json").write_text("[" * 100_000 + "]" * 100_000)
    (run / "metrics.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n" + (run / "metrics.jsonl").read_text())
    for args in (["runs", run], ["diff", run, tiny_run[0]], ["plot", run, "--out", tmp_path / "p.png"]):
        result = invoke(*map(str, args))
        assert result.exit_code == 0 and result.exception is None, result.output
    result = invoke("evaluate", str(run))
    assert result.exit_code == 2 and "summary.json" in result.stderr, result.output


RUN_NPZ_FILES = ("model.npz", "preprocess.npz", "targets.npz", "split.npz")


@pytest.mark.parametrize("name", list(hostile_cases.RUN_NPZ_CASES))
@pytest.mark.parametrize("file", RUN_NPZ_FILES)
def test_hostile_run_directory_npz_files_are_refused_before_allocation(file, name, tiny_run, tmp_path, monkeypatch):
    import shutil
    import time

    monkeypatch.setattr(safe, "MAX_BOMB_FREE_BYTES", 1 << 20)  # a 4 MiB bomb stands for a 6 GB one
    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run, ignore=shutil.ignore_patterns(".lock"))
    build, expected = hostile_cases.RUN_NPZ_CASES[name]
    build(run / file)
    before = sorted(p.name for p in run.iterdir())
    for args in (["evaluate", run], ["predict", run, tiny_run[1]]):
        started = time.perf_counter()
        result = invoke(*map(str, args))
        assert result.exit_code == 2, result.output
        assert str(run / file) in result.stderr and expected in result.stderr, result.stderr
        assert time.perf_counter() - started < 5
    assert sorted(p.name for p in run.iterdir()) == before


HOSTILE_NAMES = ["[bold red]zero[/]", "[link=http://evil.example]one[/link]", '=HYPERLINK("http://x")', "+1", "-2",
                 "@SUM(A1)", "\tsix", "\x1b[31mseven\x1b[0m", "ei\rght", "$\\badcmd{$"]
"""Class names a tampered targets.npz may hold: rich markup, spreadsheet formulas, terminal escapes, mathtext."""


def test_class_names_from_a_tampered_run_are_text_never_markup_escapes_or_formulas(tiny_run, tmp_path):
    import csv
    import re
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run, ignore=shutil.ignore_patterns(".lock"))
    targets = dict(np.load(run / "targets.npz"))
    targets["names"] = np.array(HOSTILE_NAMES)
    np.savez(run / "targets.npz", **targets)
    controls = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
    result = invoke("evaluate", str(run), "--plot")
    assert result.exit_code == 0, result.output
    assert not controls.search(result.output), repr(result.output)
    for shown in ("[bold red]zero[/]", "[link=http://evil.example]one[/link]", "\\x1b[31mseven\\x1b[0m", "\\tsix",
                  "ei\\rght"):
        assert shown in result.output  # as written, not styled, linked or sent to the terminal
    result = invoke("predict", str(run), str(tiny_run[1]), "--top-k", "10", "--out", str(tmp_path / "p.csv"))
    assert result.exit_code == 0, result.output
    text = (tmp_path / "p.csv").read_text()
    assert not controls.search(text), repr(text)
    fields = [f for row in csv.reader(io.StringIO(text)) for f in row]
    for f in fields:
        if f[:1] in ("=", "+", "-", "@"):
            float(f)  # only numbers may start like a formula
    assert set(fields) >= {"'=HYPERLINK(\"http://x\")", "'@SUM(A1)", "+1", "six"}, fields
