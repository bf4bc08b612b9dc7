"""Curating runs: `nnrun tag`, `nnrun note`, `nnrun runs rm|archive|restore`, and `nnrun diff` of N runs."""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from nnrun import curate
from nnrun.curate import rename_noreplace
from nnrun.diff import diff_runs, diff_view
from nnrun.labels import LABELS_FILE, read_labels
from nnrun.rundir import RunDir
from nnrun.runs import runs_report
from tests.helpers import epoch_rows, invoke, invoke_error, invoke_json, write_run

ROOT = Path(__file__).resolve().parent.parent


def completed(acc, **extra):
    return {"status": "completed", "epochs": 2, "best_epoch": 2, "val_accuracy": acc, "test_accuracy": acc - 0.01,
            "val_loss": 1 - acc, "seconds": 1.5, **extra}


@pytest.fixture
def runs(tmp_path):
    """Four runs: a (lr 0.1), b (lr 0.01), c (failed), d (lr 0.1, another width); returns their folder."""
    root = tmp_path / "runs"
    write_run(root, "a", {"optim": {"lr": 0.1}}, epoch_rows([0.8, 0.9], [1.0, 0.5]), completed(0.9))
    write_run(root, "b", {"optim": {"lr": 0.01}}, epoch_rows([0.7, 0.8], [1.1, 0.6]), completed(0.8))
    write_run(root, "c", {"optim": {"lr": 10.0}}, epoch_rows([0.1], [9.0]),
              {"status": "failed", "epochs": 1, "reason": "loss became nan in epoch 2"})
    write_run(root, "d", {"optim": {"lr": 0.1}, "model": {"hidden": [8]}}, epoch_rows([0.5, 0.6], [1.2, 0.9]),
              completed(0.6))
    return root


def snapshot(root):
    """Every path under `root` with its bytes (files) or None (folders)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def names(root):
    return sorted(p.name for p in root.iterdir())


# ---- tags and notes ------------------------------------------------------------------------------------------

def test_tags_and_notes_are_shown_filtered_and_exported(runs):
    assert invoke("tag", runs / "a", "group=baseline", "stage=2").exit_code == 0
    assert invoke("tag", runs, "--filter", "optim.lr=0.01", "keep=yes").exit_code == 0      # a folder, filtered
    assert read_labels(runs / "b").tags == {"keep": "yes"} and not read_labels(runs / "d")
    curate.note([runs / "a"], "first try")
    assert invoke("note", runs / "a", "--append", "lr looks fine").exit_code == 0
    assert read_labels(runs / "a").note == "first try\nlr looks fine"
    curate.note([runs / "b"], "replaced later")
    curate.note([runs / "b"], "the note")                                              # a note is replaced
    assert read_labels(runs / "b").note == "the note"

    listing = runs_report(runs, filters=["tag.group=baseline"], output="json")
    assert [r["run"] for r in listing["runs"]] == ["a"]
    assert listing["runs"][0]["tags"] == {"group": "baseline", "stage": "2"}
    assert listing["runs"][0]["note"] == "first try\nlr looks fine"
    assert [r["run"] for r in runs_report(runs, filters=["tag.keep=yes"], output="json")["runs"]] == ["b"]
    assert runs_report(runs, filters=["tag.group!=baseline"], output="json")["count"] == 3
    csv_rows = runs_report(runs, columns=["run,tag.*,note"], sort="run", output="csv").splitlines()
    assert csv_rows[:3] == ["run,tag.group,tag.stage,tag.keep,note", "a,baseline,2,,first try | lr looks fine",
                            "b,,,yes,the note"]
    table = invoke("runs", runs)                        # tags and notes are default columns once a run has them
    assert table.exit_code == 0 and "group=baseline, stage=2" in table.stdout and "the note" in table.stdout

    assert invoke_json("tag", runs / "a", "--rm", "stage")["runs"][0]["tags"] == {"group": "baseline"}
    assert invoke("note", runs / "a", "--clear").exit_code == 0 and read_labels(runs / "a").note is None
    shown = invoke("tag", runs / "b")                   # without tags: shows them, on stdout
    assert shown.exit_code == 0 and "keep=yes" in shown.stdout and "the note" in shown.stdout


BAD_TAGS = [
    (["a", "group"], "'group'"),                         # no =
    (["a", "1group=x"], "'1group'"),                     # not a name
    (["a", "group="], "empty"),
    (["a", "g=1", "g=2"], "given twice"),
    (["a", "group=\x1b[31m"], "control characters"),
    (["a", "--rm", "nosuch"], "'nosuch'"),               # no selected run has it
    (["missing", "group=x"], "missing: no such run directory"),
]


def test_bad_input_exits_2_naming_it_and_changes_nothing(runs):
    before = snapshot(runs)
    for (target, *rest), named in BAD_TAGS:
        assert named in invoke_error("tag", runs / target, *rest), (target, rest)
    assert "empty" in invoke_error("note", runs / "a", "  ")
    assert "--clear" in invoke_error("note", runs / "a", "x", "--clear")
    assert "holds no runs" in invoke_error("note", runs.parent, "text")
    assert snapshot(runs) == before


def test_an_unreadable_labels_file_is_skipped_in_listings_and_never_replaced(runs):
    (runs / "a" / LABELS_FILE).write_text("{not json")
    assert runs_report(runs, output="json")["count"] == 4
    assert "labels.json" in invoke_error("tag", runs / "a", "group=x")
    assert (runs / "a" / LABELS_FILE).read_text() == "{not json"


def test_labelling_a_run_in_use_is_safe(runs):
    """A run that trains holds its lock: tags and notes go on (their own lock), and the run's lock stays held."""
    (runs / "a" / "summary.json").unlink()                                  # a trains now: no summary yet
    with RunDir(runs / "a") as run:
        run.claim()
        assert invoke("tag", runs / "a", "group=live").exit_code == 0
        assert invoke("note", runs / "a", "watching it").exit_code == 0
        assert RunDir(runs / "a").is_busy()
        assert runs_report(runs / "a", output="json")["runs"][0]["status"] == "running"
    assert read_labels(runs / "a").tags == {"group": "live"} and read_labels(runs / "a").note == "watching it"


TAGGER = """
import sys, time
from pathlib import Path
from nnrun.labels import note_run, tag_run
run, who, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
while not (run.parent / "go").exists():
    time.sleep(0.002)
for i in range(n):
    tag_run(run, {f"{who}{i}": str(i)})
    note_run(run, f"{who}{i}", append=True)
"""


def test_two_taggers_at_once_lose_nothing(runs):
    """Two processes tag and append to the note of one run at once: every tag and every line is kept."""
    n = 30
    procs = [subprocess.Popen([sys.executable, "-c", TAGGER, str(runs / "a"), who, str(n)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for who in ("x", "y")]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    (runs / "go").touch()
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    labels = read_labels(runs / "a", strict=True)
    assert set(labels.tags) == {f"{who}{i}" for who in "xy" for i in range(n)}
    assert sorted(labels.note.splitlines()) == sorted(f"{who}{i}" for who in "xy" for i in range(n))


# ---- rm, archive, restore ------------------------------------------------------------------------------------

def test_rm_by_filter_removes_exactly_the_matching_runs(runs):
    result = invoke("runs", "rm", runs, "--filter", "status=failed", "--yes")
    assert result.exit_code == 0, result.output
    assert names(runs) == ["a", "b", "d"]
    assert "removed" in result.stderr and "/c" in result.stderr


def test_rm_of_a_linked_run_removes_the_link_never_its_target(runs, tmp_path):
    write_run(tmp_path / "elsewhere", "e", {"optim": {"lr": 0.5}}, epoch_rows([0.6, 0.7], [1.0, 0.8]), completed(0.7))
    def unlocked():  # the run's files, without the lock files taking its locks leaves behind
        return {path: data for path, data in snapshot(tmp_path / "elsewhere").items() if not path.endswith(".lock")}

    target = unlocked()
    (runs / "e").symlink_to(tmp_path / "elsewhere" / "e")
    result = invoke("runs", "rm", runs / "e", "--yes")
    assert result.exit_code == 0, result.output
    assert names(runs) == ["a", "b", "c", "d"]
    assert unlocked() == target


@pytest.mark.parametrize("action", ["rm", "archive"])
def test_a_run_in_use_is_never_removed_or_archived(runs, action):
    (runs / "b" / "summary.json").unlink()                                  # b trains now: no summary yet
    before = snapshot(runs)
    with RunDir(runs / "b") as run:
        run.claim()
        stderr = invoke_error("runs", action, runs / "b", "--yes")
        assert "in use" in stderr and "/b" in stderr
        stderr = invoke_error("runs", action, runs, "--yes")                 # b among others
        assert "in use" in stderr and "status!=running" in stderr
        assert snapshot(runs) == before                                     # not one run taken
        result = invoke("runs", action, runs, "--filter", "status!=running", "--yes")   # b left out
        assert result.exit_code == 0, result.output
        assert [p for p in names(runs) if not p.startswith(".")] == ["b"]


@pytest.mark.parametrize("action", ["rm", "archive", "restore"])
def test_dry_run_changes_nothing(runs, action):
    if action == "restore":
        assert invoke("runs", "archive", runs / "a", runs / "c", "--yes").exit_code == 0
    before = snapshot(runs)
    shown = invoke("runs", action, runs, "--dry-run")
    assert shown.exit_code == 0 and "would" in shown.stderr and "/c" in shown.stderr, shown.output
    listed = invoke_json("runs", action, runs, "--dry-run")
    assert listed["dry_run"] and not any(r["done"] for r in listed["runs"])
    assert len(listed["runs"]) == (2 if action == "restore" else 4)
    assert snapshot(runs) == before


def test_confirmation(runs, monkeypatch):
    from typer.testing import CliRunner

    from nnrun.cli import app

    before = snapshot(runs)
    stderr = invoke_error("runs", "rm", runs / "a")             # stdin is not a terminal, and no --yes
    assert "--yes" in stderr and "not a terminal" in stderr
    monkeypatch.setattr(curate, "interactive", lambda: True)
    declined = CliRunner().invoke(app, ["runs", "rm", str(runs / "a")], input="n\n")
    assert declined.exit_code == 1 and "nothing removed" in declined.stderr
    assert snapshot(runs) == before
    accepted = CliRunner().invoke(app, ["runs", "rm", str(runs / "a")], input="y\n")
    assert accepted.exit_code == 0 and not (runs / "a").exists()


def test_archive_hides_runs_and_restore_brings_them_back(runs):
    curate.tag([runs / "a"], ["keep=yes"])
    assert invoke("runs", "archive", runs, "--filter", "optim.lr=0.1", "--yes").exit_code == 0
    assert names(runs / ".archive") == ["a", "d"]
    assert sorted(r["run"] for r in runs_report(runs, recursive=True, output="json")["runs"]) == ["b", "c"]
    archived = json.loads(invoke("runs", runs, "--format", "json", "--archived").stdout)
    assert sorted((r["run"], r["tags"]) for r in archived["runs"]) == [("a", {"keep": "yes"}), ("d", None)]
    assert "archived already" in invoke_error("runs", "archive", runs / ".archive" / "a", "--yes")
    assert "not archived" in invoke_error("runs", "restore", runs / "b", "--yes")
    # FOLDER/RUN names an archived run as it was; --filter selects among the archived ones
    assert invoke("runs", "restore", runs / "d", "--yes").exit_code == 0
    assert invoke("runs", "restore", runs, "--filter", "tag.keep=yes", "--yes").exit_code == 0
    assert names(runs) == ["a", "b", "c", "d"]                                 # the empty .archive/ goes too
    assert read_labels(runs / "a").tags == {"keep": "yes"}


def test_name_collisions_never_overwrite(runs):
    curate.carry_out(curate.plan("archive", [runs / "a"]))
    write_run(runs, "a", {"seed": 7}, summary=completed(0.5))                  # a new run of the same name
    before = snapshot(runs)
    assert "exists" in invoke_error("runs", "restore", runs / ".archive" / "a", "--yes")
    assert "exists" in invoke_error("runs", "archive", runs / "a", runs / "b", "--yes")
    assert snapshot(runs) == before                                            # b was not archived either
    (runs / "empty").mkdir()
    with pytest.raises(FileExistsError):
        rename_noreplace(runs / "b", runs / "empty")                          # not even over an empty folder
    assert (runs / "b" / "config.yaml").is_file()


def test_bad_selection_exits_2(runs):
    assert "no such run directory" in invoke_error("runs", "rm", runs / "nope", "--yes")
    (runs.parent / "empty").mkdir()
    assert "holds no runs" in invoke_error("runs", "archive", runs.parent / "empty", "--yes")
    assert "did you mean 'status'" in invoke_error("runs", "rm", runs, "--filter", "stauts=failed", "--yes")
    assert "no archived runs" in invoke_error("runs", "restore", runs, "--yes")


def test_runs_still_lists_a_folder_and_takes_its_options(runs, monkeypatch):
    assert "4 runs" in invoke("runs", runs).stdout
    assert json.loads(invoke("runs", "--format", "json", runs).stdout)["count"] == 4
    write_run(runs.parent / "rm", "r1", summary=completed(0.5))
    monkeypatch.chdir(runs.parent)
    assert "1 run in rm" in invoke("runs", "./rm").stdout                     # a folder named like a command
    assert "table|csv|json" in invoke("runs", "--help").stdout


# ---- diff of N runs -------------------------------------------------------------------------------------------

def test_diff_of_more_than_two_runs(runs):
    curate.tag([runs / "a"], ["group=base"])
    curate.note([runs / "b"], "smaller lr")
    result = invoke_json("diff", runs / "a", runs / "b", runs / "d")
    assert result["letters"] == ["A", "B", "C"]
    assert sorted(row["key"] for row in result["config"]) == ["model.hidden", "optim.lr"]   # only what differs
    assert [row["values"] for row in result["config"] if row["key"] == "optim.lr"] == [[0.1, 0.01, 0.1]]
    assert result["tags"] == [{"key": "tag.group", "values": ["base", None, None]}]
    assert result["notes"] == [None, "smaller lr", None]
    metrics = {row["metric"]: row for row in result["metrics"]}
    assert metrics["val_accuracy"]["values"] == [0.9, 0.8, 0.6] and metrics["val_accuracy"]["best"] == 0
    assert metrics["val_loss"]["best"] == 0                                    # the lowest loss
    assert metrics["epochs"]["best"] is None and "difference" not in metrics["val_accuracy"]
    pair = diff_runs(runs / "a", runs / "b")                                   # two runs: as before, and B - A
    assert pair["a"] == str(runs / "a") and pair["metrics"][0]["difference"] == pytest.approx(-0.1)


@pytest.mark.parametrize("width", [60, 80])
def test_diff_of_six_runs_fits_the_width_with_whole_numbers(tmp_path, width):
    paths = [write_run(tmp_path, f"run-with-a-long-name-{i}",
                       {"optim": {"lr": 10.0 ** -i}, "model": {"hidden": [512, 256 + i]}, "seed": i},
                       summary=completed(0.9 + i / 1000, seconds=12345.0 + 1000 * i)) for i in range(6)]
    curate.note([paths[1]], "a note long enough to need folding when it is shown at sixty or eighty columns")
    out = io.StringIO()
    Console(file=out, width=width, no_color=True).print(diff_view(diff_runs(*paths)))
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= width, text
    for value in ("0.9000", "0.9050", "1e-05", "[512, 261]", "12345", "17345"):
        assert value in text, (value, text)


def test_diff_input_errors(runs):
    assert invoke("diff", runs / "a").exit_code == 2                           # one run: RUN_B missing
    assert "again" in invoke_error("diff", runs / "a", runs / "b", runs / "a")
    assert "RUN_C" in invoke_error("diff", runs / "a", runs / "b", runs / "nope")
    assert "at most 26" in invoke_error("diff", *[runs / "a"] * 27)
