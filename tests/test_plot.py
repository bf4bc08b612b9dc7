"""`nnrun plot`: curves of several runs, a metric against a swept key, and the figure files."""

import json
import statistics

import numpy as np
import pytest
from typer.testing import CliRunner

from nnrun.cli import app
from nnrun.errors import UserInputError
from nnrun.plot import axis_scale, plot_figure, run_value
from nnrun.runstore import list_runs
from tests.helpers import epoch_rows, sweep_runs, write_run

runner = CliRunner()


def invoke(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    return root, sweep_runs(root)


def legend_texts(fig):
    return [t.get_text() for t in fig.legends[0].get_texts()]


def test_curves_one_line_per_run_and_a_legend_naming_what_differs(sweep):
    root, runs = sweep
    fig, result = plot_figure([root])
    assert result["metrics"] == ["val_accuracy", "train_loss"]
    axes = fig.axes
    assert len(axes) == 2
    assert all(len(ax.get_lines()) == len(runs) for ax in axes)
    labels = [label.split(" (same ")[0] for label in legend_texts(fig)]   # the seeds' train_loss coincide
    assert len(labels) == len(runs) == len(set(labels))
    assert "l2=0.0001, lr=0.1, seed=1" in labels                  # the keys that differ, seed last
    assert fig.legends[0].get_title().get_text() == "regularization.l2, optim.lr, seed"
    # the seeds of one setting share a colour, in two line styles
    lines = {label: line for label, line in zip(labels, axes[0].get_lines(), strict=True)}
    a, b = lines["l2=0, lr=0.01, seed=0"], lines["l2=0, lr=0.01, seed=1"]
    assert a.get_color() == b.get_color() and a.get_linestyle() != b.get_linestyle()
    # each line is the run's metrics.jsonl
    lr, l2, seed, acc = runs["run-lr0.01-l20.0-s1"]
    np.testing.assert_allclose(lines["l2=0, lr=0.01, seed=1"].get_ydata(), [acc - 0.2, acc - 0.1, acc])


def test_hue_colours_by_one_key(sweep):
    root, _ = sweep
    fig, _ = plot_figure([root], metrics=["val_accuracy"], hue="optim.lr")
    assert legend_texts(fig) == ["lr=0.001", "lr=0.01", "lr=0.1"]
    assert len(fig.axes[0].get_lines()) == 12


def test_metric_against_a_key_averages_seeds_per_hue_group(sweep):
    root, runs = sweep
    fig, result = plot_figure([root], x="optim.lr")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"                                # 1e-3 .. 1e-1 span decades
    assert legend_texts(fig) == ["l2=0", "l2=0.0001"]              # grouped by the other key, seeds pooled
    assert result["hue"] == ["regularization.l2"]
    mean_lines = ax.get_lines()
    assert len(mean_lines) == 2
    for line, l2 in zip(mean_lines, (0.0, 0.0001), strict=True):
        np.testing.assert_allclose(line.get_xdata(), [0.001, 0.01, 0.1])
        expected = [statistics.fmean(acc for (r, g, s, acc) in runs.values() if r == lr and g == l2)
                    for lr in (0.001, 0.01, 0.1)]
        np.testing.assert_allclose(line.get_ydata(), expected)
    series = result["series"][0]
    assert series["n"]["val_accuracy"] == [2, 2, 2]
    np.testing.assert_allclose(series["std"]["val_accuracy"], [statistics.stdev([0.0, 0.01])] * 3, atol=1e-12)


def test_explicit_hue_and_best_value(sweep):
    root, _ = sweep
    fig, result = plot_figure([root], x="optim.lr", hue="seed", metrics=["val_accuracy", "train_loss"],
                              stat="best")
    assert legend_texts(fig) == ["seed=0", "seed=1"]
    assert [len(ax.get_lines()) for ax in fig.axes] == [2, 2]
    # best train_loss is the lowest epoch value (0.5 + lr), not the summary's final evaluation (0.4)
    np.testing.assert_allclose(fig.axes[1].get_lines()[0].get_ydata(), [0.501, 0.51, 0.6])


def test_run_value_final_is_the_summary_and_best_is_over_epochs(sweep):
    root, _ = sweep
    record = next(r for r in list_runs(root) if r.name == "run-lr0.1-l20.0-s0")
    assert run_value(record, "val_accuracy", "final") == pytest.approx(0.9)
    assert run_value(record, "train_loss", "final") == 0.4
    assert run_value(record, "train_loss", "best") == pytest.approx(0.6)
    assert run_value(record, "val_accuracy", "best") == pytest.approx(0.9)


def test_axis_scale():
    assert axis_scale([0.001, 0.01, 0.1]) == ("log", None)
    assert axis_scale([0, 0.0001, 0.01]) == ("symlog", None)
    assert axis_scale([1, 2, 3]) == ("linear", None)
    assert axis_scale(["he", "xavier"]) == ("category", [(0.0, "he"), (1.0, "xavier")])


def test_bad_names_are_errors_with_suggestions(sweep, tmp_path):
    root, _ = sweep
    with pytest.raises(UserInputError, match="did you mean 'val_accuracy'"):
        plot_figure([root], metrics=["val_acc"])
    with pytest.raises(UserInputError, match="did you mean 'optim.lr'"):
        plot_figure([root], x="optim.lrr")
    with pytest.raises(UserInputError, match="same key"):
        plot_figure([root], x="optim.lr", hue="optim.lr")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserInputError, match="no run directories"):
        plot_figure([empty])


def test_cli_writes_png_and_svg_and_refuses_to_overwrite(sweep, tmp_path):
    root, runs = sweep
    png = tmp_path / "curves.png"
    result = invoke("plot", root, "--out", png)
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(png) in result.stderr
    svg = tmp_path / "lr.svg"
    result = invoke("plot", root, "--x", "optim.lr", "--metric", "val_accuracy,test_accuracy", "--out", svg, "--json")
    assert result.exit_code == 0, result.output
    assert "<svg" in svg.read_text()[:1000]
    data = json.loads(result.stdout)
    assert data["out"] == str(svg) and data["metrics"] == ["val_accuracy", "test_accuracy"] and data["runs"] == 12
    again = invoke("plot", root, "--out", png)
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    assert invoke("plot", root, "--out", png, "--overwrite").exit_code == 0
    bad = invoke("plot", root, "--out", tmp_path / "x.pdf")
    assert bad.exit_code == 2 and "png or svg" in bad.stderr
    default = invoke("plot", root, env={"NNRUN_RUNS_DIR": str(tmp_path / "figures")})
    assert default.exit_code == 0, default.output
    assert len(list(root.glob("plot-epochs-*.png"))) == 1       # beside the runs it draws (issue 27, defect 11)


def test_names_from_run_files_are_plain_text_in_legends_titles_and_ticks(tmp_path):
    """Run folder names and config values from a run's files (a tampered config.yaml's name) are drawn as text:
    control characters as escapes, never mathtext (`$\\x{$` was a ParseFatalException when the figure was saved)."""
    root = tmp_path / "runs"
    for i, folder in enumerate(["a$\\x{$\x1b[31m", "b\tc$x$"]):
        run = write_run(root, folder, {"optim": {"lr": 0.01}}, epoch_rows([0.5, 0.6 + i / 10], [1.0, 0.9 - i / 10]),
                        {"status": "completed", "epochs": 2, "best_epoch": 2, "val_accuracy": 0.6 + i / 10,
                         "val_loss": 0.5})
        config = run / "config.yaml"
        config.write_text(config.read_text().replace("name: experiment\n", f'name: "n{i}$\\\\x{{$\\e[31m"\n'))
        # the same config in two folders: the legend names the folders
        write_run(tmp_path / "same", folder, {"optim": {"lr": 0.01}}, epoch_rows([0.5, 0.6 + i / 10], [1.0, 0.9]))
    for runs, options in ((root, {}), (root, {"x": "name"}), (tmp_path / "same", {})):
        fig, _ = plot_figure([runs], **options)
        texts = [fig._suptitle, *(t for legend in fig.legends for t in [*legend.get_texts(), legend.get_title()]),
                 *(t for ax in fig.axes for t in [ax.title, ax.xaxis.label, *ax.get_xticklabels()])]
        shown = " | ".join(t.get_text() for t in texts)
        assert "$\\x{$" in shown and "\\x1b[31m" in shown and "\x1b" not in shown, shown
        assert not [t.get_text() for t in texts if "$" in t.get_text() and t.get_parse_math()], shown
        fig.savefig(tmp_path / "figure.png")
    result = invoke("plot", root, "--out", tmp_path / "curves.png")
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output


def test_a_legend_of_long_entries_wraps_and_the_figure_makes_room_for_it():
    """Runs differing in six keys, two of them drawn under earlier ones, gave legend entries of 150 characters
    in a 2.6-inch strip: matplotlib warned 'constrained_layout not applied' and the legend covered the panels.
    Entries now wrap between words and the figure is as wide and tall as the legend needs."""
    import warnings

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from nnrun.plots import LEGEND_WRAP, curves_figure

    label = "name=digits-sweep, hidden=[32], l2=0.0001, lr=0.001, epochs=5, seed={} (grid/digits-sweep-{:012x})"
    series = [{"label": label.format(i % 2, i) + (" (same curves as " + label.format(0, 0) + ": hidden under it)"
                                                  if i % 3 == 2 else ""),
               "group": str(i // 2), "line": i % 2, "x": [1, 2, 3], "y": {"val_accuracy": [0.5, 0.6 + i / 100, 0.7],
                                                                      "train_loss": [1.0, 0.5, 0.25]}}
              for i in range(12)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                          # 'constrained_layout not applied' fails the test
        fig = curves_figure(series, ["val_accuracy", "train_loss"], title="12 runs",
                            legend_title="name, model.hidden, regularization.l2, optim.lr, train.epochs, seed")
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
    renderer = canvas.get_renderer()
    legend = fig.legends[0]
    assert all(len(line) <= LEGEND_WRAP + 20 for t in legend.get_texts() for line in t.get_text().split("\n"))
    box, figure_box = legend.get_window_extent(renderer), fig.bbox
    assert box.x0 >= figure_box.x0 and box.x1 <= figure_box.x1 + 1 and box.y0 >= figure_box.y0 - 1 \
        and box.y1 <= figure_box.y1 + 1, (box, figure_box)
    for ax in fig.axes:                                          # the panels keep their room, left of the legend
        panel = ax.get_window_extent(renderer)
        assert panel.width > 150 and panel.height > 150 and panel.x1 <= box.x0 + 1, (panel, box)
