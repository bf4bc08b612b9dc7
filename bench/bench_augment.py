"""What training-batch augmentation costs: one epoch of the bn-dropout reference workload through
`nnrun.trainer.fit` without augmentation and with flips, translations and both, plus the
augmentation of an epoch's batches alone.

Workload: bench_epoch.py's `bn-dropout` variant (3072-512-512-10, BatchNorm, dropout keep 0.5,
batch 256) on random data of CIFAR-10's shape, 50,000 training rows, one epoch. Augmentation
treats each row as a 3 x 32 x 32 image. "after std scaling" maps each batch back to raw pixels and
forward again around the moves (what nnrun does after pixel-wise preprocessing, so that the
result equals augmenting the raw images; docs/augmentation.md); the other rows move the pixels as
they are (what it does after ZCA). The wider 3072-1024-512 network of configs/cifar10_*.yaml
costs about 2.5 times the reference epoch, so the augmentation's share of its epoch is smaller.

Usage: python bench/bench_augment.py [--repeats 3] [--samples N] [--cpu-clock] [--json PATH]
"""

from __future__ import annotations

import numpy as np
from bench_epoch import NnrunEpoch
from common import (
    B,
    check,
    clock_note,
    log,
    now,
    parse_timing_args,
    part_result,
    reference_data,
    rounds,
    summarize,
    timing_parser,
    write_result,
)

SHAPE = (3, 32, 32)
SETTINGS = {
    "flips": {"flip": True},
    "translations (4 px, zero)": {"translate": 4},
    "flips + translations (4 px, zero)": {"flip": True, "translate": 4},
    "flips + translations (4 px, reflect)": {"flip": True, "translate": 4, "padding": "reflect"},
    "flips + translations (4 px, zero), after std scaling": {"flip": True, "translate": 4, "affine": True},
}
"""Augmentation settings compared, by row name."""
LIMIT = 0.25
"""Target: augmenting an epoch's batches with flips and 4-pixel translations takes at most this share of a
bn-dropout reference epoch (the augmentation timed alone: the difference of two whole epochs is too noisy on a
shared machine to hold a target)."""


def augmentation(X: np.ndarray, affine: bool = False, **settings):
    """The `Augmentation` of `settings` for the rows of X, mapped through X's per-pixel std when `affine`."""
    from nnrun.augment import Augmentation

    pixel_affine = (X[:2000].std(axis=0) + 1, X[:2000].mean(axis=0)) if affine else None
    return Augmentation(SHAPE, pixel_affine=pixel_affine, **settings)


class AugmentedEpoch(NnrunEpoch):
    """One epoch of `fit` with the augmentation `settings` (None: without)."""

    def __init__(self, X, y, settings: dict | None):
        super().__init__(X, y, "bn-dropout")
        self.augment = augmentation(X, **settings) if settings is not None else None

    def __call__(self) -> float:
        from nnrun.experiment import train_setup
        from nnrun.trainer import History, SilentReporter, fit

        model, loss_fn = self.build()
        setup = train_setup(self.cfg)
        setup.augment = self.augment
        with np.errstate(over="ignore", invalid="ignore"):
            start = now()
            fit(model, loss_fn, self.data, setup, SilentReporter(), History())
            return now() - start


class AugmentationOnly:
    """The augmentation of one epoch's shuffled batches, nothing else (the batch gather included)."""

    def __init__(self, X, settings: dict):
        self.X, self.augment = X, augmentation(X, **settings)

    def __call__(self) -> float:
        from nnrun.rng import stream

        rng, X = stream(0, "augment"), self.X
        order = stream(0, "shuffle").permutation(len(X))
        start = now()
        for i in range(0, len(X), B):
            self.augment(X[order[i:i + B]], rng)
        return now() - start


def main() -> None:
    parser = timing_parser(__doc__.split("\n\n")[0])
    args = parse_timing_args(parser)
    part = "augment"
    title = (f"training-batch augmentation: bn-dropout reference epoch ({args.samples:,} samples)"
             + clock_note(args))
    log(f"[{part}] generating {args.samples} x 3072 float32 samples")
    X, y = reference_data(args.samples)
    competitors = {"fit, no augmentation": AugmentedEpoch(X, y, None)}
    competitors.update({f"fit, {name}": AugmentedEpoch(X, y, s) for name, s in SETTINGS.items()})
    competitors["augmentation alone: flips + translations (4 px, zero)"] = AugmentationOnly(
        X, SETTINGS["flips + translations (4 px, zero)"])
    times = rounds(competitors, args.repeats, progress=lambda m: log(f"[{part}] {m}"))
    base = min(times["fit, no augmentation"])
    rows = [{"name": name, **summarize(ts), "ratio": min(ts) / base} for name, ts in times.items()]
    added = {name: min(times[f"fit, {name}"]) / base - 1 for name in SETTINGS}
    alone = min(times["augmentation alone: flips + translations (4 px, zero)"]) / base
    checks = [check("augmenting an epoch (flips + 4-pixel translations) / a bn-dropout epoch", alone, LIMIT, "<=",
                    "%")]
    notes = ["'ratio' = this row's time / the epoch without augmentation",
             *(f"{name}: +{share:.0%} of the epoch" for name, share in added.items())]
    write_result(part_result(part, title, rows, checks, notes), args.json)


if __name__ == "__main__":
    main()
