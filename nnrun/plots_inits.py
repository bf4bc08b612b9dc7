"""Figures of `nnrun compare-inits`: activation histograms per scheme and layer, training loss curves.

Both take the plain dict `nnrun.compare_inits.compare_inits` returns and write a PNG atomically
(through `nnrun.plots.save_figure`), returning its path.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from nnrun.plots import new_figure, save_figure

SCHEME_COLORS = {"zeros": "tab:gray", "small": "tab:blue", "calibrated": "tab:green", "xavier": "tab:purple",
                 "he": "tab:red", "sparse": "tab:orange"}
"""One colour per init scheme, the same in every figure."""


def _std_text(std: float | None) -> str:
    if std is None:
        return "σ=?"
    if std == 0:
        return "σ=0"
    return f"σ={std:.2g}" if std >= 1e-2 else f"σ={std:.1e}"


def activation_histograms(result: dict[str, Any], path: str | Path) -> Path:
    """A grid of activation histograms: one row per scheme, one column per hidden layer.

    Each row shares its x-range (see `nnrun.compare_inits.histogram_range`): a layer whose
    activations have collapsed to zero shows as a single spike at 0. Each panel's title gives
    the layer and the standard deviation of its activations; the y-axes (counts) are per panel.
    With ReLU, where about half of the activations are exactly 0, a first bar more than twice as
    tall as every other is cut (its share is written in the panel) so the shape of the rest shows.
    """
    forward = result["forward"]
    schemes = list(forward["schemes"])
    depth = result["depth"]
    fig = new_figure(max(1.45 * depth + 0.8, 5.0), 1.25 * len(schemes) + 0.7)
    bn = ", with BatchNorm" if forward["batchnorm"] else ""
    fig.suptitle(f"activations at init, {result['dataset']} ({forward['examples']} training examples): "
                 f"{depth} x {result['width']} {result['activation']}{bn}", fontsize=10)
    axes = fig.subplots(len(schemes), depth, squeeze=False)
    for r, scheme in enumerate(schemes):
        for c, layer in enumerate(forward["schemes"][scheme]["layers"]):
            ax = axes[r][c]
            hist = layer["histogram"]
            counts = np.asarray(hist["counts"], dtype=np.float64)
            ax.stairs(counts, hist["edges"], fill=True, color=SCHEME_COLORS.get(scheme, "tab:blue"))
            ax.set_xlim(hist["edges"][0], hist["edges"][-1])
            rest = counts[1:].max() if len(counts) > 1 else 0.0
            if result["activation"] == "relu" and 0 < 2 * rest < counts[0]:
                # ReLU's zeros fill the first bin; cut that bar so the rest of the distribution shows.
                ax.set_ylim(0, 1.25 * rest)
                ax.annotate(f"{100 * counts[0] / counts.sum():.0f} % in first bar", (0.98, 0.9),
                            xycoords="axes fraction", ha="right", va="top", fontsize=6)
            ax.set_yticks([])
            ax.tick_params(axis="x", labelsize=6, length=2, pad=1)
            ax.set_title(f"layer {layer['layer']}  {_std_text(layer['std'])}", fontsize=7, pad=2)
            if c == 0:
                ax.set_ylabel(scheme, fontsize=9)
    return save_figure(fig, path)


def _distinct_text(units: list[int]) -> str:
    if len(set(units)) == 1:
        return f"{units[0]} distinct/layer"
    return f"{min(units)}-{max(units)} distinct/layer"


def loss_curves(result: dict[str, Any], path: str | Path) -> Path:
    """Training loss of every batch, one curve per scheme, one panel per BatchNorm setting.

    The y-axis is logarithmic when every loss is positive and they span more than a factor of 10.
    Legends give each run's final validation accuracy and its distinct hidden units per layer
    after training.
    """
    runs = result["training"]
    variants = sorted({run["batchnorm"] for run in runs})
    fig = new_figure(6.2 * len(variants), 4.4)
    fig.suptitle(f"training loss per batch, {result['dataset']} ({result['n_train']} examples): "
                 f"{result['depth']} x {result['width']} {result['activation']}, {result['optim']} "
                 f"lr {result['lr']:g}, batch {result['batch_size']}", fontsize=10)
    values = [v for run in runs for v in run["batch_losses"] if v is not None]
    log_scale = bool(values) and min(values) > 0 and max(values) > 10 * min(values)
    axes = fig.subplots(1, len(variants), squeeze=False, sharey=True)[0]
    for ax, bn in zip(axes, variants, strict=True):
        for run in (r for r in runs if r["batchnorm"] == bn):
            losses = np.array([np.nan if v is None else v for v in run["batch_losses"]], dtype=np.float64)
            acc = run["final_val_accuracy"]
            label = f"{run['scheme']}: val {'-' if acc is None else f'{100 * acc:.1f} %'}, " \
                    f"{_distinct_text(run['distinct_units'])}"
            if run["status"] != "completed":
                label += f" ({run['status']})"
            ax.plot(np.arange(1, len(losses) + 1), losses, lw=1.3, label=label,
                    color=SCHEME_COLORS.get(run["scheme"]))
        n_batches = max((len(r["batch_losses"]) for r in runs if r["batchnorm"] == bn), default=0)
        per_epoch = math.ceil(n_batches / max(result["epochs"], 1)) if n_batches else 0
        for e in range(1, result["epochs"]):
            ax.axvline(e * per_epoch + 0.5, color="grey", lw=0.5, ls=":")
        if log_scale:
            ax.set_yscale("log")
        ax.set_title("with BatchNorm" if bn else "without BatchNorm", fontsize=10)
        ax.set_xlabel(f"batch (dotted lines: epochs of {per_epoch} batches)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    axes[0].set_ylabel(f"training loss ({result['loss']})")
    return save_figure(fig, path)
