"""Issue 27, defects 1-5: tables that read at 60-160 columns, help and error messages that say the right thing,
no silent phase, a fast gradcheck with progress."""

import re

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
    message = one_line(invoke_error("study", "studies/digits_questions.yaml", "--executor", "slurm", "--dry-run"))
    assert "slurm" in message and "local, dask" in message


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
