"""nnrun: an experiment runner for the setup choices of a neural network.

`nnrun.load_run(path)` reads a trained run directory back as a `TrainedRun` (predict, predict_proba,
decision_function, score); it lives in `nnrun.experiment` and is imported on first use, so that
`import nnrun` stays cheap.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["TrainedRun", "__version__", "load_run"]

_LAZY = ("load_run", "TrainedRun")


def __getattr__(name: str) -> Any:
    """`nnrun.load_run` and `nnrun.TrainedRun`, imported from `nnrun.experiment` when first asked for."""
    if name in _LAZY:
        from nnrun import experiment

        return getattr(experiment, name)
    raise AttributeError(f"module 'nnrun' has no attribute {name!r}")
