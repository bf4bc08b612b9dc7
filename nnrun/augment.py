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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnrun.backend import to_device, xp_of

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
        if self.pixel_affine is not None:
            scale, shift = (np.asarray(a, dtype=np.float32).reshape(c * h * w) for a in self.pixel_affine)
            object.__setattr__(self, "pixel_affine", (scale, shift))

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

        images = X.reshape(n, c, h, w)
        if self.pixel_affine is not None:
            scale, shift = (to_device(a, xp).reshape(1, c, h, w) for a in self.pixel_affine)
            images = images * scale
            images += shift
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
                out[flipped] = rows[flipped, :, :, offset:offset + w][..., ::-1]
        else:
            out[...] = images
            flipped = where(flips)
            out[flipped] = images[flipped][..., ::-1]
        if self.pixel_affine is not None:
            out -= shift
            out /= scale
        return out.reshape(n, c * h * w)

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
