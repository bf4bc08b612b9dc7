"""`--executor slurm` without a cluster: a fake `sbatch` on PATH that records the scripts it is given, jobs run
through submitit's local executor, the requeue after preemption, and setups refused before any work."""

import json
import os
import signal
import stat
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from nnrun.errors import UserInputError
from nnrun.rundir import RunDir
from nnrun.sweep.plan import config_hash
from tests.helpers import invoke, invoke_error

submitit = pytest.importorskip("submitit")

from nnrun.sweep import slurm as slurm_mod  # noqa: E402  (after the skip: it needs nothing, its tests do)
from nnrun.sweep.execute import run_point  # noqa: E402
from nnrun.sweep.slurm import SlurmPool, SlurmSettings, SlurmTask, parse_mem, parse_slurm, parse_time  # noqa: E402

TINY = {"name": "tiny", "seed": 0, "data": {"dataset": "digits"}, "model": {"hidden": [8]},
        "optim": {"name": "momentum", "lr": 0.05}, "train": {"epochs": 2, "batch_size": 128}}


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def _script(path: Path, text: str) -> None:
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """A bin folder first on PATH with an `sbatch` that copies each script it is given to calls/N.sh (its
    arguments to calls/N.args) and answers as SLURM does, and `srun`, `scancel` and `sacct` stand-ins."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    calls.mkdir()
    _script(bin_dir / "sbatch", f"""calls={calls}
n=$(ls "$calls" | grep -c '\\.sh$')
for last; do :; done
cp "$last" "$calls/$n.sh"
echo "$@" > "$calls/$n.args"
if [ "$1" = "--test-only" ]; then
  if [ -f "$calls/refuse" ]; then cat "$calls/refuse" >&2; exit 1; fi
  echo "sbatch: Job 12345 to start at 2030-01-01T00:00:00 using 1 processors on nodes n1 in partition cpu" >&2
  exit 0
fi
echo "Submitted batch job $((123 + n))"
""")
    _script(bin_dir / "srun", "exit 1\n")
    _script(bin_dir / "scancel", f'echo "$@" >> {calls}/scancel\n')
    _script(bin_dir / "sacct", f"echo 'JobID|State|NodeList'; cat {calls}/sacct 2>/dev/null; exit 0\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def _payload(runs: Path, config: dict, threads: int) -> dict:
    return {"config": config, "run_dir": str(runs / f"{config['name']}-{config_hash(config)}"), "blas_threads": threads,
            "gpu_pool_bytes": None}


def _sbatch_lines(script: str) -> dict[str, str]:
    lines = [line[len("#SBATCH --"):] for line in script.splitlines() if line.startswith("#SBATCH --")]
    return dict(line.split("=", 1) if "=" in line else (line, True) for line in lines)


# --- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "minutes"), [("90", 90), ("1:30:00", 90), ("30:30", 31), ("1-00", 1440),
                                               ("2-03:04", 3064), ("0-00:02:01", 3)])
def test_time_limits_read_slurms_formats(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize(("text", "mem"), [("4G", "4G"), ("4gb", "4G"), ("500M", "500M"), ("16000", "16000")])
def test_memory_reads_sizes(text, mem):
    assert parse_mem(text) == mem


@pytest.mark.parametrize(("items", "message"), [
    (["partiton=cpu"], "did you mean 'partition'"),
    (["time=soon"], "H:MM:SS"),
    (["time=0"], "at least a minute"),
    (["time=2"], "longer time"),
    (["mem=lots"], "4G"),
    (["partition"], "KEY=VALUE"),
    (["sbatch.output=x"], "sets this sbatch option itself"),
    (["sbatch.time=10"], "--slurm time="),
    (["cluster=kubernetes"], "slurm, local"),
    (["cpus_per_task=2", "cpus_per_task=3"], "twice"),
])
def test_bad_settings_are_refused_naming_the_key(items, message):
    with pytest.raises(UserInputError, match=message):
        parse_slurm(items)


def test_threads_are_the_jobs_cpus():
    assert parse_slurm([], threads=3).cpus_per_task == 3
    assert parse_slurm(["cpus-per-task=3"], threads=3).threads(False) == 3
    with pytest.raises(UserInputError, match="disagree"):
        parse_slurm(["cpus_per_task=2"], threads=3)
    assert SlurmSettings().threads(False) == 1 and SlurmSettings().job_gpus(True) == 1


# --- the submission script -------------------------------------------------------------------


def test_submitted_script_holds_resources_command_directory_and_environment(fake_slurm, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = parse_slurm(["partition=cpu", "time=1:30:00", "mem=4G", "account=lab42", "qos=normal",
                            "setup=module load python", "sbatch.reservation=maint"], threads=2)
    runs = tmp_path / "runs"
    cpu = _payload(runs, TINY, 2)
    gpu_config = {**TINY, "name": "tinygpu", "train": {**TINY["train"], "device": "gpu"}}
    gpu = _payload(runs, gpu_config, 2)
    pool = SlurmPool(slurm_mod.check_slurm(settings))
    try:
        futures = [pool.submit(run_point, cpu), pool.submit(run_point, gpu)]
        test_only = (fake_slurm / "0.args").read_text()
        assert test_only.startswith("--test-only")  # the settings were checked before any job
        script = (fake_slurm / "1.sh").read_text()
        name = Path(cpu["run_dir"]).name
        sbatch = _sbatch_lines(script)
        folder = runs / "slurm" / name
        assert sbatch["cpus-per-task"] == "2" and sbatch["time"] == "90" and sbatch["mem"] == "4G"
        assert sbatch["partition"] == "cpu" and sbatch["account"] == "lab42" and sbatch["qos"] == "normal"
        assert sbatch["reservation"] == "maint" and sbatch["requeue"] is True and sbatch["nodes"] == "1"
        assert sbatch["job-name"] == name and sbatch["chdir"] == str(tmp_path)
        assert sbatch["output"] == str(folder / "%j_0_log.out") and "error" not in sbatch
        assert sbatch["signal"] == "USR2@90" and "gpus-per-node" not in sbatch
        body = script[script.index("# setup"):]
        assert ("export NNRUN_THREADS=2 OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 MKL_NUM_THREADS=2\n"
                "module load python\n") in body
        command = body.splitlines()[-1] if body.splitlines()[-1].startswith("srun") else \
            next(line for line in body.splitlines() if line.startswith("srun"))
        assert f"{sys.executable} -u -m submitit.core._submit {folder}" in command
        assert f"--output {folder}/%j_%t_log.out" in command
        # the job runs this sweep point: run_point on the payload, with the requeue settings
        pickled = submitit.core.utils.DelayedSubmission.load(folder / "124_submitted.pkl")
        task = pickled.function
        assert isinstance(task, SlurmTask) and task.fn is run_point and task.payload == cpu
        assert task.requeue and task.time_min == 90 and task.signal_delay_s == 90
        gpu_sbatch = _sbatch_lines((fake_slurm / "2.sh").read_text())
        assert gpu_sbatch["gpus-per-node"] == "1" and gpu_sbatch["cpus-per-task"] == "2"
        assert not any(f.done() for f in futures)  # queued: their jobs have not started
    finally:
        pool.shutdown()
    assert (fake_slurm / "scancel").read_text().split() == ["124", "125"]  # what was left is cancelled
    assert (runs / "slurm" / Path(cpu["run_dir"]).name / "124.stop").exists()  # and told not to requeue


def test_a_stopped_sweep_cancels_its_running_jobs_which_do_not_requeue(fake_slurm, tmp_path, monkeypatch):
    monkeypatch.setattr(slurm_mod, "STOP_WAIT_SECONDS", 0.0)
    payload = _payload(tmp_path / "runs", TINY, 1)
    pool = SlurmPool(slurm_mod.check_slurm(parse_slurm([])))
    try:
        fut = pool.submit(run_point, payload)
        folder = tmp_path / "runs" / "slurm" / Path(payload["run_dir"]).name
        (folder / "124_0_log.out").touch()  # the job has started
        pool.poll()
        assert fut.running()
        pool.stop_runs("SIGINT")
        assert (folder / "124.stop").exists() and (fake_slurm / "scancel").read_text().split() == ["124"]
        pool.poll()  # it did not report back in time (STOP_WAIT_SECONDS)
        assert fut.result(timeout=5)["status"] == "interrupted"
    finally:
        pool.shutdown()


def test_a_sweep_started_again_follows_the_job_still_running_instead_of_submitting_another(fake_slurm, tmp_path):
    payload = _payload(tmp_path / "runs", TINY, 1)
    folder = tmp_path / "runs" / "slurm" / Path(payload["run_dir"]).name
    folder.mkdir(parents=True)
    (folder / "555_submitted.pkl").touch()  # submitted by a sweep that was killed
    (fake_slurm / "sacct").write_text("555|RUNNING|n1\n")
    pool = SlurmPool(slurm_mod.check_slurm(parse_slurm([])))
    try:
        fut = pool.submit(run_point, payload)
        assert not (fake_slurm / "1.sh").exists()  # only sbatch --test-only ran: nothing submitted again
    finally:
        pool.shutdown()
    assert fut.cancelled() and (fake_slurm / "scancel").read_text().split() == ["555"]
    (fake_slurm / "sacct").write_text("555|CANCELLED by 1000|n1\n")  # over: the run is submitted anew
    pool = SlurmPool(slurm_mod.check_slurm(parse_slurm([])))
    try:
        pool.submit(run_point, payload)
        assert not (fake_slurm / "2.args").read_text().startswith("--test-only")  # 1: the second check
    finally:
        pool.shutdown()


def test_a_dry_run_checks_the_job_settings_with_sbatch(fake_slurm, tiny_config, tmp_path):
    result = invoke("sweep", tiny_config, "--grid", "optim.lr=0.01,0.1", "--executor", "slurm", "--slurm",
                    "partition=cpu", "--threads", "1", "--runs-dir", tmp_path / "runs", "--dry-run")
    assert result.exit_code == 0, result.output
    assert _sbatch_lines((fake_slurm / "0.sh").read_text())["partition"] == "cpu"
    assert not (fake_slurm / "1.sh").exists()  # nothing submitted


# --- refused before any work ------------------------------------------------------------------


def test_settings_sbatch_rejects_exit_2_before_anything_runs(fake_slurm, tiny_config, tmp_path):
    (fake_slurm / "refuse").write_text("sbatch: error: invalid partition specified: nope\n")
    err = invoke_error("sweep", tiny_config, "--executor", "slurm", "--slurm", "partition=nope",
                       "--runs-dir", tmp_path / "runs")
    assert "invalid partition specified: nope" in err and "partition=nope" in err
    assert not (tmp_path / "runs").exists()


def test_without_submitit_sweep_and_study_exit_2_with_the_install_command(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    err = invoke_error("sweep", tiny_config, "--executor", "slurm", "--runs-dir", tmp_path / "runs")
    assert "pip install 'nnrun[slurm]'" in err
    import nnrun.study.run as study_run

    monkeypatch.setattr(study_run, "load_study", lambda *a, **k: pytest.fail("the study was read before the check"))
    err = invoke_error("study", tmp_path / "any.yaml", "--executor", "slurm", "--out", tmp_path / "out")
    assert "pip install 'nnrun[slurm]'" in err


def test_without_sbatch_on_path_and_with_bad_options_exit_2(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    err = invoke_error("sweep", tiny_config, "--executor", "slurm", "--runs-dir", tmp_path / "runs")
    assert "sbatch and srun on PATH" in err and "cluster=local" in err
    import nnrun.study.run as study_run

    monkeypatch.setattr(study_run, "load_study", lambda *a, **k: pytest.fail("the study was read before the check"))
    assert "sbatch and srun" in invoke_error("study", tmp_path / "any.yaml", "--executor", "slurm")
    assert "--slurm is for --executor slurm" in invoke_error("sweep", tiny_config, "--slurm", "partition=cpu")
    assert "did you mean 'partition'" in invoke_error("sweep", tiny_config, "--executor", "slurm", "--slurm",
                                                      "partiton=cpu")


# --- jobs through submitit's local executor ----------------------------------------------------


def test_a_sweep_on_the_local_executor_leaves_ordinary_completed_run_directories(tiny_config, tmp_path):
    runs = tmp_path / "runs"
    result = invoke("sweep", tiny_config, "--executor", "slurm", "--slurm", "cluster=local", "--runs-dir", runs,
                    "--json", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["executor"] == "slurm" and report["completed"] == 1
    (run,) = report["runs"]
    assert run["status"] == "completed" and run["blas_threads"] == 1
    listing = invoke("runs", runs, "--format", "json")
    assert listing.exit_code == 0, listing.output
    (listed,) = json.loads(listing.stdout)["runs"]
    assert listed["status"] == "completed" and Path(listed["path"]).resolve() == Path(run["run_dir"]).resolve()
    (log,) = (runs / "slurm" / Path(run["run_dir"]).name).glob("*_0_log.out")
    assert "Job completed successfully" in log.read_text()


# --- preemption and requeue, in the job ----------------------------------------------------------


class FakeJobEnvironment:
    """submitit's job environment as a job sees it, with `_requeue` recorded instead of calling scontrol."""

    requeued: list = []

    def __init__(self, folder):
        self.job_id = "77"
        self.paths = type("Paths", (), {"folder": folder})()

    @classmethod
    def _usr_sig(cls):
        return signal.SIGUSR2

    def _requeue(self, countdown):
        self.requeued.append(self.job_id)


@pytest.fixture
def job_environment(tmp_path, monkeypatch):
    """A job's environment (its folder in tmp_path), and the stop handlers put back after the test."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2)}
    FakeJobEnvironment.requeued = []
    monkeypatch.setattr(submitit, "JobEnvironment", lambda: FakeJobEnvironment(tmp_path))
    yield FakeJobEnvironment
    for s, handler in saved.items():
        signal.signal(s, handler)


def _signal_after_first_epoch(run_dir: Path, signum: int) -> threading.Thread:
    def send():
        deadline = time.time() + 30
        while time.time() < deadline:
            if (run_dir / "metrics.jsonl").is_file() and (run_dir / "metrics.jsonl").read_text().strip():
                os.kill(os.getpid(), signum)
                return
            time.sleep(0.002)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_a_preempted_run_saves_requeues_its_job_and_resumes_from_its_checkpoint(job_environment, tmp_path):
    config = {**TINY, "model": {"hidden": [64]}, "train": {"epochs": 30, "batch_size": 32}}
    payload = _payload(tmp_path / "runs", config, 1)
    run_dir = Path(payload["run_dir"])
    task = SlurmTask(run_point, payload, requeue=True, time_min=60, signal_delay_s=90)
    sender = _signal_after_first_epoch(run_dir, signal.SIGTERM)
    with pytest.raises(SystemExit):  # requeued: no result for submitit to write
        task()
    sender.join()
    assert job_environment.requeued == ["77"]
    stopped = RunDir(run_dir).read_summary()
    assert stopped["status"] == "interrupted" and 1 <= stopped["epochs"] < 30
    result = task()  # the requeued job runs the same task again
    assert result["status"] == "completed" and job_environment.requeued == ["77"]
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 31))


def _stopped_by(signum: int):
    def fn(payload):
        os.kill(os.getpid(), signum)  # outside a run: recorded by the task's handler, raises nothing
        return {"status": "interrupted", "reason": "interrupted by a signal"}
    return fn


@pytest.mark.parametrize(("signum", "requeue", "stop_file", "time_min", "requeued"), [
    (signal.SIGUSR2, True, False, 60, True),   # the time limit is near, with time to spare: requeue
    (signal.SIGINT, True, False, 60, False),   # Ctrl-C (not the scheduler)
    (signal.SIGTERM, True, True, 60, False),   # the sweep cancelled the job
    (signal.SIGTERM, False, False, 60, False),  # requeue=false
    (signal.SIGUSR2, True, False, 3, False),   # at the time limit without an epoch finished: it would never end
])
def test_which_stops_requeue_the_job(job_environment, tmp_path, signum, requeue, stop_file, time_min, requeued):
    if stop_file:
        (tmp_path / "77.stop").touch()
    task = SlurmTask(_stopped_by(signum), _payload(tmp_path / "runs", TINY, 1), requeue=requeue, time_min=time_min,
                     signal_delay_s=90)
    if requeued:
        with pytest.raises(SystemExit):
            task()
        assert job_environment.requeued == ["77"]
        return
    result = task()
    assert result["status"] == "interrupted" and job_environment.requeued == []
    if time_min == 3:
        assert "longer --slurm time" in result["reason"]
