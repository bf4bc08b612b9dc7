"""Never lose a run: checkpoints, `nnrun train --resume`, stop signals, locks, no litter.

Bit-identity is checked the strict way: the resumed run's metrics.jsonl (without timings), every
array of model.npz and the summary's metrics equal an uninterrupted run's, byte for byte.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nnrun.cli import app
from nnrun.config import load_config
from nnrun.errors import RunFailed, UserInputError
from nnrun.rundir import RunDir
from nnrun.signals import Interrupted
from nnrun.train import resume_run, run_experiment
from nnrun.trainer import Checkpoint, SilentReporter

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"seconds", "seconds_per_epoch", "run_dir"}
CASES = {
    "momentum_l2": ["optim.name=momentum", "regularization.l2=0.001", "train.epochs=6"],
    "adam_cosine": ["optim.name=adam", "optim.lr=0.003", "optim.schedule=cosine", "train.epochs=6"],
    "bn_dropout": ["model.batchnorm=true", "model.dropout=0.6", "optim.schedule=step", "optim.step_epochs=2",
                   "train.epochs=6"],
    "augmented_one_cycle": ["augment.flip=true", "augment.translate=1", "augment.padding=reflect",
                            "optim.name=sgdw", "optim.weight_decay=0.01", "optim.schedule=one_cycle",
                            "optim.warmup_epochs=1", "loss.label_smoothing=0.1", "train.epochs=6"],
}
BASE = ["model.hidden=[32, 16]", "train.batch_size=64", "train.eval_train_size=300"]


class StopAfter(SilentReporter):
    """Raises `Interrupted` when epoch `epoch` ends, as a SIGTERM arriving then would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_end(self, row):
        if row["epoch"] == self.epoch:
            raise Interrupted("SIGTERM")


def same_run(a: Path, b: Path) -> None:
    """Assert two run directories hold the same results (timings aside)."""
    rows = [[{k: v for k, v in json.loads(line).items() if k not in TIMING}
             for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (a, b)]
    assert rows[0] == rows[1]
    with np.load(a / "model.npz") as za, np.load(b / "model.npz") as zb:
        assert sorted(za.files) == sorted(zb.files)
        for key in za.files:
            assert za[key].tobytes() == zb[key].tobytes(), key
    summaries = [{k: v for k, v in json.loads((d / "summary.json").read_text()).items() if k not in TIMING}
                 for d in (a, b)]
    assert summaries[0] == summaries[1]


def train(cfg, path: Path, reporter=None) -> dict:
    with RunDir.create(path) as run:
        return run_experiment(cfg, run, reporter)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("stop_after", [2, 4])
def test_interrupted_then_resumed_equals_uninterrupted(case, stop_after, tmp_path):
    cfg = load_config(None, [*BASE, *CASES[case]])
    train(cfg, tmp_path / "straight")
    with pytest.raises(RunFailed, match="--resume"):
        train(cfg, tmp_path / "stopped", StopAfter(stop_after))
    summary = json.loads((tmp_path / "stopped" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["checkpoint_epoch"] == stop_after
    assert "SIGTERM" in summary["reason"]
    with np.load(tmp_path / "stopped" / "checkpoint.npz") as z:
        streams = json.loads(str(z["state"]))["rng_states"]
    assert ("augment" in streams) == any(s.startswith("augment.") for s in CASES[case])  # only when it draws
    resume_run(tmp_path / "stopped")
    same_run(tmp_path / "straight", tmp_path / "stopped")


def test_checkpoint_every_k_epochs_still_saves_the_last_epoch_on_a_stop(tmp_path):
    cfg = load_config(None, [*BASE, *CASES["momentum_l2"], "train.checkpoint_every=4"])
    train(cfg, tmp_path / "straight")
    with pytest.raises(RunFailed):
        train(cfg, tmp_path / "stopped", StopAfter(3))
    with np.load(tmp_path / "stopped" / "checkpoint.npz") as z:
        assert Checkpoint.from_arrays(dict(z)).epoch == 3  # not 0: the stop saved epoch 3's state
    resume_run(tmp_path / "stopped")
    same_run(tmp_path / "straight", tmp_path / "stopped")


def test_a_completed_run_trains_further_with_more_epochs_and_nothing_else_may_change(tmp_path):
    straight = load_config(None, [*BASE, *CASES["momentum_l2"]])
    train(straight, tmp_path / "straight")
    short = load_config(None, [*BASE, *CASES["momentum_l2"], "train.epochs=3"])
    train(short, tmp_path / "short")
    with pytest.raises(UserInputError, match="completed all 3 epochs"):
        resume_run(tmp_path / "short")
    with pytest.raises(UserInputError, match=r"optim.lr, regularization.l2"):
        resume_run(tmp_path / "short", ["train.epochs=6", "optim.lr=0.5", "regularization.l2=0.1"])
    resume_run(tmp_path / "short", ["train.epochs=6"])
    same_run(tmp_path / "straight", tmp_path / "short")


def test_a_diverged_run_saves_its_last_good_epoch(tmp_path):
    cfg = load_config(None, [*BASE, "optim.name=sgd", "optim.lr=1e6", "train.epochs=4"])
    with pytest.raises(RunFailed, match="lower learning rate"):
        train(cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and (tmp_path / "run" / "model.npz").is_file()
    assert summary["diverged"] is True  # what nnrun study counts as a diverged run
    with pytest.raises(RunFailed):
        train(load_config(None, [*BASE, "train.epochs=2"]), tmp_path / "stopped", StopAfter(1))
    assert json.loads((tmp_path / "stopped" / "summary.json").read_text())["diverged"] is False


def test_resume_refuses_what_it_cannot_use(tmp_path):
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "not a run directory" in result.output
    result = CliRunner().invoke(app, ["train", "configs/quickstart.yaml", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "not both" in result.output
    cfg = load_config(None, [*BASE, "train.epochs=2"])
    with pytest.raises(RunFailed):
        train(cfg, tmp_path / "run", StopAfter(1))
    np.savez(tmp_path / "run" / "checkpoint.npz", state=np.array(json.dumps({"version": 99})))
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "run")])
    assert result.exit_code == 2 and "newer than this nnrun reads" in result.output


def test_resume_of_a_folder_killed_before_its_config_says_what_nnrun_runs_says(tmp_path):
    """A run killed before it wrote config.yaml leaves only its .lock: `nnrun runs` lists it as broken with a
    reason, and --resume says the same (not just "not a run directory"), exit 2, leaving the folder as it was."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / ".lock").touch()
    result = CliRunner().invoke(app, ["train", "--resume", str(broken)])
    assert result.exit_code == 2, result.output
    assert "killed before config.yaml was written: nothing to resume; remove the folder" in result.output
    assert str(broken) in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in broken.iterdir()) == [".lock"]
    listing = CliRunner().invoke(app, ["runs", str(tmp_path), "--format", "json"])
    assert listing.exit_code == 0 and "nothing to resume; remove the folder" in listing.output, listing.output


def test_a_run_in_use_is_not_entered_twice(tmp_path):
    cfg = load_config(None, [*BASE, "train.epochs=1"])
    with RunDir.create(tmp_path / "run"):
        code = ("import sys; from nnrun.rundir import RunDir\n"
                "try:\n    RunDir.open(sys.argv[1])\nexcept Exception as e:\n    print(e)")
        (tmp_path / "run" / "config.yaml").write_text(cfg.to_yaml())
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True,
                             cwd=ROOT)
        assert "in use by another nnrun process" in out.stdout
        assert RunDir(tmp_path / "run").is_busy() and RunDir(tmp_path / "run").status() == "running"
    assert not RunDir(tmp_path / "run").is_busy() and RunDir(tmp_path / "run").status() == "interrupted"


# ---- signals, as a user or a scheduler sends them ------------------------------------------------

def nnrun(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nnrun", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


SLOW = ["configs/quickstart.yaml", "--set", "model.hidden=[512, 512]", "--set", "train.batch_size=8",
        "--set", "train.epochs=40", "--quiet"]


def test_sigterm_mid_epoch_saves_state_and_resume_finishes_it(tmp_path):
    run = tmp_path / "run"
    proc = nnrun("train", *SLOW, "--out", str(run))
    wait_for(lambda: (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().count("\n") >= 1)
    time.sleep(0.1)  # somewhere in the next epoch
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "nnrun train --resume" in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "SIGTERM" in summary["reason"]
    with np.load(run / "checkpoint.npz") as z:
        assert Checkpoint.from_arrays(dict(z)).epoch == summary["checkpoint_epoch"] >= 1
    assert not list(run.glob(".*.tmp"))
    done = subprocess.run([sys.executable, "-m", "nnrun", "train", "--resume", str(run), "--set", "train.epochs=3",
                           "--json", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "completed" and json.loads(done.stdout)["epochs"] == 3


def test_sigint_during_the_final_evaluation_still_writes_the_summary(tmp_path):
    run = tmp_path / "run"
    # The final evaluation (detail=True) sends this process a real SIGINT, as a Ctrl-C then would.
    code = textwrap.dedent("""
        import os, signal, sys
        import nnrun.train as train
        real = train.evaluate
        def evaluate(*args, detail=False, **kw):
            if detail:
                os.kill(os.getpid(), signal.SIGINT)
            return real(*args, detail=detail, **kw)
        train.evaluate = evaluate
        from nnrun.cli import main
        sys.argv = ["nnrun", "train", "configs/quickstart.yaml", "--set", "train.epochs=2", "--out", sys.argv[1],
                    "--quiet"]
        main()
    """)
    out = subprocess.run([sys.executable, "-c", code, str(run)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "final evaluation" in summary["reason"]
    assert summary["epochs"] == 2 and (run / "model.npz").is_file()
    done = CliRunner().invoke(app, ["train", "--resume", str(run), "--json", "--quiet"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["test_accuracy"] > 0.5


@pytest.mark.parametrize("when", ["model.npz", "summary.json", "after"])
def test_a_signal_once_the_run_completed_exits_0_with_the_completed_summary(tmp_path, when):
    run = tmp_path / "run"
    # SIGTERM arrives while the completed run writes its weights or its summary, or just after (reporter.end).
    code = textwrap.dedent("""
        import os, signal, sys
        import nnrun.io as io
        import nnrun.progress as progress
        when = sys.argv[2]
        real_write, real_end = io.atomic_write, progress.RichReporter.end
        def atomic_write(path, write):
            if path.name == when:
                os.kill(os.getpid(), signal.SIGTERM)
            return real_write(path, write)
        def end(self, summary):
            if when == "after":
                os.kill(os.getpid(), signal.SIGTERM)
            return real_end(self, summary)
        io.atomic_write, progress.RichReporter.end = atomic_write, end
        from nnrun.cli import main
        sys.argv = ["nnrun", "train", "configs/quickstart.yaml", "--set", "train.epochs=2", "--out", sys.argv[1],
                    "--json"]
        main()
    """)
    out = subprocess.run([sys.executable, "-c", code, str(run), when], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and json.loads(out.stdout) == summary
    assert "interrupted" not in out.stderr


def test_a_second_ctrl_c_while_saving_waits_for_the_save(tmp_path):
    run = tmp_path / "run"
    proc = nnrun("train", *SLOW, "--out", str(run))
    wait_for(lambda: (run / "metrics.jsonl").is_file())
    for _ in range(3):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.02)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    with np.load(run / "checkpoint.npz") as z:
        Checkpoint.from_arrays(dict(z))


# ---- no litter -------------------------------------------------------------------------------------

@pytest.mark.parametrize("override", ["model.hidden=[0]", "data.dataset=cifar10"])
def test_bad_config_or_missing_data_leaves_no_folder(tmp_path, override, monkeypatch):
    monkeypatch.setenv("NNRUN_DATA_ROOT", str(tmp_path / "no-data"))
    result = CliRunner().invoke(app, ["train", "configs/quickstart.yaml", "--set", override,
                                      "--out", str(tmp_path / "run"), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    result = CliRunner().invoke(app, ["train", "configs/quickstart.yaml", "--set", override,
                                      "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_run_files_follow_the_umask(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", "import os, sys; os.umask(0o022); from nnrun.cli import main; "
                           "sys.argv = ['nnrun', 'train', 'configs/quickstart.yaml', '--set', 'train.epochs=1', "
                           f"'--out', {str(out)!r}, '--quiet']; main()"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for name in ("config.yaml", "metrics.jsonl", "model.npz", "summary.json", "checkpoint.npz"):
        assert os.stat(out / name).st_mode & 0o777 == 0o644, name


def test_stale_temporaries_of_a_killed_write_are_removed_on_resume(tmp_path):
    cfg = load_config(None, [*BASE, "train.epochs=3"])
    with pytest.raises(RunFailed):
        train(cfg, tmp_path / "run", StopAfter(1))
    stale = tmp_path / "run" / ".checkpoint.npz.abc123.tmp"
    stale.write_bytes(b"half written")
    resume_run(tmp_path / "run")
    assert not stale.exists()


# ---- a checkpoint that was damaged or tampered with ------------------------------------------------

def _savez(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:  # np.savez appends .npz to a name; an open file keeps the name
        np.savez(f, **arrays)


def _edit(change):
    """A case that rewrites checkpoint.npz with `change(arrays, state)` applied (state: the parsed JSON)."""
    def build(run: Path, others: dict[str, Path]) -> None:
        with np.load(run / "checkpoint.npz") as z:
            arrays = dict(z)
        original = arrays["state"]
        state = json.loads(str(original))
        change(arrays, state)
        if arrays["state"] is original:  # the change edited the parsed state, not the entry itself
            arrays["state"] = np.array(json.dumps(state))
        _savez(run / "checkpoint.npz", arrays)
    return build


def _bytes(change):
    def build(run: Path, others: dict[str, Path]) -> None:
        path = run / "checkpoint.npz"
        path.write_bytes(change(path.read_bytes()))
    return build


def _from(other: str, name: str = "checkpoint.npz"):
    """Another run's file copied over this run's."""
    def build(run: Path, others: dict[str, Path]) -> None:
        (run / name).write_bytes((others[other] / name).read_bytes())
    return build


def _header_bomb(run: Path, others: dict[str, Path]) -> None:
    """model.fc0.W's header claims (10**12, 3072) floats: 11 TiB that must never be allocated."""
    import io
    import struct
    import zipfile

    with np.load(run / "checkpoint.npz") as z:
        arrays = dict(z)
    header = repr({"descr": "<f4", "fortran_order": False, "shape": (10**12, 3072)}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    with zipfile.ZipFile(run / "checkpoint.npz", "w") as zf:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.save(buf, value)
            data = buf.getvalue()
            if key == "model.fc0.W":
                data = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\x00" * 64
            zf.writestr(f"{key}.npy", data)


def _set(key, value):
    def change(arrays, state):
        state[key] = value
    return change


def _array(key, value):
    def change(arrays, state):
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value(arrays[key]) if callable(value) else value
    return change


def _bad_state(arrays, state):
    arrays["state"] = np.array('{"epoch": 2, "rows": [')


def _renumber_rows(arrays, state):
    state["rows"][1]["epoch"] = -4


def _best_epoch(arrays, state):
    state["best_epoch"] = 1 if state["best_epoch"] != 1 else 2


def _drop_stream(arrays, state):
    del state["rng_states"]["dropout"]


def _garble_stream(arrays, state):
    state["rng_states"]["shuffle"] = {"bit_generator": "PCG64", "state": {"state": "x", "inc": []}}


TAMPERED = {
    "truncated": (_bytes(lambda b: b[: len(b) // 2]), "checkpoint.npz"),
    "bit_flip": (_bytes(lambda b: b[:len(b) // 3] + bytes([b[len(b) // 3] ^ 0x10]) + b[len(b) // 3 + 1:]),
                 "checkpoint.npz"),
    "header_bomb": (_header_bomb, "declares shape"),
    "other_config": (_from("small"), "another model"),
    "batchnorm_into_plain": (_from("bn"), "another model"),
    "state_not_json": (_edit(_bad_state), "not readable JSON"),
    "state_a_list": (_edit(lambda a, s: a.__setitem__("state", np.array("[1, 2]"))), "JSON object"),
    "epoch_minus_5": (_edit(_set("epoch", -5)), "epoch must be a whole number >= 1"),
    "epoch_as_text": (_edit(_set("epoch", "2")), "epoch must be a whole number"),
    "epoch_moved_on": (_edit(_set("epoch", 3)), "optim.#t is 42; 3 epochs of 21 steps take 63"),
    "row_dropped": (_edit(lambda a, s: s.__setitem__("rows", s["rows"][:1])), "1 metric rows for epoch 2"),
    "rows_renumbered": (_edit(_renumber_rows), "numbered -4"),
    "best_epoch_moved": (_edit(_best_epoch), "best_epoch"),
    "stopped_early_without_patience": (_edit(_set("stopped_early", True)), "stopped_early"),
    "stream_missing": (_edit(_drop_stream), "random streams"),
    "stream_garbled": (_edit(_garble_stream), "'shuffle' has an unusable state"),
    "momentum_injected": (_edit(_array("optim.#momentum", np.array(0.0))), "Adam keeps no state #momentum"),
    "weight_decay_injected": (_edit(_array("optim.#weight_decay", np.array(5, np.int64))), "#weight_decay"),
    "adam_t_moved": (_edit(_array("optim.#t", lambda t: t + 1)), "optim.#t is"),
    "adam_t_float": (_edit(_array("optim.#t", lambda t: t.astype(np.float64))), "whole number >= 0"),
    "slot_float64": (_edit(_array("optim.fc0.W/m", lambda m: m.astype(np.float64))), "fc0.W/m is float64"),
    "slot_reshaped": (_edit(_array("optim.fc1.b/v", lambda v: v[:-1])), "fc1.b/v is float32 (15,)"),
    "slot_missing": (_edit(_array("optim.fc2.W/v", None)), "lacks fc2.W/v"),
    "slot_of_another_rule": (_edit(_array("optim.fc0.W/velocity", np.zeros((64, 32), np.float32))),
                             "keeps no state fc0.W/velocity"),
    "slot_text": (_edit(_array("optim.fc0.b/m", lambda m: m.astype(str))), "fc0.b/m"),
    "weights_nan": (_edit(_array("model.fc1.W", lambda w: w * np.nan)), "model.fc1.W holds values that are not"),
    "weights_int": (_edit(_array("model.fc1.b", lambda b: b.astype(np.int64))), "model.fc1.b is int64"),
    "best_missing": (_edit(_array("best.fc0.W", None)), "lacks best.fc0.W"),
    "stray_entry": (_edit(_array("extra", np.zeros(3))), "unknown entries extra"),
    "split_corrupt": (lambda run, o: (run / "split.npz").write_bytes(b"PK\x03\x04 not a zip"), "split.npz"),
    "split_other_rows": (_from("other_seed", "split.npz"), "other rows"),
}
"""How a stopped Adam run's checkpoint.npz (or split.npz) is damaged, and what the refusal must say."""


@pytest.fixture(scope="module")
def stopped_runs(tmp_path_factory):
    """Runs stopped after epoch 2 of 4: the Adam run the cases damage, and runs of other configs to borrow from."""
    root = tmp_path_factory.mktemp("stopped")
    base = [*BASE, *CASES["adam_cosine"], "train.epochs=4"]
    configs = {"adam": base, "small": [*base, "model.hidden=[16]"], "bn": [*base, "model.batchnorm=true"],
               "other_seed": [*base, "seed=7"]}
    for name, overrides in configs.items():
        with pytest.raises(RunFailed):
            train(load_config(None, overrides), root / name, StopAfter(2))
    return {name: root / name for name in configs}


def _files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_damaged_or_tampered_checkpoint_is_refused_with_one_message(case, stopped_runs, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(stopped_runs["adam"], run, ignore=shutil.ignore_patterns(".lock"))
    build, expected = TAMPERED[case]
    build(run, stopped_runs)
    before = _files(run)
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["train", "--resume", str(run), "--quiet"])
    assert time.perf_counter() - started < 5
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output) < 2000, result.output
    assert expected in result.output, result.output
    assert _files(run) == before  # refused before anything was written


@pytest.mark.parametrize("name", ["preprocess.npz", "targets.npz"])
def test_a_corrupt_file_the_resume_recomputes_is_rewritten_and_the_run_is_unchanged(name, stopped_runs, tmp_path):
    import shutil

    cfg = load_config(None, [*BASE, *CASES["adam_cosine"], "train.epochs=4"])
    train(cfg, tmp_path / "straight")
    run = tmp_path / "run"
    shutil.copytree(stopped_runs["adam"], run, ignore=shutil.ignore_patterns(".lock"))
    (run / name).write_bytes(b"PK\x03\x04 damaged")
    resume_run(run)
    same_run(tmp_path / "straight", run)
    assert (run / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()
    result = CliRunner().invoke(app, ["evaluate", str(run), "--split", "test"])
    assert result.exit_code == 0, result.output


def test_an_optimizer_restores_only_the_state_it_declares():
    from nnrun.optim import SGDW, Adam

    opt = SGDW(momentum=0.9, weight_decay=0.01)
    with pytest.raises(ValueError, match="keeps no state #momentum"):
        opt.load_state_dict({"#momentum": np.array(0), "fc0.W/velocity": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="keeps no state #weight_decay"):
        opt.load_state_dict({"#weight_decay": np.array(1)})
    assert (opt.momentum, opt.weight_decay, opt.state) == (0.9, 0.01, {})
    adam = Adam()
    adam.load_state_dict({"#t": np.array(7), "fc0.W/m": np.ones(2, np.float32), "fc0.W/v": np.ones(2, np.float32)})
    assert adam.t == 7 and set(adam.state["fc0.W"]) == {"m", "v"}
