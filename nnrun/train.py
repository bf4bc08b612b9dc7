"""`nnrun train`: run one experiment into a run directory, from config to summary; resume a stopped one.

`train_new(cfg, ...)` validates the config and the data before the run directory exists (a bad
input leaves nothing behind), claims the directory and calls `run_experiment`, which writes the
resolved config, the provenance record, the rows of each split, the fitted preprocessing and the
target description, trains with `nnrun.trainer.fit` (metrics after every epoch, `checkpoint.npz`
every `train.checkpoint_every` epochs), evaluates every split and writes the weights (with
`train.save_predictions` also the test split's predictions), the completed provenance and
`summary.json`.

A run that diverges, is interrupted (SIGINT, SIGTERM, SIGHUP) or cannot write its files still
saves what it has: metrics, the checkpoint of its last finished epoch, the last good weights and
a summary saying why, and raises `RunFailed`. Saving is shielded from further signals; a signal that
arrives once the run has completed (while it writes its weights and summary, or after) is recorded and
ignored: the run returns its completed summary (`nnrun train` exits 0).
`resume_run(path)` continues such a run from its checkpoint, bit-identical to a run that was
never stopped; a completed run continues when `train.epochs` is raised. The checkpoint is read
through the data files' checks (`read_checkpoint`) and refused unless it is one the config could
have written, and split.npz unless it holds the split's rows (`check_resumable`), before any file
of the run changes (the README's "What `--resume` checks").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nnrun.backend import host_dict
from nnrun.config import ExperimentConfig, differing_keys, load_config
from nnrun.datasets import Dataset, SplitRecord
from nnrun.datasets.safe import read_npz_arrays
from nnrun.errors import RunFailed, RunStopped, UserInputError
from nnrun.experiment import Experiment, Phase, assemble, build_schedule, describe_choices, no_phase
from nnrun.io import check_output_folder
from nnrun.nn.losses import BinnedRegression, Loss
from nnrun.provenance import end_record, start_record
from nnrun.rundir import BROKEN, BROKEN_REASON, LOCK_FILE, RUNNING, RunDir
from nnrun.signals import Interrupted, settle, shielded
from nnrun.trainer import (
    STREAMS,
    Checkpoint,
    Diverged,
    History,
    Reporter,
    SilentReporter,
    evaluate,
    evaluation_scores,
    fit,
    score_metrics,
)
from nnrun.workers import ThreadPolicy, requested_threads

CHECKPOINT_MEMBERS_PER_LAYER = 20
"""Most checkpoint.npz arrays per Linear layer (weights, BatchNorm's four, twice; two slots of four parameters)."""
RESUMABLE_KEYS = ("train.epochs", "train.device", "train.cuda_graph")
"""Config keys that may change when a run is resumed (more epochs for a finished run; the other device: the
checkpoint holds host arrays either way; the GPU's step recorded or not: the same launches)."""


class RunPruned(Exception):
    """Raised by `run_experiment`'s `on_epoch` hook (a search's pruner, `nnrun.sweep.search`) to stop the run
    after an epoch: its state is saved like an interrupted run's, with status `pruned` and the message as its
    reason. An outcome of the search, not a failure."""


def train_new(cfg: ExperimentConfig, *, out: Path | None = None, runs_dir: Path = Path("runs"),
              overwrite: bool = False, reporter: Reporter | None = None, threads: int | None = None,
              phase: Phase = no_phase, config_files: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """`nnrun train`: check `out`, load and prepare the data, then create the run directory and run.

    The folder appears only once the config and the data are known to be good. Default folder:
    `runs_dir/NAME-YYYYmmdd-HHMMSS`. `threads`: the `--threads` option (None: `nnrun.workers.choose_threads`
    decides, and counts the free cores again between epochs). `phase` marks the slow parts of preparing the
    data (loading, the preprocessing fit), before the run's header. `config_files`: the files the config was
    composed of (`nnrun.config.LoadedConfig.files`), recorded in provenance.json.
    """
    requested = requested_threads(threads)
    if out is not None:
        check_output_folder(out, None, overwrite, what="run directory",
                            hint="choose another --out, pass --overwrite, or continue it with --resume")
    experiment = assemble(cfg, phase)
    run = RunDir.create(out, overwrite) if out is not None else RunDir.create_unique(runs_dir, cfg.name)
    with run, ThreadPolicy(requested, experiment.step_flops) as policy:
        return run_experiment(cfg, run, reporter, experiment=experiment, threads=policy, config_files=config_files)


def resume_run(path: Path, overrides: list[str] | tuple[str, ...] = (), *,
               reporter: Reporter | None = None, threads: int | None = None,
               notify: Callable[[str], None] | None = None, phase: Phase = no_phase) -> dict[str, Any]:
    """`nnrun train --resume PATH`: continue the run in `path` from its checkpoint.

    `overrides` may raise `train.epochs` (to train a finished run further); any other change of the
    saved config is refused, listing the keys that differ. A run killed before its first checkpoint
    starts again from epoch 1 in the same folder. A run that diverged is refused with what helps instead
    (`lower_lr_advice`): resuming it would replay the same steps into the same divergence.
    `notify` receives a note (`schedule_stretch_note`) when a raised `train.epochs` changes the rates of a
    schedule that depends on the number of epochs (cosine, one-cycle): the run goes on, with that jump.
    """
    path = Path(path)
    requested = requested_threads(threads)
    if not (path / "config.yaml").is_file():
        status = RunDir(path).status() if (path / LOCK_FILE).is_file() else None
        if status == BROKEN:  # what `nnrun runs` lists it as
            raise UserInputError(f"--resume {path}: {BROKEN_REASON}")
        if status == RUNNING:
            raise UserInputError(f"--resume {path}: another nnrun process is starting a run in it now")
        raise UserInputError(f"--resume {path}: not a run directory (no config.yaml in it)")
    saved = load_config(path / "config.yaml", compose=False)  # resolved: it names no other file
    cfg = load_config(path / "config.yaml", overrides, compose=False)
    changed = [k for k in differing_keys(saved.model_dump(mode="json"), cfg.model_dump(mode="json"))
               if k not in RESUMABLE_KEYS]
    if changed:
        raise UserInputError(f"--resume {path}: only {', '.join(RESUMABLE_KEYS)} may change when resuming; "
                             f"these keys differ from the run's config.yaml: {', '.join(changed)}")
    with RunDir.open(path) as run:
        checkpoint = read_checkpoint(run, cfg)
        summary = run.read_summary() or {}
        if summary.get("diverged"):
            raise UserInputError(f"--resume {path}: the run diverged ({summary.get('reason')}). "
                                 f"{lower_lr_advice(saved, path)}")
        done = checkpoint.epoch if checkpoint is not None else 0
        if cfg.train.epochs < done:
            raise UserInputError(f"--resume {path}: train.epochs={cfg.train.epochs} is below the {done} epochs "
                                 "already trained")
        if summary.get("status") == "completed" and cfg.train.epochs == saved.train.epochs:
            raise UserInputError(f"--resume {path}: the run completed all {done} epochs; raise train.epochs "
                                 f"(--set train.epochs={done + 10}) to train it further")
        note = schedule_stretch_note(cfg, saved.train.epochs, done)
        if note and notify is not None:
            notify(note)
        experiment = assemble(cfg, phase)
        check_resumable(run, experiment, checkpoint)
        run.write_config(cfg.to_yaml())
        (run.path / "summary.json").unlink(missing_ok=True)
        with ThreadPolicy(requested, experiment.step_flops) as policy:
            return run_experiment(cfg, run, reporter, experiment=experiment, resume=checkpoint, threads=policy)


def schedule_stretch_note(cfg: ExperimentConfig, old_epochs: int, done: int) -> str | None:
    """What a resume to `cfg.train.epochs` epochs does to a schedule that was run over `old_epochs` epochs for
    `done` of them, when it depends on the number of epochs (cosine and one-cycle; not constant, step,
    exponential): the rate jumps from epoch `done`'s to the stretched schedule's at epoch `done + 1`, and the
    run is no longer the one `cfg.train.epochs` epochs from the start would be. None when nothing changes."""
    new_epochs = cfg.train.epochs
    if new_epochs == old_epochs or done == 0:
        return None
    schedule = build_schedule(cfg.optim)
    if all(schedule(e, old_epochs) == schedule(e, new_epochs) for e in range(min(done, old_epochs) + 1)):
        return None
    before, after = schedule(done - 1, old_epochs), schedule(done, new_epochs)
    return (f"optim.schedule {cfg.optim.schedule} depends on train.epochs: changed from {old_epochs} to {new_epochs}, "
            f"it is spread over {new_epochs} epochs from here on, so the learning rate goes from {before:.3g} in "
            f"epoch {done} to {after:.3g} in epoch {done + 1}; a {new_epochs}-epoch run from the start would have "
            f"trained epochs 1-{done} at other rates, so this run will not equal it")


def lower_lr_advice(cfg: ExperimentConfig, path: Path) -> str:
    """What helps a run that diverged: not `--resume` (it replays the same steps from the last checkpoint and
    diverges again; it also keeps `optim.lr`), but a new run of the same config with a lower learning rate."""
    return (f"Resuming would replay the same steps and diverge again: train a new run with a lower learning rate, "
            f"e.g. nnrun train {path / 'config.yaml'} --set optim.lr={cfg.optim.lr / 10:g}.")


def read_checkpoint(run: RunDir, cfg: ExperimentConfig) -> Checkpoint | None:
    """The run's checkpoint.npz, or None when it has none; read through the data files' checks (headers before
    arrays, no zip or header bombs, no objects) and its layout checked (`Checkpoint.from_arrays`). Anything
    unusable is a `UserInputError` naming the file."""
    path = run.path / "checkpoint.npz"
    if not path.is_file():
        return None
    # Per layer: weights and BatchNorm arrays twice (model.*, best.*) and the optimizer's slots of 4 parameters.
    members = 2 + CHECKPOINT_MEMBERS_PER_LAYER * (len(cfg.model.hidden) + 1)
    arrays = read_npz_arrays(path, what="checkpoint", max_members=members)
    try:
        return Checkpoint.from_arrays(arrays)
    except ValueError as e:
        raise UserInputError(f"{path} cannot be used: {e}") from None


def check_resumable(run: RunDir, experiment: Experiment, checkpoint: Checkpoint | None) -> None:
    """Refuse (`UserInputError` naming the file) to continue `run` from `checkpoint` when the checkpoint is not
    one the assembled `experiment` could have written (`Checkpoint.check`), or when the run's split.npz cannot
    be read or holds other rows than the split the config gives now (the data changed since the run)."""
    if checkpoint is not None:
        settings = experiment.setup.settings
        streams = dict.fromkeys((*STREAMS, *(("augment",) if experiment.setup.augment is not None else ())),
                                np.random.default_rng(0))
        n_batches = -(-len(experiment.data.X_train) // settings.batch_size)
        try:
            checkpoint.check(experiment.model, experiment.setup.optimizer, experiment.loss, settings, streams,
                             n_batches)
        except ValueError as e:
            raise UserInputError(f"{run.path / 'checkpoint.npz'} does not fit this run's config.yaml: {e}; "
                                 "remove it to train the run again from epoch 1") from None
    split = experiment.data.split
    if split is not None and (run.path / "split.npz").is_file():
        path = run.path / "split.npz"
        try:
            saved = SplitRecord.from_arrays(read_npz_arrays(path, what="split.npz", max_members=16))
        except ValueError as e:
            raise UserInputError(f"{path}: {e}") from None
        if not saved.same_rows(split):
            raise UserInputError(f"{path} holds other rows than the split config.yaml gives now: the data files "
                                 "changed since the run (or the file was edited); the run cannot continue on "
                                 "the data it trained on")


def run_experiment(cfg: ExperimentConfig, run: RunDir, reporter: Reporter | None = None, *,
                   experiment: Experiment | None = None, resume: Checkpoint | None = None,
                   threads: ThreadPolicy | None = None,
                   on_epoch: Callable[[dict[str, Any]], None] | None = None,
                   config_files: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run the experiment `cfg` into `run` (already claimed) and return the summary (also in summary.json).

    `experiment`: `cfg` already assembled (assembled here when None); `resume`: continue from this
    checkpoint; `threads`: the thread policy in force, adapted to the machine's load between epochs (None:
    the threads stay as they are, as in a sweep's worker). `on_epoch(row)`: called with each epoch's metric
    row once its metrics and checkpoint are saved (a search reports it to its pruner); it stops the run by
    raising `RunPruned`. Raises `UserInputError` for bad data or config, `RunFailed` (after saving state) when
    training diverges, is interrupted, is pruned (`RunStopped`, status `pruned`) or cannot write its files.
    `config_files`: the files `cfg` was composed of, for provenance.json (a resume keeps the first session's).
    """
    reporter = reporter or SilentReporter()
    settle(False)  # stop signals interrupt this run, whatever became of an earlier one in this process
    started = time.perf_counter()
    if experiment is None:
        experiment = assemble(cfg)
    data, loss_fn, model = experiment.data, experiment.loss, experiment.model
    if resume is not None:
        check_resumable(run, experiment, resume)
    try:
        # Written on a resume too: what this session trains with (a resumed run's are the same files, and
        # check_resumable has held split.npz to the rows it has).
        run.write_config(cfg.to_yaml())
        run.write_preprocess(experiment.prepared.preprocessor.statistics())
        run.write_targets({"kind": np.array(data.target_kind),
                           "names": np.array(data.target_names_of_kind, dtype=str), **loss_fn.state()})
        if data.split is not None:
            run.write_split(data.split.arrays())
        provenance = start_record()
        if config_files:
            provenance["config_files"] = config_files
        earlier = run.read_provenance() if resume is not None else None
        if earlier is not None:
            earlier.pop("layout_version", None)
            if earlier.get("config_files"):  # the files the run's config.yaml was composed of
                provenance["config_files"] = earlier["config_files"]
            provenance["earlier_sessions"] = [*earlier.pop("earlier_sessions", []), earlier]
        run.write_provenance(provenance)
    except OSError as e:
        raise RunFailed(f"cannot write the run directory {run.path}: {e.strerror or e}; nothing was "
                        "trained") from None
    n_outputs = loss_fn.output_dim(data.n_targets)
    n_params = sum(p.value.size for p in model.params)
    reporter.start({"name": cfg.name, "run_dir": str(run.path), "dataset": data.name,
                    "examples": ", ".join(f"{split} {n}" for split, n in data.sizes().items()),
                    "features": data.n_features, "targets": data.target_kind, "outputs": n_outputs,
                    "parameters": n_params,
                    **({"resumed after epoch": resume.epoch} if resume is not None else {}),
                    **({"threads": f"{threads.choice.threads} ({threads.choice.reason})"} if threads else {}),
                    **({"gpu step": "recorded once as a CUDA graph and replayed (launched kernel by kernel if "
                                    "recording fails; the summary's step_path says)" if cfg.train.cuda_graph
                        else "launched kernel by kernel (train.cuda_graph: false)"}
                       if cfg.train.device == "gpu" else {}),
                    "choices": describe_choices(cfg),
                    "selection": {"metric": f"val_{loss_fn.primary_metric}",
                                  "higher_is_better": loss_fn.higher_is_better}})
    history = History()
    saved = {"epoch": resume.epoch if resume is not None else 0}

    def save_epoch(h: History) -> None:
        if threads is not None:
            threads.adapt()
        with shielded():  # a signal during these writes stops the run after them
            run.write_metrics(h.rows)
            checkpoint = h.checkpoint
            if checkpoint.epoch % cfg.train.checkpoint_every == 0 or checkpoint.stopped_early:
                run.write_checkpoint(checkpoint.to_arrays())
                saved["epoch"] = checkpoint.epoch
        if on_epoch is not None:
            on_epoch(h.rows[-1])

    status, reason, final, diverged = "completed", None, None, False
    stage = "training"
    try:
        # Overflow on the way to a NaN loss is reported as a failed run, not as NumPy warnings.
        with np.errstate(over="ignore", invalid="ignore"):
            fit(model, loss_fn, data, experiment.setup, reporter, history, save_epoch, resume=resume)
        stage = "the final evaluation"
        batch = cfg.train.eval_batch_size
        final = {split: evaluate(model, loss_fn, X, y, batch, detail=True, mirror=experiment.mirror)
                 for split, X, y in (("train", data.X_train, data.y_train), ("val", data.X_val, data.y_val))}
        test_scores = evaluation_scores(model, loss_fn, data.X_test, batch, experiment.mirror)
        final["test"] = score_metrics(loss_fn, test_scores, data.y_test, detail=True)
        if cfg.train.save_predictions:
            stage = "saving the test predictions"
            with shielded():
                run.write_predictions(test_predictions(loss_fn, data, test_scores))
    except Diverged as e:
        status, reason, diverged = "failed", str(e), True
    except RunPruned as e:
        status, reason = "pruned", str(e)
    except Interrupted as e:
        status, reason = "interrupted", f"interrupted by {e.signal_name} during {stage}"
    except KeyboardInterrupt:
        status, reason = "interrupted", f"interrupted during {stage}"
    except OSError as e:  # a full disk, a folder made read-only or removed: the run cannot keep its state
        status, reason = "failed", f"cannot write to {run.path} during {stage}: {e.strerror or e}"
    with shielded():
        summary = _finish(cfg, run, experiment, history, final, status, reason, saved["epoch"], n_params, started,
                          reporter, provenance, diverged=diverged)
        settle()  # completed and saved: a stop signal now (or deferred while saving) cannot undo that
    return summary


def test_predictions(loss_fn: Loss, data: Dataset, scores: np.ndarray) -> dict[str, np.ndarray]:
    """The `predictions.npz` arrays of the test split from its evaluation scores (N, K) (flip-averaged where the
    final evaluation was): `indices` (its rows in the split's pool, see split.npz), `target`, `prediction` (in
    the targets' units), `scores` and, where the loss defines them, `proba`."""
    arrays = {"target": data.y_test, "prediction": loss_fn.predict(scores), "scores": scores}
    if data.split is not None:
        arrays["indices"] = np.asarray(data.split.indices["test"], dtype=np.int64)
    if loss_fn.has_proba:
        arrays["proba"] = loss_fn.predict_proba(scores)
    return arrays


def _finish(cfg: ExperimentConfig, run: RunDir, experiment: Experiment, history: History,
            final: dict[str, dict[str, float]] | None, status: str, reason: str | None, saved_epoch: int,
            n_params: int, started: float, reporter: Reporter, provenance: dict[str, Any], *,
            diverged: bool = False) -> dict[str, Any]:
    """Write what the run has (metrics, last checkpoint, weights, provenance, summary); raise `RunFailed` unless
    completed. A run that stopped says in its summary whether it `diverged` (a loss that was not finite).

    A write that fails (a full disk) makes the run fail; the others, and the summary last, are still tried,
    so that the run keeps what the disk allows and each file is whole or absent.
    """
    data, model = experiment.data, experiment.model
    failures: list[str] = []

    def attempt(write: Any, *args: Any) -> bool:
        try:
            write(*args)
        except OSError as e:
            failures.append(f"{e.strerror or e}")
            return False
        return True

    attempt(run.write_metrics, history.rows)
    checkpoint = history.checkpoint
    if checkpoint is not None and checkpoint.epoch > saved_epoch and attempt(run.write_checkpoint,
                                                                             checkpoint.to_arrays()):
        saved_epoch = checkpoint.epoch
    if status == "completed":
        attempt(run.write_model, host_dict(model.state_dict()))
    else:
        trained = final is not None or history.restored_best  # training ended: the model holds its final weights
        attempt(run.write_model, host_dict(model.state_dict()) if trained else history.last_good)
    if failures and status == "completed":
        status, reason = "failed", f"cannot write to {run.path}: {failures[0]}"
    summary: dict[str, Any] = {"status": status, "name": cfg.name, "seed": cfg.seed, "dataset": data.name,
                               "epochs": len(history.rows), **{f"n_{k}": v for k, v in data.sizes().items()},
                               "parameters": n_params, "best_epoch": history.best_epoch,
                               "stopped_early": history.stopped_early,
                               "restored_best": history.restored_best,
                               **({"step_path": history.step_path} if history.step_path is not None else {})}
    if status != "completed":
        summary.update({"reason": reason, "diverged": diverged, "checkpoint_epoch": saved_epoch,
                        "seconds": time.perf_counter() - started})
        if status == "pruned" and history.best_epoch is not None:  # the best epoch's val metrics, as a search ranks
            summary.update({k: v for k, v in history.rows[history.best_epoch - 1].items() if k.startswith("val_")})
        attempt(run.write_provenance, end_record(provenance, status, summary["seconds"]))
        attempt(run.write_summary, summary)
        written = f" Some files could not be written ({failures[-1]}): free space and resume." if failures else ""
        where = f"last checkpoint after epoch {saved_epoch}" if saved_epoch else "no epoch finished yet"
        error = RunStopped if status in ("interrupted", "pruned") else RunFailed
        if diverged:
            raise error(f"{reason}; status {status}. State saved in {run.path} ({where}). "
                        f"{lower_lr_advice(cfg, run.path)}{written}")
        raise error(f"{reason}; status {status}. State saved in {run.path} ({where}); continue with: "
                    f"nnrun train --resume {run.path}.{written}")
    for split, values in final.items():
        summary.update({f"{split}_{k}": v for k, v in values.items()})
    summary["flip_average"] = experiment.mirror is not None  # how the metrics above were computed
    if isinstance(experiment.loss, BinnedRegression):  # how the regression metrics above decoded the bins
        summary["decode"] = experiment.loss.decode
    train_seconds = sum(r["seconds"] for r in history.rows)
    summary.update({"seconds": time.perf_counter() - started,
                    "seconds_per_epoch": train_seconds / max(len(history.rows), 1), "run_dir": str(run.path)})
    attempt(run.write_provenance, end_record(provenance, status, summary["seconds"]))
    attempt(run.write_summary, summary)
    if failures:
        raise RunFailed(f"cannot write the summary to {run.path}: {failures[-1]}; the trained weights are in "
                        "model.npz")
    reporter.end(summary)
    return summary
