"""The one table policy of `nnrun.tables`, at fixed widths: numbers whole, headers wrapped, text folded or moved."""

import io
import re

import pytest
from rich.console import Console
from rich.text import Text

from nnrun.compare_inits import training_table
from nnrun.diff import diff_runs, diff_view
from nnrun.gradcheck import gradcheck_table
from nnrun.progress import RichReporter, run_header, summary_table
from nnrun.runs import runs_report
from nnrun.tables import DataTable, column_format, key_value_table, value_format, wrap_header
from tests.helpers import sweep_runs

WIDTHS = (60, 80, 100, 160)


def render(renderable, width):
    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    console.print(renderable)
    return console.file.getvalue()


def whole(text, token):
    """`token` appears in `text` not as part of a longer number or word."""
    return re.search(r"(?<![\w.+-])" + re.escape(token) + r"(?![\w.])", text) is not None


def numbers_of(table: DataTable) -> list[str]:
    """The cells of every number and value column, as the table prints them."""
    formatted = table.formatted()
    return [row[j] for row in formatted for j, c in enumerate(table.columns)
            if c.kind in ("number", "value") and isinstance(row[j], str) and row[j] not in ("", "-")]


def check_fits(table: DataTable, width: int) -> str:
    out = render(table, width)
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= width, out
    assert "…" not in out, out
    for token in numbers_of(table):
        assert whole(out, token), (token, out)
    return out


def test_column_format_gives_one_precision_per_column():
    assert column_format([0.02, 0.02014, 0.9]) == ["0.0200", "0.0201", "0.9000"]
    assert column_format([0.02, 0.02014]) == ["0.02000", "0.02014"]
    assert column_format([1.847, 0.21, 0.024]) == ["1.847", "0.210", "0.024"]
    assert column_format([12.53, 103.2, 0.5]) == ["12.53", "103.20", "0.50"]
    # A column spanning too many decades goes to scientific notation, every cell alike.
    assert column_format([3e-7, 1.2e-9]) == ["3.000e-07", "1.200e-09"]
    assert column_format([761.1, 0.0001]) == ["7.611e+02", "1.000e-04"]
    assert column_format([5, None, "n/a", 0.0]) == ["5", "-", "n/a", "0.0"]
    assert value_format(0.0001) == "0.0001" and value_format(1e-05) == "1e-05" and value_format([64, 32]) == "[64, 32]"


def test_wrap_header_breaks_at_separators_and_folds_long_words():
    assert wrap_header("val_accuracy", 8) == "val_\naccuracy"
    assert wrap_header("regularization.l2", 15) == "regularization.\nl2"
    assert wrap_header("regularization.l2", 9) == "regulariz\nation.l2"
    assert wrap_header("loss e10", 20) == "loss e10"
    assert all(len(line) <= 6 for line in wrap_header("train_loss (batch mean)", 6).splitlines())


def wide_table():
    table = DataTable("sweep: 5 runs with a title longer than a narrow table", caption="what the columns mean")
    table.add_column("#", key=True)
    table.add_column("optim.lr", "value")
    table.add_column("regularization.l2", "value")
    table.add_column("status", "label")
    for metric in ("val_accuracy", "val_loss", "train_accuracy", "test_accuracy", "epochs", "seconds"):
        table.add_column(metric)
    table.add_column("run dir", "text")
    table.add_column("reason", "text")
    for i in range(5):
        table.add_row(i + 1, [1e-3, 1e-2, 0.1][i % 3], [0.0, 1e-4][i % 2], Text("completed", style="green"),
                      0.9 + i / 1000, 0.3 / (i + 1), 0.02014 if i == 0 else 0.02, 0.88123, 5, 12.5 + i,
                      f"digits-sweep-3da65cfa60{i}c", "loss became nan in epoch 1, batch 3" if i == 2 else None)
    return table


@pytest.mark.parametrize("width", WIDTHS)
def test_every_number_whole_at_every_width(width):
    table = wide_table()
    out = check_fits(table, width)
    assert whole(out, "0.02014") and whole(out, "0.02000")          # one precision in the column
    assert "digits-sweep-3da65cfa602c" in out.replace("\n", "").replace(" ", "") or \
        "digits-sweep-" in out                                      # text folded or moved, never cut
    assert "loss became nan" in " ".join(out.split())
    assert "regulariz" in out and ("ation.l2" in out or "l2" in out)  # headers wrap, never truncated
    assert "val_" in out and "accuracy" in out


def test_narrow_tables_move_text_below_and_split_columns_repeating_the_key():
    out = render(wide_table(), 60)
    assert "3: reason: loss became nan in epoch 1, batch 3" in out       # moved below, named by its key
    header_lines = [line for line in out.splitlines() if line.lstrip().startswith("#")]
    assert len(header_lines) >= 2                                        # split into blocks, '#' in each


@pytest.mark.parametrize("width", WIDTHS)
def test_text_columns_fold_between_words_never_inside_one(width):
    """A tags cell `group=baseline` in a 12-cell column was folded as `group=baseli` / `ne`: text folds after
    `_ . - / =` and spaces, and a text column is at least as wide as its longest word (up to 24 cells)."""
    table = DataTable(title="runs")
    table.add_column("run", kind="label", key=True)
    for header in ("val_accuracy", "test_accuracy", "epochs", "seed", "regularization.l2", "optim.lr"):
        table.add_column(header)
    table.add_column("tags", kind="text")
    for i in range(3):
        table.add_row(f"digits-sweep-{i}", 0.98, 0.97, 5, i, 1e-4, 0.01, f"group=baseline, stage={i}, owner=someone")
    out = check_fits(table, width)
    pieces = set(re.findall(r"[\w=,]+", out))
    for word in ("group=", "baseline,", "owner=", "someone"):
        assert any(word in piece for piece in pieces), (word, out)
    assert not any(p in pieces for p in ("baselin", "baseli", "basel", "someon", "someo")), out


def test_wide_terminal_keeps_one_table():
    out = render(wide_table(), 400)
    assert out.count("━━") >= 1 and len([line for line in out.splitlines() if "━" in line]) == 1
    assert "digits-sweep-3da65cfa600c" in out


@pytest.mark.parametrize("width", WIDTHS)
def test_runs_listing_fits(tmp_path, width):
    sweep_runs(tmp_path)
    table = runs_report(tmp_path)
    out = check_fits(table, width)
    for name in ("run-lr0.001-l20.0-s0", "run-lr0.1-l20.0001-s1"):
        assert name in out.replace("\n", "").replace(" ", "") or name.split("-")[0] in out


@pytest.mark.parametrize("width", WIDTHS)
def test_grouped_listing_fits(tmp_path, width):
    sweep_runs(tmp_path)
    out = check_fits(runs_report(tmp_path, group_by=["optim.lr"]), width)
    assert "±" in out


@pytest.mark.parametrize("width", WIDTHS)
def test_train_tables_fit(width):
    reporter = RichReporter(Console(width=width, file=io.StringIO()))
    reporter.keys = ["epoch", "lr", "train_loss", "reg_loss", "train_accuracy", "val_loss", "val_accuracy",
                     "seconds"]
    reporter.rows = [{"epoch": e, "lr": 0.01, "train_loss": 2.0 / e ** 2, "reg_loss": 0.02 + e / 10000,
                      "train_accuracy": 0.9 + e / 100, "val_loss": 0.3 - e / 100, "val_accuracy": 0.92 + e / 200,
                      "seconds": 0.1 * e} for e in range(1, 6)]
    reporter.best_epoch = 4
    epochs = check_fits(reporter.epoch_table(), width)
    assert "◀ best" in epochs and "batch" in epochs
    best_line = next(line for line in epochs.splitlines() if "◀ best" in line)
    assert best_line.split()[0] == "4"
    summary = {"train_accuracy": 0.99, "val_accuracy": 0.9722222, "test_accuracy": 0.955, "train_loss": 0.0137,
               "val_loss": 0.0877, "test_loss": 0.1438, "epochs": 5, "best_epoch": 4, "restored_best": True}
    final = check_fits(summary_table(summary), width)
    assert "epoch 4" in final
    header = check_fits(run_header({"name": "quickstart", "run_dir": "/tmp/a/very/long/path/to/the/run-dir-x",
                                    "parameters": 17226, "choices": {"BatchNorm": "off", "lr": "0.01, constant"}}),
                        width)
    assert "17226" in header and "BatchNorm" in header


@pytest.mark.parametrize("width", WIDTHS)
def test_command_tables_fit(width):
    check_fits(gradcheck_table({"passed": False, "h": 1e-5, "tol": 1e-5, "batch_size": 16, "params": [
        {"name": "fc0.W", "shape": [64, 32], "checked": 200, "skipped": 3, "max_rel_error": 3.2e-8,
         "max_abs_error": 1.5e-10, "passed": True},
        {"name": "fc1.b", "shape": [10], "checked": 10, "skipped": 0, "max_rel_error": 0.02,
         "max_abs_error": 1e-4, "passed": False}]}), width)
    run = {"scheme": "xavier", "batchnorm": False, "status": "completed", "distinct_units": [500] * 3,
           "final_val_loss": 0.12345, "final_val_accuracy": 0.9651, "seconds": 12.25,
           "epochs": [{"epoch": e, "train_loss": 2.3 / e} for e in range(1, 6)]}
    result = {"depth": 3, "width": 500, "activation": "relu", "epochs": 5, "optim": "momentum", "lr": 0.01,
              "batch_size": 64, "n_train": 1294, "dataset": "digits", "seed": 0,
              "training": [run, {**run, "scheme": "he", "batchnorm": True, "status": "diverged"}]}
    out = check_fits(training_table(result), width)
    assert whole(out, "96.5 %") or "96.5" in out
    check_fits(key_value_table("values", {"a long key name": 0.000123, "path": "/x" * 40}), width)


def test_diff_view_fits(tmp_path):
    runs = sweep_runs(tmp_path)
    a, b = sorted(runs)[:2]
    for width in WIDTHS:
        out = render(diff_view(diff_runs(tmp_path / a, tmp_path / b)), width)
        assert max(len(line) for line in out.splitlines()) <= width
        assert "seed" in out and "…" not in out
