"""A study's figures: one PNG per claim, drawn from its results (`nnrun.study.results.claim_results`).

Each figure has three parts: left, the claim's metric per arm (a mark: mean over seeds, error bar: one
standard deviation, dots: the seeds, crosses: diverged runs counted as the claim's `diverged_value`; the
axis spans the values rather than starting at 0, so that close arms look apart);
middle, one row per relation with the difference a - b and its 95 % interval (the margin shaded,
coloured by verdict, the test named under it; for `diverges`, the diverged runs of each arm and the
exact test's p; without an interval, why); right, the validation metric per epoch (mean and one std
band over seeds), or the metric at every hidden layer for a layer metric.
Titles (the claim's statement, each relation's label) are folded onto more lines, never cut. Built with
`nnrun.plots`' Agg figures (no pyplot) and written atomically.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from nnrun.plots import new_figure, save_figure
from nnrun.tables import fmt

VERDICT_COLORS = {"supported": "#2a9d3a", "contradicted": "#c0392b", "not resolved": "#7f8c8d"}
"""Colours of the verdicts."""
ARM_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
              "#17becf")
"""Colours of the arms, in order."""
LOG_SPAN = 100.0
"""Positive values spanning more than this factor are drawn on a log scale."""
TITLE_WIDTH = 110
"""Characters per line of a figure's title (the claim's statement, folded, never cut)."""
PANEL_TITLE_WIDTH = 48
"""Characters per line of a relation's title (its label and verdict) above its narrow panel."""
MARGIN = 0.08
"""Share of the values' range left free below and above them on the arms panel's linear axis."""


def claim_figure(result: dict[str, Any], path: str | Path) -> Path:
    """Draw the figure of one claim's results to `path` (PNG); returns the path."""
    relations = result["relations"]
    rows = max(len(relations), 1)
    fig = new_figure(11.0, max(3.0, 0.75 * rows + 1.4))
    grid = fig.add_gridspec(rows, 3, width_ratios=[1.1, 1.1, 1.0])
    _arms_panel(fig.add_subplot(grid[:, 0]), result)
    for i, relation in enumerate(relations):
        _relation_row(fig.add_subplot(grid[i, 1]), relation, result)
    side = fig.add_subplot(grid[:, 2])
    if any(arm.get("layers") for arm in result["arms"].values()):
        _layers_panel(side, result)
    else:
        _curves_panel(side, result)
    fig.suptitle(_wrapped(f"{result['id']}: {result['statement']}", TITLE_WIDTH), fontsize=10)
    return save_figure(fig, path)


def _wrapped(text: str, width: int) -> str:
    """`text` whole, folded into lines of at most `width` characters at spaces (a title is never cut)."""
    return textwrap.fill(" ".join(text.split()), width, break_long_words=False, break_on_hyphens=False)


def _wide_positive(values: list[float]) -> bool:
    """Whether positive values span more than `LOG_SPAN` (drawn on a log scale then)."""
    return bool(values) and min(values) > 0 and max(values) / min(values) > LOG_SPAN


def _arms_panel(ax: Any, result: dict[str, Any]) -> None:
    metric = result["metric"]
    names = list(result["arms"])
    rng = np.random.default_rng(0)
    every = [v for name in names for v in result["arms"][name]["metrics"][metric]["values"] if v is not None]
    log = _wide_positive(every)
    for i, name in enumerate(names):
        entry = result["arms"][name]["metrics"][metric]
        color = ARM_COLORS[i % len(ARM_COLORS)]
        if entry["mean"] is not None:
            # A mark, not a bar from 0: the axis spans the values, so that 0.95 and 0.97 look apart.
            ax.plot(i, entry["mean"], "_", color="black", ms=16, mew=1.5)
            if not log and entry["std"] is not None:
                ax.errorbar(i, entry["mean"], yerr=entry["std"], color="black", capsize=4, lw=1)
                every += [entry["mean"] - entry["std"], entry["mean"] + entry["std"]]
        runs = result["arms"][name]["runs"]
        for value, run in zip(entry["values"], runs, strict=True):
            if value is None:
                continue
            marker = "x" if run["outcome"] == "diverged" else "o"
            ax.plot(i + rng.uniform(-0.15, 0.15), value, marker, color=color if marker == "o" else "#c0392b",
                    ms=4)
        if entry["diverged_left_out"]:
            ax.annotate(f"{entry['diverged_left_out']} diverged", (i, 0), xycoords=("data", "axes fraction"),
                        xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7, color="#c0392b")
    ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 3 else 0, ha="right" if len(names) > 3
                  else "center", fontsize=8)
    ax.set_xlim(-0.5, len(names) - 0.5)  # every arm's column whole, also one without values (all diverged)
    ax.set_ylabel(metric, fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    if log:
        ax.set_yscale("log")
    elif every:
        low, high = min(every), max(every)
        pad = MARGIN * (high - low) if high > low else max(abs(high) * MARGIN, 1e-3)
        ax.set_ylim(low - pad, high + pad)
    ax.set_title(f"{metric} per arm ({'mean' if log else 'mean, std'}, seeds)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)


def _relation_row(ax: Any, relation: dict[str, Any], result: dict[str, Any]) -> None:
    color = VERDICT_COLORS.get(relation["verdict"], "#7f8c8d")
    ax.set_yticks([])
    ax.tick_params(axis="x", labelsize=7)
    title = _wrapped(f"{relation['label']}: {relation['verdict_label']}", PANEL_TITLE_WIDTH)
    if relation["relation"] == "diverges":
        counts = relation.get("diverged") or {}
        text = "; ".join(f"{relation[role]}: {k} of {n} diverged" for role, (k, n) in counts.items())
        if relation.get("p_support") is not None:
            text += f"\n{(relation.get('test') or {}).get('method', 'exact test')}: p = {fmt(relation['p_support'], 2)}"
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=8, color=color, transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_title(title, fontsize=8, color=color)
        return
    interval = relation.get("interval")
    margin = relation.get("margin")
    if margin:
        ax.axvspan(-margin, margin, color="#cccccc", alpha=0.5, lw=0)
    ax.axvline(0, color="black", lw=0.8)
    if interval is not None:
        ax.errorbar(interval["estimate"], 0, xerr=[[interval["estimate"] - interval["low"]],
                                                   [interval["high"] - interval["estimate"]]],
                    fmt="o", color=color, capsize=4, ms=5)
        span = max(abs(interval["low"]), abs(interval["high"]), margin or 0.0) or 1.0
        ax.set_xlim(-1.15 * span, 1.15 * span)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, symmetric=True))  # labels that do not overlap
    else:
        left_out = relation.get("diverged_left_out") or {}
        text = ("no interval: " + ", ".join(f"{k} diverged in {arm}" for arm, k in left_out.items())
                + "\n(no diverged_value)") if left_out else "too few runs for an interval"
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=8, transform=ax.transAxes)
    other = relation["b"] if relation["b"] is not None else fmt(relation["value"])
    test = {"paired": ", paired t", "welch": ", Welch t"}.get(relation.get("analysis") or "", "")
    ax.set_xlabel(f"{relation['metric']}: {relation['a']} - {other}{test}", fontsize=7, labelpad=1)
    ax.set_title(title, fontsize=8, color=color)


def _curves_panel(ax: Any, result: dict[str, Any]) -> None:
    key = None
    for i, (name, arm) in enumerate(result["arms"].items()):
        curve = arm.get("curve")
        if not curve or not curve["mean"]:
            continue
        key = curve["key"]
        epochs = np.arange(1, len(curve["mean"]) + 1)
        mean = np.array([np.nan if v is None else v for v in curve["mean"]])
        std = np.array([np.nan if v is None else v for v in curve["std"]])
        color = ARM_COLORS[i % len(ARM_COLORS)]
        ax.plot(epochs, mean, color=color, lw=1.2, label=name, marker="o" if len(epochs) == 1 else None, ms=4)
        ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.15, lw=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch", fontsize=8)
    ax.set_ylabel(key or "", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title("validation metric per epoch (chosen runs)", fontsize=9)
    ax.grid(alpha=0.3)
    if key is not None:
        ax.legend(fontsize=7, loc="best")


def _layers_panel(ax: Any, result: dict[str, Any]) -> None:
    metric = None
    positive = True
    for i, (name, arm) in enumerate(result["arms"].items()):
        layers = arm.get("layers")
        if not layers or not layers["mean"]:
            continue
        metric = layers["metric"]
        mean = np.array([np.nan if v is None else v for v in layers["mean"]])
        std = np.array([np.nan if v is None else v for v in layers["std"]])
        x = np.arange(1, len(mean) + 1)
        positive = positive and bool(np.all(mean[np.isfinite(mean)] > 0))
        ax.errorbar(x, mean, yerr=std, marker="o", ms=3, lw=1.2, capsize=2, color=ARM_COLORS[i % len(ARM_COLORS)],
                    label=name)
    if metric is not None and positive:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("hidden layer", fontsize=8)
    ax.set_ylabel(metric or "", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(f"{metric} at every hidden layer", fontsize=9)
    ax.grid(alpha=0.3)
    if metric is not None:
        ax.legend(fontsize=7, loc="best")
