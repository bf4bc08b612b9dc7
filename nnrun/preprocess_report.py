"""`nnrun preprocess`: fit the preprocessing on the training split and show what it does.

Writes the fitted statistics, the eigenvector grid, reconstructions and ZCA-whitened images (image
data), the explained-variance curve and the 2-D toy cloud into one folder, and reports shapes, the
variance kept at several k and the fit time. `FitProgress` shows each slow step on the terminal
while it runs (loading, the covariance block by block, the eigendecomposition, the figures).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from nnrun import plots
from nnrun.config import ExperimentConfig
from nnrun.experiment import load_data, preprocess_settings, preprocessing_rows
from nnrun.io import check_output_folder
from nnrun.preprocess import OnProgress, Preprocessor
from nnrun.tables import DataTable, pct, stderr_console

REPORT_KS = (10, 50, 100, 144)
"""Numbers of components at which `nnrun preprocess` reports the explained variance."""
FIGURE_K = 144
"""Components kept in the reconstruction figures (at most D // 4)."""
FIGURE_IMAGES = 49
"""Training images shown in the reconstruction figure (a 7 x 7 grid)."""
REPORT_FILES = {
    "statistics": "preprocess.npz",
    "eigenvectors": "eigenvectors.png",
    "reconstructions": "reconstructions.png",
    "zca": "zca.png",
    "explained_variance": "explained_variance.png",
    "toy_cloud": "toy_cloud.png",
}
"""What `preprocess_report` writes into its output folder, by key."""
ZCA_EPS_SHARES = (0.01, 0.1)
"""The ZCA figure's eps values besides the config's, as shares of the mean per-feature variance."""


class FitProgress:
    """Shows `preprocess_report`'s steps on a console as they run: a line per step with a spinner, a bar
    (rows of the covariance, figures) where the amount is known, and the elapsed time. Off a terminal
    rich draws nothing until the end; `close()` leaves the terminal clean."""

    def __init__(self, console: Console = stderr_console) -> None:
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console,
                                 transient=True)
        self.tasks: dict[str, TaskID] = {}
        self.progress.start()

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        """`nnrun.preprocess.OnProgress`: `stage` has done `done` of `total` (None: unknown)."""
        for name, task in self.tasks.items():
            if name != stage and not self.progress.tasks[task].finished:
                self.progress.update(task, total=1, completed=1)
        detail = f"{done}/{total}" if total else ""
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, completed=done, detail=detail)
        else:
            self.progress.update(self.tasks[stage], total=total, completed=done, detail=detail)

    def close(self) -> None:
        self.progress.stop()


def _silent(stage: str, done: int, total: int | None) -> None:
    pass


def preprocess_report(cfg: ExperimentConfig, *, out: str | Path, overwrite: bool = False,
                      progress: OnProgress | None = None) -> dict[str, Any]:
    """Fit `cfg.preprocess` (cfg: an `ExperimentConfig`) on its dataset's training split; write figures.

    Writes `REPORT_FILES` into `out` (the statistics and, for image data, the eigenvector grid and
    the reconstructions; always the explained-variance curve and the 2-D toy cloud) and returns
    shapes, the variance kept at several k, the fit time and the paths written. Existing files
    of those names are an error unless `overwrite`. `progress(stage, done, total)` hears of each
    step (`nnrun.preprocess.OnProgress`; `FitProgress` shows them).
    """
    report = progress or _silent
    out = check_output_folder(out, tuple(REPORT_FILES.values()), overwrite)
    report(f"loading {cfg.data.dataset}", 0, None)
    data = load_data(cfg)
    X = data.X_train
    n, d = X.shape
    report(f"mean of {n} x {d} training rows", 0, None)
    started = time.perf_counter()
    fitted = preprocessing_rows(cfg.preprocess, data)
    pre = Preprocessor(preprocess_settings(cfg.preprocess), data.image_shape).fit(
        fitted, spectrum=True, progress=lambda stage, done, total: report(_stage_name(stage, d), done, total))
    fit_seconds = time.perf_counter() - started
    rows = "training split" if fitted is X else "all splits (preprocess.fit_on: all)"

    n_figures = 5 if data.image_shape is not None else 2
    report("figures", 0, n_figures)
    files: dict[str, str] = {}
    files["statistics"] = str(pre.save(out / REPORT_FILES["statistics"]))
    ratio = np.cumsum(pre.explained_variance_ratio())
    k = pre.n_components
    ks = sorted({*(j for j in REPORT_KS if j < d), *([k] if k is not None else [])})
    explained = {str(j): float(min(ratio[j - 1], 1.0)) for j in ks}
    figure_k = k if k is not None and k < d else min(FIGURE_K, max(1, d // 4))
    if data.image_shape is not None:
        files["eigenvectors"] = str(plots.eigenvector_grid(
            pre.components, data.image_shape, out / REPORT_FILES["eigenvectors"], eigenvalues=pre.eigenvalues))
        report("figures", 1, n_figures)
        sample = X[:FIGURE_IMAGES]
        reduced = pre.with_components(figure_k, whiten=False)
        whitened = pre.with_components(figure_k, whiten=True)
        files["reconstructions"] = str(plots.reconstruction_figure(
            sample, reduced.inverse_transform(reduced.transform(sample)),
            whitened.inverse_transform(whitened.transform(sample), unwhiten=False),
            data.image_shape, figure_k, out / REPORT_FILES["reconstructions"]))
        report("figures", 2, n_figures)
        files["zca"] = str(plots.zca_figure(sample, zca_images(pre, sample, cfg.preprocess.eps), data.image_shape,
                                            out / REPORT_FILES["zca"]))
        report("figures", 3, n_figures)
    files["explained_variance"] = str(plots.explained_variance_figure(
        pre.eigenvalues, pre.total_variance, out / REPORT_FILES["explained_variance"],
        marks=sorted({figure_k, *([k] if k is not None else [])}), title=f"{data.name}: {rows}, N={len(fitted)}"))
    report("figures", n_figures - 1, n_figures)
    files["toy_cloud"] = str(plots.toy_cloud_figure(out / REPORT_FILES["toy_cloud"], eps=cfg.preprocess.eps))
    report("figures", n_figures, n_figures)
    p = cfg.preprocess
    return {"dataset": data.name, "out": str(out), "center": p.center, "scale": p.scale, "pca": p.pca,
            "whiten": p.whiten, "eps": p.eps, "input_shape": [n, d], "output_shape": [n, pre.n_output],
            "n_components": k, "explained_variance": explained, "figure_components": figure_k,
            "fit_seconds": fit_seconds, "files": files}


def _stage_name(stage: str, d: int) -> str:
    """What the line of a `Preprocessor.fit` stage says. The eigendecomposition is one LAPACK call that holds
    the interpreter (the clock beside it cannot move until it returns): its line says so, and how big it is."""
    return {"covariance": f"covariance ({d:,} x {d:,}), rows",
            "eigendecomposition": f"eigendecomposition ({d:,} x {d:,}): one LAPACK call, the clock waits for it"
            }.get(stage, stage)


def zca_images(pre: Preprocessor, X: np.ndarray, eps: float) -> list[tuple[str, np.ndarray]]:
    """X: (n, D) ZCA-whitened with all components of `pre`'s fit (spectrum=True) at the config's `eps` and at
    `ZCA_EPS_SHARES` of the mean per-feature variance: (title, (n, D) rows) pairs."""
    mean_variance = pre.total_variance / pre.n_features
    settings = [(eps, f"ZCA, eps={eps:.3g}")]
    settings += [(share * mean_variance, f"ZCA, eps={share * mean_variance:.3g} ({share:g} x mean variance)")
                 for share in ZCA_EPS_SHARES]
    images = []
    for value, title in settings:
        # PCA whitening rotated back (`Z @ U.T`): ZCA's output for n rows without ZCA's (D, D) projection matrix.
        white = pre.with_components(pre.n_features, whiten=True, eps=value)
        images.append((title, white.inverse_transform(white.transform(X), unwhiten=False)))
    return images


def report_table(result: dict[str, Any]) -> DataTable:
    """A table of `preprocess_report`'s result (settings, shapes, variance kept, fit time)."""
    table = DataTable(f"preprocess: {result['dataset']} (fitted on the training split)", show_header=False)
    table.add_column("", "label", style="bold", key=True)
    table.add_column("", "label")
    pca = "all (whitening)" if result["pca"] is None and result["whiten"] else result["pca"]
    rows = [("center", result["center"]), ("scale", result["scale"]), ("pca", "none" if pca is None else pca),
            ("whiten", result["whiten"]), ("eps", f"{result['eps']:g}"),
            ("input shape", " x ".join(map(str, result["input_shape"]))),
            ("output shape", " x ".join(map(str, result["output_shape"])))]
    chosen = result["n_components"]
    for j, value in result["explained_variance"].items():
        label = f"variance kept, k={j}" + (" (chosen)" if chosen is not None and int(j) == chosen else "")
        rows.append((label, pct(value, 2)))
    rows.append(("fit time (with full spectrum)", f"{result['fit_seconds']:.2f} s"))
    for key, value in rows:
        table.add_row(key, str(value))
    return table
