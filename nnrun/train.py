"""`nnrun train`: run one experiment into a run directory, from config to summary.

`run_experiment(cfg, run, reporter)` assembles the experiment (`nnrun.experiment`), writes the
resolved config, the fitted preprocessing and the target description, trains with
`nnrun.trainer.fit` (metrics saved after every epoch), then evaluates every split and writes
the weights and `summary.json`. A run that diverges or is interrupted saves its last good
weights and a summary saying why, then raises `RunFailed`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from nnrun.config import ExperimentConfig
from nnrun.errors import RunFailed
from nnrun.experiment import assemble
from nnrun.rundir import RunDir
from nnrun.trainer import Diverged, History, Reporter, SilentReporter, evaluate, fit


def run_experiment(cfg: ExperimentConfig, run: RunDir, reporter: Reporter | None = None) -> dict[str, Any]:
    """Run the experiment `cfg` into `run` and return the summary (also written to summary.json).

    Raises `UserInputError` for bad data or config, `RunFailed` (after saving state) when
    training diverges or is interrupted.
    """
    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    run.write_config(cfg.to_yaml())
    experiment = assemble(cfg)
    data, loss_fn, model = experiment.data, experiment.loss, experiment.model
    run.write_preprocess(experiment.prepared.preprocessor.statistics())
    run.write_targets({"kind": np.array(data.target_kind), "names": np.array(data.target_names_of_kind, dtype=str),
                       **loss_fn.state()})
    n_outputs = loss_fn.output_dim(data.n_targets)
    n_params = sum(p.value.size for p in model.params)
    reporter.start({"name": cfg.name, "run_dir": str(run.path), "dataset": data.name, **data.sizes(),
                    "features": data.n_features, "loss": cfg.loss.name, "targets": data.target_kind,
                    "outputs": n_outputs, "parameters": n_params})
    history = History()
    status, reason = "completed", None
    try:
        # Overflow on the way to a NaN loss is reported as a failed run, not as NumPy warnings.
        with np.errstate(over="ignore", invalid="ignore"):
            fit(model, loss_fn, data, experiment.setup, reporter, history, lambda h: run.write_metrics(h.rows))
    except Diverged as e:
        status, reason = "failed", str(e)
    except KeyboardInterrupt:
        status, reason = "interrupted", "interrupted by the user"
    run.write_metrics(history.rows)
    summary: dict[str, Any] = {"status": status, "name": cfg.name, "seed": cfg.seed, "dataset": data.name,
                               "epochs": len(history.rows), **{f"n_{k}": v for k, v in data.sizes().items()},
                               "parameters": n_params, "best_epoch": history.best_epoch,
                               "stopped_early": history.stopped_early,
                               "restored_best": history.restored_best}
    if status != "completed":
        model.load_state_dict(history.last_good)
        run.write_model(history.last_good)
        summary.update({"reason": reason, "seconds": time.perf_counter() - started})
        run.write_summary(summary)
        raise RunFailed(f"{reason}; status {status}. Last good weights and metrics saved in {run.path}")
    run.write_model(model.state_dict())
    batch = cfg.train.eval_batch_size
    final = {split: evaluate(model, loss_fn, X, y, batch, detail=True)
             for split, X, y in (("train", data.X_train, data.y_train), ("val", data.X_val, data.y_val),
                                 ("test", data.X_test, data.y_test))}
    for split, values in final.items():
        summary.update({f"{split}_{k}": v for k, v in values.items()})
    seconds = time.perf_counter() - started
    train_seconds = sum(r["seconds"] for r in history.rows)
    summary.update({"seconds": seconds, "seconds_per_epoch": train_seconds / max(len(history.rows), 1),
                    "run_dir": str(run.path)})
    run.write_summary(summary)
    reporter.end(summary)
    return summary


def default_run_path(runs_root: Path, name: str) -> Path:
    """`runs_root/<name>-<YYYYmmdd-HHMMSS>`, with a numeric suffix if that exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = runs_root / f"{name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = runs_root / f"{name}-{stamp}-{n}"
    return path
