"""Run directories on disk.

A run directory holds:
- `config.yaml`: the resolved config (overrides applied), written first;
- `preprocess.npz`: the fitted preprocessing statistics;
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
from nnrun.io import write_json, write_npz, write_text


class RunDir:
    """One run's folder. `RunDir.create(path, overwrite)` refuses to reuse a folder that holds files."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path, overwrite: bool = False) -> RunDir:
        """Make the folder; an existing non-empty one is an error unless `overwrite`."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise UserInputError(f"run directory {path} exists and is not a folder")
        if path.is_dir() and any(path.iterdir()) and not overwrite:
            raise UserInputError(
                f"run directory {path} already holds files; choose another --out or pass --overwrite")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserInputError(f"cannot create run directory {path}: {e.strerror}") from None
        for stale in ("summary.json", "metrics.jsonl", "model.npz", "preprocess.npz"):
            (path / stale).unlink(missing_ok=True)
        return cls(path)

    def write_config(self, cfg) -> Path:
        return write_text(self.path / "config.yaml", cfg.to_yaml())

    def write_preprocess(self, statistics: dict[str, np.ndarray]) -> Path:
        return write_npz(self.path / "preprocess.npz", statistics)

    def write_metrics(self, rows: list[dict[str, Any]]) -> Path:
        return write_text(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    def write_model(self, state: dict[str, np.ndarray]) -> Path:
        return write_npz(self.path / "model.npz", state)

    def write_summary(self, summary: dict[str, Any]) -> Path:
        return write_json(self.path / "summary.json", summary)

    def read_summary(self) -> dict[str, Any] | None:
        """The summary, or None when the run has not finished writing one."""
        try:
            return json.loads((self.path / "summary.json").read_text())
        except (OSError, ValueError):
            return None
