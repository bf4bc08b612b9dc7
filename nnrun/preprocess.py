"""Preprocessing fitted on the training split only, then applied to train, val and test.

Fitting statistics on all data and splitting afterwards leaks val/test information into
training: `fit` only ever sees `X_train`. Rows are examples; data are float32 `(N, D)`.

Steps, in order (each optional, chosen by `PreprocessSettings`):

1. centre: `none`; `per_feature` subtracts the mean image `mean = X.mean(0)`; `global` one scalar
   `X.mean()`; `per_channel` one mean per colour channel (rows are channel-major, `image_shape`
   = (C, H, W): for CIFAR-10 1024 red, then 1024 green, then 1024 blue values).
2. scale: `none`; `std` divides each centred feature by its standard deviation (ddof 0);
   `global` divides every feature by one scalar, the standard deviation of all N x D training
   values about their grand mean `m` (ddof 0): `s = sqrt(sum_ij (X_ij - m)**2 / (N D))`, what
   scikit-learn's `StandardScaler` gives for `X.reshape(-1, 1)`. Like `std` it does not depend
   on the centring mode (so arms that differ in centring alone divide by the same number), and
   computed as `s**2 = mean_j(var_j) + var_j(mean_j)` from the per-feature statistics;
   `minmax` maps each feature's training range onto [-1, 1]: `2 (x - min) / (max - min) - 1`
   (the centring's offset does not survive it). A feature that is constant on the training
   split (std 0, max = min), or for `global` data whose values are all equal (s = 0), is left
   unscaled (divisor 1) instead of dividing by zero.
3. PCA (`pca: k`): covariance `C = Xc.T @ Xc / N` (ddof 0) of the centred, scaled data; its
   eigenvectors `U` by descending eigenvalue `S`; `Xrot = Xc @ U[:, :k]`.
4. whitening (`whiten: true`): `Xwhite = Xrot / sqrt(S[:k] + eps)`. With `pca: null`, whitening
   keeps all D components. PCA needs `center: per_feature` (the config enforces it).
5. ZCA whitening (`whiten: zca`): the whitened components rotated back onto the pixel axes,
   `Xzca = Xwhite @ U[:, :k].T = Xc @ U_k diag(1 / sqrt(S_k + eps)) U_k.T`: the output keeps the
   D features (with k < D only the top k directions survive, as in step 3). It is the symmetric
   whitening matrix (the one closest to the identity), so images stay images: edges, not eigenmodes.

Numerics: the mean is accumulated in float64; the covariance is one float32 `ssyrk` (half the
flops of `X.T @ X`) per block of `CHUNK_ROWS` centred rows, the blocks summed in float64, which keeps
the whitened training covariance within 0.25 % of the identity on CIFAR-10 (one float32
product over all 50,000 rows: 1.3 %); the symmetric eigendecomposition (`scipy.linalg.eigh`
of the D x D covariance, never an SVD of the data) runs in float64, for only the top k eigenvectors
when k <= D / 4. Eigenvalues below `D * eps64 * max(S)` are rounding noise and are set to 0. Each
eigenvector's sign is fixed so that its largest-magnitude entry is positive. With fewer training
rows than features (N < D) the covariance has rank at most N - 1, and float32 products would leave
noise eigenvalues in its null directions far above that cut-off (up to 7.8e-2 for 300 raw CIFAR-10
images), which whitening would then divide by instead of `sqrt(eps)`; so there the blocks are
multiplied in float64 (`dsyrk`: N is small, so this costs little), and the null directions get
eigenvalue 0 as documented.

Memory: fitting never copies X (only one block of rows at a time), and `transform(X, copy=False)`
works in place (or, when PCA reduces the dimension, writes only the smaller output).

On a GPU (`fit(X, xp=cupy)`, what a run with `train.device: gpu` does) the training split is
uploaded once and the mean, the covariance (float32 products of the same blocks, summed in
float64) and the float64 eigendecomposition (`cupy.linalg.eigh`, all D pairs) are computed
there; the statistics come back to the host, so what is saved and applied is the same kind of
object either way. `transform` computes on the device of the array it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from nnrun.backend import is_device_array, to_device, to_host, xp_of
from nnrun.datasets.safe import read_npz_arrays
from nnrun.errors import UserInputError
from nnrun.io import write_npz

CHUNK_ROWS = 8192
"""Rows per block when accumulating the covariance and when transforming with a projection."""
SUBSET_EIGH_FRACTION = 4
"""Compute only the top k eigenvectors (`subset_by_index`) when k <= D // SUBSET_EIGH_FRACTION."""
OnProgress = Callable[[str, int, "int | None"], None]
"""`(stage, done, total)`: what `Preprocessor.fit` reports while it works (total None: not known)."""
CENTER_MODES = ("none", "per_feature", "global", "per_channel")
"""Mean subtraction modes (step 1)."""
SCALE_MODES = ("none", "std", "global", "minmax")
"""Scaling modes (step 2)."""
WHITEN_MODES = (False, True, "zca")
"""Whitening: off, PCA whitening (step 4, output in the eigenvector basis) or ZCA (step 5, pixel axes)."""
STATISTICS_KEYS = ("center", "scale", "pca", "whiten", "eps", "n_features", "image_shape", "mean", "std", "min",
                   "max", "eigenvalues", "components", "total_variance")
"""Every array `Preprocessor.statistics()` may write to a `preprocess.npz` (a file holding more is refused)."""


@dataclass(frozen=True)
class PreprocessSettings:
    """The preprocessing steps: `center` (one of `CENTER_MODES`), `scale` (one of `SCALE_MODES`), `pca`
    (components kept, None: no reduction), `whiten` (one of `WHITEN_MODES`: False, True to divide each
    component by sqrt(eigenvalue + eps), "zca" to also rotate back to pixel axes) and `eps`.
    PCA and whitening need `center="per_feature"`."""

    center: str = "per_feature"
    scale: str = "none"
    pca: int | None = None
    whiten: bool | str = False
    eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.center not in CENTER_MODES:
            raise ValueError(f"center must be one of {', '.join(CENTER_MODES)}, got {self.center!r}")
        if self.scale not in SCALE_MODES:
            raise ValueError(f"scale must be one of {', '.join(SCALE_MODES)}, got {self.scale!r}")
        if not (isinstance(self.whiten, bool) or self.whiten == "zca"):
            raise ValueError(f"whiten must be false, true or 'zca', got {self.whiten!r}")
        if (self.pca is not None or self.whiten) and self.center != "per_feature":
            raise ValueError(f"PCA and whitening need center='per_feature', got {self.center!r}")

    @property
    def zca(self) -> bool:
        """Whether whitening is ZCA (the whitened components rotated back to the input axes)."""
        return self.whiten == "zca"


# ---- statistics in blocks of rows ---------------------------------------------------------------

def column_mean(X: np.ndarray) -> np.ndarray:
    """Per-feature mean of X: (N, D) float32 -> (D,) float64, accumulated in float64.

    Exact for constant features, so their centred values are exactly 0. Computed on the device of X.
    """
    xp = xp_of(X)
    return xp.sum(X, axis=0, dtype=xp.float64) / len(X)


def column_sum_squares(X: np.ndarray, mean: np.ndarray, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """`sum_i (X[i] - mean)**2` per feature: X (N, D) float32, mean (D,) float32 -> (D,) float64 (on X's device)."""
    xp = xp_of(X)
    total = xp.zeros(X.shape[1])
    buf = xp.empty((min(chunk_rows, len(X)), X.shape[1]), dtype=xp.float32)
    for i in range(0, len(X), chunk_rows):
        block = buf[: len(X[i:i + chunk_rows])]
        xp.subtract(X[i:i + chunk_rows], mean, out=block)
        total += xp.einsum("ij,ij->j", block, block)
    return total


def scatter_matrix(X: np.ndarray, mean: np.ndarray, chunk_rows: int = CHUNK_ROWS,
                   on_block: Callable[[int, int], None] | None = None, exact: bool = False) -> np.ndarray:
    """The scatter `Xc.T @ Xc` of `Xc = X - mean`: X (N, D) float32, mean (D,) float32 -> (D, D) float64.

    Only the upper triangle is filled (Fortran order): each block of `chunk_rows` centred rows goes
    through one float32 `ssyrk`, and the blocks are summed in float64. X is never copied whole.
    `exact=True` takes float64 products (`dsyrk`) instead: what a fit with fewer rows than features
    needs, where the float32 rounding of the products would fill the D - N + 1 null directions with
    noise eigenvalues far above the cut-off (module docstring). `on_block(rows_done, N)` is called
    after each block (progress). On a GPU (X and mean there) each block is one product
    `block.T @ block` (float32, or float64 when exact) and the whole matrix is filled.
    """
    n, d = X.shape
    work = np.float64 if exact else np.float32
    if is_device_array(X):
        xp = xp_of(X)
        total = xp.zeros((d, d))
        for i in range(0, n, chunk_rows):
            block = (X[i:i + chunk_rows] - mean).astype(work, copy=False)
            total += xp.matmul(block.T, block)
            if on_block is not None:
                on_block(min(i + chunk_rows, n), n)
        return total
    from scipy.linalg.blas import dsyrk, ssyrk

    syrk = dsyrk if exact else ssyrk
    total = np.zeros((d, d), order="F")
    product = np.zeros((d, d), dtype=work, order="F")
    buf = np.empty((min(chunk_rows, n), d), dtype=work)
    for i in range(0, n, chunk_rows):
        block = buf[: len(X[i:i + chunk_rows])]
        np.subtract(X[i:i + chunk_rows], mean, out=block)
        # block.T is (D, rows) in Fortran order without a copy; trans=0 gives block.T @ block.
        product = syrk(1.0, block.T, beta=0.0, c=product, trans=0, lower=0, overwrite_c=1)
        for j in range(0, d, 512):  # add only the upper triangle, by blocks of columns
            stop = min(j + 512, d)
            total[:stop, j:stop] += product[:stop, j:stop]
        if on_block is not None:
            on_block(min(i + chunk_rows, n), n)
    return total


def symmetric_eigh(C: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k eigenpairs of the symmetric C: (D, D) float64, upper triangle read (C is overwritten).

    Returns eigenvalues (k,) float64, descending, clipped at 0 (values below `D * eps64 * max` are
    set to 0), and eigenvectors (D, k) float64 as columns, each signed so that its entry of largest
    magnitude is positive. On a GPU (C there) all D pairs come from `cupy.linalg.eigh`; the results are
    host arrays either way.
    """
    from scipy.linalg import eigh

    d = len(C)
    if is_device_array(C):
        w, U = (to_host(a) for a in xp_of(C).linalg.eigh(C, UPLO="U"))
    elif k <= d // SUBSET_EIGH_FRACTION:
        w, U = eigh(C, lower=False, overwrite_a=True, check_finite=False, driver="evr",
                    subset_by_index=[d - k, d - 1])
    else:
        w, U = eigh(C, lower=False, overwrite_a=True, check_finite=False, driver="evd")
    w, U = w[::-1][:k].copy(), U[:, ::-1][:, :k]
    top = max(float(w[0]), 0.0) if k else 0.0
    w[w < d * np.finfo(np.float64).eps * top] = 0.0
    rows = np.argmax(np.abs(U), axis=0)
    signs = np.sign(U[rows, np.arange(k)])
    signs[signs == 0] = 1.0
    return w, U * signs


def as_float32_rows(X: Any, what: str) -> np.ndarray:
    """X as a 2-D float32 array (a view when it already is one)."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"{what} must be 2-D (examples, features), got shape {X.shape}")
    return X


# ---- the preprocessor -----------------------------------------------------------------------------

class Preprocessor:
    """`fit(X_train)` learns the statistics; `transform(X)` applies them. X: float32 (N, D).

    Fitted attributes (None when the configuration does not use them), float32 unless noted:
    - `mean` (D,): the vector centring subtracts (the global or channel means repeated per feature);
    - `std` (D,): per-feature standard deviation (ddof 0) when `scale: std`; with `scale: global` the one
      global standard deviation repeated per feature;
    - `min`, `max` (D,): per-feature training range when `scale: minmax`;
    - `eigenvalues` (m,) float64, descending, and `components` (D, m), eigenvectors as columns, of
      the covariance of the centred, scaled data; m = k, or D after `fit(..., spectrum=True)`;
    - `total_variance` (float): the trace of that covariance;
    - `feature_mean` (D,): the per-feature mean (the centre of the PCA).
    The output has `n_output` features: k with PCA, D with whitening of all components, with ZCA
    or without PCA.
    """

    def __init__(self, settings: PreprocessSettings | None = None,
                 image_shape: tuple[int, int, int] | None = None) -> None:
        self.settings = settings if settings is not None else PreprocessSettings()
        self.image_shape = None if image_shape is None else tuple(int(v) for v in image_shape)
        self.n_features: int | None = None
        self.mean: np.ndarray | None = None
        self.feature_mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.min: np.ndarray | None = None
        self.max: np.ndarray | None = None
        self.eigenvalues: np.ndarray | None = None
        self.components: np.ndarray | None = None
        self.total_variance: float | None = None
        self._shift: np.ndarray | None = None
        self._divisor: np.ndarray | None = None
        self._projection: np.ndarray | None = None

    # -- configuration-derived facts --

    @property
    def uses_pca(self) -> bool:
        """Whether the output is rotated onto principal components (pca set, or whiten on)."""
        return self.settings.pca is not None or self.settings.whiten

    @property
    def n_components(self) -> int | None:
        """Principal components kept (k), or None without PCA."""
        if not self.uses_pca:
            return None
        return self.settings.pca if self.settings.pca is not None else self.n_features

    @property
    def n_output(self) -> int:
        """Features of the transformed data."""
        self._check_fitted()
        return self.n_components if self.uses_pca and not self.settings.zca else self.n_features

    # -- fitting --

    def fit(self, X: np.ndarray, *, spectrum: bool = False, progress: OnProgress | None = None,
            xp: ModuleType = np) -> Preprocessor:
        """Learn the statistics from the training split X: (N, D); never modifies X.

        `spectrum=True` also computes all D eigenpairs of the covariance (for figures and the
        explained-variance curve), even when the configuration keeps fewer or none.
        `progress(stage, done, total)` hears of the slow steps: `covariance` after each block of
        rows (done, total: rows), `eigendecomposition` before (0, None) and after (1, 1) it.
        Raises `UserInputError` when the configuration does not fit the data (k > D,
        per_channel without channels, whitening a zero eigenvalue with eps = 0). `xp`: the array module
        to compute with (CuPy: on the GPU, X uploaded once); the statistics are host arrays either way.
        """
        X = as_float32_rows(X, "X_train")
        n, d = X.shape
        s = self.settings
        if n == 0:
            raise UserInputError("preprocess: the training split is empty; nothing to fit")
        if s.pca is not None and s.pca > d:
            raise UserInputError(
                f"preprocess.pca: {s.pca} components asked for, but the training data has {d} features; "
                f"allowed: 1..{d}, or null (no reduction)")
        if s.center == "per_channel":
            self._check_channels(d)
        self.n_features = d
        k = self.n_components
        need_eig = self.uses_pca or spectrum
        X_fit = to_device(X, xp)
        spread = s.scale in ("std", "global")
        mu = to_host(column_mean(X_fit)) if (s.center != "none" or spread or need_eig) else None
        if mu is not None:
            self.feature_mean = mu.astype(np.float32)
        if s.center == "per_feature":
            self.mean = self.feature_mean
        elif s.center == "global":
            self.mean = np.full(d, mu.mean(), dtype=np.float32)
        elif s.center == "per_channel":
            channels = self.image_shape[0]
            self.mean = np.repeat(mu.reshape(channels, -1).mean(axis=1), d // channels).astype(np.float32)
        on_block = (lambda done, total: progress("covariance", done, total)) if progress is not None else None
        mean_fit = None if self.feature_mean is None else to_device(self.feature_mean, xp)
        # Fewer rows than features: float64 products, so that the null directions get eigenvalue 0 (module docstring).
        scatter = scatter_matrix(X_fit, mean_fit, on_block=on_block, exact=n < d) if need_eig else None
        if spread:
            sum_squares = (to_host(scatter.diagonal()).copy() if scatter is not None
                           else to_host(column_sum_squares(X_fit, mean_fit)))
            variance = np.maximum(sum_squares / n, 0.0)
            if s.scale == "global":  # about the grand mean: the within-feature variance plus that of the means
                variance = np.full(d, variance.mean() + np.mean((mu - mu.mean()) ** 2))
            self.std = np.sqrt(variance).astype(np.float32)
        elif s.scale == "minmax":
            self.min, self.max = to_host(X_fit.min(axis=0)), to_host(X_fit.max(axis=0))
        del X_fit
        if scatter is not None:
            cov = scatter
            cov /= n
            divisor = self._scale_divisor()
            if divisor is not None:
                divisor = to_device(divisor, xp)
                cov /= divisor[:, None]
                cov /= divisor[None, :]
            self.total_variance = float(cov.trace())
            if progress is not None:
                progress("eigendecomposition", 0, None)
            w, U = symmetric_eigh(cov, d if spectrum else k)
            if progress is not None:
                progress("eigendecomposition", 1, 1)
            del cov, scatter
            self.eigenvalues = w
            self.components = np.ascontiguousarray(U, dtype=np.float32)
        if s.whiten and s.eps == 0 and np.any(self.eigenvalues[:k] <= 0):
            rank = int(np.count_nonzero(self.eigenvalues > 0))
            raise UserInputError(
                f"preprocess.eps: whitening divides by sqrt(eigenvalue + eps), and only {rank} of the {k} kept "
                f"components have a nonzero eigenvalue; set preprocess.eps > 0 or preprocess.pca <= {rank}")
        self._derive()
        return self

    def _check_channels(self, d: int) -> None:
        if self.image_shape is None:
            raise UserInputError(
                "preprocess.center: per_channel needs data with colour channels (an image_shape), and this "
                "dataset has none; allowed here: none, per_feature, global")
        if int(np.prod(self.image_shape)) != d:
            raise UserInputError(
                f"preprocess.center: per_channel needs image_shape {self.image_shape} to multiply to the "
                f"{d} features; allowed here: none, per_feature, global")

    def _scale_divisor(self) -> np.ndarray | None:
        """(D,) float64 divisor of the scaling step (1 for features constant on the training split)."""
        if self.settings.scale in ("std", "global"):
            spread = self.std.astype(np.float64)
        elif self.settings.scale == "minmax":
            spread = (self.max.astype(np.float64) - self.min.astype(np.float64)) / 2.0
        else:
            return None
        return np.where(spread > 0, spread, 1.0)

    def _derive(self) -> None:
        """The transform from the statistics: `(X - shift) / divisor` or `(X - shift) @ projection`.

        The projection is `diag(1 / divisor) U_k`, its columns divided by sqrt(S_k + eps) when whitening,
        then times `U_k.T` for ZCA ((D, D): whitened components rotated back to the input axes)."""
        divisor = self._scale_divisor()
        if self.uses_pca:
            k = self.n_components
            P = self.components[:, :k].astype(np.float64)
            if divisor is not None:
                P /= divisor[:, None]
            if self.settings.whiten:
                P /= np.sqrt(self.eigenvalues[:k] + self.settings.eps)[None, :]
            if self.settings.zca:
                P = P @ self.components[:, :k].T.astype(np.float64)
            self._shift = self.mean
            self._divisor = divisor
            self._projection = np.ascontiguousarray(P, dtype=np.float32)
            return
        shift = None if self.mean is None else self.mean.astype(np.float64)
        if self.settings.scale == "minmax":
            shift = (self.min.astype(np.float64) + self.max.astype(np.float64)) / 2.0
        self._shift = None if shift is None else shift.astype(np.float32)
        self._divisor = None if divisor is None else divisor.astype(np.float32)
        self._projection = None

    def pixel_affine(self) -> tuple[np.ndarray, np.ndarray] | None:
        """`(scale, shift)`, both (D,) float32, when the transform works feature by feature,
        `transform(X) = (X - shift) / scale`; None when it mixes features (PCA, whitening, ZCA)."""
        self._check_fitted()
        if self._projection is not None:
            return None
        d = self.n_features
        scale = self._divisor if self._divisor is not None else np.ones(d, dtype=np.float32)
        shift = self._shift if self._shift is not None else np.zeros(d, dtype=np.float32)
        return scale, shift

    def _check_fitted(self) -> None:
        if self.n_features is None:
            raise RuntimeError("this Preprocessor is not fitted yet: call fit(X_train) or Preprocessor.load(path)")

    # -- applying --

    def transform(self, X: np.ndarray, copy: bool = True) -> np.ndarray:
        """X: (N, D) -> (N, n_output) float32.

        With `copy=False` a float32 X may be overwritten (always use the return value): in place
        without PCA or when all D components are kept; with a reduction to k < D components only
        the (N, k) output is allocated. Blocks of `CHUNK_ROWS` rows bound the temporary memory.
        """
        self._check_fitted()
        if is_device_array(X):
            return self._transform_on_device(X, copy)
        X = as_float32_rows(X, "X")
        if X.shape[1] != self.n_features:
            raise ValueError(f"X has {X.shape[1]} features; this preprocessor was fitted on {self.n_features}")
        if self._projection is None:
            X = np.array(X, dtype=np.float32, copy=True) if copy or not X.flags.writeable else X
            if self._shift is not None:
                X -= self._shift
            if self._divisor is not None:
                X /= self._divisor
            return X
        n, k = len(X), self._projection.shape[1]
        in_place = not copy and k == self.n_features and X.flags.c_contiguous and X.flags.writeable
        out = X if in_place else np.empty((n, k), dtype=np.float32)
        buf = np.empty((min(CHUNK_ROWS, n), self.n_features), dtype=np.float32)
        for i in range(0, n, CHUNK_ROWS):
            block = buf[: len(X[i:i + CHUNK_ROWS])]
            np.subtract(X[i:i + CHUNK_ROWS], self._shift, out=block)
            np.matmul(block, self._projection, out=out[i:i + CHUNK_ROWS])
        return out

    def _transform_on_device(self, X: Any, copy: bool) -> Any:
        """`transform` of a float32 (N, D) GPU array, on the GPU: (N, n_output) there."""
        xp = xp_of(X)
        if X.ndim != 2 or X.shape[1] != self.n_features or X.dtype != xp.float32:
            raise ValueError(f"X must be float32 (N, {self.n_features}), got {X.dtype} of shape {X.shape}")
        shift = None if self._shift is None else to_device(self._shift, xp)
        if self._projection is None:
            X = X.copy() if copy else X
            if shift is not None:
                X -= shift
            if self._divisor is not None:
                X /= to_device(self._divisor, xp)
            return X
        projection = to_device(self._projection, xp)
        out = xp.empty((len(X), projection.shape[1]), dtype=xp.float32)
        for i in range(0, len(X), CHUNK_ROWS):
            xp.matmul(X[i:i + CHUNK_ROWS] - shift, projection, out=out[i:i + CHUNK_ROWS])
        return out

    def inverse_transform(self, Z: np.ndarray, unwhiten: bool = True) -> np.ndarray:
        """Map transformed rows Z: (N, n_output) back to the input (pixel) space: (N, D) float32.

        With PCA to k < D components this is the projection onto those components
        (`Xc @ U_k @ U_k.T`, then the scaling and the mean restored). With `unwhiten=False`,
        whitened rows are only rotated back onto the feature axes (`Z @ U_k.T`, no variances,
        scaling or mean restored): the picture of whitened data, to be shown with its own contrast
        (ZCA output already is that picture and comes back unchanged).
        """
        self._check_fitted()
        Z = as_float32_rows(Z, "Z")
        if Z.shape[1] != self.n_output:
            raise ValueError(f"Z has {Z.shape[1]} features; this preprocessor outputs {self.n_output}")
        divisor = self._scale_divisor()
        if not self.uses_pca:
            X = Z.astype(np.float64)
            if divisor is not None:
                X *= divisor
            if self._shift is not None:
                X += self._shift
            return X.astype(np.float32)
        k = self.n_components
        back = self.components[:, :k].T.astype(np.float64)
        if not unwhiten:
            return Z.copy() if self.settings.zca else (Z @ back.astype(np.float32)).astype(np.float32)
        if self.settings.whiten:
            back *= np.sqrt(self.eigenvalues[:k] + self.settings.eps)[:, None]
        if self.settings.zca:  # undo the rotation back to pixel axes first: Xwhite = Z @ U_k
            back = self.components[:, :k].astype(np.float64) @ back
        if divisor is not None:
            back *= divisor[None, :]
        X = Z @ back.astype(np.float32)
        X += self._shift
        return X

    def with_components(self, k: int, *, whiten: bool | str, eps: float | None = None) -> Preprocessor:
        """A preprocessor keeping the top k components this fit computed (per-feature centring, same scaling).

        Needs k <= the eigenvectors computed (fit with `spectrum=True` for all D).
        """
        self._check_fitted()
        if self.components is None or not 1 <= k <= self.components.shape[1]:
            have = 0 if self.components is None else self.components.shape[1]
            raise ValueError(f"k={k} components asked for, {have} computed; fit with spectrum=True")
        settings = replace(self.settings, center="per_feature", pca=k, whiten=whiten,
                           eps=self.settings.eps if eps is None else eps)
        other = Preprocessor(settings, self.image_shape)
        other.n_features = self.n_features
        other.mean = other.feature_mean = self.feature_mean
        other.std, other.min, other.max = self.std, self.min, self.max
        other.eigenvalues, other.components = self.eigenvalues, self.components
        other.total_variance = self.total_variance
        other._derive()
        return other

    def explained_variance_ratio(self) -> np.ndarray:
        """Each computed component's share of the total variance, (m,) float64, descending."""
        self._check_fitted()
        if self.eigenvalues is None:
            raise ValueError("no eigenvalues: the configuration uses no PCA; fit with spectrum=True")
        return self.eigenvalues / self.total_variance if self.total_variance > 0 else np.zeros_like(self.eigenvalues)

    # -- saving and loading --

    def statistics(self) -> dict[str, np.ndarray]:
        """The fitted statistics by name: the keys of `preprocess.npz` (see docs/preprocessing.md).

        Settings: `center`, `scale` (strings), `pca` (-1 for null), `whiten` (a bool, or the string `zca`),
        `eps`, `n_features`,
        `image_shape` (when known). Arrays as in the class docstring; with PCA, `eigenvalues` (k,)
        and `components` (D, k) of the kept components and `total_variance`.
        """
        self._check_fitted()
        s = self.settings
        stats: dict[str, np.ndarray] = {
            "center": np.array(s.center), "scale": np.array(s.scale),
            "pca": np.array(-1 if s.pca is None else s.pca), "whiten": np.array(s.whiten),
            "eps": np.array(s.eps), "n_features": np.array(self.n_features)}
        if self.image_shape is not None:
            stats["image_shape"] = np.array(self.image_shape)
        for name in ("mean", "std", "min", "max"):
            value = getattr(self, name)
            if value is not None:
                stats[name] = value
        if self.uses_pca:
            k = self.n_components
            stats["eigenvalues"] = self.eigenvalues[:k]
            stats["components"] = self.components[:, :k]
            stats["total_variance"] = np.array(self.total_variance)
        return stats

    def save(self, path: str | Path) -> Path:
        """Write the statistics to `path` (a `.npz`) atomically."""
        return write_npz(path, self.statistics())

    @classmethod
    def load(cls, path: str | Path) -> Preprocessor:
        """A fitted preprocessor from a `preprocess.npz`, read through the data files' checks (members counted,
        headers before arrays, no header or zip bombs, no objects); a missing, malformed or oversized file is a
        `UserInputError` naming it. (`load_run` reads a run directory's the same way and calls `from_statistics`.)"""
        path = Path(path)
        stats = read_npz_arrays(path, what="preprocessing statistics", max_members=len(STATISTICS_KEYS))
        return cls.from_statistics(stats, path)

    @classmethod
    def from_statistics(cls, stats: dict[str, np.ndarray], path: str | Path) -> Preprocessor:
        """A fitted preprocessor from the arrays `statistics()` gave, read from `path` (named in the
        `UserInputError` that malformed statistics are)."""
        try:
            pca = int(stats["pca"])
            whiten = stats["whiten"]
            settings = PreprocessSettings(center=str(stats["center"]), scale=str(stats["scale"]),
                                     pca=None if pca < 0 else pca,
                                     whiten=str(whiten) if whiten.dtype.kind == "U" else bool(whiten),
                                     eps=float(stats["eps"]))
            shape = stats.get("image_shape")
            pre = cls(settings, None if shape is None else tuple(int(v) for v in shape))
            pre.n_features = d = int(stats["n_features"])
            for name in ("mean", "std", "min", "max"):
                if name in stats:
                    setattr(pre, name, np.asarray(stats[name], dtype=np.float32).reshape(d))
            minmax = settings.scale == "minmax"
            required = {"std": settings.scale in ("std", "global"), "min": minmax, "max": minmax,
                        "mean": settings.center != "none"}
            missing = [name for name, needed in required.items() if needed and name not in stats]
            if pre.uses_pca:
                k = pre.n_components
                pre.eigenvalues = np.asarray(stats["eigenvalues"], dtype=np.float64).reshape(k)
                pre.components = np.ascontiguousarray(stats["components"], dtype=np.float32).reshape(d, k)
                pre.total_variance = float(stats["total_variance"])
                pre.feature_mean = pre.mean
        except KeyError as e:
            raise UserInputError(f"{path} is not a preprocess.npz file: key {e} is missing") from None
        except (ValueError, TypeError) as e:
            raise UserInputError(f"{path} holds malformed preprocessing statistics: {e}") from None
        if missing:
            raise UserInputError(f"{path} is not a preprocess.npz file: key(s) {', '.join(missing)} missing")
        if settings.scale == "global" and np.unique(pre.std).size > 1:
            raise UserInputError(f"{path} holds malformed preprocessing statistics: scale is global, but std "
                                 "holds more than one value")
        pre._derive()
        return pre


def fit_preprocessor(settings: PreprocessSettings, X_train: np.ndarray,
                     image_shape: tuple[int, int, int] | None = None, xp: ModuleType = np) -> Preprocessor:
    """A `Preprocessor` for `settings` fitted on the training split X_train: (N, D), computing with `xp`."""
    return Preprocessor(settings, image_shape).fit(X_train, xp=xp)


def load_preprocessor(path: str | Path) -> Preprocessor:
    """The fitted `Preprocessor` saved at `path` (a `preprocess.npz`)."""
    return Preprocessor.load(path)
