"""`--executor slurm`: each run of a sweep (or study) as one SLURM batch job, submitted through submitit.

Why submitit rather than dask-jobqueue: the sweep (`nnrun.sweep.execute`) hands one run at a time to a
`concurrent.futures` executor and holds the run directory's lock until its result comes back. submitit
maps onto that one to one: a run is one batch job with the run's own resources (cpus per task = its BLAS
threads, a GPU for a GPU point), and its script, pickled call, log and result are files in the sweep's
folder, so the compute nodes never connect back to the machine that submits. dask-jobqueue instead starts
long-lived Dask workers as jobs that must reach a scheduler on the submitting host over the network, and a
preempted worker loses its task rather than saving and requeueing it. submitit's `LocalExecutor` runs the
same jobs as processes on this machine (`--slurm cluster=local`): how a setup is tried, and tested,
without a cluster.

Settings (`parse_slurm`): `--slurm KEY=VALUE`, repeatable: `partition`, `time` (SLURM's formats: minutes,
`H:MM:SS`, `D-HH`), `mem`, `cpus_per_task` (= `--threads`), `gpus`, `account`, `qos`, `constraint`,
`exclude`, `nodelist`, `gres`, `comment`, `mail_type`, `mail_user`, `setup` (a shell line run before the
job, repeatable), `python` (the command that starts Python on the nodes), `requeue`, `signal_delay`,
`cluster` (`slurm` or `local`); `sbatch.OPTION=VALUE` passes any other sbatch option. sbatch's own input
variables (`SBATCH_ACCOUNT`, `SBATCH_PARTITION`, ...) still apply: nnrun calls sbatch in this environment.
`check_slurm` refuses a setup that cannot work before anything runs: submitit missing, no sbatch/srun,
or settings sbatch rejects (`sbatch --test-only`).

Jobs (`SlurmPool`): one per run, named after its run directory, with `--cpus-per-task` = the run's threads
(one by default: on a cluster every extra thread is taken from another job, and a sweep gains more from
runs side by side), `NNRUN_THREADS`, `OMP_NUM_THREADS`, `OPENBLAS_NUM_THREADS` and `MKL_NUM_THREADS`
exported to the same count, the working directory of the sweep (`--chdir`), `--requeue`, and submitit's
`--signal=USR2@90`. Its files go to `RUNS_DIR/slurm/RUN_NAME/` (`JOBID_0_log.out`: stdout and stderr of
every attempt, appended). `--jobs` bounds the jobs queued or running at once. A sweep whose jobs are still
queued or running when it is started again (the first one was killed) follows them instead of submitting
the runs again.

Preemption and the time limit (`SlurmTask`, in the job): SIGTERM (preemption) and SIGUSR2 (the time limit
is near) stop the run the way they stop `nnrun train`: it saves its checkpoint and summary; the job then
requeues itself (`scontrol requeue`, same job id) and the next attempt resumes from the checkpoint. Not
requeued: a stop the sweep asked for (Ctrl-C, SIGTERM to the sweep: it cancels its jobs), `requeue=false`,
and a job that reached its time limit without finishing an epoch (it would never progress; raise `time`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, InvalidStateError
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nnrun import signals
from nnrun.errors import UserInputError, did_you_mean
from nnrun.rundir import RunDir
from nnrun.workers import GPU_RUN_THREADS, available_cores, import_submitit, in_run

LOG_FOLDER = "slurm"
"""The folder of the runs-dir that holds each run's job files: `RUNS_DIR/slurm/RUN_NAME/`."""
DEFAULT_TIME_MIN = 60
"""A job's time limit without `--slurm time=...` (a longer run continues in its requeued job)."""
DEFAULT_SIGNAL_DELAY_S = 90
"""Seconds before the time limit at which SLURM sends SIGUSR2 (submitit's default), for the run to save."""
LIMIT_SLACK_S = 120
"""SLURM may send the time-limit signal up to a minute early; a stop this close to it counts as the limit."""
POLL_SECONDS = 1.0
"""How often the sweep looks for finished jobs (a file check; submitit rate-limits its sacct calls)."""
STOP_WAIT_SECONDS = 60.0
"""How long a stopped sweep waits for its running jobs to save and report before it gives up on them."""
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
                           "COMPLETING", "SUSPENDED", "RESIZING", "PREEMPTED", "STAGE_OUT", "SIGNALING"})
"""sacct states of a job that is not over (a sweep started again follows such a job)."""
THREAD_VARIABLES = ("NNRUN_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""Set to the run's threads in every job, so that its BLAS starts with that many."""

TEXT_KEYS = {
    "partition": "the partition (sbatch --partition)",
    "mem": "memory per job, e.g. 4G or 500M (sbatch --mem)",
    "account": "the account charged (sbatch --account)",
    "qos": "the quality of service (sbatch --qos)",
    "constraint": "node features required (sbatch --constraint)",
    "exclude": "nodes not to use (sbatch --exclude)",
    "nodelist": "nodes to use (sbatch --nodelist)",
    "gres": "generic resources (sbatch --gres)",
    "comment": "a comment on the job (sbatch --comment)",
    "mail_type": "when to send mail (sbatch --mail-type)",
    "mail_user": "who gets the mail (sbatch --mail-user)",
}
"""Settings passed to sbatch as they are (checked by `sbatch --test-only`)."""
SLURM_KEYS = {
    **TEXT_KEYS,
    "time": f"time limit of each job: minutes, H:MM:SS or D-HH[:MM[:SS]] (default {DEFAULT_TIME_MIN} minutes)",
    "cpus_per_task": "cpus of each job = BLAS threads of its run (same as --threads; default 1)",
    "gpus": "GPUs per job (default 1 for a run with train.device gpu, else none)",
    "setup": "a shell line run in the job before nnrun, e.g. 'module load python' (repeatable)",
    "python": "the command that starts Python on the nodes (default: this Python)",
    "requeue": "requeue a job stopped by preemption or its time limit, to resume from its checkpoint (default true)",
    "signal_delay": f"seconds before the time limit at which the run is told to save "
                    f"(default {DEFAULT_SIGNAL_DELAY_S})",
    "cluster": "slurm (sbatch) or local (the same jobs as processes on this machine, to try a setup)",
}
"""The named settings of `--slurm KEY=VALUE` and what each sets."""
OWN_SBATCH_OPTIONS = {"output": None, "error": None, "signal": "signal_delay", "open-mode": None, "chdir": None,
                      "job-name": None, "array": None, "requeue": "requeue", "no-requeue": "requeue",
                      "time": "time", "cpus-per-task": "cpus_per_task", "gpus-per-node": "gpus", "gpus": "gpus",
                      "ntasks": None, "ntasks-per-node": None, "nodes": None, "wrap": None,
                      **{k.replace("_", "-"): k for k in TEXT_KEYS}}
"""sbatch options `sbatch.OPTION=` may not set: nnrun sets them itself, or a named setting does."""
_SBATCH_OPTION = re.compile(r"[a-z][a-z0-9-]*")
_MEM = re.compile(r"(\d+)\s*([kmgt])?b?", re.IGNORECASE)
_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


@dataclass(frozen=True)
class SlurmSettings:
    """The jobs of `--executor slurm`: `cluster` (`slurm` or `local`), `time_min`, `cpus_per_task` (the runs'
    BLAS threads; None: one), `gpus` (None: one for a GPU run), `resources` (`TEXT_KEYS` given), `setup`
    lines, `python` command, `requeue`, `signal_delay_s`, `sbatch` (other sbatch options; True: a flag).
    `checked`: `check_slurm` accepted them."""

    cluster: str = "slurm"
    time_min: int = DEFAULT_TIME_MIN
    cpus_per_task: int | None = None
    gpus: int | None = None
    resources: tuple[tuple[str, str], ...] = ()
    setup: tuple[str, ...] = ()
    python: str | None = None
    requeue: bool = True
    signal_delay_s: int = DEFAULT_SIGNAL_DELAY_S
    sbatch: tuple[tuple[str, str | bool], ...] = ()
    checked: bool = False

    def threads(self, gpu: bool) -> int:
        """BLAS threads (and cpus) of a job: `cpus_per_task`, else one (`GPU_RUN_THREADS` on a GPU)."""
        return self.cpus_per_task or (GPU_RUN_THREADS if gpu else 1)

    def job_gpus(self, gpu: bool) -> int:
        """GPUs a job asks for: `gpus`, else one for a run on the GPU and none otherwise."""
        return self.gpus if self.gpus is not None else int(gpu)


def parse_time(text: str) -> int:
    """Minutes of a SLURM time limit: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S` (seconds rounded up)."""
    match = _TIME.fullmatch(text.strip())
    if match is None:
        raise UserInputError(f"--slurm time={text}: write minutes (90), H:MM:SS (1:30:00) or D-HH:MM (1-12:00)")
    days, a, b, c = match.groups()
    numbers = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = (numbers + [0, 0])[:3]
        total = ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
    else:  # M, M:S, H:M:S
        if len(numbers) == 3:
            hours, minutes, seconds = numbers
        else:
            hours, (minutes, seconds) = 0, (numbers + [0])[:2]
        total = (hours * 60 + minutes) * 60 + seconds
    minutes = -(-total // 60)
    if minutes < 1:
        raise UserInputError(f"--slurm time={text}: the time limit must be at least a minute")
    return minutes


def parse_mem(text: str) -> str:
    """sbatch's `--mem` value: a count with an optional K, M, G or T unit (a trailing B is dropped)."""
    match = _MEM.fullmatch(text.strip())
    if match is None or int(match.group(1)) < 1:
        raise UserInputError(f"--slurm mem={text}: write a size such as 4G, 500M or 16000 (megabytes)")
    return f"{int(match.group(1))}{(match.group(2) or '').upper()}"


def _count(key: str, text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise UserInputError(f"--slurm {key}={text}: must be a whole number >= {least}")
    return value


def parse_slurm(items: Iterable[str], *, threads: int | None = None) -> SlurmSettings:
    """`--slurm KEY=VALUE` options as `SlurmSettings` (a `UserInputError` names a bad one). `threads` (the
    `--threads` option) sets `cpus_per_task`; giving both with different counts is an error."""
    values: dict[str, str] = {}
    setup: list[str] = []
    sbatch: dict[str, str | bool] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserInputError(f"--slurm {item}: write KEY=VALUE, e.g. --slurm partition=cpu --slurm time=2:00:00")
        if any(ord(ch) < 32 for ch in value):
            raise UserInputError(f"--slurm {key}: the value may not hold line breaks or control characters")
        if key.startswith("sbatch."):
            option = key[len("sbatch."):].lstrip("-").replace("_", "-")
            if not _SBATCH_OPTION.fullmatch(option):
                raise UserInputError(f"--slurm {key}: write sbatch.OPTION=VALUE with sbatch's long option name, "
                                     "e.g. --slurm sbatch.reservation=maint")
            if option in OWN_SBATCH_OPTIONS:
                named = OWN_SBATCH_OPTIONS[option]
                raise UserInputError(f"--slurm {key}: " + (f"use --slurm {named}=..." if named else
                                                            "nnrun sets this sbatch option itself"))
            sbatch[option] = value if value != "" else True
            continue
        name = key.replace("-", "_").lower()
        if name not in SLURM_KEYS:
            raise UserInputError(f"--slurm {key}: unknown setting; allowed: {', '.join(SLURM_KEYS)}, or "
                                 f"sbatch.OPTION=VALUE for any other sbatch option{did_you_mean(name, SLURM_KEYS)}")
        if name == "setup":
            setup.append(value)
            continue
        if name in values:
            raise UserInputError(f"--slurm {name} is given twice")
        if not value.strip():
            raise UserInputError(f"--slurm {name}= needs a value")
        values[name] = value.strip()
    settings: dict[str, Any] = {"setup": tuple(setup), "sbatch": tuple(sbatch.items())}
    resources = [(k, parse_mem(v) if k == "mem" else v) for k, v in values.items() if k in TEXT_KEYS]
    settings["resources"] = tuple(resources)
    if "time" in values:
        settings["time_min"] = parse_time(values["time"])
    if "cpus_per_task" in values:
        settings["cpus_per_task"] = _count("cpus_per_task", values["cpus_per_task"], 1)
    if threads is not None:
        if threads < 1:
            raise UserInputError(f"--threads must be >= 1, got {threads}")
        if settings.get("cpus_per_task", threads) != threads:
            raise UserInputError(f"--threads {threads} and --slurm cpus_per_task={settings['cpus_per_task']} "
                                 "disagree: a job's cpus are its run's threads; give one of them")
        settings["cpus_per_task"] = threads
    if "gpus" in values:
        settings["gpus"] = _count("gpus", values["gpus"], 0)
    if "signal_delay" in values:
        settings["signal_delay_s"] = _count("signal_delay", values["signal_delay"], 1)
    if "python" in values:
        settings["python"] = values["python"]
    if "requeue" in values:
        flag = values["requeue"].lower()
        if flag not in _TRUE + _FALSE:
            raise UserInputError(f"--slurm requeue={values['requeue']}: write true or false")
        settings["requeue"] = flag in _TRUE
    if "cluster" in values:
        if values["cluster"] not in ("slurm", "local"):
            raise UserInputError(f"--slurm cluster={values['cluster']}: allowed: slurm, local"
                                 f"{did_you_mean(values['cluster'], ('slurm', 'local'))}")
        settings["cluster"] = values["cluster"]
    result = SlurmSettings(**settings)
    if result.time_min * 60 <= result.signal_delay_s + LIMIT_SLACK_S:
        raise UserInputError(f"--slurm time: a limit of {result.time_min} min leaves no time to train before the "
                             f"save signal {result.signal_delay_s} s ahead of it; give a longer time")
    return result


def slurm_settings(executor: str, items: Iterable[str] | None, threads: int | None) -> SlurmSettings | None:
    """The `--slurm` options of a command: parsed for `--executor slurm` (defaults when none are given), None
    for another executor, which may not be given any."""
    items = list(items or ())
    if executor != "slurm":
        if items:
            raise UserInputError(f"--slurm is for --executor slurm (given: --executor {executor})")
        return None
    return parse_slurm(items, threads=threads)


def _executor(settings: SlurmSettings, folder: Path) -> Any:
    submitit = import_submitit()
    if settings.cluster == "local":
        return submitit.LocalExecutor(folder=folder, python=settings.python)
    return submitit.SlurmExecutor(folder=folder, python=settings.python)


def job_parameters(settings: SlurmSettings, *, name: str, threads: int, gpus: int, cwd: str) -> dict[str, Any]:
    """submitit's parameters for one job (`SlurmExecutor` or, `cluster=local`, `LocalExecutor`)."""
    if settings.cluster == "local":  # the thread variables come through the environment (`SlurmPool._submit`)
        params: dict[str, Any] = {"timeout_min": settings.time_min, "gpus_per_node": gpus,
                                  "signal_delay_s": settings.signal_delay_s, "stderr_to_stdout": True}
        if settings.setup:
            params["setup"] = list(settings.setup)
        return params
    exports = " ".join(f"{v}={threads}" for v in THREAD_VARIABLES)
    params = {"job_name": name, "time": settings.time_min, "cpus_per_task": threads, "nodes": 1,
              "signal_delay_s": settings.signal_delay_s, "stderr_to_stdout": True, "wckey": None,
              "setup": [f"export {exports}", *settings.setup], **dict(settings.resources)}
    if gpus:
        params["gpus_per_node"] = gpus
    extra: dict[str, Any] = {"chdir": cwd}
    if settings.requeue:
        extra["requeue"] = True
    extra.update(settings.sbatch)
    params["additional_parameters"] = extra
    return params


def check_slurm(settings: SlurmSettings) -> SlurmSettings:
    """`settings` marked checked, or a `UserInputError` before any work: submitit not installed, no sbatch or
    srun on PATH (`cluster=slurm`), settings sbatch rejects (`sbatch --test-only`, which submits nothing), or
    more threads than this machine's cores (`cluster=local`)."""
    if settings.checked:
        return settings
    import_submitit()
    if settings.cluster == "local":
        cores = available_cores()
        if settings.threads(False) > cores:
            raise UserInputError(f"--slurm cluster=local runs the jobs on this machine, which has {cores} cores; "
                                 f"{settings.threads(False)} threads per run do not fit")
        return replace(settings, checked=True)
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if missing:
        raise UserInputError(f"--executor slurm needs SLURM's {' and '.join(missing)} on PATH, not found here: run "
                             "nnrun on the cluster's login node (or try the jobs on this machine with "
                             "--slurm cluster=local)")
    with tempfile.TemporaryDirectory(prefix="nnrun-slurm-check-") as tmp:
        executor = _executor(settings, Path(tmp))
        try:
            executor.update_parameters(**job_parameters(settings, name="nnrun-check", threads=settings.threads(False),
                                                        gpus=settings.job_gpus(False), cwd=os.getcwd()))
            script = Path(tmp) / "check.sh"
            script.write_text(executor._make_submission_file_text(executor._submitit_command_str, "check"))
            proc = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True,
                                  timeout=120)
        except (ValueError, OSError, subprocess.SubprocessError) as e:
            raise UserInputError(f"--executor slurm: cannot check the job settings with sbatch: {e}") from None
    if proc.returncode != 0:
        said = " ".join((proc.stderr or proc.stdout or f"exit code {proc.returncode}").split())
        raise UserInputError(f"sbatch refuses jobs with these --slurm settings ({describe(settings)}): {said}")
    return replace(settings, checked=True)


def describe(settings: SlurmSettings) -> str:
    """The settings in one line, as `--slurm` would give them."""
    parts = [f"time={settings.time_min}", f"cpus_per_task={settings.threads(False)}",
             *(f"{k}={v}" for k, v in settings.resources),
             *(f"sbatch.{k}={'' if v is True else v}" for k, v in settings.sbatch)]
    return " ".join(parts)


def _on_gpu(payload: dict[str, Any]) -> bool:
    train = payload.get("config", {}).get("train")
    return isinstance(train, dict) and train.get("device") == "gpu"


def _say(message: str) -> None:
    sys.stderr.write(f"nnrun: {message}\n")
    sys.stderr.flush()


class SlurmTask:
    """What a job runs: `fn(payload)` (one sweep point, `run_point`) with nnrun's stop handling, and the job's
    requeue after preemption or its time limit (module docstring). Pickled by submitit."""

    def __init__(self, fn: Callable[[dict[str, Any]], dict[str, Any]], payload: dict[str, Any], *,
                 requeue: bool, time_min: int, signal_delay_s: int) -> None:
        self.fn = fn
        self.payload = payload
        self.requeue = requeue
        self.time_min = time_min
        self.signal_delay_s = signal_delay_s

    def __call__(self) -> dict[str, Any]:
        import submitit

        import nnrun.train  # noqa: F401  (imported before the run, so that a stop signal finds the run started)

        started = time.time()
        env = submitit.JobEnvironment()
        usr = env._usr_sig()
        received: list[str] = []

        def on_signal(signum: int, frame: Any) -> None:
            received.append(signal.Signals(signum).name)
            if in_run():
                signals.handle(signum, frame)

        for s in (*signals.STOP_SIGNALS, usr):
            signal.signal(s, on_signal)
        run = RunDir(Path(self.payload["run_dir"]))
        before = run.epochs_done()
        scheduler = ("SIGTERM", signal.Signals(usr).name)
        if any(name in scheduler for name in received):  # stopped while starting: come back later
            result = {"status": "interrupted", "reason": f"interrupted by {received[0]} before the run started"}
        else:
            result = self.fn(self.payload)
        stop_file = Path(env.paths.folder) / f"{env.job_id}.stop"
        by_scheduler = [name for name in received if name in scheduler]
        if result.get("status") != "interrupted" or not by_scheduler or not self.requeue or stop_file.exists():
            return result
        epochs = run.epochs_done()
        near_limit = time.time() - started >= self.time_min * 60 - self.signal_delay_s - LIMIT_SLACK_S
        if near_limit and epochs <= before:
            result["reason"] = (f"{result.get('reason') or 'interrupted'}: the job's time limit ({self.time_min} min) "
                                "ended before an epoch finished; not requeued: give a longer --slurm time")
            _say(result["reason"])
            return result
        cause = "the time limit is near" if near_limit else "preempted"
        _say(f"{by_scheduler[0]} ({cause}): the run saved its state after {epochs} epochs; requeueing job "
             f"{env.job_id} to resume from its checkpoint")
        try:
            env._requeue(0)  # a local job exits here, and its controller starts it again
        except (OSError, subprocess.SubprocessError) as e:
            result["reason"] = f"{result.get('reason') or 'interrupted'}; the requeue failed: {e}"
            _say(result["reason"])
            return result
        sys.exit(-1)  # as submitit does: no result file; the requeued job runs this again


class JobLost(RuntimeError):
    """A job ended without reporting its run's result (killed, out of memory, node failure, cancelled)."""


class SlurmPool(Executor):
    """A `concurrent.futures` executor whose tasks are SLURM jobs (submitit), one per `submit(fn, payload)`.

    A future stays pending while its job is queued (cancelling it cancels the job) and runs once the job has
    started (its log exists). `stop_runs` asks every running job to stop: a `JOBID.stop` file tells the job
    not to requeue itself, and the job is cancelled (SIGTERM: the run saves its state); a job that has not
    reported back `STOP_WAIT_SECONDS` later is given up on. `shutdown` stops the jobs still outstanding.
    """

    def __init__(self, settings: SlurmSettings) -> None:
        self.settings = settings
        self.cwd = os.getcwd()
        self._jobs: dict[Future, Any] = {}
        self._mutex = threading.Lock()
        self._stop_deadline: float | None = None
        self._closed = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="nnrun-slurm-jobs", daemon=True)
        self._watcher.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Submit `fn(payload)` (a sweep point's `run_point` and its payload) as a job, or follow the job an
        earlier sweep submitted for the same run if it is still queued or running."""
        (payload,) = args
        run_dir = Path(payload["run_dir"])
        folder = run_dir.parent / LOG_FOLDER / run_dir.name
        job = self._running_job(folder)
        if job is None:
            job = self._submit(fn, payload, folder)
        fut: Future = Future()
        fut.add_done_callback(lambda f: self._cancel_job(job) if f.cancelled() else None)
        with self._mutex:
            self._jobs[fut] = job
        return fut

    def _submit(self, fn: Callable[..., Any], payload: dict[str, Any], folder: Path) -> Any:
        gpu = _on_gpu(payload)
        threads = payload.get("blas_threads") or self.settings.threads(gpu)
        name = Path(payload["run_dir"]).name
        executor = _executor(self.settings, folder)
        task = SlurmTask(fn, payload, requeue=self.settings.requeue, time_min=self.settings.time_min,
                         signal_delay_s=self.settings.signal_delay_s)
        try:
            executor.update_parameters(**job_parameters(self.settings, name=name, threads=threads,
                                                        gpus=self.settings.job_gpus(gpu), cwd=self.cwd))
            with _thread_environment(threads if self.settings.cluster == "local" else None):
                return executor.submit(task)
        except Exception as e:  # sbatch's own refusal (a partition, an account) or a failed call
            said = " ".join(str(e).split())
            raise UserInputError(f"submitting the job of {name} failed: {said}") from None

    def _running_job(self, folder: Path) -> Any:
        """The newest job submitted for this run folder if sacct says it is not over (a sweep killed before
        its jobs ended, started again), else None."""
        if self.settings.cluster != "slurm" or not folder.is_dir():
            return None
        submitted = sorted(folder.glob("*_submitted.pkl"), key=lambda p: p.stat().st_mtime)
        if not submitted:
            return None
        job_id = submitted[-1].name[: -len("_submitted.pkl")]
        if (folder / f"{job_id}_0_result.pkl").exists():
            return None
        job = import_submitit().SlurmJob(folder=folder, job_id=job_id)
        state = (job.watcher.get_state(job_id, mode="force") or "UNKNOWN").split()
        return job if state and state[0].upper() in ACTIVE_STATES else None

    def _watch(self) -> None:
        while not self._closed.wait(POLL_SECONDS):
            self.poll()

    def poll(self) -> None:
        """Start the futures of jobs that have started and settle those of jobs that have ended."""
        with self._mutex:
            items = list(self._jobs.items())
        for fut, job in items:
            if fut.done():
                self._forget(fut)
                continue
            try:
                over = job.done()
            except Exception:  # sacct unreachable for a moment: look again next time
                over = False
            if not fut.running() and (over or Path(job.paths.stdout).exists()):
                if not fut.set_running_or_notify_cancel():
                    self._forget(fut)
                    continue
            if over:
                self._settle(fut, job)
            elif self._stop_deadline is not None and time.time() > self._stop_deadline and fut.running():
                _resolve(fut, {"status": "interrupted", "reason": f"the sweep stopped and cancelled job "
                               f"{job.job_id}, which did not report back; its log: {job.paths.stdout}"})
                self._forget(fut)

    def _settle(self, fut: Future, job: Any) -> None:
        try:
            out = job.result()
        except Exception as e:
            lines = [line for line in str(e).strip().splitlines() if line.strip()]
            said = lines[-1].strip() if lines else type(e).__name__
            _resolve(fut, JobLost(f"job {job.job_id} ended without a result ({said}); its log: {job.paths.stdout}"))
        else:
            _resolve(fut, out)
        self._forget(fut)

    def _forget(self, fut: Future) -> None:
        with self._mutex:
            self._jobs.pop(fut, None)

    def _cancel_job(self, job: Any) -> None:
        """Tell the job not to requeue itself, and cancel it (a running run saves its state)."""
        with contextlib.suppress(OSError):
            (Path(job.paths.folder) / f"{job.job_id}.stop").touch()
        process = getattr(job, "_process", None)
        if self.settings.cluster == "local":
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)  # the controller forwards it to the task
            return
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["scancel", str(job.job_id)], capture_output=True, timeout=60)

    def stop_runs(self, signal_name: str = "SIGTERM") -> None:
        """The sweep was stopped (`signal_name`): cancel the running jobs, whose runs save their state (queued
        ones are cancelled with their futures), and give up on those that do not report back in time."""
        self._stop_deadline = time.time() + STOP_WAIT_SECONDS
        with self._mutex:
            items = list(self._jobs.items())
        for fut, job in items:
            if fut.running():
                self._cancel_job(job)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop watching; jobs still outstanding (the sweep ended by an error) are cancelled."""
        with self._mutex:
            items = list(self._jobs.items())
        for fut, job in items:
            if not fut.done() and not fut.cancel():  # a queued job is cancelled with its future
                self._cancel_job(job)
                _resolve(fut, {"status": "interrupted", "reason": f"the sweep ended; job {job.job_id} was cancelled"})
        self._closed.set()
        if wait and self._watcher.is_alive() and threading.current_thread() is not self._watcher:
            self._watcher.join()


def _resolve(fut: Future, value: Any) -> None:
    """Give `fut` its result (an exception: its exception) unless it has one already."""
    with contextlib.suppress(InvalidStateError):
        if isinstance(value, BaseException):
            fut.set_exception(value)
        else:
            fut.set_result(value)


@contextlib.contextmanager
def _thread_environment(threads: int | None) -> Iterator[None]:
    """`THREAD_VARIABLES` set to `threads` while the block runs (a local job's controller inherits them)."""
    if threads is None:
        yield
        return
    saved = {v: os.environ.get(v) for v in THREAD_VARIABLES}
    os.environ.update({v: str(threads) for v in THREAD_VARIABLES})
    try:
        yield
    finally:
        for v, old in saved.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old


@contextlib.contextmanager
def open_slurm_executor(settings: SlurmSettings) -> Iterator[SlurmPool]:
    """A `SlurmPool` for the block (checked first, `check_slurm`); jobs still outstanding at its end are
    cancelled."""
    pool = SlurmPool(check_slurm(settings))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True)
