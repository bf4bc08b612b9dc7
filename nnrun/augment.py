"""Data augmentation of image batches: random translations (pad and crop) and horizontal flips.

`Augmentation(image_shape, flip=..., translate=k, padding=...)` is called on each training batch
X: (B, C*H*W), rows channel-major, with a generator (the experiment's `augment` stream), and
returns a new (B, C*H*W) float32 array; X and the labels are left as they are. Per example, in
this order:

1. translation (`translate: k` > 0): a shift (sy, sx), each drawn uniformly from -k..k, moves the
   content sy pixels down and sx pixels right, `out[i, j] = in[i - sy, j - sx]`; pixels moved in
   from outside are the padding: `zero` (the value 0) or `reflect` (mirrored at the border without
   repeating the edge, numpy's and PyTorch's `reflect`). This is pad-by-k-then-crop at offset
   (k - sy, k - sx), torchvision's `RandomCrop(size, padding=k, padding_mode=...)`.
2. horizontal flip (`flip`): with probability 1/2, `out[i, j] = in[i, W - 1 - j]`.

Draws per batch, from the generator in this order: B uniforms for the flips (`< 0.5` flips),
then the B vertical and the B horizontal shifts. The same seed gives the same batches.

Augmenting images that were already preprocessed: `pixel_affine = (scale, shift)`, both (D,),
says the data are `(raw - shift) / scale` per pixel. Each batch is then mapped back to raw pixels
(`x * scale + shift`), moved, and mapped forward again, so the result is exactly the preprocessing
of the augmented raw image (up to float rounding; zero padding is a raw 0). Without it the pixels
are moved as they are. Vectorized over the batch: a loop runs over the 2k + 1 shift values of
each axis, never over examples. A batch on a GPU is augmented there (the draws stay on the host,
from the same stream, so a GPU run moves the same images the same way).

`Mirror(image_shape, pixel_affine)` is the deterministic flip of test-time flip averaging
(`augment.test_flip`): every image of a batch mirrored left-right, through the same raw-pixel mapping,
so the result is the preprocessing of the mirrored raw image (after ZCA: the whitened image mirrored).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnrun.backend import to_device, xp_of
from nnrun.nn.losses import LOSSES

PADDING_MODES = ("zero", "reflect")
"""How translations fill the pixels they move in: `zero` (0) or `reflect` (mirrored at the border)."""


@dataclass(frozen=True, eq=False)
class Augmentation:
    """Random flips and translations of batches of (C, H, W) images stored as rows (see the module docstring)."""

    image_shape: tuple[int, int, int]
    flip: bool = False
    translate: int = 0
    padding: str = "zero"
    pixel_affine: tuple[np.ndarray, np.ndarray] | None = None

    def __post_init__(self) -> None:
        c, h, w = self.image_shape
        if self.padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {', '.join(PADDING_MODES)}, got {self.padding!r}")
        if not 0 <= self.translate < min(h, w):
            raise ValueError(f"translate must be in 0..{min(h, w) - 1} for {h}x{w} images, got {self.translate}")
        object.__setattr__(self, "pixel_affine", _float32_affine(self.pixel_affine, c * h * w))

    @property
    def active(self) -> bool:
        """Whether a batch changes at all (flips or translations on)."""
        return self.flip or self.translate > 0

    def __call__(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """X: (B, C*H*W) float32 -> augmented copy (B, C*H*W); draws from `rng` as the module docstring says."""
        c, h, w = self.image_shape
        n, k = len(X), self.translate
        xp = xp_of(X)
        flips, shifts = self.draws(n, rng)

        def where(mask: np.ndarray) -> np.ndarray:
            """The examples a host mask picks, as an index array on X's device."""
            return to_device(np.flatnonzero(mask), xp)

        images = _to_raw(X.reshape(n, c, h, w), self.pixel_affine)
        out = xp.empty((n, c, h, w), dtype=xp.float32)
        if k:
            padded = self._pad(images, k)
            rows = xp.empty((n, c, h, w + 2 * k), dtype=xp.float32)
            for offset in range(2 * k + 1):  # crop rows starting at k - sy
                chosen = where(shifts[0] == k - offset)
                rows[chosen] = padded[chosen, :, offset:offset + h, :]
            for offset in range(2 * k + 1):  # then columns starting at k - sx, mirrored where flipped
                at = shifts[1] == k - offset
                kept, flipped = where(at & ~flips), where(at & flips)
                out[kept] = rows[kept, :, :, offset:offset + w]
                out[flipped] = _mirrored(rows[flipped, :, :, offset:offset + w])
        else:
            out[...] = images
            flipped = where(flips)
            out[flipped] = _mirrored(images[flipped])
        return _from_raw(out, self.pixel_affine).reshape(n, c * h * w)

    def draws(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The moves of a batch of n: flips (n,) bool and shifts (2, n) int64 (vertical, horizontal), drawn from
        `rng` in the module docstring's order (a GPU step draws them here too, a whole epoch at a time)."""
        k = self.translate
        flips = rng.random(n) < 0.5 if self.flip else np.zeros(n, dtype=bool)
        shifts = rng.integers(-k, k + 1, size=(2, n)) if k else np.zeros((2, n), dtype=np.int64)
        return flips, shifts

    def _pad(self, images: np.ndarray, k: int) -> np.ndarray:
        """images (n, C, H, W) -> (n, C, H + 2k, W + 2k), padded with zeros or reflected (as `np.pad`'s
        `constant` and `reflect` modes, by slices: np.pad takes several times longer)."""
        n, c, h, w = images.shape
        xp = xp_of(images)
        padded = xp.zeros((n, c, h + 2 * k, w + 2 * k), dtype=xp.float32)
        padded[:, :, k:k + h, k:k + w] = images
        if self.padding == "reflect":  # padded row k - r holds image row r (r = 1..k); rows, then columns
            padded[:, :, :k, k:k + w] = padded[:, :, 2 * k:k:-1, k:k + w]
            padded[:, :, k + h:, k:k + w] = padded[:, :, k + h - 2:h - 2:-1, k:k + w]
            padded[:, :, :, :k] = padded[:, :, :, 2 * k:k:-1]
            padded[:, :, :, k + w:] = padded[:, :, :, k + w - 2:w - 2:-1]
        return padded


@dataclass(frozen=True, eq=False)
class Mirror:
    """Every image of a batch mirrored left-right, `out[c, i, j] = in[c, i, W - 1 - j]`: the second view of
    test-time flip averaging. `pixel_affine` as `Augmentation`'s: the batch is mapped back to raw pixels,
    mirrored and mapped forward, so the result is the preprocessing of the mirrored raw image; without it
    (no preprocessing, or ZCA) the pixels are mirrored as they are. No draws: the same batch gives the
    same mirror."""

    image_shape: tuple[int, int, int]
    pixel_affine: tuple[np.ndarray, np.ndarray] | None = None

    def __post_init__(self) -> None:
        c, h, w = self.image_shape
        object.__setattr__(self, "pixel_affine", _float32_affine(self.pixel_affine, c * h * w))

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """X: (B, C*H*W) float32, on the host or a GPU -> a new (B, C*H*W) array of the mirrored images there."""
        c, h, w = self.image_shape
        n = len(X)
        out = xp_of(X).empty((n, c, h, w), dtype=X.dtype)
        out[...] = _mirrored(_to_raw(X.reshape(n, c, h, w), self.pixel_affine))
        return _from_raw(out, self.pixel_affine).reshape(n, c * h * w)


def flip_average_problem(loss_name: str, has_proba: bool, pca: int | None, whiten: bool | str) -> str | None:
    """Why test-time flip averaging cannot apply to a run with this loss (`has_proba`: whether it gives
    probabilities) and preprocessing, as a phrase for a message; None when it can. Image data are checked
    where the data are known."""
    if not has_proba:
        return (f"flip averaging averages the probabilities of each image and its mirror, and loss.name={loss_name} "
                "gives none (its outputs are scores, margins or values); it needs a loss with probabilities: "
                f"{', '.join(name for name, loss in LOSSES.items() if loss.has_proba)}")
    if whiten is True or (pca is not None and whiten != "zca"):
        return ("flip averaging mirrors images, and preprocess.pca / preprocess.whiten: true turn them into "
                "principal components; use whiten: zca (whitened images stay images) or pca: null and whiten: false")
    return None


def _float32_affine(pixel_affine: tuple[np.ndarray, np.ndarray] | None,
                    d: int) -> tuple[np.ndarray, np.ndarray] | None:
    """`(scale, shift)` as float32 (d,) host arrays (None stays None)."""
    if pixel_affine is None:
        return None
    scale, shift = (np.asarray(a, dtype=np.float32).reshape(d) for a in pixel_affine)
    return scale, shift


def _to_raw(images: np.ndarray, pixel_affine: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Preprocessed images (n, C, H, W) -> raw pixels `x * scale + shift` (a new array); without `pixel_affine`
    the images themselves."""
    if pixel_affine is None:
        return images
    xp = xp_of(images)
    scale, shift = (to_device(a, xp).reshape(1, *images.shape[1:]) for a in pixel_affine)
    raw = images * scale
    raw += shift
    return raw


def _from_raw(raw: np.ndarray, pixel_affine: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Raw pixels (n, C, H, W) -> preprocessed again, `(x - shift) / scale`, in place; returns `raw`."""
    if pixel_affine is not None:
        xp = xp_of(raw)
        scale, shift = (to_device(a, xp).reshape(1, *raw.shape[1:]) for a in pixel_affine)
        raw -= shift
        raw /= scale
    return raw


def _mirrored(images: np.ndarray) -> np.ndarray:
    """images (n, C, H, W) mirrored left-right: `out[..., j] = in[..., W - 1 - j]` (a view)."""
    return images[..., ::-1]
