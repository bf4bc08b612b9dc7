"""A run directory on disk: the files one training run writes and reads back.

A run directory holds:
- `config.yaml`: the resolved config (overrides applied), written first;
- `preprocess.npz`: the fitted preprocessing statistics;
- `targets.npz`: what the outputs mean (target kind, names, fitted target statistics);
- `metrics.jsonl`: one JSON object per epoch;
- `model.npz`: weights and buffers by name (see the README for the keys);
- `summary.json`: final status and metrics, written last.
Every file is written atomically (temporary name in the same folder, then rename).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from nnrun.errors import UserInputError
from nnrun.io import check_output_folder, write_json, write_npz, write_text

RUN_FILES = ("config.yaml", "preprocess.npz", "targets.npz", "metrics.jsonl", "model.npz", "summary.json")
"""The files of a run directory, in the order a run writes them."""


class RunDir:
    """One run's folder. `RunDir.create(path, overwrite)` refuses to reuse a folder that holds files."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path, overwrite: bool = False) -> RunDir:
        """Make the folder; an existing non-empty one is an error unless `overwrite` (which removes old run files)."""
        path = check_output_folder(path, None, overwrite, what="run directory",
                                   hint="choose another --out or pass --overwrite")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserInputError(f"cannot create run directory {path}: {e.strerror}") from None
        for stale in RUN_FILES[1:]:
            (path / stale).unlink(missing_ok=True)
        return cls(path)

    def write_config(self, config_yaml: str) -> Path:
        return write_text(self.path / "config.yaml", config_yaml)

    def write_preprocess(self, statistics: dict[str, np.ndarray]) -> Path:
        return write_npz(self.path / "preprocess.npz", statistics)

    def write_targets(self, arrays: dict[str, np.ndarray]) -> Path:
        return write_npz(self.path / "targets.npz", arrays)

    def write_metrics(self, rows: list[dict[str, Any]]) -> Path:
        return write_text(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    def write_model(self, state: dict[str, np.ndarray]) -> Path:
        return write_npz(self.path / "model.npz", state)

    def write_summary(self, summary: dict[str, Any]) -> Path:
        return write_json(self.path / "summary.json", summary)

    def read_summary(self) -> dict[str, Any] | None:
        """The summary, or None when the run has not finished writing one."""
        try:
            summary = json.loads((self.path / "summary.json").read_text())
        except (OSError, ValueError):
            return None
        return summary if isinstance(summary, dict) else None

    def epochs_done(self) -> int:
        """Lines of metrics.jsonl: the epochs this run has finished so far."""
        try:
            with open(self.path / "metrics.jsonl", "rb") as f:
                return sum(1 for _ in f)
        except OSError:
            return 0
