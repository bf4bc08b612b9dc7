"""Issue 27, defects 1-11: tables that read at 60-160 columns, help and error messages that say the right thing,
no silent phase, a fast gradcheck with progress, what dropout's p means, a header and footer that say what ran,
honest advice on resume, one order of runs, plots that say what they show."""

import re
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from nnrun.cli import app
from nnrun.errors import close_matches
from nnrun.signals import Interrupted
from nnrun.workers import thread_budget
from tests.helpers import invoke, invoke_error, sweep_runs


def one_line(text: str) -> str:
    """Text with rich's box characters and line breaks out, for phrases a panel may have wrapped."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


# ---- defect 3: --help ----------------------------------------------------------------------------

def test_help_keeps_square_brackets():
    """Rich markup must not eat `[gpu]` (or any other bracketed text) from a help string."""
    root = get_command(app)
    runner = CliRunner()
    for name, command in root.commands.items():
        bracketed = [m for p in command.params for m in re.findall(r"\[[^\]]*\]", getattr(p, "help", None) or "")
                     if not m.startswith("\\")]
        bracketed += [m.replace("\\[", "[") for p in command.params
                      for m in re.findall(r"\\\[[^\]]*\]", getattr(p, "help", None) or "")]
        if not bracketed:
            continue
        out = runner.invoke(app, [name, "--help"], env={"COLUMNS": "400"}, terminal_width=400).output
        for text in bracketed:
            assert text in one_line(out), (name, text)
    out = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "400"}, terminal_width=400).output
    assert "pip install 'nnrun[gpu]'" in one_line(out)


# ---- defect 5: messages --------------------------------------------------------------------------

def test_a_space_after_a_comma_in_grid_gets_a_whole_hint():
    result = invoke("sweep", "configs/sweep_digits.yaml", "--grid", "optim.lr=1e-3,", "1e-2", "--dry-run")
    assert result.exit_code == 2
    message = one_line(result.output)
    assert "write --grid optim.lr=1e-3,1e-2" in message
    assert not message.rstrip().endswith("write")


def test_a_bare_key_value_still_suggests_set():
    result = invoke("sweep", "configs/sweep_digits.yaml", "optim.lr=1e-3", "--dry-run")
    assert result.exit_code == 2 and "write --set optim.lr=1e-3" in one_line(result.output)


@pytest.mark.parametrize("jobs, threads, cores", [(4, 4, 2), (2, 2, 2), (2, 3, 2), (4, 4, 8), (1, 4, 2)])
def test_jobs_threads_advice_is_a_combination_that_fits(jobs, threads, cores):
    with pytest.raises(Exception) as error:
        thread_budget(jobs, threads, cores)
    advised = re.findall(r"--jobs (\d+) --threads (\d+)", str(error.value))
    assert advised, str(error.value)
    for j, t in advised:
        assert int(j) >= 1 and int(t) >= 1 and int(j) * int(t) <= cores, str(error.value)
        thread_budget(int(j), int(t), cores)  # the advice is accepted


def test_runs_filter_on_a_short_key_suggests_the_dotted_one(tmp_path):
    sweep_runs(tmp_path)
    message = one_line(invoke_error("runs", tmp_path, "--filter", "lr<0.01"))
    assert "did you mean 'optim.lr'?" in message
    assert "no run has lr Available" not in message
    assert "model.init" not in message            # not every config key, one by one
    assert len(message) < 700, message
    assert close_matches("hidden", ["model.hidden", "optim.lr"]) == ["model.hidden"]


def test_study_with_an_unknown_executor_is_refused_before_any_work(monkeypatch):
    import nnrun.study.run as study_run

    def no_planning(*args, **kwargs):
        raise AssertionError("planned (and calibrated) before checking --executor")

    monkeypatch.setattr(study_run, "plan_study", no_planning)
    monkeypatch.setattr(study_run, "load_study", no_planning)
    message = one_line(invoke_error("study", "studies/digits_questions.yaml", "--executor", "slurmm", "--dry-run"))
    assert "local, dask, slurm" in message and "did you mean 'slurm'" in message
    # a known executor that cannot run here (no SLURM on PATH: tests/test_slurm.py) is refused just as early
    monkeypatch.setenv("PATH", "")
    message = one_line(invoke_error("study", "studies/digits_questions.yaml", "--executor", "slurm", "--dry-run"))
    assert "sbatch and srun" in message or "pip install 'nnrun[slurm]'" in message
    # a scheduler address for an executor that has none, the same
    message = one_line(invoke_error("study", "studies/digits_questions.yaml", "--scheduler", "tcp://127.0.0.1:1",
                                    "--dry-run"))
    assert "--scheduler is for --executor dask" in message


def test_a_stop_the_user_asked_for_is_not_called_a_failure(tmp_path, monkeypatch):
    import nnrun.cli as cli

    class StopAtEpochOne(cli.RichReporter):
        def epoch_end(self, row):
            super().epoch_end(row)
            raise Interrupted("SIGINT")

    monkeypatch.setattr(cli, "RichReporter", StopAtEpochOne)
    result = invoke("train", "configs/quickstart.yaml", "--set", "train.epochs=3", "--set", "model.hidden=[16]",
                    "--out", tmp_path / "r")
    assert result.exit_code == 1
    message = one_line(result.stderr)
    assert "run failed" not in message.lower()
    assert "stopped: interrupted by SIGINT" in message and "nnrun train --resume" in message


# ---- defect 2: every table at 60, 80, 100 and 160 columns ---------------------------------------

WIDTHS = (60, 80, 100, 160)
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?:/\d+)?(?![\w.])")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def header_words(wide: str) -> list[str]:
    """The words of every table header in a rendering at natural width: the line above each heavy rule, cut
    into its headers (two spaces apart) and each header into the pieces it may wrap between."""
    lines = wide.splitlines()
    words = []
    for i, line in enumerate(lines):
        if i and set(line.strip()) <= {"━", " "} and "━" in line:
            for header in re.split(r"\s{2,}", lines[i - 1].strip()):
                words += [w for w in re.findall(r"[^_./\-\s]+[_./\-]*", header) if len(w) > 1]
    return words


def check_rendering(narrow: str, wide: str, width: int) -> None:
    """`narrow` (a rendering at `width`) against `wide` (the same at natural width): no line wider than the
    terminal, nothing cut (`…`), every number of the wide rendering whole in the narrow one (at least as
    often: split tables repeat their key columns), every header word whole."""
    lines = narrow.splitlines()
    assert max((len(line) for line in lines), default=0) <= width, narrow
    assert "…" not in narrow, narrow
    from collections import Counter

    have = Counter(m.group() for m in NUMBER.finditer(narrow))
    for token, count in Counter(m.group() for m in NUMBER.finditer(wide)).items():
        assert have[token] >= count, (f"{token!r} cut or split at {width} columns", narrow)
    for word in header_words(wide):
        assert word in narrow, (f"header word {word!r} broken at {width} columns", narrow)


def render_at(renderable, width: int) -> str:
    import io

    from rich.console import Console

    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    console.print(renderable)
    return console.file.getvalue()


def check_all_widths(renderable) -> None:
    wide = render_at(renderable, 1000)
    for width in WIDTHS:
        check_rendering(render_at(renderable, width), wide, width)


def run_in_pty(args: list[str], width: int, cwd=None) -> str:
    """`python -m nnrun ARGS` on a real pseudo-terminal `width` columns wide (stdout and stderr both), its output
    without colour codes."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, width, 0, 0))
    env = {**os.environ, "COLUMNS": str(width), "LINES": "50", "TERM": "xterm", "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "nnrun", *map(str, args)], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, env=env, cwd=cwd, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=120)
    os.close(master)
    return ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n").replace("\r", "")


def study_report() -> dict:
    stats = [{"mean": 0.39112, "std": 0.005213, "n": 3}, {"mean": 0.38612, "std": 0.0071, "n": 3}]
    relation = {"relation": "greater", "label": "zca_whitening > per_channel_centering", "metric": "test_accuracy",
                "a": "zca", "b": "per_channel", "a_stats": stats[0], "b_stats": stats[1], "value": None,
                "interval": {"estimate": 0.0050123, "low": -0.0070147, "high": 0.0170393},
                "verdict": "not resolved", "verdict_label": "not resolved"}
    diverged = {"relation": "diverges", "label": "big_lr diverges, small_lr does not", "metric": None,
                "a": "big_lr", "b": "small_lr", "diverged": {"a": [3, 3], "b": [0, 3]}, "verdict": "supported",
                "verdict_label": "supported"}
    claims = [{"id": "whitening_helps_a_lot", "verdict": "not resolved", "relations": [relation, relation]},
              {"id": "learning_rate", "verdict": "supported", "relations": [diverged]}]
    return {"study": "notes", "budget": "quick", "claims": claims}


def test_study_tables_keep_numbers_whole_and_use_one_plus_minus():
    from nnrun.study.display import plan_table, summary_table

    check_all_widths(summary_table(study_report()))
    assert "±" in render_at(summary_table(study_report()), 80)
    assert "+-" not in render_at(summary_table(study_report()), 80)
    plan = {"study": "notes", "budget": "quick", "distinct": 40, "done": 3, "to_run": 37, "entries": 44,
            "estimate_seconds": 1234.5, "max_minutes": 60,
            "claims": [{"id": f"claim_number_{i}", "arms": 2, "seeds": 3, "runs": 6, "distinct": 6, "done": 0}
                       for i in range(4)]}
    check_all_widths(plan_table(plan))


def test_confusion_matrix_keeps_class_names_and_numbers_whole():
    from nnrun.evaluate import confusion_table, evaluation_tables

    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    counts = [[(i * 37 + j * 11) % 60 + (900 if i == j else 0) for j in range(10)] for i in range(10)]
    check_all_widths(confusion_table(counts, names))
    out = render_at(confusion_table(counts, names), 80)
    assert "airplane" in out and "automobile" in out
    result = {"name": "cifar10", "loss_name": "softmax", "split": "test", "n": 10000,
              "metrics": {"loss": 1.1312345, "accuracy": 0.6021}, "summary_metrics": {"loss": 1.13, "accuracy": 0.6}}
    for table in evaluation_tables(result):
        check_all_widths(table)


def test_header_words_never_break_in_the_layout():
    from nnrun.tables import DataTable

    table = DataTable("runs")
    table.add_column("run", "label", key=True)
    for key in ("preprocess.scale", "regularization.l2", "model.layers.0.dropout", "val_accuracy"):
        table.add_column(key, "value")
    table.add_row("a-run", "std", 0.0001, 0.5, 0.95)
    check_all_widths(table)
    assert "preprocess." in render_at(table, 40)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate") / "run"
    result = invoke("train", "configs/quickstart.yaml", "--set", "train.epochs=2", "--set", "model.hidden=[16]",
                    "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("command", ["runs", "evaluate", "diff", "diff3", "tag", "rm"])
def test_commands_on_a_real_terminal(command, tmp_path, trained_run):
    """The real CLI on a pseudo-terminal at each width, against its rendering at 400 columns."""
    if command == "evaluate":
        args = ["evaluate", trained_run]
    else:
        runs = sorted(sweep_runs(tmp_path))
        args = {"runs": ["runs", tmp_path],
                "diff": ["diff", tmp_path / runs[0], tmp_path / runs[-1]],
                "diff3": ["diff", *(tmp_path / run for run in runs[:3])],
                "tag": ["tag", tmp_path],                      # the tags and notes of every run
                "rm": ["runs", "rm", tmp_path, "--dry-run"]}[command]   # the plan, nothing removed
        if command == "tag":
            for i, run in enumerate(runs):
                assert invoke("tag", tmp_path / run, f"group=baseline-{i % 3}", f"stage={i}").exit_code == 0
                assert invoke("note", tmp_path / run, f"seed {i}: lr looks fine, try 1e-{i + 2}").exit_code == 0
    wide = run_in_pty(args, 400)
    assert "Traceback" not in wide and "━" in wide, wide
    for width in WIDTHS:
        check_rendering(run_in_pty(args, width), wide, width)


# ---- defect 1: nnrun runs on mixed runs ----------------------------------------------------------

def mixed_runs(root, n=14):
    """`n` runs of different setups, as a runs folder collects them: optimizers, widths, per-layer settings of
    different layers (a key null in one run is absent in another), BatchNorm, whitening, seeds."""
    from tests.helpers import epoch_rows, write_run

    for i in range(n):
        config = {"seed": i % 3, "optim": {"name": ["sgd", "momentum", "adam"][i % 3], "lr": [0.1, 0.01, 0.001][i % 3]},
                  "model": {"hidden": [[64], [128, 64], [256, 128]][i % 3], "batchnorm": i % 2 == 0,
                            "layers": {i % 2: {"l2": 0.001 * (i + 1)}}},
                  "preprocess": {"whiten": [False, True, "zca"][i % 3]}, "regularization": {"l2": [0.0, 1e-4][i % 2]}}
        acc = 0.9 + i / 1000
        write_run(root, f"mixed-{i:02d}", config, epoch_rows([acc - 0.1, acc], [1.0, 0.5]),
                  {"status": "completed", "epochs": 2, "best_epoch": 2, "val_accuracy": acc,
                   "test_accuracy": acc - 0.01, "val_loss": 0.5, "test_loss": 0.6, "seconds": 1.5})


def test_null_and_absent_keys_do_not_differ(tmp_path):
    from nnrun.diff import diff_runs
    from nnrun.runs import runs_report

    mixed_runs(tmp_path)
    table = runs_report(tmp_path)
    headers = [c.header for c in table.columns]
    for j, header in enumerate(headers):
        assert any(row.cells[j] is not None for row in table.rows), f"column {header} is all '-'"
    assert not any(h.startswith("model.layers.") and not h.endswith(".l2") for h in headers), headers
    diff = diff_runs(tmp_path / "mixed-00", tmp_path / "mixed-02")  # layer 0's l2 in both, other settings
    keys = [row["key"] for row in diff["config"]]
    assert keys and not any(k.startswith("model.layers.0.") and k != "model.layers.0.l2" for k in keys), keys


def test_mixed_runs_read_at_80_columns(tmp_path):
    from nnrun.runs import runs_report

    mixed_runs(tmp_path)
    table = runs_report(tmp_path)
    out = render_at(table, 80)
    lines = out.splitlines()
    assert len(lines) <= 4 * 14 + 20, f"{len(lines)} lines"
    first_rule = next(i for i, line in enumerate(lines) if "━" in line)
    first_header = " ".join(lines[:first_rule])
    assert "val_" in first_header and "accuracy" in first_header   # the metric in the first block
    check_all_widths(table)
    many = tmp_path / "many"
    many.mkdir()
    mixed_runs(many, 30)
    assert len([c for c in runs_report(many).columns]) <= 16


# ---- defect 4: gradcheck from the perturbed layer up, with progress ------------------------------

def gradcheck_net(**model):
    import numpy as np

    from nnrun.config import ModelConfig
    from nnrun.experiment import build_model

    cfg = ModelConfig(**{"hidden": [12, 10, 8], "bias_init": 0.05, **model})
    net = build_model(cfg, 9, 4, np.random.default_rng(0)).astype(np.float64)
    rng = np.random.default_rng(1)
    return net, rng.standard_normal((10, 9)), rng.integers(0, 4, 10)


def test_gradcheck_runs_only_the_layers_from_the_perturbed_one_up():
    from nnrun.nn.losses import SoftmaxCrossEntropy
    from nnrun.nn.numeric import check_model_gradients

    net, X, y = gradcheck_net(batchnorm=True, dropout=0.7)
    calls = [0] * len(net.layers)
    for i, layer in enumerate(net.layers):
        def counted(x, train=False, _forward=layer.forward, _i=i):
            calls[_i] += 1
            return _forward(x, train)
        layer.forward = counted
    progress = []
    checks = check_model_gradients(net, SoftmaxCrossEntropy(), X, y, max_entries=30,
                                   progress=lambda name, done, total: progress.append((name, done, total)))
    assert all(c.passed for c in checks)
    own = {p.name: i for i, layer in enumerate(net.layers) for p in layer.params}
    entries = sum(min(p.value.size, 30) for p in net.params)
    first = sum(min(p.value.size, 30) for p in net.params if own[p.name] == 0)
    # The first layer runs for its own parameters' perturbations (and once per parameter for the cached input).
    assert calls[0] <= 2 * first + len(net.params) + 1, (calls, 2 * entries)
    assert calls[-1] >= 2 * entries                           # the top layer runs for every perturbation
    assert [d for _, d, _ in progress] == list(range(1, entries + 1)) and {t for *_, t in progress} == {entries}
    assert [n for n, _, _ in progress][0] == net.params[0].name


def test_gradcheck_numbers_equal_full_forward_differences():
    """Without kinks, every checked entry's difference is exactly a full forward's (same entries, h, arithmetic)."""
    import numpy as np

    from nnrun.nn.losses import SoftmaxCrossEntropy
    from nnrun.nn.numeric import check_model_gradients, error_floor

    net, X, y = gradcheck_net(activation="tanh")
    loss_fn = SoftmaxCrossEntropy()
    loss0, dscores = loss_fn.loss_and_grad(net.forward(X, train=True), y)
    net.backward(dscores)
    analytic = {p.name: p.grad.copy() for p in net.params}
    rng = np.random.default_rng(5)
    expected = []
    for p in net.params:
        flat = p.value.reshape(-1)
        indices = np.sort(rng.choice(flat.size, 20, replace=False)) if flat.size > 20 else np.arange(flat.size)
        numeric = []
        for i in indices:
            old = flat[i].item()
            flat[i] = old + 1e-5
            plus = float(loss_fn.loss(net.forward(X, train=True), y))
            flat[i] = old - 1e-5
            minus = float(loss_fn.loss(net.forward(X, train=True), y))
            flat[i] = old
            numeric.append((plus - minus) / (2 * 1e-5))
        a = analytic[p.name].reshape(-1)[indices]
        expected.append(float(np.abs(a - np.asarray(numeric)).max()))
    checks = check_model_gradients(net, loss_fn, X, y, max_entries=20, rng=np.random.default_rng(5))
    assert [c.max_abs_error for c in checks] == expected
    assert error_floor(float(loss0), 1e-5) > 0


def test_gradcheck_command_shows_progress_off_json(tmp_path):
    import json

    result = invoke("gradcheck", "configs/gradcheck.yaml", "--max-entries", "5", "--json")
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)                                  # stdout stays one JSON object


# ---- defect 8: model.dropout is a keep probability -----------------------------------------------

def test_dropout_zero_is_refused_with_what_p_means():
    message = one_line(invoke_error("validate", "configs/quickstart.yaml", "--set", "model.dropout=0"))
    assert "model.dropout" in message and "keep probability" in message
    assert "model.dropout=0.9" in message                      # a PyTorch drop rate of 0.1, written here


def test_validate_notes_a_low_keep_probability():
    result = invoke("validate", "configs/quickstart.yaml", "--set", "model.dropout=0.1")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith("dropout:"))
    assert "drops 90 % of the hidden units" in line
    note = one_line(result.stderr)
    assert "model.dropout" in note and "keep probability" in note and "model.dropout=0.9" in note
    quiet = invoke("validate", "configs/quickstart.yaml", "--set", "model.dropout=0.5")
    assert quiet.exit_code == 0 and "keep probability" not in quiet.stderr
    as_json = invoke("validate", "configs/quickstart.yaml", "--set", "model.dropout=0.1", "--json")
    assert as_json.exit_code == 0 and "keep probability" in as_json.stderr
    import json
    assert json.loads(as_json.stdout)["model"]["dropout"] == 0.1   # stdout stays one JSON object


def test_validate_notes_a_one_cycle_too_short_to_start_below_its_peak():
    """pct_start * E <= 1 puts the peak before epoch 0: the first epoch runs near lr, not lr / div_factor
    (PyTorch's OneCycleLR with total_steps=3 starts at 0.0994 for max_lr 0.1 too)."""
    short = ("--set", "optim.schedule=one_cycle", "--set", "optim.lr=0.1", "--set", "train.epochs=3")
    result = invoke("validate", "configs/quickstart.yaml", *short)
    assert result.exit_code == 0, result.output
    note = one_line(result.stderr)
    assert "optim.pct_start" in note and "0.0994" in note and "lr / div_factor = 0.004" in note
    warmed = one_line(invoke("validate", "configs/quickstart.yaml", *short[:4], "--set", "train.epochs=2",
                             "--set", "optim.warmup_epochs=1").stderr)
    assert "runs at 4e-07" in warmed                        # the warmup's ramp then starts from 2e-7
    long = invoke("validate", "configs/quickstart.yaml", *short[:4], "--set", "train.epochs=10")
    assert long.exit_code == 0 and "pct_start" not in long.stderr


# ---- defect 9: the header and footer say what ran ------------------------------------------------

def test_header_names_augmentation_warmup_and_batch_size(tmp_path):
    result = invoke("train", "configs/quickstart.yaml", "--set", "train.epochs=3", "--set", "model.hidden=[16]",
                    "--set", "augment.flip=true", "--set", "augment.translate=1", "--set", "optim.warmup_epochs=1",
                    "--set", "train.batch_size=32", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    text = one_line(result.stderr)
    assert "augmentation random left-right flips, random shifts up to 1 px (zero padding)" in text
    assert "after 1 linear warmup epoch" in text
    assert "training 3 epochs, batches of 32" in text
    plain = one_line(invoke("train", "configs/quickstart.yaml", "--set", "train.epochs=1", "--set",
                            "model.hidden=[16]", "--out", tmp_path / "p").stderr)
    assert "augmentation off" in plain and "warmup" not in plain


@pytest.mark.parametrize("restored, best, epochs, which", [(True, 4, 5, "the best epoch's, restored"),
                                                           (False, 4, 5, "the last epoch's"),
                                                           (True, 5, 5, "the last epoch's")])
def test_footer_names_the_weights_it_evaluated(restored, best, epochs, which):
    from nnrun.progress import summary_table
    from nnrun.tables import DataTable

    table = summary_table({"val_accuracy": 0.9, "train_accuracy": 0.95, "test_accuracy": 0.89, "val_loss": 0.3,
                           "train_loss": 0.2, "test_loss": 0.35, "epochs": epochs, "best_epoch": best,
                           "restored_best": restored})
    assert isinstance(table, DataTable)
    epoch = best if restored else epochs
    assert f"(epoch {epoch} weights)" in table.title
    assert "final weights" not in table.caption
    assert f"with the weights of epoch {epoch} ({which})" in table.caption


# ---- defect 6: a diverged run is told what helps -------------------------------------------------

def test_a_diverged_run_is_advised_a_lower_lr_not_resume(tmp_path):
    out = tmp_path / "r"
    result = invoke("train", "configs/quickstart.yaml", "--set", "train.epochs=2", "--set", "model.hidden=[16]",
                    "--set", "optim.lr=1e6", "--out", out)
    assert result.exit_code == 1
    message = one_line(result.stderr)
    assert "diverge again" in message and f"nnrun train {out / 'config.yaml'} --set optim.lr=100000" in message
    assert "continue with: nnrun train --resume" not in message
    refused = one_line(invoke_error("train", "--resume", out))
    assert "diverged" in refused and "--set optim.lr=100000" in refused
    advised = invoke("train", out / "config.yaml", "--set", "optim.lr=100000", "--out", tmp_path / "lower",
                     "--quiet")
    assert advised.exit_code in (0, 1) and "error" not in advised.stderr   # the advice is a command that runs


# ---- defect 7: resume with more epochs stretches schedules that depend on them -------------------

@pytest.mark.parametrize("schedule, noted", [("cosine", True), ("one_cycle", True), ("step", False),
                                             ("constant", False)])
def test_resume_with_more_epochs_names_a_stretched_schedule(tmp_path, schedule, noted):
    out = tmp_path / "r"
    first = invoke("train", "configs/quickstart.yaml", "--set", "train.epochs=4", "--set", "model.hidden=[16]",
                   "--set", f"optim.schedule={schedule}", "--out", out, "--quiet")
    assert first.exit_code == 0, first.output
    result = invoke("train", "--resume", out, "--set", "train.epochs=12", "--quiet", "--json")
    assert result.exit_code == 0, result.output
    import json
    json.loads(result.stdout)
    message = one_line(result.stderr)
    if not noted:
        assert "depends on train.epochs" not in message
        return
    rates = [json.loads(line)["lr"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert f"optim.schedule {schedule} depends on train.epochs" in message
    assert f"from {rates[3]:.3g} in epoch 4 to {rates[4]:.3g} in epoch 5" in message
    assert "will not equal" in message


# ---- defect 10: one order of runs everywhere -----------------------------------------------------

def test_sweep_json_and_runs_json_list_tied_runs_in_the_same_order(tmp_path):
    """Points that train identically (beta1 has no effect under momentum) tie on every metric: the sweep's
    --json and `nnrun runs --format json` must still list them in one order."""
    import json

    runs_dir = tmp_path / "grid"
    result = invoke("sweep", "configs/quickstart.yaml", "--set", "train.epochs=1", "--set", "model.hidden=[8]",
                    "--set", "optim.name=momentum", "--grid", "optim.beta1=0.5,0.6,0.7,0.8,0.9",
                    "--runs-dir", runs_dir, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    swept = [Path(r["run_dir"]).name for r in json.loads(result.stdout)["runs"]]
    listed = json.loads(invoke("runs", runs_dir, "--format", "json").stdout)["runs"]
    assert len({r["val_accuracy"] for r in listed}) == 1                 # a tie
    assert [Path(r["path"]).name for r in listed] == swept
    assert swept == sorted(swept)                                        # ties broken by the run's folder name


def test_one_order_breaks_an_accuracy_tie_by_val_loss_then_name():
    from nnrun.runstore import best_first

    runs = [("completed", {"val_accuracy": 0.9, "val_loss": 0.3}, "a"),
            ("completed", {"val_accuracy": 0.9, "val_loss": 0.2}, "b"),
            ("completed", {"val_accuracy": 0.95, "val_loss": 0.5}, "c"),
            ("failed", {"val_accuracy": 0.99}, "d"),
            ("completed", {"val_accuracy": 0.9, "val_loss": 0.2}, "e"),
            ("completed", {}, "f")]
    order = sorted(runs, key=lambda r: best_first(*r, metric="accuracy", higher_is_better=True))
    assert [r[2] for r in order] == ["c", "b", "e", "a", "f", "d"]
    order = sorted(runs, key=lambda r: best_first(r[0], {"val_rmse": r[1].get("val_loss")}, r[2], metric="rmse",
                                                  higher_is_better=False))
    assert [r[2] for r in order][:3] == ["b", "e", "a"]


# ---- defect 11: plots ----------------------------------------------------------------------------

def test_two_plots_within_one_second_get_two_files(tmp_path, monkeypatch):
    """The default figure name has a timestamp to the second; a second plot of the same folder within that second
    was refused ("already holds plot-epochs-....png") because the free-name check looked for the name without
    its .png."""
    import json
    import time

    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20261204-120000")
    sweep_runs(tmp_path / "grid")
    first = invoke("plot", tmp_path / "grid", "--json")
    second = invoke("plot", tmp_path / "grid", "--json")
    assert first.exit_code == 0 and second.exit_code == 0, second.output
    names = [Path(json.loads(r.stdout)["out"]).name for r in (first, second)]
    assert names == ["plot-epochs-20261204-120000.png", "plot-epochs-20261204-120000-2.png"]


def test_plot_writes_its_figure_beside_what_it_plots(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from nnrun.cli import app

    monkeypatch.chdir(tmp_path)
    sweep_runs(tmp_path / "runs" / "grid")
    result = invoke("plot", tmp_path / "runs" / "grid", "--json")
    assert result.exit_code == 0, result.output
    assert Path(json.loads(result.stdout)["out"]).parent == tmp_path / "runs" / "grid"
    runs = sorted(p for p in (tmp_path / "runs" / "grid").iterdir() if p.is_dir())
    two = invoke("plot", runs[0], runs[1], "--json")
    assert two.exit_code == 0, two.output
    assert Path(json.loads(two.stdout)["out"]).parent == (tmp_path / "runs" / "grid").resolve()
    # Without arguments: the runs folder NNRUN_RUNS_DIR names, and the figure beside them.
    sweep_runs(tmp_path / "elsewhere")
    bare = CliRunner().invoke(app, ["plot", "--json"], env={"NNRUN_RUNS_DIR": str(tmp_path / "elsewhere")})
    assert bare.exit_code == 0, bare.output
    drawn = json.loads(bare.stdout)
    assert drawn["runs"] == 12 and Path(drawn["out"]).parent == tmp_path / "elsewhere"


def test_identical_curves_are_named_in_the_legend(tmp_path):
    from nnrun.plot import plot_figure
    from tests.helpers import epoch_rows, write_run

    rows = epoch_rows([0.8, 0.9], [1.0, 0.5])
    write_run(tmp_path, "a", {"optim": {"name": "momentum", "beta1": 0.5}}, rows, {"status": "completed"})
    write_run(tmp_path, "b", {"optim": {"name": "momentum", "beta1": 0.6}}, rows, {"status": "completed"})
    write_run(tmp_path, "c", {"optim": {"name": "momentum", "beta1": 0.7}}, epoch_rows([0.7, 0.9], [1.0, 0.5]),
              {"status": "completed"})
    fig, result = plot_figure([tmp_path])
    legend = [t.get_text().replace("\n", " ") for t in fig.legends[0].get_texts()]   # long entries wrap
    assert legend[0] == "beta1=0.5"
    assert legend[1] == "beta1=0.6 (same curves as beta1=0.5: hidden under it)"
    assert legend[2] == "beta1=0.7 (same train_loss as beta1=0.5: hidden under it)"
    assert result["series"][1]["same_as"] == {"val_accuracy": "beta1=0.5", "train_loss": "beta1=0.5"}


def test_plot_title_says_mean_and_std_only_over_what_is_averaged(tmp_path):
    from nnrun.plot import plot_figure
    from tests.helpers import epoch_rows, write_run

    for lr, l2, seed in ((0.001, 0.0, 0), (0.01, 0.0001, 0), (0.001, 0.001, 1), (0.01, 0.01, 1)):
        write_run(tmp_path, f"r-{lr}-{l2}", {"seed": seed, "optim": {"lr": lr}, "regularization": {"l2": l2}},
                  epoch_rows([0.8, 0.9], [1.0, 0.5]), {"status": "completed", "val_accuracy": 0.9 + lr})
    fig, _ = plot_figure([tmp_path], x="optim.lr", hue="seed")
    title = fig.get_suptitle()
    assert "mean ± std" not in title and "one run per point (regularization.l2 also differs)" in title
    sweep_runs(tmp_path / "grid")                               # two seeds at each (lr, l2): averaged
    fig, _ = plot_figure([tmp_path / "grid"], x="optim.lr")
    assert "mean ± std over seed" in fig.get_suptitle()


def study_result(statement, means):
    """A claim's results as `nnrun.study.results` gives them, for an accuracy metric per arm."""
    arms = {}
    for name, mean in means.items():
        values = [mean - 0.002, mean + 0.002]
        arms[name] = {"metrics": {"test_accuracy": {"values": values, "mean": mean, "std": 0.0028,
                                                    "diverged_left_out": 0}},
                      "runs": [{"outcome": "completed"}] * 2, "curve": None}
    relation = {"relation": "greater", "label": "a long relation label that names both arms: "
                + " > ".join(means), "verdict": "supported", "verdict_label": "supported",
                "interval": {"estimate": 0.02, "low": 0.01, "high": 0.03}, "margin": None,
                "a": list(means)[0], "b": list(means)[1], "value": None, "metric": "test_accuracy"}
    return {"id": "claim", "statement": statement, "metric": "test_accuracy", "arms": arms,
            "relations": [relation]}


def test_study_figures_span_the_values_and_keep_whole_titles(tmp_path, monkeypatch):
    import nnrun.study.figures as figures

    drawn = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: drawn.append(fig) or path)
    statement = ("Batch normalization makes a deep network far less sensitive to its initialization scale, so that "
                 "the small, calibrated and he schemes all reach about the same validation accuracy after ten epochs")
    figures.claim_figure(study_result(statement, {"he": 0.97, "small": 0.95}), tmp_path / "claim.png")
    fig = drawn[0]
    assert " ".join(fig.get_suptitle().split()) == f"claim: {statement}"      # folded, not cut
    arms = fig.axes[0]
    low, high = arms.get_ylim()
    assert 0.9 < low < 0.95 and 0.97 < high < 1.0                             # not from 0: 0.95 and 0.97 apart
    assert not arms.patches                                                   # no bars standing on 0
    relation_title = fig.axes[1].get_title()
    assert " ".join(relation_title.split()).endswith("he > small: supported")


# ---- defect 4: no silent phase; progress on stderr whatever --json says; time left --------------------------------

def test_preparing_the_data_marks_each_slow_phase_before_the_header(tmp_path):
    from nnrun.config import load_config
    from nnrun.train import train_new

    seen = []

    class Recorder:
        def __call__(self, label):
            import contextlib

            seen.append(label)
            return contextlib.nullcontext()

    train_new(load_config(None, ["model.hidden=[8]", "train.epochs=1"]), out=tmp_path / "run", phase=Recorder())
    assert seen[0] == "loading digits" and seen[1].startswith("fitting the preprocessing on ") and len(seen) == 3


def test_a_phase_that_takes_a_second_leaves_a_line_with_its_time(monkeypatch):
    import io

    from rich.console import Console

    from nnrun import progress

    out = io.StringIO()
    lines = progress.PhaseLines(Console(file=out, width=100))
    with lines("quick"):
        pass
    monkeypatch.setattr(progress, "PHASE_LINE_SECONDS", 0.0)
    with lines("fitting the preprocessing on 49,000 rows"):
        pass
    assert "quick" not in out.getvalue()
    assert re.search(r"fitting the preprocessing on 49,000 rows: \d+\.\d s", out.getvalue())


def test_json_changes_stdout_alone_a_sweep_still_shows_its_progress_and_time_left(tmp_path):
    import json

    result = CliRunner().invoke(app, ["sweep", "configs/sweep_digits.yaml", "--grid", "optim.lr=1e-3,1e-2,3e-2",
                                      "--set", "train.epochs=1", "--runs-dir", str(tmp_path / "grid"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["completed"] == 3  # stdout: the JSON object alone
    assert "[1/3] completed" in result.stderr and "left" in result.stderr


def test_time_left_scales_the_time_per_finished_run():
    from nnrun.sweep.display import time_left

    assert time_left(10.0, 0, 5) == ""  # nothing finished yet: no guess
    assert time_left(10.0, 2, 0) == ""
    assert time_left(10.0, 2, 4) == "about 20 s left"
    assert time_left(600.0, 1, 2) == "about 20 min left"
    assert time_left(3600.0, 1, 3) == "about 3.0 h left"
