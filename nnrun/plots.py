"""Figures, written as PNG (or SVG) files atomically: PCA and whitening pictures, the init comparison's
plots, the curves and sweep plots of `nnrun plot`, and what `nnrun evaluate --plot` draws (confusion
matrix, per-attribute accuracy, predicted vs true).

Figures are built on `matplotlib.figure.Figure` with the Agg canvas: no pyplot, no global
backend state, safe in worker processes and without a display. Each function returns the path
it wrote (the `*_figure` builders of `nnrun plot` return the `Figure`, saved by `save_figure`).
Images are rows of D = C * H * W values in channel-major order (`image_shape` = (C, H, W)).
The init comparison's figures take the plain dict `nnrun.compare_inits.compare_inits` returns.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from nnrun.io import atomic_write
from nnrun.nn.init import INIT_SCHEMES
from nnrun.preprocess import PreprocessSettings, fit_preprocessor
from nnrun.tables import printable

DPI = 120


def new_figure(width: float, height: float) -> Figure:
    """A figure of `width` x `height` inches on the Agg canvas, with a constrained layout."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


FORMATS = ("png", "svg")
"""File formats `save_figure` writes, chosen by the path's suffix."""


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Render `fig` as PNG (or SVG, for a `.svg` path) and write it to `path` atomically."""
    suffix = Path(path).suffix.lower().lstrip(".")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=suffix if suffix in FORMATS else "png", dpi=DPI)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


# ---- image grids --------------------------------------------------------------------------------

def rows_to_images(rows: np.ndarray, image_shape: tuple[int, int, int]) -> np.ndarray:
    """rows: (n, C*H*W) channel-major -> (n, H, W, C)."""
    c, h, w = image_shape
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), c, h, w).transpose(0, 2, 3, 1)


def stretch(images: np.ndarray, per_image: bool, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """images (n, H, W, C) -> values in [0, 1]: each image by its own range, or all by [lo, hi] (clipped)."""
    if per_image:
        lo_ = images.min(axis=(1, 2, 3), keepdims=True)
        hi_ = images.max(axis=(1, 2, 3), keepdims=True)
    else:
        lo_ = images.min() if lo is None else lo
        hi_ = images.max() if hi is None else hi
    span = np.where(hi_ - lo_ > 0, hi_ - lo_, 1.0)
    return np.clip((images - lo_) / span, 0.0, 1.0)


def mosaic(images: np.ndarray, cols: int, pad: int = 1, pad_below: int | None = None) -> np.ndarray:
    """images (n, H, W, C) in [0, 1] -> one (rows*(H+pad_below)-pad_below, cols*(W+pad)-pad, C) picture,
    white gaps (`pad_below`, default `pad`, is the gap under each row: room for labels)."""
    n, h, w, c = images.shape
    below = pad if pad_below is None else pad_below
    rows = math.ceil(n / cols)
    out = np.ones((rows * (h + below) - below, cols * (w + pad) - pad, c))
    for i, image in enumerate(images):
        r, q = divmod(i, cols)
        out[r * (h + below): r * (h + below) + h, q * (w + pad): q * (w + pad) + w] = image
    return out


def show_mosaic(ax, picture: np.ndarray, title: str) -> None:
    """Draw a mosaic on `ax`: grey for one channel, colour for three."""
    if picture.shape[2] == 1:
        ax.imshow(picture[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(picture, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def short_number(value: float) -> str:
    """Three significant digits, the exponent without `+` and leading zeros: `1.49e3`, `8.99e-5`, `0.244`."""
    return re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", f"{value:.3g}")


def eigenvector_grid(components: np.ndarray, image_shape: tuple[int, int, int], path: str | Path,
                     n: int = 144, eigenvalues: np.ndarray | None = None) -> Path:
    """Write `eigenvector_figure` to `path`."""
    return save_figure(eigenvector_figure(components, image_shape, n, eigenvalues), path)


def eigenvector_figure(components: np.ndarray, image_shape: tuple[int, int, int], n: int = 144,
                       eigenvalues: np.ndarray | None = None) -> Figure:
    """The top `n` eigenvectors (columns of components: (D, m), by descending eigenvalue) as images.

    Each eigenvector is stretched to its own range (its sign and scale are arbitrary); a grid of
    up to 12 x 12, row by row, first component at the top left. With `eigenvalues` (m,) each tile
    is labelled `index: eigenvalue` (1-based), and directions of zero variance (eigenvalue 0: no
    training image varies along them, so the eigenvector is arbitrary and whitening divides it by
    sqrt(eps)) are framed and labelled in red.
    """
    n = min(n, components.shape[1])
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    _, h, w = image_shape
    labelled = eigenvalues is not None
    band = max(3, math.ceil(0.28 * h)) if labelled else 1
    images = stretch(rows_to_images(components[:, :n].T, image_shape), per_image=True)
    picture = mosaic(images, cols, pad=max(1, w // 8), pad_below=band)
    width = 7.5
    fig = new_figure(width, width * picture.shape[0] / picture.shape[1] + (0.75 if labelled else 0.4))
    ax = fig.add_subplot()
    title = f"top {n} eigenvectors of the training covariance (descending eigenvalue, row by row)"
    zero = 0
    if labelled:
        values = np.asarray(eigenvalues, dtype=np.float64)[:n]
        zero = int(np.count_nonzero(values <= 0))
        title += "\neach tile: component index: eigenvalue"
        if zero:
            title += f"; red: {zero} zero-variance directions (arbitrary, amplified by whitening)"
    show_mosaic(ax, picture, title)
    if labelled:
        pitch_points = 72 * width / cols
        size = max(3.0, min(7.0, pitch_points / 8.5))
        step_y, step_x = h + band, w + max(1, w // 8)
        for i, value in enumerate(values):
            r, q = divmod(i, cols)
            flat = value <= 0
            ax.text(q * step_x + w / 2 - 0.5, r * step_y + h - 0.5 + band * 0.1, f"{i + 1}: {short_number(value)}",
                    ha="center", va="top", fontsize=size, color="tab:red" if flat else "black")
            if flat:
                ax.add_patch(Rectangle((q * step_x - 0.5, r * step_y - 0.5), w, h, fill=False,
                                       edgecolor="tab:red", lw=1.2))
        ax.set_ylim(rows * step_y - 0.5, -0.5)
    return fig


def reconstruction_figure(original: np.ndarray, reduced: np.ndarray, whitened: np.ndarray,
                          image_shape: tuple[int, int, int], k: int, path: str | Path) -> Path:
    """Three grids of the same images: original, reduced to k dimensions and mapped back, and
    whitened in those k dimensions and rotated back (each whitened image stretched to its own range).

    original, reduced, whitened: (n, D) rows in pixel space.
    """
    cols = math.ceil(math.sqrt(len(original)))
    lo, hi = float(original.min()), float(original.max())
    panels = [
        (stretch(rows_to_images(original, image_shape), per_image=False, lo=lo, hi=hi), "original"),
        (stretch(rows_to_images(reduced, image_shape), per_image=False, lo=lo, hi=hi),
         f"reduced to {k} dimensions, mapped back"),
        (stretch(rows_to_images(whitened, image_shape), per_image=True),
         f"whitened ({k} dimensions), mapped back"),
    ]
    fig = new_figure(12, 4.4)
    for i, (images, title) in enumerate(panels):
        show_mosaic(fig.add_subplot(1, 3, i + 1), mosaic(images, cols), title)
    return save_figure(fig, path)


def zca_figure(original: np.ndarray, whitened: list[tuple[str, np.ndarray]], image_shape: tuple[int, int, int],
               path: str | Path) -> Path:
    """The same images, original and ZCA-whitened at each setting of `whitened` ((title, rows) pairs).

    original and each whitened: (n, D) rows in pixel space. Originals share one range; each whitened
    image is stretched to its own range (its scale depends on eps). ZCA keeps the pixel layout and
    flattens the spectrum, so what is left are edges: the images look like edge maps.
    """
    cols = math.ceil(math.sqrt(len(original)))
    lo, hi = float(original.min()), float(original.max())
    panels = [(stretch(rows_to_images(original, image_shape), per_image=False, lo=lo, hi=hi), "original")]
    panels += [(stretch(rows_to_images(rows, image_shape), per_image=True), title) for title, rows in whitened]
    fig = new_figure(4 * len(panels), 4.4)
    for i, (images, title) in enumerate(panels):
        show_mosaic(fig.add_subplot(1, len(panels), i + 1), mosaic(images, cols), title)
    return save_figure(fig, path)


# ---- curves and clouds --------------------------------------------------------------------------

def explained_variance_figure(eigenvalues: np.ndarray, total_variance: float, path: str | Path,
                              marks: list[int] | tuple[int, ...] = (), title: str = "") -> Path:
    """Write `explained_variance_plot` to `path`."""
    return save_figure(explained_variance_plot(eigenvalues, total_variance, marks, title), path)


def explained_variance_plot(eigenvalues: np.ndarray, total_variance: float, marks: list[int] | tuple[int, ...] = (),
                            title: str = "") -> Figure:
    """Cumulative explained variance `cumsum(S[:k]) / trace(C)` against k (log axis from 21 components), with
    marked k's; a mark's label sits on the side of its line that keeps it inside the figure."""
    ratio = np.cumsum(eigenvalues) / total_variance if total_variance > 0 else np.zeros(len(eigenvalues))
    ks = np.arange(1, len(ratio) + 1)
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    ax.plot(ks, ratio, color="tab:blue", lw=1.8)
    log = len(ratio) > 20
    if log:
        ax.set_xscale("log")
    ax.set_xlim(1, len(ratio))
    for i, k in enumerate(sorted(marks)):
        if 1 <= k <= len(ratio):
            ax.axvline(k, color="tab:red", lw=0.8, ls="--")
            # A mark in the right part of the axis gets its label on the left of its line, so it is never clipped.
            where = math.log(k) / math.log(len(ratio)) if log else (k - 1) / max(len(ratio) - 1, 1)
            right = where > 0.8
            ax.annotate(f"k={k}: {100 * ratio[k - 1]:.1f} %", (k, ratio[k - 1]),
                        xytext=(-6 if right else 6, -14 - 12 * i), textcoords="offset points", fontsize=8,
                        color="tab:red", ha="right" if right else "left")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("principal components kept, k")
    ax.set_ylabel("cumulative explained variance")
    ax.set_title(f"cumulative explained variance{': ' + title if title else ''}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    return fig


def toy_cloud(n: int = 600, seed: int = 0) -> np.ndarray:
    """A correlated 2-D gaussian cloud, off centre and with unequal spreads: (n, 2) float32."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 2)) * [3.0, 0.8]
    angle = np.deg2rad(35.0)
    rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    return (z @ rotation * [1.0, 1.6] + [4.0, 3.0]).astype(np.float32)


def toy_cloud_figure(path: str | Path, eps: float = 1e-5, seed: int = 0) -> Path:
    """A 2-D toy cloud: original, centred, normalized (std), decorrelated (PCA), whitened.

    Every panel after the first is the output of `nnrun.preprocess.Preprocessor` with that setting.
    """
    X = toy_cloud(seed=seed)
    settings = [
        ("centred", PreprocessSettings(center="per_feature")),
        ("normalized (÷ std)", PreprocessSettings(center="per_feature", scale="std")),
        ("decorrelated (PCA)", PreprocessSettings(center="per_feature", pca=2)),
        ("whitened", PreprocessSettings(center="per_feature", pca=2, whiten=True, eps=eps)),
    ]
    panels = [("original", X)] + [(name, fit_preprocessor(cfg, X).transform(X)) for name, cfg in settings]
    limit = 1.05 * max(float(np.abs(p).max()) for _, p in panels)
    fig = new_figure(15, 3.4)
    for i, (name, points) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.axhline(0, color="grey", lw=0.6)
        ax.axvline(0, color="grey", lw=0.6)
        ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.5, color="tab:blue", linewidths=0)
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_aspect("equal")
        cov = np.cov(points.T, bias=True)
        ax.set_title(f"{name}\ncov = [[{cov[0, 0]:.2f}, {cov[0, 1]:.2f}], [{cov[1, 0]:.2f}, {cov[1, 1]:.2f}]]",
                     fontsize=8)
    return save_figure(fig, path)


# ---- weight init comparison (`nnrun compare-inits`) ------------------------------------------

def scheme_color(scheme: str) -> str:
    """One colour per init scheme, the same in every figure: its place in the registry picks a tab10 colour."""
    names = list(INIT_SCHEMES)
    index = names.index(scheme) if scheme in names else len(names)
    return f"C{index % 10}"


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
            ax.stairs(counts, hist["edges"], fill=True, color=scheme_color(scheme))
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
                    color=scheme_color(run["scheme"]))
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


# ---- evaluation --------------------------------------------------------------------------------

def confusion_matrix_figure(counts: np.ndarray, class_names: list[str], title: str, path: str | Path) -> Path:
    """counts: (C, C), row = true class, column = predicted class; each cell shaded by its share of the row."""
    n = len(class_names)
    fig = new_figure(max(4.5, 0.55 * n + 2.2), max(4.0, 0.5 * n + 1.8))
    ax = fig.subplots()
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=np.float64), where=rows > 0)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if shares[i, j] > 0.5 else "black")
    # Names and titles from a run's files are text, never mathtext (`$\\x{$` would not parse) or control codes.
    labels = [printable(c) for c in class_names]
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8, parse_math=False)
    ax.set_yticks(range(n), labels, fontsize=8, parse_math=False)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(printable(title), fontsize=10, parse_math=False)
    return save_figure(fig, path)


def attribute_accuracy_figure(accuracies: dict[str, float], title: str, path: str | Path) -> Path:
    """One horizontal bar per attribute: its accuracy (0..1)."""
    names = list(accuracies)
    fig = new_figure(5.5, max(2.5, 0.4 * len(names) + 1.2))
    ax = fig.subplots()
    ax.barh(range(len(names)), [accuracies[n] for n in names], color="tab:blue")
    ax.set_yticks(range(len(names)), [printable(c) for c in names], fontsize=8, parse_math=False)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy")
    ax.set_title(printable(title), fontsize=10, parse_math=False)
    ax.grid(True, axis="x", alpha=0.3)
    return save_figure(fig, path)


def predicted_vs_true_figure(predicted: np.ndarray, true: np.ndarray, target_names: list[str], title: str,
                             path: str | Path) -> Path:
    """predicted, true: (N, T); one scatter panel per output with the diagonal y = x."""
    n_outputs = true.shape[1]
    fig = new_figure(4.2 * n_outputs, 4.2)
    axes = fig.subplots(1, n_outputs, squeeze=False)[0]
    for t, ax in enumerate(axes):
        lo = float(min(true[:, t].min(), predicted[:, t].min()))
        hi = float(max(true[:, t].max(), predicted[:, t].max()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax.scatter(true[:, t], predicted[:, t], s=8, alpha=0.6)
        ax.set_xlabel(printable(f"true {target_names[t] if t < len(target_names) else t}"), parse_math=False)
        ax.set_ylabel("predicted")
        ax.grid(True, alpha=0.3)
    fig.suptitle(printable(title), fontsize=10, parse_math=False)
    return save_figure(fig, path)
# ---- runs side by side (`nnrun plot`) -----------------------------------------------------------

def series_colors(n: int) -> list[Any]:
    """`n` distinguishable colours: tab10 up to 10, tab20 up to 20, then evenly along viridis."""
    if n <= 10:
        return [f"C{i}" for i in range(n)]
    cmap = matplotlib.colormaps["tab20" if n <= 20 else "viridis"]
    return [cmap(i) if n <= 20 else cmap(i / max(n - 1, 1)) for i in range(n)]


LEGEND_WRAP = 56
"""Characters per line of a legend entry: longer entries (many keys that differ) wrap between words."""
LEGEND_CHAR_INCHES = 8 * 0.6 / 72
"""About the width of one legend character at 8 points."""
LEGEND_LINE_INCHES = 8 * 1.3 / 72
"""About the height of one legend line at 8 points."""


def legend_entries(labels: list[str], title: str | None = None) -> tuple[list[str], str | None]:
    """The legend's entries and title, each wrapped between words into lines of at most `LEGEND_WRAP`
    characters (a word longer than that stays whole)."""
    def wrap(text: str) -> str:
        return "\n".join(textwrap.fill(line, LEGEND_WRAP, break_long_words=False, break_on_hyphens=False)
                         for line in str(text).split("\n"))

    return [wrap(label) for label in labels], None if title is None else wrap(title)


def _panels(n: int, labels: list[str], title: str | None = None) -> tuple[Figure, list[Any]]:
    """A figure of `n` side-by-side panels with room on the right for the legend of `labels` (already wrapped,
    `legend_entries`): as wide as its longest line and as tall as all its lines need, so that the constrained
    layout never squeezes the panels to nothing."""
    lines = [line for text in [*labels, *([title] if title else [])] for line in text.split("\n")]
    widest = max((len(line) for line in lines), default=0)
    legend_width = (max(2.6, widest * LEGEND_CHAR_INCHES + 0.7) if len(labels) > 1 or title else 0.4)
    height = max(3.9, len(lines) * LEGEND_LINE_INCHES + 1.0)
    fig = new_figure(4.6 * n + legend_width, height)
    return fig, list(fig.subplots(1, n, squeeze=False)[0])


def _metric_label(metric: str) -> str:
    if metric == "train_loss":
        return "train_loss (mean of the epoch's batch losses)"
    if metric == "reg_loss":
        return "reg_loss (mean of the epoch's penalties)"
    return metric


def _text(text: str) -> str:
    """A label or title built from a run's files (names, config values) as plain text: control characters shown
    as escapes, line by line (the line breaks a title is built with stay); drawn with `parse_math=False`."""
    return "\n".join(printable(line) for line in str(text).split("\n"))


def _figure_legend(fig: Figure, handles: list[Any], labels: list[str], title: str | None) -> None:
    if handles:
        legend = fig.legend(handles, [_text(label) for label in labels], loc="outside right center",
                            title=None if title is None else _text(title), fontsize=8, title_fontsize=8,
                            frameon=False)
        for text in [*legend.get_texts(), legend.get_title()]:  # never mathtext: `$\x{$` would not parse
            text.set_parse_math(False)


LINE_STYLES = ("-", "--", ":", "-.")
"""Line styles of the runs of one colour (their seeds), in turn."""


def curves_figure(series: list[dict[str, Any]], metrics: list[str], *, title: str = "",
                  legend_title: str | None = None) -> Figure:
    """One panel per metric, one line per run against its epochs, one legend entry per label (right of the
    panels). Runs of one `group` share a colour, `line` picks their style (the seeds of one setting).
    A panel whose positive values span more than a factor of 30 has a logarithmic y axis.

    series: dicts with `label`, `group`, `line` (int), `x` (epochs) and `y` ({metric: values, None where
    missing}).
    """
    groups = list(dict.fromkeys(s.get("group", s["label"]) for s in series))
    colors = dict(zip(groups, series_colors(len(groups)), strict=True))
    labels = list(dict.fromkeys(s["label"] for s in series))
    wrapped, legend_title = legend_entries(labels, legend_title)
    fig, axes = _panels(len(metrics), wrapped, legend_title)
    handles: dict[str, Any] = {}
    for ax, metric in zip(axes, metrics, strict=True):
        values = []
        for s in series:
            ys = np.array([np.nan if v is None else v for v in s["y"][metric]], dtype=np.float64)
            values += [v for v in ys if np.isfinite(v)]
            (line,) = ax.plot(s["x"], ys, color=colors[s.get("group", s["label"])], lw=1.4,
                              ls=LINE_STYLES[s.get("line", 0) % len(LINE_STYLES)],
                              marker="o" if len(ys) < 12 else None, ms=3)
            handles.setdefault(s["label"], line)
        positive = [v for v in values if v > 0]
        if positive and len(positive) == len(values) and max(positive) > 30 * min(positive):
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(_text(_metric_label(metric)), fontsize=9, parse_math=False)
        ax.grid(True, which="both", alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(_text(title), fontsize=10, parse_math=False)
    _figure_legend(fig, list(handles.values()), legend_entries(list(handles))[0], legend_title)
    return fig


def sweep_figure(series: list[dict[str, Any]], metrics: list[str], *, x_label: str, scale: str = "linear",
                 ticks: list[tuple[float, str]] | None = None, title: str = "",
                 legend_title: str | None = None) -> Figure:
    """One panel per metric: for each series (a group of runs) the mean at each x as a line with markers, a band
    of plus-minus one standard deviation where there are several runs, and each run's value as a small dot.

    series: dicts with `label`, `x` (positions), `mean`, `std` ({metric: one value or None per x}) and
    `points` ({metric: [[x, y], ...]}). `scale`: linear, log, symlog (0 among positive values spanning
    decades) or category (`ticks`: positions and labels).
    """
    colors = series_colors(len(series))
    wrapped, legend_title = legend_entries([s["label"] for s in series], legend_title)
    shown = len(series) > 1 or legend_title
    fig, axes = _panels(len(metrics), wrapped if shown else [], legend_title)
    handles, labels = [], []
    for ax, metric in zip(axes, metrics, strict=True):
        for s, color in zip(series, colors, strict=True):
            x = np.asarray(s["x"], dtype=np.float64)
            mean = np.array([np.nan if v is None else v for v in s["mean"][metric]], dtype=np.float64)
            std = np.array([np.nan if v is None else v for v in s["std"][metric]], dtype=np.float64)
            (line,) = ax.plot(x, mean, color=color, lw=1.6, marker="o", ms=4)
            if np.isfinite(std).any():
                ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.18, lw=0)
            points = np.asarray(s["points"][metric], dtype=np.float64).reshape(-1, 2)
            if len(points) > np.isfinite(mean).sum():
                ax.scatter(points[:, 0], points[:, 1], color=color, s=9, alpha=0.45, linewidths=0)
            if metric == metrics[0]:
                handles.append(line)
                labels.append(s["label"])
        if scale == "log":
            ax.set_xscale("log")
        elif scale == "symlog":
            positive = [v for s in series for v in s["x"] if v > 0]
            ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
        elif scale == "category" and ticks:
            ax.set_xticks([t for t, _ in ticks], [_text(label) for _, label in ticks],
                          rotation=30 if len(ticks) > 4 else 0, ha="right" if len(ticks) > 4 else "center",
                          fontsize=8, parse_math=False)
        ax.set_xlabel(_text(x_label + (" (log scale)" if scale in ("log", "symlog") else "")), parse_math=False)
        ax.set_title(_text(metric), fontsize=9, parse_math=False)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(_text(title), fontsize=10, parse_math=False)
    if shown:
        _figure_legend(fig, handles, legend_entries(labels)[0], legend_title)
    return fig
