"""A sweep's plan: every point's resolved, validated config and the run directory it goes to.

Planning also loads the data of each distinct data section once: a missing data root or a bad
data file stops the sweep before any run directory exists.

A point runs in `RUNS_DIR/<name>-<hash12>`, where `hash12` is the first 12 hex digits of the
SHA-256 of its resolved config as canonical JSON (`config_hash`): the same config always lands
in the same folder, so a point whose folder holds a completed `summary.json` is skipped and
rerunning an interrupted sweep runs only what is missing. Identical points are planned once.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnrun.config import ExperimentConfig, compose_raw, set_dotted, validate_config
from nnrun.errors import UserInputError
from nnrun.experiment import load_data, select_targets
from nnrun.rundir import RunDir
from nnrun.sweep.space import expand_points, parse_grid, parse_space
from nnrun.tables import fmt

MAX_ERRORS_SHOWN = 5
"""Invalid points listed in the error of a plan that has some."""


def config_hash(resolved: dict[str, Any]) -> str:
    """First 12 hex digits of the SHA-256 of `resolved` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(resolved, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def describe_point(params: dict[str, Any]) -> str:
    """`optim.lr=0.001, regularization.l2=0` (values shortened like tables show them)."""
    return ", ".join(f"{k}={fmt(v)}" for k, v in params.items()) or "(base config)"


@dataclass
class SweepPoint:
    """One point: the varied values, its resolved config (JSON-ready dict) and its run directory."""

    index: int
    params: dict[str, Any]
    config: dict[str, Any]
    key: str
    run_dir: Path

    @property
    def label(self) -> str:
        return describe_point(self.params)


@dataclass
class SweepPlan:
    """What a sweep will run: the base config, its distinct points and where they go."""

    base: ExperimentConfig
    keys: list[str]
    points: list[SweepPoint]
    runs_dir: Path
    seed: int
    duplicates: int = 0
    total: int | None = None
    """The runs the sweep will have in all when its points are made as it goes (a search's trials); None: as many
    as `points`."""

    @property
    def size(self) -> int:
        """How many runs the sweep has in all (`total`, else its points)."""
        return self.total if self.total is not None else len(self.points)


def plan_sweep(config: str | Path | None, *, overrides: list[str] | tuple[str, ...] = (),
               grid: list[str] | tuple[str, ...] = (), space: list[str] | tuple[str, ...] = (),
               n_random: int | None = None, seed: int | None = None, runs_dir: str | Path = "runs") -> SweepPlan:
    """Expand and validate a sweep from command-line style arguments; runs nothing.

    `config` + `overrides` (`--set` items) give the base; `grid`/`space` items give the varied
    keys (see `parse_grid`, `parse_space`); `seed` defaults to the base config's seed. Every
    point's config is validated: any bad point raises one `UserInputError` listing them.
    """
    composed = compose_raw(config, overrides)  # the config's defaults files merged, --set applied
    raw: dict[str, Any] = composed.raw
    source = str(config) if config is not None else "defaults"
    base = validate_config(copy.deepcopy(raw), source=source, origins=composed.origins)
    grid_values, distributions = parse_grid(grid), parse_space(space)
    sweep_seed = base.seed if seed is None else seed
    params_list = expand_points(grid_values, distributions, n_random, sweep_seed)
    labelled = []
    for params in params_list:
        point_raw = copy.deepcopy(raw)
        for key, value in params.items():
            set_dotted(point_raw, key, copy.deepcopy(value))
        labelled.append((params, point_raw))
    points, duplicates = _validated_points(labelled, source, Path(runs_dir))
    return SweepPlan(base, [*grid_values, *distributions], points, _runs_root(runs_dir), sweep_seed, duplicates)


def plan_configs(configs: list[tuple[dict[str, Any], dict[str, Any]]], *, runs_dir: str | Path = "runs",
                 source: str = "config", check: bool = True) -> SweepPlan:
    """A plan from ready configs instead of a grid: `configs` holds `(params, raw)` pairs, `params` the
    labels a table shows for the point (`{"arm": "l2", "seed": 1}`), `raw` a whole config mapping.

    Points are validated, hashed and merged like `plan_sweep`'s (identical configs run once, the first
    one's labels kept); `check` loads each distinct data section first (`check_data`). The plan's base
    is the first point's config and its keys the union of the labels' keys.
    """
    if not configs:
        raise UserInputError(f"{source}: nothing to run")
    points, duplicates = _validated_points(configs, source, Path(runs_dir), check=check)
    keys = list(dict.fromkeys(key for params, _ in configs for key in params))
    base = validate_config(copy.deepcopy(points[0].config), source=source)
    return SweepPlan(base, keys, points, _runs_root(runs_dir), base.seed, duplicates)


def _runs_root(runs_dir: str | Path) -> Path:
    return Path(runs_dir).expanduser().absolute()


def _validated_points(configs: list[tuple[dict[str, Any], dict[str, Any]]], source: str, runs_dir: Path,
                      check: bool = True) -> tuple[list[SweepPoint], int]:
    """Validate `(params, raw)` pairs into distinct points (and the number of duplicates merged); every invalid
    one is listed in one `UserInputError`, and nothing runs."""
    runs_root = _runs_root(runs_dir)
    points: list[SweepPoint] = []
    errors: list[str] = []
    seen: set[str] = set()
    duplicates = 0
    for i, (params, raw) in enumerate(configs):
        try:
            cfg = validate_config(copy.deepcopy(raw), source=f"{source}, sweep point {i + 1}: {describe_point(params)}")
        except UserInputError as e:
            errors.append(str(e))
            continue
        resolved = cfg.model_dump(mode="json")
        key = config_hash(resolved)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        points.append(SweepPoint(len(points), params, resolved, key, runs_root / f"{cfg.name}-{key}"))
    if errors:
        shown = errors[:MAX_ERRORS_SHOWN]
        more = len(errors) - len(shown)
        tail = [f"... and {more} more invalid points"] if more else []
        raise UserInputError(f"{len(errors)} of {len(configs)} sweep points are invalid; nothing was run.\n"
                             + "\n".join(shown + tail))
    if check:
        check_data(points)
    return points, duplicates


def check_data(points: list[SweepPoint]) -> None:
    """Load the data of each distinct data section (and loss target kind) once, so that a missing data root or
    a bad data file is one `UserInputError` before any run directory exists."""
    seen: set[str] = set()
    for point in points:
        key = json.dumps([point.config["data"], point.config["loss"]["name"], point.config["loss"]["bins"]],
                         sort_keys=True)
        if key not in seen:
            seen.add(key)
            cfg = validate_config(point.config, source=f"sweep point {point.index + 1}")
            select_targets(load_data(cfg), cfg.loss)


def completed_summary(point: SweepPoint) -> dict[str, Any] | None:
    """The point's summary when its run directory already holds a completed run."""
    summary = RunDir(point.run_dir).read_summary()
    return summary if summary and summary.get("status") == "completed" else None


def plan_report(plan: SweepPlan) -> dict[str, Any]:
    """The plan as one JSON-ready object (for --dry-run --json)."""
    return {"runs_dir": str(plan.runs_dir), "seed": plan.seed, "keys": plan.keys, "points": len(plan.points),
            "duplicates": plan.duplicates,
            "runs": [{"index": p.index + 1, "params": p.params, "hash": p.key, "run_dir": str(p.run_dir),
                      "done": completed_summary(p) is not None} for p in plan.points]}
