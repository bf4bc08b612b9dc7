"""`nnrun plot`: the curves of several runs in one figure, or a metric against a swept config key.

`plot_runs(paths, out=...)` reads the runs (each path a run directory or a folder of runs, such as
a sweep's `--runs-dir`) and draws one panel per metric:

- `x="epoch"` (default): each run's per-epoch values from its `metrics.jsonl`, one line per run,
  the legend naming each run by the config keys that differ between the runs; runs that differ
  only in `seed` share a colour and differ in line style (with `hue`, one colour and legend entry
  per value of that key instead). A panel whose positive values span more than a factor of 30
  (a diverging loss) has a logarithmic y axis;
- `x=KEY` (a config key such as `optim.lr`): each run's `final` value (its summary's, the final
  evaluation; the last epoch's for metrics the summary lacks) or `best` value (the best over its
  epochs: the highest accuracy, the lowest loss or error) against the run's value of KEY. Runs
  are grouped by `hue` (default: the other keys that differ, except `seed`); runs of a group with
  the same KEY value (seeds) give one point, their mean, with a band of one sample standard
  deviation, and their own values as small dots. The x axis is logarithmic when the positive
  values span a factor of 10 or more (symmetric-log when 0 is among them) and categorical when
  the values are not numbers.

The figure is PNG or SVG, by the suffix of `out`; the function returns what it drew (the `--json`
of `nnrun plot`).
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from nnrun import plots
from nnrun.errors import UserInputError, did_you_mean
from nnrun.io import check_output_folder
from nnrun.runstore import RunRecord, collect_runs, headline_metric, varying_keys
from nnrun.tables import is_number, value_format

STATS = ("final", "best")
"""What `--x KEY` plots of each run: its final value or its best over the epochs."""
EPOCH = "epoch"
"""The `--x` of per-epoch curves."""
SEED = "seed"
"""The config key of the seed: curves of runs that differ only in it share a colour; points average over it."""


def plot_runs(paths: Sequence[str | Path], *, out: str | Path, metrics: Sequence[str] | None = None,
              x: str = EPOCH, hue: str | None = None, stat: str = "final", recursive: bool = False,
              overwrite: bool = False) -> dict[str, Any]:
    """Draw the runs under `paths` into the figure file `out` (.png or .svg; module docstring) and return
    what was drawn: `out`, `x`, `stat`, `metrics`, `hue`, `runs` and the plotted `series`.

    An existing `out` without `overwrite` is a `UserInputError`, like the errors of `plot_figure`.
    """
    out = Path(out)
    if out.suffix.lower().lstrip(".") not in plots.FORMATS:
        raise UserInputError(f"--out {out}: the figure is written as {' or '.join(plots.FORMATS)}, by the "
                             f"file's suffix; got {out.suffix or 'no suffix'}")
    check_output_folder(out.parent, (out.name,), overwrite)
    fig, result = plot_figure(paths, metrics=metrics, x=x, hue=hue, stat=stat, recursive=recursive)
    return {"out": str(plots.save_figure(fig, out)), **result}


def plot_figure(paths: Sequence[str | Path], *, metrics: Sequence[str] | None = None, x: str = EPOCH,
                hue: str | None = None, stat: str = "final", recursive: bool = False,
                records: list[RunRecord] | None = None) -> tuple[Figure, dict[str, Any]]:
    """The figure of the runs under `paths` and what it shows (see `plot_runs`); `records`: those runs already
    read (`collect_runs`), so that several figures of one folder read it once.

    `metrics` default: the headline validation metric and `train_loss` per epoch; the headline
    validation metric against a config key. A metric or key no run has is a `UserInputError` that
    suggests the name most likely meant.
    """
    if stat not in STATS:
        raise UserInputError(f"--stat must be {' or '.join(STATS)}, got {stat!r}")
    if records is None:
        records = collect_runs(list(paths), recursive=recursive)
    if not records:
        raise UserInputError(f"no run directories in {', '.join(map(str, paths))}")
    metric = headline_metric(records)
    chosen = list(metrics or ([f"val_{metric}", "train_loss"] if x == EPOCH else [f"val_{metric}"]))
    _check_keys(records, x, hue)
    _check_metrics(records, chosen, x)
    if x == EPOCH:
        result = _curves(records, chosen, hue)
        fig = plots.curves_figure(result["series"], chosen, title=result["title"], legend_title=result["legend"])
    else:
        result = _against_key(records, chosen, x, hue, stat)
        fig = plots.sweep_figure(result["series"], chosen, x_label=x, scale=result["scale"], ticks=result["ticks"],
                                 title=result["title"], legend_title=result["legend"])
    return fig, {"x": x, "stat": stat if x != EPOCH else None, "metrics": chosen, "hue": result["hue"],
                 "runs": len(records), "series": result["series"]}


# ---- checks --------------------------------------------------------------------------------------

def _config_keys(records: list[RunRecord]) -> list[str]:
    keys: dict[str, None] = {}
    for r in records:
        keys.update(dict.fromkeys(r.config))
    return list(keys)


def _check_keys(records: list[RunRecord], x: str, hue: str | None) -> None:
    keys = _config_keys(records)
    if x != EPOCH and x not in keys:
        raise UserInputError(f"--x {x}: no run has this config key{did_you_mean(x, [EPOCH, *keys])}; "
                             f"give {EPOCH} or a config key such as optim.lr")
    if hue is not None and hue not in keys:
        raise UserInputError(f"--hue {hue}: no run has this config key{did_you_mean(hue, keys)}")
    if hue is not None and hue == x:
        raise UserInputError(f"--hue {hue}: the same key as --x; choose another key to group by")


def _available_metrics(records: list[RunRecord], x: str) -> list[str]:
    names: dict[str, None] = {}
    for r in records:
        for row in r.metrics():
            names.update(dict.fromkeys(k for k, v in row.items() if is_number(v) and k != EPOCH))
        if x != EPOCH:
            names.update(dict.fromkeys(k for k, v in (r.summary or {}).items() if is_number(v)))
    return list(names)


def _check_metrics(records: list[RunRecord], metrics: list[str], x: str) -> None:
    available = _available_metrics(records, x)
    unknown = [m for m in metrics if m not in available]
    if unknown:
        where = "metrics.jsonl" if x == EPOCH else "metrics.jsonl or summary.json"
        hints = "".join(did_you_mean(m, available) for m in unknown)
        raise UserInputError(f"--metric: no run has {', '.join(unknown)} in its {where}{hints}; "
                             f"available: {', '.join(available) or 'none (no run finished an epoch)'}")


# ---- labels --------------------------------------------------------------------------------------

def short_names(keys: list[str]) -> dict[str, str]:
    """Each dotted key by its last part where that is unambiguous among `keys` (`optim.lr` -> `lr`)."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: part if last.count(part) == 1 else k for k, part in zip(keys, last, strict=True)}


def describe(record: RunRecord, keys: list[str], names: dict[str, str]) -> str:
    """`lr=0.01, l2=0, seed=1`: a run's values of `keys`."""
    return ", ".join(f"{names[k]}={value_format(record.get(k))}" for k in keys)


def _common_title(records: list[RunRecord]) -> str:
    names = sorted({str(r.config.get("name", r.name)) for r in records})
    datasets = sorted({str(r.config.get("data.dataset")) for r in records if r.config.get("data.dataset")})
    what = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"{what} ({', '.join(datasets)}), {len(records)} run{'s' if len(records) != 1 else ''}"


# ---- per-epoch curves ---------------------------------------------------------------------------

def _curves(records: list[RunRecord], metrics: list[str], hue: str | None) -> dict[str, Any]:
    """One series per run. Colour: the run's values of the keys that differ other than `seed` (or its `hue`
    value); line style: its seed, so the seeds of one setting share a colour."""
    varying = _seed_last(varying_keys(records))
    names = short_names(varying)
    colour_keys = [hue] if hue else [k for k in varying if k != SEED]
    seeds = sorted({r.get(SEED) for r in records}, key=_order) if SEED in varying and hue != SEED else []
    series = []
    for r in sorted(records, key=lambda r: [_order(r.get(k)) for k in varying] + [(1, 0, r.name)]):
        rows = r.metrics()
        label = describe(r, [hue], names | short_names([hue])) if hue else describe(r, varying, names)
        series.append({"label": label or r.name, "run": r.name, "path": str(r.path),
                       "group": describe(r, colour_keys, names | short_names(colour_keys)),
                       "line": seeds.index(r.get(SEED)) if seeds else 0,
                       "x": [row.get(EPOCH) for row in rows],
                       "y": {m: [row.get(m) for row in rows] for m in metrics}})
    labels = [s["label"] for s in series]
    if not hue and len(set(labels)) < len(labels):  # same config in different folders: name the folders
        for s in series:
            s["label"] = f"{s['label']} ({s['run']})" if s["label"] else s["run"]
    _mark_identical(series, metrics)
    legend = hue if hue else (", ".join(varying) if varying else "run")
    return {"series": series, "legend": legend, "hue": hue, "title": _common_title(records)}


def _mark_identical(series: list[dict[str, Any]], metrics: list[str]) -> None:
    """Say in the legend when a run's curve is drawn exactly on top of an earlier one's (identical epochs and
    values), which would hide it: `(same curves as LABEL)`, or `(same METRIC as LABEL)` when only some panels
    coincide (not between runs that share a legend entry anyway, as with `--hue`). Each series gets `same_as`
    ({metric: the label of the first run with that curve})."""
    for s in series:
        s["base"] = s["label"]
    for i, s in enumerate(series):
        s["same_as"] = {}
        for m in metrics:
            first = next((t for t in series[:i] if t["x"] == s["x"] and t["y"][m] == s["y"][m]
                          and any(v is not None for v in s["y"][m]) and t["base"] != s["label"]), None)
            if first is not None:
                s["same_as"][m] = first["base"]
        if s["same_as"]:
            same = set(s["same_as"].values())
            what = "curves" if len(s["same_as"]) == len(metrics) else ", ".join(s["same_as"])
            s["label"] += f" (same {what} as {' / '.join(sorted(same))}: hidden under it)" if len(same) == 1 \
                else f" (same {what} as earlier runs: hidden under them)"
    for s in series:
        del s["base"]


def _seed_last(keys: list[str]) -> list[str]:
    return [k for k in keys if k != SEED] + [k for k in keys if k == SEED]


# ---- a metric against a config key --------------------------------------------------------------

def _order(value: Any) -> tuple:
    return (0, value, "") if is_number(value) else (1, 0, value_format(value))


def higher_is_better(metric: str) -> bool:
    """Accuracies are better high; losses and errors (rmse, mae) low."""
    return "accuracy" in metric


def run_value(record: RunRecord, metric: str, stat: str) -> float | None:
    """The run's `final` value of `metric` (its summary's, else its last epoch's) or its `best` over the epochs."""
    values = [row[metric] for row in record.metrics() if is_number(row.get(metric))]
    if stat == "best" and values:
        return max(values) if higher_is_better(metric) else min(values)
    final = (record.summary or {}).get(metric)
    if is_number(final):
        return float(final)
    return values[-1] if values else None


def axis_scale(values: list[Any]) -> tuple[str, list[tuple[float, str]] | None]:
    """("linear" | "log" | "symlog" | "category", tick positions and labels of a category axis)."""
    if not values or not all(is_number(v) for v in values):
        labels = sorted({value_format(v) for v in values}, key=lambda t: _order(t))
        return "category", [(float(i), t) for i, t in enumerate(labels)]
    positive = [float(v) for v in values if v > 0]
    if len(positive) >= 2 and min(v for v in values) >= 0 and max(positive) / min(positive) >= 10:
        return ("symlog" if any(v == 0 for v in values) else "log"), None
    return "linear", None


def default_folder(paths: Sequence[str | Path]) -> Path:
    """Where `nnrun plot` writes its figure without `--out`: beside what it drew, in the folder given (a run
    directory or a folder of runs), or the deepest folder holding all the folders given."""
    folders = [Path(p) for p in paths]
    if len(folders) == 1:
        return folders[0]
    return Path(os.path.commonpath([str(p.resolve()) for p in folders]))


def _pooled_words(groups: dict[str, list[RunRecord]], x: str, pooled: list[str]) -> str:
    """`; mean ± std over KEYS` for the keys that differ between runs drawn as one point (the same group and x
    value: seeds, usually); where every point is one run, the other keys that differ are named as such."""
    cells: dict[tuple[str, str], list[RunRecord]] = {}
    for label, members in groups.items():
        for r in members:
            cells.setdefault((label, value_format(r.get(x))), []).append(r)
    within = [k for k in pooled if any(len({value_format(r.get(k)) for r in c}) > 1 for c in cells.values())]
    if within:
        return f"; mean ± std over {', '.join(within)}"
    if any(len(c) > 1 for c in cells.values()):
        return "; mean ± std over runs of the same settings"
    if pooled:
        return f"; one run per point ({', '.join(pooled)} also differ{'s' if len(pooled) == 1 else ''})"
    return ""


def _against_key(records: list[RunRecord], metrics: list[str], x: str, hue: str | None,
                 stat: str) -> dict[str, Any]:
    varying = _seed_last(varying_keys(records))
    groups_by = [hue] if hue else [k for k in varying if k not in (x, SEED)]
    pooled = [k for k in varying if k != x and k not in groups_by]
    names = short_names(groups_by)
    scale, ticks = axis_scale([r.get(x) for r in records if r.get(x) is not None])
    position = {label: pos for pos, label in ticks} if ticks else {}
    groups: dict[str, list[RunRecord]] = {}
    for r in sorted(records, key=lambda r: [_order(r.get(k)) for k in groups_by]):
        if r.get(x) is not None:
            groups.setdefault(describe(r, groups_by, names), []).append(r)
    series = []
    for label, members in groups.items():
        xs = sorted({value_format(r.get(x)) if ticks else r.get(x) for r in members}, key=_order)
        entry: dict[str, Any] = {"label": label or "all runs", "x": [position[v] if ticks else v for v in xs],
                                 "x_values": xs, "mean": {}, "std": {}, "n": {}, "points": {}}
        for m in metrics:
            at = {v: [] for v in xs}
            for r in members:
                value = run_value(r, m, stat)
                if value is not None and math.isfinite(value):
                    at[value_format(r.get(x)) if ticks else r.get(x)].append(value)
            entry["mean"][m] = [statistics.fmean(at[v]) if at[v] else None for v in xs]
            entry["std"][m] = [statistics.stdev(at[v]) if len(at[v]) > 1 else None for v in xs]
            entry["n"][m] = [len(at[v]) for v in xs]
            entry["points"][m] = [[position[v] if ticks else v, y] for v in xs for y in at[v]]
        series.append(entry)
    over = _pooled_words(groups, x, pooled)
    title = f"{_common_title(records)}\neach run's {stat} value against {x}{over}"
    legend = ", ".join(groups_by) if groups_by else None
    return {"series": series, "legend": legend, "hue": groups_by, "scale": scale, "ticks": ticks, "title": title}
