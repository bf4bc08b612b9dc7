"""A run directory on disk: the files one training run writes and reads back, and who owns it.

A run directory holds:
- `config.yaml`: the resolved config (overrides applied), written first;
- `provenance.json`: where the run came from (versions, command line, machine, times, peak memory;
  see `nnrun.provenance`), written at the start and completed at the end;
- `split.npz`: the rows of each split (`nnrun.datasets.SplitRecord`);
- `preprocess.npz`: the fitted preprocessing statistics;
- `targets.npz`: what the outputs mean (target kind, names, fitted target statistics);
- `metrics.jsonl`: one JSON object per epoch;
- `checkpoint.npz`: the training state after the last saved epoch (see `nnrun.trainer.Checkpoint`),
  from which `nnrun train --resume` continues;
- `model.npz`: weights and buffers by name (see the README for the keys);
- `predictions.npz`: the test split's predictions and scores (only with `train.save_predictions`);
- `summary.json`: final status and metrics, written last.
Every file is written atomically (temporary name in the same folder, then rename). Every .npz is read back
through the data files' checks (`nnrun.datasets.safe.read_npz_arrays`: members counted, headers read before
arrays, no header or zip bombs, no objects), since a run directory may come from anywhere.

Ownership: a process that trains into a run directory holds its lock (`.lock`, through the
`filelock` library: an OS file lock, released when the process dies, SIGKILL included), so two
`nnrun train` runs or sweeps never write one directory at once. `status()` tells a finished run
(its summary's status), one in progress (`running`: the lock is held), one that stopped
without a summary (`interrupted`: killed; resumable) and one killed before it wrote its
config.yaml (`broken`: only the lock file is left; nothing to resume, remove the folder).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from nnrun.datasets.safe import read_npz_arrays
from nnrun.errors import UserInputError
from nnrun.io import check_output_folder, remove_stale_temporaries, write_json, write_npz, write_text

RUN_FILES = ("config.yaml", "provenance.json", "split.npz", "preprocess.npz", "targets.npz", "metrics.jsonl",
             "checkpoint.npz", "model.npz", "predictions.npz", "summary.json")
"""The files of a run directory, in the order a run writes them."""
RUN_LAYOUT_VERSION = 1
"""Version of the run directory layout this nnrun writes (provenance.json's `layout_version`); `load_run`
refuses a run written in a newer one."""
LOCK_FILE = ".lock"
"""The lock file a process holds while it trains into the run directory."""
CLAIM_TIMEOUT = 2.0
"""Seconds `claim` waits for a lock (a listing may hold it for a moment to see whether it is free)."""
RUNNING = "running"
"""Status of a run directory whose lock is held: a process is training into it now."""
INTERRUPTED = "interrupted"
"""Status of a run that stopped without a summary (killed) or saved one saying so: resumable."""
BROKEN = "broken"
"""Status of a folder whose run was killed before it wrote config.yaml: it holds the lock file and nothing to
resume."""
BROKEN_REASON = "killed before config.yaml was written: nothing to resume; remove the folder"
"""What a broken run directory is (the `reason` `nnrun runs` shows)."""
RUN_FILE_MEMBERS = 16
"""Most arrays a run's split, preprocess, targets or predictions .npz may hold (each holds at most 14)."""
MODEL_MEMBERS_PER_LAYER = 6
"""Arrays model.npz holds per Linear layer: fc{i}.W and fc{i}.b, and with BatchNorm bn{i}'s four."""


class RunDir:
    """One run's folder: `create` (a new run), `create_unique` (a new timestamped folder) or `open` (an
    existing run, to resume it) claim its lock; `release()` or the end of a `with` block gives it back."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock: FileLock | None = None

    # -- ownership --

    @classmethod
    def create(cls, path: str | Path, overwrite: bool = False) -> RunDir:
        """Make the folder and claim it; one that holds files is an error unless `overwrite` (old run files go)."""
        path = check_output_folder(path, None, overwrite, what="run directory",
                                   hint="choose another --out, pass --overwrite, or continue it with --resume")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserInputError(f"cannot create run directory {path}: {e.strerror}") from None
        run = cls(path)
        run.claim()
        if not overwrite and any(p.name != LOCK_FILE for p in path.iterdir()):  # filled while we waited
            run.release()
            raise UserInputError(f"run directory {path} already holds files; choose another --out, "
                                 "pass --overwrite, or continue it with --resume")
        run.reset()
        return run

    @classmethod
    def create_unique(cls, runs_root: str | Path, name: str) -> RunDir:
        """A new folder `runs_root/<name>-<YYYYmmdd-HHMMSS>` (a numeric suffix when taken), claimed.

        The folder is made with an exclusive `mkdir`, so two runs started in the same second never share one.
        """
        root = Path(runs_root)
        try:
            root.mkdir(parents=True, exist_ok=True)
            for n in range(1, 10_000):
                path = timestamped_path(root, name, n)
                try:
                    path.mkdir()
                except FileExistsError:
                    continue
                run = cls(path)
                run.claim()
                return run
        except OSError as e:
            raise UserInputError(f"cannot create a run directory under {root}: {e.strerror or e}") from None
        raise UserInputError(f"cannot find a free run directory name under {root} for {name}")

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory, claimed (to resume it); its stale temporary files are removed."""
        path = Path(path)
        if not (path / "config.yaml").is_file():
            raise UserInputError(f"{path} is not a run directory (no config.yaml)")
        run = cls(path)
        run.claim()
        run.remove_temporaries()
        return run

    def claim(self, timeout: float = CLAIM_TIMEOUT) -> None:
        """Hold the lock, or raise `UserInputError` when another process trains into this folder."""
        if not self.try_claim(timeout):
            raise UserInputError(f"run directory {self.path} is in use by another nnrun process; "
                                 "wait for it to finish or stop it first")

    def try_claim(self, timeout: float = 0.0) -> bool:
        """Hold the lock if it is free within `timeout` seconds; False when another process holds it."""
        if self._lock is not None:
            return True
        lock = FileLock(self.path / LOCK_FILE)
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            return False
        except OSError as e:
            raise UserInputError(f"cannot lock run directory {self.path}: {e.strerror or e}") from None
        self._lock = lock
        return True

    def release(self) -> None:
        """Give the lock back (nothing when not held)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def is_busy(self) -> bool:
        """Whether another process holds the lock now (a folder that cannot be locked counts as free)."""
        if self._lock is not None or not (self.path / LOCK_FILE).exists():
            return False
        try:
            if self.try_claim(0.0):
                self.release()
                return False
        except UserInputError:
            return False
        return True

    def remove_temporaries(self) -> None:
        """Remove the temporary files a killed write left (only while the run is owned)."""
        remove_stale_temporaries(self.path, RUN_FILES)

    def reset(self) -> None:
        """Remove every run file and temporary, for a fresh run in this folder (only while the run is owned)."""
        for stale in RUN_FILES:
            (self.path / stale).unlink(missing_ok=True)
        self.remove_temporaries()

    # -- writing --

    def write_config(self, config_yaml: str) -> Path:
        return write_text(self.path / "config.yaml", config_yaml)

    def write_provenance(self, provenance: dict[str, Any]) -> Path:
        """provenance.json: `layout_version` (this nnrun's run directory layout), then `provenance`."""
        return write_json(self.path / "provenance.json", {"layout_version": RUN_LAYOUT_VERSION, **provenance})

    def write_split(self, arrays: dict[str, np.ndarray]) -> Path:
        return write_npz(self.path / "split.npz", arrays)

    def write_preprocess(self, statistics: dict[str, np.ndarray]) -> Path:
        return write_npz(self.path / "preprocess.npz", statistics)

    def write_targets(self, arrays: dict[str, np.ndarray]) -> Path:
        return write_npz(self.path / "targets.npz", arrays)

    def write_metrics(self, rows: list[dict[str, Any]]) -> Path:
        return write_text(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    def write_checkpoint(self, arrays: dict[str, np.ndarray]) -> Path:
        return write_npz(self.path / "checkpoint.npz", arrays)

    def write_model(self, state: dict[str, np.ndarray]) -> Path:
        return write_npz(self.path / "model.npz", state)

    def write_predictions(self, arrays: dict[str, np.ndarray]) -> Path:
        return write_npz(self.path / "predictions.npz", arrays)

    def write_summary(self, summary: dict[str, Any]) -> Path:
        return write_json(self.path / "summary.json", summary)

    # -- reading --

    def read_config_text(self) -> str | None:
        """config.yaml as text, or None when it cannot be read."""
        try:
            return (self.path / "config.yaml").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def read_summary(self) -> dict[str, Any] | None:
        """The summary, or None when the run has not finished writing one."""
        return self._read_json("summary.json")

    def read_provenance(self) -> dict[str, Any] | None:
        """provenance.json, or None when there is none (a run from before it existed) or it cannot be read."""
        return self._read_json("provenance.json")

    def _read_json(self, name: str) -> dict[str, Any] | None:
        try:
            value = json.loads((self.path / name).read_text())
        except (OSError, ValueError, RecursionError):  # nested past the decoder's depth: as unreadable
            return None
        return value if isinstance(value, dict) else None

    def read_arrays(self, name: str, max_members: int = RUN_FILE_MEMBERS) -> dict[str, np.ndarray]:
        """The arrays of the run's file `name` (an .npz of at most `max_members` arrays), read through the data
        files' checks; a missing, unreadable or oversized one is a `UserInputError` naming the file."""
        path = self.path / name
        if not path.is_file():
            raise UserInputError(f"run directory {self.path} has no {name}")
        return read_npz_arrays(path, what=f"run directory {self.path}", max_members=max_members)

    def read_metrics(self) -> list[dict[str, Any]]:
        """The rows of metrics.jsonl, one per finished epoch ([] when there is none; unreadable lines skipped)."""
        try:
            lines = (self.path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return []
        rows = []
        for line in lines:
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows

    def epochs_done(self) -> int:
        """Lines of metrics.jsonl: the epochs this run has finished so far."""
        try:
            with open(self.path / "metrics.jsonl", "rb") as f:
                return sum(1 for _ in f)
        except OSError:
            return 0

    def status(self) -> str:
        """The summary's status; else `running` while the lock is held, `interrupted` when it is not, and
        `broken` when neither the summary nor config.yaml was written (killed before its first file)."""
        summary = self.read_summary()
        if summary is not None and summary.get("status"):
            return str(summary["status"])
        if self.is_busy():
            return RUNNING
        return INTERRUPTED if (self.path / "config.yaml").is_file() or summary is not None else BROKEN


def timestamped_path(root: str | Path, name: str, n: int = 1) -> Path:
    """`root/<name>-<YYYYmmdd-HHMMSS>`, with `-n` appended for n > 1 (the default output folder of a command)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(root) / (f"{name}-{stamp}" if n == 1 else f"{name}-{stamp}-{n}")


def free_timestamped_path(root: str | Path, name: str, suffix: str = "") -> Path:
    """The first `timestamped_path` under `root` that, with `suffix` appended (a file's `.png`), does not exist
    yet (not created); returned with the suffix."""
    n = 1
    while os.path.lexists(path := Path(f"{timestamped_path(root, name, n)}{suffix}")):
        n += 1
    return path
