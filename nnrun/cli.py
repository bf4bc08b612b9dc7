"""The `nnrun` command line: thin Typer commands over the library.

Each command parses its options, calls a library function and maps errors to exit codes:
0 success, 2 bad input (`UserInputError`, bad options), 1 a failed run (`RunFailed`).
Human output goes to stderr; `--json` prints exactly one JSON object on stdout; listings meant
for pipes (`nnrun runs`, `nnrun diff`) print their table on stdout. A bare `key=value` argument
(Hydra's override syntax) is refused with a hint to write `--set key=value`.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from nnrun import __version__
from nnrun.config import BARE_OVERRIDE_RE, KEY_HINTS, ExperimentConfig, compose_config, load_config
from nnrun.errors import RunFailed, RunStopped, UserInputError
from nnrun.io import os_error_exit
from nnrun.nn.init import INIT_SCHEMES
from nnrun.nn.layers import ACTIVATIONS
from nnrun.progress import PhaseLines, RichReporter
from nnrun.rundir import free_timestamped_path
from nnrun.signals import Interrupted, stop_on_signals
from nnrun.tables import print_table, stderr_console, stdout_console
from nnrun.workers import EXECUTORS, ThreadPolicy, requested_threads

app = typer.Typer(
    help="nnrun: train NumPy MLPs from YAML configs and see what each setup choice does.",
    no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False)

RUNS_DIR_ENV = "NNRUN_RUNS_DIR"
"""Environment variable that sets the default runs folder of every command (else `runs`)."""

SetOption = Annotated[list[str] | None, typer.Option(
    "--set", "-s", metavar="KEY=VALUE", help="Override a config value, e.g. --set optim.lr=0.01 (repeatable).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
DeviceOption = Annotated[str | None, typer.Option(
    "--device", metavar="cpu|gpu", help="Where to compute (sets train.device; gpu needs CuPy: "
                                        "pip install 'nnrun\\[gpu]').")]  # \\[: not rich markup


def with_device(overrides: list[str] | None, device: str | None) -> list[str]:
    """The `--set` overrides with `--device` added as `train.device=...` (checked with the rest of the config)."""
    return [*(overrides or ()), *([f"train.device={device}"] if device is not None else [])]
SWEEP_THREADS_HELP = ("BLAS threads per run (default: cores // jobs, one for a run on the GPU; jobs x threads may "
                      "not exceed the cores, except for GPU runs of one thread each).")
ThreadsOption = Annotated[int | None, typer.Option(
    "--threads", metavar="N", help="Threads for the matrix products and element-wise work (default: "
                                   "$NNRUN_THREADS, else one for a small model, else the cores other work "
                                   "leaves free, counted again between epochs).")]
SlurmOption = Annotated[list[str] | None, typer.Option(
    "--slurm", metavar="KEY=VALUE", help="A job setting of --executor slurm: partition, time, mem, cpus_per_task, "
                                         "gpus, account, qos, constraint, setup, ..., or sbatch.OPTION=VALUE for "
                                         "any sbatch option (repeatable; docs/sweeps.md; needs pip install "
                                         "'nnrun\\[slurm]').")]


def runs_dir_option(help: str) -> Any:
    """A `--runs-dir` option whose default comes from `NNRUN_RUNS_DIR` (else `runs`)."""
    return typer.Option("--runs-dir", envvar=RUNS_DIR_ENV, help=help)


class HintingCommand(TyperCommand):
    """A command whose "unexpected extra argument" error suggests `--set key=value` for a bare `key=value`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        given = list(args)  # the parser consumes `args`
        try:
            return super().parse_args(ctx, args)
        except Exception as e:  # the parser's usage error (click's, or Typer's own): add the hint, keep its type
            message = getattr(e, "message", None)
            if isinstance(message, str) and "unexpected extra argument" in message:
                e.message = message + _extra_argument_hint(given, message)
            raise


def _extra_argument_hint(given: list[str], message: str) -> str:
    """The end of an "unexpected extra argument" error: `--set key=value` for a bare `key=value`, or the list
    a space after a comma cut in two (`--grid optim.lr=1e-3, 1e-2`)."""
    listed = re.search(r"\(([^()]*)\)\s*$", message)
    extra = listed.group(1).split() if listed else [a for a in given if a in message]
    bare = [a for a in extra if BARE_OVERRIDE_RE.match(a)]
    if bare:
        return f"; to override a config value write {' '.join(f'--set {a}' for a in bare)}"
    for i, arg in enumerate(given):
        if arg.endswith(",") and i + 1 < len(given) and given[i + 1] in extra:
            option = f"{given[i - 1]} " if i > 0 and given[i - 1].startswith("-") else ""
            parts = [arg]
            for nxt in given[i + 1:]:
                if nxt not in extra or not parts[-1].endswith(","):
                    break
                parts.append(nxt)
            return (f"; a list of values takes no spaces after its commas: write {option}{''.join(parts)} "
                    f"(or quote it: {option}'{' '.join(parts)}')")
    return ""


def show_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"nnrun {__version__}\n")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option(
        "--version", callback=show_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """nnrun: train NumPy MLPs from YAML configs and see what each setup choice does."""


def command(name: str | None = None, *, group: typer.Typer | None = None, **kwargs: Any) -> Callable:
    """Register a command (of `group`, default the top level) whose `UserInputError` exits 2, `RunFailed` and a
    stop signal exit 1, an `OSError` 2 or 1 (`nnrun.io.os_error_exit`), each with one message.
    SIGINT, SIGTERM and SIGHUP all stop a command the same way (`nnrun.signals`)."""
    def register(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args: Any, **kw: Any) -> Any:
            try:
                with stop_on_signals():
                    return fn(*args, **kw)
            except UserInputError as e:
                stderr_console.print(Text("error: ", style="bold red") + Text(str(e)), soft_wrap=True)
                raise typer.Exit(2) from None
            except RunFailed as e:  # a stop the user asked for (RunStopped) is no failure
                label = ("stopped: ", "bold yellow") if isinstance(e, RunStopped) else ("run failed: ", "bold red")
                stderr_console.print(Text(*label) + Text(str(e)), soft_wrap=True)
                raise typer.Exit(1) from None
            except KeyboardInterrupt as e:
                # Outside a training loop (loading data, fitting statistics) there is no state to save.
                name = e.signal_name if isinstance(e, Interrupted) else "SIGINT"
                stderr_console.print(Text(f"interrupted by {name}", style="bold red"), soft_wrap=True)
                raise typer.Exit(1) from None
            except OSError as e:  # a path given that cannot be used (exit 2), or a full disk during the work (exit 1)
                message, code = os_error_exit(e)
                label = "error: " if code == 2 else "failed: "
                stderr_console.print(Text(label, style="bold red") + Text(message), soft_wrap=True)
                raise typer.Exit(code) from None
        return (group or app).command(name, cls=HintingCommand, **kwargs)(run)
    return register


def print_written(files: dict[str, str]) -> None:
    """`wrote PATH` on stderr for each file a command wrote."""
    for path in files.values():
        stderr_console.print(f"wrote {path}", soft_wrap=True, markup=False, highlight=False)


def print_json(obj: Any) -> None:
    """Write `obj` as one JSON object on stdout."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


@command()
def train(
    config: Annotated[Path | None, typer.Argument(help="Experiment YAML file (not with --resume).")] = None,
    set_: SetOption = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Run directory (default: RUNS_DIR/NAME-TIME).")] = None,
    runs_dir: Annotated[Path, runs_dir_option("Parent folder of default run directories.")] = Path("runs"),
    overwrite: Annotated[bool, typer.Option(help="Reuse an --out folder that already holds files.")] = False,
    resume: Annotated[Path | None, typer.Option(
        "--resume", metavar="RUN_DIR", help="Continue an interrupted or failed run from its last checkpoint "
                                            "(--set train.epochs=N trains a finished run further).")] = None,
    threads: ThreadsOption = None,
    device: DeviceOption = None,
    json_: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or tables.")] = False,
) -> None:
    """Train the MLP a config describes; write the run directory; print tables (stderr) or --json (stdout)."""
    from nnrun.experiment import no_phase
    from nnrun.train import resume_run, train_new
    from nnrun.trainer import SilentReporter

    if (config is None) == (resume is None):
        raise UserInputError("give a config file to start a run, or --resume RUN_DIR to continue one (not both)")
    if resume is not None and (out is not None or overwrite):
        raise UserInputError("--resume continues the run in RUN_DIR itself; --out and --overwrite do not apply")
    reporter = SilentReporter() if quiet else RichReporter()
    phase = no_phase if quiet else PhaseLines()
    try:
        if resume is not None:
            summary = resume_run(resume, with_device(set_, device), reporter=reporter, threads=threads,
                                 notify=lambda note: stderr_console.print(f"note: {note}", markup=False,
                                                                          highlight=False, soft_wrap=True),
                                 phase=phase)
        else:
            loaded = compose_config(config, with_device(set_, device))
            summary = train_new(loaded.config, out=out, runs_dir=runs_dir, overwrite=overwrite, reporter=reporter,
                                threads=threads, phase=phase, config_files=loaded.files())
    finally:
        if isinstance(reporter, RichReporter):
            reporter.close()
    if json_:
        print_json(summary)
    elif not quiet:
        stderr_console.print(f"run directory: {summary['run_dir']}")


@command()
def validate(
    config: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    set_: SetOption = None,
    json_: JsonOption = False,
) -> None:
    """Check a config and print it resolved (defaults filled in, overrides applied, keys without effect marked;
    a config composed of other files lists them first, as comments)."""
    from nnrun.experiment import config_cautions, inactive_keys

    loaded = compose_config(config, set_ or ())
    cfg = loaded.config
    cautions = config_cautions(cfg)
    if json_:
        print_json(cfg.model_dump(mode="json"))
    else:
        notes = {k: f"no effect: {why}" for k, why in inactive_keys(cfg).items()}
        if len(loaded.sources) > 1:
            top, *bases = loaded.sources
            sys.stdout.write(f"# {top.path} composed with its defaults:\n"
                             + "".join(f"#   {base.describe()}\n" for base in bases))
        sys.stdout.write(cfg.to_yaml({**notes, **cautions}))
    for key, note in cautions.items():
        stderr_console.print(f"note: {key}: {note}; {KEY_HINTS[key]}", markup=False, highlight=False, soft_wrap=True)


@command()
def schema() -> None:
    """Print the JSON schema of experiment configs (for editor completion)."""
    print_json(ExperimentConfig.model_json_schema())


@command()
def sweep(
    config: Annotated[Path, typer.Argument(help="Experiment YAML file (the base of every point).")],
    grid: Annotated[list[str] | None, typer.Option(
        "--grid", "-g", metavar="KEY=V1,V2,...",
        help="Values of one key; several --grid options form the cartesian product (repeatable).")] = None,
    random: Annotated[int | None, typer.Option(
        "--random", metavar="N", help="Draw N random points: --space keys from their distribution, --grid keys "
                                      "uniformly from their lists.")] = None,
    space: Annotated[list[str] | None, typer.Option(
        "--space", metavar="KEY=DIST(...)",
        help="A distribution for --random or --search: uniform(a,b), loguniform(a,b), randint(a,b), "
             "choice(v1,v2,...).")] = None,
    search: Annotated[str | None, typer.Option(
        "--search", metavar="tpe|cmaes|random", help="Let Optuna's sampler choose the points, --trials of them, "
                                                     "from the --space distributions (needs pip install "
                                                     "'nnrun\\[search]'; the study is kept in RUNS_DIR/optuna.db)."
    )] = None,
    trials: Annotated[int | None, typer.Option(
        "--trials", metavar="N", help="Trials of a --search (a rerun continues the study up to N).")] = None,
    prune: Annotated[str | None, typer.Option(
        "--prune", metavar="median|asha|hyperband", help="Stop a --search's runs that fall behind, judged on the "
                                                         "val metric after every epoch (status pruned).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the random draws (default: the config's seed).")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Runs at the same time.")] = 1,
    threads: Annotated[int | None, typer.Option(help=SWEEP_THREADS_HELP)] = None,
    executor: Annotated[Literal[tuple(EXECUTORS)], typer.Option(
        help="Where runs execute (local: worker processes).")] = "local",
    scheduler: Annotated[str | None, typer.Option(
        metavar="ADDR", help="Dask scheduler address, e.g. tcp://host:8786 (default: a local cluster).")] = None,
    slurm: SlurmOption = None,
    runs_dir: Annotated[Path, runs_dir_option("Parent folder of the run directories.")] = Path("runs"),
    set_: Annotated[list[str] | None, typer.Option(
        "--set", "-s", metavar="KEY=VALUE", help="Override a base config value, e.g. --set train.epochs=5 "
                                                 "(repeatable).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Validate and list the points and their run directories; "
                                               "run nothing.")] = False,
    device: DeviceOption = None,
    json_: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or tables.")] = False,
) -> None:
    """Run a grid, random or Optuna search sweep, one run directory per point; completed points are skipped on
    rerun, and a search continues its study.

    Exit code 0 when every run completed (or was pruned), 1 when some failed, 2 for bad input (nothing runs then).
    """
    from nnrun.sweep.display import SweepProgress, plan_table, results_table
    from nnrun.sweep.execute import outcome_report, run_sweep
    from nnrun.sweep.plan import plan_report, plan_sweep
    from nnrun.sweep.search import check_search_options
    from nnrun.sweep.slurm import check_slurm, slurm_settings

    slurm_setup = slurm_settings(executor, slurm, threads)
    if slurm_setup is not None:  # refused (exit 2) before any work when these jobs cannot run
        if search is not None:
            raise UserInputError("--search runs its trials on local workers or Dask; --executor slurm takes grid "
                                 "and --random sweeps")
        slurm_setup = check_slurm(slurm_setup)
    check_search_options(search=search, trials=trials, prune=prune, space=space or (), n_random=random)
    if search is not None:
        _search_sweep(config, overrides=with_device(set_, device), grid=grid or (), space=space or (), search=search,
                      trials=trials, prune=prune, seed=seed, jobs=jobs, threads=threads, executor=executor,
                      scheduler=scheduler, runs_dir=runs_dir, dry_run=dry_run, json_=json_, quiet=quiet)
        return
    plan = plan_sweep(config, overrides=with_device(set_, device), grid=grid or (), space=space or (),
                      n_random=random, seed=seed, runs_dir=runs_dir)
    if dry_run:
        if json_:
            print_json(plan_report(plan))
        elif not quiet:
            print_table(plan_table(plan))
        return
    progress = None if quiet else SweepProgress()  # on stderr: --json changes stdout alone
    outcome = run_sweep(plan, jobs=jobs, threads=threads, executor=executor, scheduler=scheduler, progress=progress,
                        slurm=slurm_setup)
    if json_:
        print_json(outcome_report(outcome))
    elif not quiet:
        print_table(results_table(outcome))
        if outcome.interrupted:
            stderr_console.print("sweep interrupted: rerun the same command to run what is missing")
    if outcome.failed:
        raise typer.Exit(1)


def _search_sweep(config: Path, *, overrides: list[str], grid: list[str], space: list[str], search: str, trials: int,
                  prune: str | None, seed: int | None, jobs: int, threads: int | None, executor: str,
                  scheduler: str | None, runs_dir: Path, dry_run: bool, json_: bool, quiet: bool) -> None:
    """`nnrun sweep --search`: plan the search, run its trials, print the results and the best trial."""
    from nnrun.sweep.display import SweepProgress, results_table
    from nnrun.sweep.search import plan_lines, plan_search, run_search, search_plan_report, search_report

    plan = plan_search(config, overrides=overrides, grid=grid, space=space, sampler=search, trials=trials,
                       prune=prune, seed=seed, runs_dir=runs_dir)
    if dry_run:
        report = search_plan_report(plan)
        if json_:
            print_json(report)
        elif not quiet:
            for line in plan_lines(report):
                stderr_console.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    progress = None if quiet else SweepProgress()  # on stderr: --json changes stdout alone
    outcome = run_search(plan, jobs=jobs, threads=threads, executor=executor, scheduler=scheduler, progress=progress)
    if json_:
        print_json(search_report(outcome))
    elif not quiet:
        print_table(results_table(outcome))
        best = outcome.best
        if best is not None:
            stderr_console.print(f"best: #{best['index']} (trial {best['trial']}), {outcome.metric} "
                                 f"{best['value']:.4g} in {best['run_dir']}", markup=False, highlight=False,
                                 soft_wrap=True)
        if outcome.interrupted:
            stderr_console.print("search interrupted: rerun the same command to continue its study")
    if outcome.failed or outcome.interrupted:  # stopped before it asked every trial, all it ran may have finished
        raise typer.Exit(1)


class RunsGroup(TyperGroup):
    """`nnrun runs`: `nnrun runs [RUNS_DIR] [OPTIONS]` lists (the `list` subcommand, as before subcommands
    existed); `nnrun runs rm|archive|restore ...` are the subcommands. A folder named like a subcommand is listed
    with `nnrun runs ./rm`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands:
            args = ["list", *args]  # `--help` too: the listing's options, which name the subcommands
        return super().parse_args(ctx, args)


runs_app = typer.Typer(cls=RunsGroup, help="List run directories; remove, archive and restore them "
                                           "(nnrun runs [RUNS_DIR], nnrun runs rm|archive|restore RUN...).")
app.add_typer(runs_app, name="runs")

RunTargets = Annotated[list[Path], typer.Argument(
    metavar="RUN_OR_DIR", help="Run directories, or folders of runs (all their runs, as --filter keeps them).",
    show_default=False)]
SelectFilter = Annotated[list[str] | None, typer.Option(
    "--filter", "-f", metavar="KEY=VALUE", help="Only the runs where KEY=VALUE (also !=, <, <=, >, >=), as "
                                                "nnrun runs --filter takes it, e.g. status=failed (repeatable).")]
SelectRecursive = Annotated[bool, typer.Option(
    "--recursive", "-r", help="Also the runs in sub-folders of a folder given, at any depth.")]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Show the runs it would take; change nothing.")]
YesOption = Annotated[bool, typer.Option(
    "--yes", "-y", help="Do not ask for confirmation (without it, a stdin that is not a terminal is refused).")]


@command("list", group=runs_app)
def runs(
    runs_dir: Annotated[Path, typer.Argument(
        envvar=RUNS_DIR_ENV, help="Folder of run directories (or one run directory).")] = Path("runs"),
    sort: Annotated[str | None, typer.Option(
        metavar="KEY", help="Sort by a column, ascending; -KEY descending (write --sort=-KEY). "
                            "Default: best headline validation metric first.")] = None,
    filter_: Annotated[list[str] | None, typer.Option(
        "--filter", "-f", metavar="KEY=VALUE",
        help="Keep runs where KEY=VALUE (also !=, <, <=, >, >=), e.g. status=completed (repeatable).")] = None,
    format_: Annotated[Literal["table", "csv", "json"], typer.Option("--format", help="Output on stdout.")] = "table",
    columns: Annotated[list[str] | None, typer.Option(
        "--columns", "-c", metavar="A,B,...",
        help="Columns to show: run, path, status, started, reason, tags, tag.KEY, note, config keys (optim.lr), "
             "summary keys; patterns such as tag.* or optim.*.")] = None,
    group_by: Annotated[list[str] | None, typer.Option(
        "--group-by", "-g", metavar="KEY,...",
        help="One row per value of these keys, with mean ± std of each metric over the group's runs "
             "(e.g. over seeds).")] = None,
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r", help="Also list the runs in sub-folders, at any depth.")] = False,
    archived: Annotated[bool, typer.Option(
        "--archived", help="List the archived runs instead (nnrun runs archive moved them to .archive/).")] = False,
) -> None:
    """List run directories: status, the config keys that differ between runs, the headline metrics, epochs,
    tags and notes.

    nnrun runs rm|archive|restore RUN_OR_DIR... remove, archive and restore runs (see their --help).
    """
    from nnrun.runs import runs_report

    report = runs_report(runs_dir, filters=filter_ or (), sort=sort, columns=columns, group_by=group_by,
                         recursive=recursive, output=format_, archived=archived)
    if format_ == "csv":
        sys.stdout.write(report)
    elif format_ == "json":
        print_json(report)
    elif report is None:
        stderr_console.print(f"no {'archived ' if archived else ''}runs in {runs_dir}"
                             + ("" if recursive else " (--recursive looks in sub-folders)"),
                             markup=False, highlight=False)
    else:
        print_table(report, stdout_console)


def _curate_runs(action: str, targets: list[Path], filters: list[str] | None, recursive: bool, archived: bool,
                 dry_run: bool, yes: bool, json_: bool) -> None:
    """`nnrun runs rm|archive|restore`: the checked plan, shown (--dry-run stops there), confirmed (a terminal
    asks; --yes skips; any other stdin is refused), carried out; exit 1 when some run could not be."""
    from nnrun.curate import carry_out, interactive, plan, plan_report, plan_table
    from nnrun.tables import plural

    todo = plan(action, targets, filters=filters or (), recursive=recursive, archived=archived)
    count = plural(len(todo.steps), "run")
    if not todo.steps:
        stderr_console.print(f"no run matches the filters: nothing {todo.past}", markup=False, highlight=False)
        if json_:
            print_json(plan_report(todo, dry_run=dry_run))
        return
    if dry_run or not yes:
        if not dry_run and not interactive():
            raise UserInputError(f"nnrun runs {action} asks before it {todo.verb}s {count}, and stdin is not a "
                                 "terminal: pass --yes to go ahead (or --dry-run to see them)")
        if not json_ or not dry_run:
            print_table(plan_table(todo, title=f"{'would ' if dry_run else ''}{todo.verb} {count}"))
        if dry_run:
            if json_:
                print_json(plan_report(todo, dry_run=True))
            return
        if not typer.confirm(f"{todo.verb.capitalize()} {count}?", default=False, err=True):
            stderr_console.print(f"nothing {todo.past}", markup=False, highlight=False)
            raise typer.Exit(1)
    carry_out(todo)
    failed = [s for s in todo.steps if s.error]
    if json_:
        print_json(plan_report(todo, dry_run=False))
    else:
        for step in todo.steps:
            where = f" to {step.destination}" if step.destination is not None else ""
            line = (f"{todo.past} {step.record.name}{where}" if step.done
                    else f"not {todo.past} {step.record.name}: {step.error}")
            stderr_console.print(line, markup=False, highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


@command("rm", group=runs_app)
def runs_rm(
    targets: RunTargets,
    filter_: SelectFilter = None,
    recursive: SelectRecursive = False,
    archived: Annotated[bool, typer.Option(
        "--archived", help="Select among the archived runs of the folders given.")] = False,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    json_: JsonOption = False,
) -> None:
    """Remove run directories, for good (nnrun runs archive keeps them out of sight instead).

    Never one in use (training now, or held by a sweep): such a selection is refused before anything changes.

    Asks first; --yes does not; --dry-run shows the runs and changes nothing.
    """
    _curate_runs("rm", targets, filter_, recursive, archived, dry_run, yes, json_)


@command("archive", group=runs_app)
def runs_archive(
    targets: RunTargets,
    filter_: SelectFilter = None,
    recursive: SelectRecursive = False,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    json_: JsonOption = False,
) -> None:
    """Move runs into their folder's .archive/, out of sight of nnrun runs, plot and sweeps.

    nnrun runs --archived lists them; nnrun runs restore brings them back.

    Never a run in use, and never over an archived run of the same name.

    Asks first; --yes does not; --dry-run shows the runs and changes nothing.
    """
    _curate_runs("archive", targets, filter_, recursive, False, dry_run, yes, json_)


@command("restore", group=runs_app)
def runs_restore(
    targets: Annotated[list[Path], typer.Argument(
        metavar="RUN_OR_DIR", help="Archived runs (FOLDER/.archive/RUN, or FOLDER/RUN as it was), or folders "
                                      "whose archived runs to restore.", show_default=False)],
    filter_: SelectFilter = None,
    recursive: SelectRecursive = False,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    json_: JsonOption = False,
) -> None:
    """Move archived runs back out of .archive/ into their folder, never over a run of the same name.

    Asks first; --yes does not; --dry-run shows the runs and changes nothing.
    """
    _curate_runs("restore", targets, filter_, recursive, True, dry_run, yes, json_)


@command()
def tag(
    target: Annotated[Path, typer.Argument(
        metavar="RUN_OR_DIR", help="A run directory, or a folder of runs (all its runs, as --filter keeps them).")],
    tags: Annotated[list[str] | None, typer.Argument(
        metavar="[KEY=VALUE]...", help="Tags to set (a key's earlier value is replaced).", show_default=False)
    ] = None,
    remove: Annotated[list[str] | None, typer.Option(
        "--rm", metavar="KEY", help="Remove this tag (repeatable).")] = None,
    filter_: SelectFilter = None,
    recursive: SelectRecursive = False,
    json_: JsonOption = False,
) -> None:
    """Tag runs with KEY=VALUE labels; without tags, show the runs' tags and notes.

    nnrun runs shows the tags, and selects and sorts by them: --filter tag.KEY=VALUE, --columns tag.*.

    Safe on a run that trains now, and from two processes at once.
    """
    from nnrun.curate import tag as tag_runs

    report = tag_runs([target], tags or (), remove or (), filters=filter_ or (), recursive=recursive)
    _show_labels(report, json_)


@command()
def note(
    target: Annotated[Path, typer.Argument(
        metavar="RUN_OR_DIR", help="A run directory, or a folder of runs (all its runs, as --filter keeps them).")],
    text: Annotated[str | None, typer.Argument(
        help="The note (replaces the run's note; - reads it from stdin). Without it: show the notes.",
        show_default=False)] = None,
    append: Annotated[bool, typer.Option("--append", "-a", help="Add TEXT as a new line of the note.")] = False,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the note.")] = False,
    filter_: SelectFilter = None,
    recursive: SelectRecursive = False,
    json_: JsonOption = False,
) -> None:
    """Write a note on runs (replacing theirs; --append adds a line); without TEXT, show their tags and notes.

    nnrun runs and nnrun diff show the notes (--columns note; --format json holds them whole).

    Safe on a run that trains now, and from two processes at once.
    """
    from nnrun.curate import note as note_runs

    if text == "-":
        text = sys.stdin.read().rstrip("\n")
    report = note_runs([target], text, append=append, clear=clear, filters=filter_ or (), recursive=recursive)
    _show_labels(report, json_)


def _show_labels(report: dict[str, Any], json_: bool) -> None:
    """The labels after `nnrun tag`/`nnrun note`: JSON on stdout, else a table (stdout when only shown)."""
    from nnrun.curate import labels_table

    if json_:
        print_json(report)
    elif report["count"] == 0:
        stderr_console.print("no run matches the filters", markup=False, highlight=False)
    else:
        print_table(labels_table(report), stderr_console if report["changed"] else stdout_console)


@command()
def plot(
    paths: Annotated[list[Path] | None, typer.Argument(
        metavar="[RUN_OR_DIR]...", help="Run directories, or folders of runs such as a sweep's --runs-dir "
                                        "(default: the --runs-dir folder).")] = None,
    metric: Annotated[list[str] | None, typer.Option(
        "--metric", "-m", metavar="A,B,...",
        help="Metrics to plot, one panel each (default: the headline validation metric, and train_loss per "
             "epoch).")] = None,
    x: Annotated[str, typer.Option(
        "--x", metavar="epoch|KEY", help="epoch: per-epoch curves; a config key (optim.lr): each run's final "
                                         "or best value against that key.")] = "epoch",
    hue: Annotated[str | None, typer.Option(
        metavar="KEY", help="Colour by this config key (with --x KEY: group by it; default: the other keys "
                            "that differ, seeds averaged).")] = None,
    stat: Annotated[Literal["final", "best"], typer.Option(
        help="With --x KEY: each run's final value (its summary's) or its best over the epochs.")] = "final",
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Figure file, .png or .svg (default: plot-X-TIME.png in the folder plotted, or the "
                            "folder holding all of them).")] = None,
    runs_dir: Annotated[Path, runs_dir_option("Folder of runs plotted when no RUN_OR_DIR is given.")] = Path("runs"),
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r", help="Also read the runs in sub-folders, at any depth.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
    json_: JsonOption = False,
) -> None:
    """Plot several runs in one figure: per-epoch curves, or a metric against a swept config key."""
    from nnrun.plot import default_folder, plot_runs
    from nnrun.runs import split_names

    paths = paths or [runs_dir]
    name = "plot-" + ("epochs" if x == "epoch" else x.replace(".", "-"))
    figure = out or free_timestamped_path(default_folder(paths), name, ".png")
    result = plot_runs(paths, out=figure, metrics=split_names(metric) or None, x=x, hue=hue, stat=stat,
                       recursive=recursive, overwrite=overwrite)
    if json_:
        print_json(result)
        return
    stderr_console.print(f"plotted {result['runs']} runs: {', '.join(result['metrics'])} against {x}",
                         markup=False, highlight=False)
    stderr_console.print(f"wrote {result['out']}", soft_wrap=True, markup=False, highlight=False)


@command()
def report(
    html: Annotated[Path, typer.Option(
        "--html", metavar="DIR", help="Folder to write the page into (index.html, figures/): new, empty, or an "
                                      "earlier report's, which is replaced; any other file there is refused.")],
    runs_dir: Annotated[Path, typer.Argument(
        envvar=RUNS_DIR_ENV, help="Folder of run directories (or one run directory, or a study's output "
                                  "folder).")] = Path("runs"),
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r", help="Also read the runs and study reports in sub-folders, at any depth.")] = False,
    json_: JsonOption = False,
) -> None:
    """Write one static HTML page of the runs: the sortable runs table, curves, metric-vs-key plots, the study
    reports and links to each run's files. Opens offline (file://), needs no server."""
    from nnrun.report import write_report

    result = write_report(runs_dir, out=html, recursive=recursive)
    if json_:
        print_json(result)
        return
    for note in result["notes"]:
        stderr_console.print(f"note: {note}", soft_wrap=True, markup=False, highlight=False)
    stderr_console.print(f"{result['runs']} runs, {len(result['figures'])} figures, {len(result['studies'])} study "
                         f"reports; wrote {result['page']}", soft_wrap=True, markup=False, highlight=False)
    stderr_console.print(f"open {Path(result['page']).resolve().as_uri()}", soft_wrap=True, markup=False,
                         highlight=False)


@command()
def diff(
    run_a: Annotated[Path, typer.Argument(metavar="RUN_A", help="A run directory.")],
    run_b: Annotated[Path, typer.Argument(metavar="RUN_B", help="Another run directory.")],
    more: Annotated[list[Path] | None, typer.Argument(
        metavar="[RUN]...", help="More run directories (up to 26 runs in all).", show_default=False)] = None,
    json_: JsonOption = False,
) -> None:
    """Compare two or more runs side by side: the config keys and tags that differ, notes, headline metrics.

    Two runs get the difference B - A; more runs get the best value of each split metric in bold.
    """
    from nnrun.diff import diff_runs, diff_view

    result = diff_runs(run_a, run_b, *(more or ()))
    if json_:
        print_json(result)
    else:
        print_table(diff_view(result), stdout_console)


FlipAverageOption = Annotated[bool | None, typer.Option(
    "--flip-average/--no-flip-average",
    help="Average the probabilities of each image and its left-right mirror (test-time flip averaging); "
         "default: the run's augment.test_flip, as its summary was computed.", show_default=False)]


@command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A trained run directory.")],
    split: Annotated[str | None, typer.Option(
        help="Split of the run's own data, its exact rows recovered from split.npz: train, val or test "
             "(default test).")] = None,
    data: Annotated[Path | None, typer.Option(
        metavar="FILE", help="Evaluate on this file instead: an .npz with X and targets, or a CIFAR-10 batch file.")
    ] = None,
    data_root: Annotated[Path | None, typer.Option(
        metavar="DIR", help="Where the run's dataset files are now (replaces the run's data.root).")] = None,
    plot: Annotated[bool, typer.Option(
        "--plot", help="Also draw the confusion matrix (per-attribute accuracy; predicted vs true) as "
                       "RUN_DIR/evaluate-SPLIT.png.")] = False,
    flip_average: FlipAverageOption = None,
    threads: ThreadsOption = None,
    json_: JsonOption = False,
) -> None:
    """Recompute a trained run's metrics on a split of its data or on a data file: metrics beside the summary's,
    a confusion matrix for classes, per-attribute accuracies, RMSE and MAE beside the baseline for regression."""
    from nnrun.evaluate import evaluate_run, evaluation_tables

    with ThreadPolicy(requested_threads(threads)):
        result = evaluate_run(run_dir, split=split, data=data, data_root=data_root, plot=plot,
                              flip_average=flip_average)
    if json_:
        print_json(result)
        return
    _note_unfinished(result)
    for table in evaluation_tables(result):
        print_table(table)
    if "figure" in result:
        stderr_console.print(f"wrote {result['figure']}", soft_wrap=True, markup=False, highlight=False)


def _note_unfinished(result: dict[str, Any]) -> None:
    """A note on stderr when the run did not complete: its weights are those of its last good epoch."""
    if result.get("status") not in (None, "completed"):
        stderr_console.print(f"note: the run's status is {result['status']}; these are the weights of its last "
                             "good epoch", soft_wrap=True, markup=False, highlight=False)


@command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A trained run directory.")],
    inputs: Annotated[list[Path], typer.Argument(
        metavar="INPUT...", help=".npz files with X, CIFAR-10 batch files or PNG/JPEG images.")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Write the predictions to this .csv or .npz file (default: CSV on stdout).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
    top_k: Annotated[int, typer.Option(
        "--top-k", metavar="K", help="Classes listed per row, most likely first, with their probabilities.")] = 3,
    flip_average: FlipAverageOption = None,
    threads: ThreadsOption = None,
    json_: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object on stdout (with every row unless --out is given).")] = False,
) -> None:
    """Predict with a trained run: class (top-k with probabilities), attributes or values for each input row."""
    from nnrun.predict import predict_run, predictions_csv

    with ThreadPolicy(requested_threads(threads)):
        result = predict_run(run_dir, inputs, out=out, overwrite=overwrite, top_k=top_k, flip_average=flip_average)
    columns, rows = result.pop("columns"), result.pop("rows")
    if not json_:
        _note_unfinished(result)
    for path in result["resized"]:
        stderr_console.print(f"note: {path} was resized to the model's input", soft_wrap=True, markup=False,
                             highlight=False)
    if json_:
        if out is None:
            result["predictions"] = [dict(zip(columns, line, strict=True)) for line in rows]
        print_json(result)
    elif out is None:
        sys.stdout.write(predictions_csv(columns, rows))
    else:
        stderr_console.print(f"wrote {result['n']} predictions to {out}", soft_wrap=True, markup=False,
                             highlight=False)


@command()
def gradcheck(
    config: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    set_: SetOption = None,
    batch_size: Annotated[int, typer.Option(help="Training examples in the checked batch.")] = 16,
    h: Annotated[float, typer.Option("--h", help="Step of the centered differences.")] = 1e-5,
    tol: Annotated[float, typer.Option(help="Largest acceptable relative error.")] = 1e-5,
    max_entries: Annotated[int, typer.Option(
        help="Entries checked per parameter (a seeded sample); 0 checks all.")] = 200,
    threads: ThreadsOption = None,
    device: DeviceOption = None,
    json_: JsonOption = False,
) -> None:
    """Check the configured network's analytic gradients against centered differences (float64); exit 1 on failure."""
    from nnrun.gradcheck import GradcheckProgress, gradcheck_table
    from nnrun.gradcheck import gradcheck as run_gradcheck

    cfg = load_config(config, with_device(set_, device))
    if max_entries < 0:
        raise UserInputError(f"--max-entries must be >= 0 (0 checks all), got {max_entries}")
    with ThreadPolicy(requested_threads(threads)), GradcheckProgress() as progress:  # on stderr, --json too
        result = run_gradcheck(cfg, batch_size=batch_size, h=h, tol=tol, max_entries=max_entries or None,
                               progress=progress)
    if json_:
        print_json(result)
    else:
        print_table(gradcheck_table(result))
    if not result["passed"]:
        raise typer.Exit(1)


@command()
def preprocess(
    config: Annotated[Path | None, typer.Argument(help="Experiment YAML file (default: all defaults, digits).")] = None,
    whiten: Annotated[bool | None, typer.Option(
        "--whiten/--no-whiten", help="Whiten the kept components (sets preprocess.whiten).")] = None,
    zca: Annotated[bool, typer.Option(
        "--zca", help="ZCA whitening: whiten, then rotate back to pixel axes (sets preprocess.whiten=zca).")] = False,
    pca: Annotated[int | None, typer.Option(
        "--pca", metavar="K", help="Keep K principal components (sets preprocess.pca).")] = None,
    eps: Annotated[float | None, typer.Option(
        "--eps", metavar="E", help="Whitening epsilon added to each eigenvalue (sets preprocess.eps).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Folder for the figures and preprocess.npz "
                            "(default: RUNS_DIR/NAME-preprocess-TIME).")] = None,
    runs_dir: Annotated[Path, runs_dir_option("Parent folder of the default output folder.")] = Path("runs"),
    overwrite: Annotated[bool, typer.Option(help="Replace figures and statistics already in --out.")] = False,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", "-s", metavar="KEY=VALUE", help="Override a config value, e.g. --set data.dataset=cifar10 "
                                                 "(repeatable).")] = None,
    threads: ThreadsOption = None,
    json_: JsonOption = False,
) -> None:
    """Fit the preprocessing on the training split; print shapes, variance kept and fit time; draw PCA figures."""
    from nnrun.preprocess_report import FitProgress, preprocess_report, report_table

    overrides = list(set_ or ())
    if zca and whiten is not None:
        raise UserInputError("--zca and --whiten/--no-whiten both set preprocess.whiten; give one of them")
    if whiten is not None:
        overrides.append(f"preprocess.whiten={str(whiten).lower()}")
    if zca:
        overrides.append("preprocess.whiten=zca")
    if pca is not None:
        overrides.append(f"preprocess.pca={pca}")
    if eps is not None:
        overrides.append(f"preprocess.eps={eps!r}")
    cfg = load_config(config, overrides)
    progress = FitProgress()  # on stderr: --json changes stdout alone
    try:
        with ThreadPolicy(requested_threads(threads)):
            result = preprocess_report(cfg, out=out or free_timestamped_path(runs_dir, f"{cfg.name}-preprocess"),
                                       overwrite=overwrite, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    if json_:
        print_json(result)
        return
    print_table(report_table(result))
    print_written(result["files"])


@command("compare-inits")
def compare_inits_command(
    config: Annotated[Path | None, typer.Argument(help="Experiment YAML file (default: all defaults, digits).")] = None,
    schemes: Annotated[str | None, typer.Option(
        metavar="A,B,...", help=f"Init schemes to compare, comma-separated (default: {', '.join(INIT_SCHEMES)}).")
    ] = None,
    depth: Annotated[int, typer.Option(help="Hidden layers.")] = 10,
    width: Annotated[int, typer.Option(help="Units per hidden layer.")] = 500,
    activation: Annotated[str | None, typer.Option(
        help=f"Hidden non-linearity: {', '.join(ACTIVATIONS)} (default: the config's).")] = None,
    batchnorm: Annotated[bool | None, typer.Option(
        "--batchnorm/--no-batchnorm", help="Only with (only without) BatchNorm. Default: train both variants; "
                                           "forward statistics without it.")] = None,
    epochs: Annotated[int, typer.Option(help="Epochs of each training run.")] = 5,
    examples: Annotated[int, typer.Option(help="Training examples in the forward-statistics batch.")] = 1000,
    train: Annotated[bool, typer.Option("--train/--no-train", help="Run the training comparison.")] = True,
    jobs: Annotated[int | None, typer.Option(
        "--jobs", "-j", help="Training runs at the same time, in worker processes of one BLAS thread each "
                             "(default: one per core).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Folder for the figures and statistics (default: RUNS_DIR/compare-inits-TIME).")] = None,
    runs_dir: Annotated[Path, runs_dir_option("Parent folder of the default output folder.")] = Path("runs"),
    overwrite: Annotated[bool, typer.Option(help="Replace figures and statistics already in --out.")] = False,
    set_: SetOption = None,
    threads: ThreadsOption = None,
    json_: JsonOption = False,
) -> None:
    """Show what each weight init scheme does: activation statistics through a deep network, and short
    training runs without and with BatchNorm; writes an activation-histogram grid and loss curves."""
    from nnrun.compare_inits import compare_inits, forward_table, parse_schemes, training_table

    cfg = load_config(config, set_ or ())
    chosen = parse_schemes(schemes) if schemes is not None else None

    def progress(run: dict[str, Any], done: int, total: int) -> None:
        acc = run["final_val_accuracy"]
        stderr_console.print(f"[{done}/{total}] {run['scheme']}{' + BatchNorm' if run['batchnorm'] else ''}: "
                             f"{run['status']}, val accuracy {'-' if acc is None else f'{100 * acc:.1f} %'} "
                             f"({run['seconds']:.1f} s)", markup=False, highlight=False)

    result = compare_inits(cfg, out=out or free_timestamped_path(runs_dir, "compare-inits"), schemes=chosen,
                           depth=depth, width=width, activation=activation, batchnorm=batchnorm, epochs=epochs,
                           examples=examples, jobs=jobs, train=train, overwrite=overwrite, threads=threads,
                           on_run_end=progress)  # on stderr: --json changes stdout alone
    if json_:
        print_json(result)
        return
    print_table(forward_table(result))
    if result["training"]:
        print_table(training_table(result))
    print_written(result["files"])
    stderr_console.print(f"done in {result['seconds']:.1f} s", markup=False, highlight=False)


@command()
def study(
    file: Annotated[Path | None, typer.Argument(help="Study YAML file (see docs/study.md).")] = None,
    budget: Annotated[str | None, typer.Option(
        help="A budget of the study file, e.g. quick or full (default: the file's default_budget, else its "
             "first).")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Runs at the same time.")] = 1,
    threads: Annotated[int | None, typer.Option(help=SWEEP_THREADS_HELP)] = None,
    executor: Annotated[str, typer.Option(
        help=f"Where runs execute: {' or '.join(EXECUTORS)} (local: worker processes).")] = "local",
    scheduler: Annotated[str | None, typer.Option(
        metavar="ADDR", help="Dask scheduler address, e.g. tcp://host:8786 (default: a local cluster).")] = None,
    slurm: SlurmOption = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Folder of the report, study.json and figures (default: runs/study-NAME-BUDGET).")
    ] = None,
    runs_dir: Annotated[Path | None, typer.Option(help="Parent folder of the run directories (default: OUT/runs).")
                        ] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", "-s", metavar="KEY=VALUE", help="Override a value of every run's config, e.g. "
                                                 "--set data.root=/data (repeatable; claims and arms still set "
                                                 "their own keys).")] = None,
    only: Annotated[str | None, typer.Option(metavar="ID,...", help="Measure only these claims.")] = None,
    beside: Annotated[list[Path] | None, typer.Option(
        metavar="DIR", help="The output folder of this study at another budget (repeatable): the report adds a "
                            "'holds at which scale' table of each relation's verdict and interval at every "
                            "budget.")] = None,
    max_minutes: Annotated[float | None, typer.Option(
        help="Refuse to start when the estimated time exceeds this (default: the budget's max_minutes).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Check the study and show its runs and estimated time; run "
                                               "nothing.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Use an --out folder that holds another report.")] = False,
    schema: Annotated[bool, typer.Option("--schema", help="Print the JSON schema of study files and exit.")] = False,
    device: DeviceOption = None,
    json_: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or tables.")] = False,
) -> None:
    """Measure the claims of a study file over seeds: shared, resumable runs, 95 % intervals and verdicts, and a
    report (Markdown and HTML with figures, study.json).

    Exit code 0 when every run finished (a run that diverges is a result), 1 when the study was interrupted or
    a run failed otherwise (rerun the same command to go on), 2 for bad input (nothing runs then).
    """
    from nnrun.study.display import plan_table, summary_table
    from nnrun.study.run import run_study
    from nnrun.study.spec import StudyFile
    from nnrun.sweep.display import SweepProgress
    from nnrun.sweep.slurm import slurm_settings

    if schema:
        print_json(StudyFile.model_json_schema())
        return
    if file is None:
        raise UserInputError("give a study file (nnrun study FILE), or --schema for the schema of study files")
    slurm_setup = slurm_settings(executor, slurm, threads)  # checked by run_study before it plans or calibrates
    claims = [c.strip() for c in only.split(",") if c.strip()] if only is not None else None
    show = not (quiet or json_)  # tables; progress (stderr) shows unless --quiet, --json changes stdout alone

    def on_plan(report: dict[str, Any]) -> None:
        if show:
            print_table(plan_table(report))

    result = run_study(file, budget=budget, overrides=with_device(set_, device), out=out, runs_dir=runs_dir, jobs=jobs,
                       threads=threads, executor=executor, scheduler=scheduler, only=claims, max_minutes=max_minutes,
                       dry_run=dry_run, overwrite=overwrite, progress=None if quiet else SweepProgress(),
                       on_plan=on_plan, slurm=slurm_setup, beside=beside or ())
    if dry_run:
        if json_:
            print_json(result)
        return
    if result["interrupted"]:
        stderr_console.print("study interrupted: rerun the same command to run what is missing and write the report",
                             markup=False, highlight=False)
        raise typer.Exit(1)
    if json_:
        print_json(result)
    elif not quiet:
        print_table(summary_table(result))
        print_written(result["files"])
        stderr_console.print(f"done in {result['wall_seconds'] / 60:.1f} min", markup=False, highlight=False)
    if result["failed"]:
        stderr_console.print(f"{len(result['failed'])} runs failed (not by diverging) or are missing; rerun the "
                             f"same command to retry them: {', '.join(result['failed'][:3])}", soft_wrap=True,
                             markup=False, highlight=False)
        raise typer.Exit(1)


@command("study-merge")
def study_merge(
    reports: Annotated[list[Path], typer.Argument(
        metavar="PART", help="Finished reports of one study at one budget, for different claims: their "
                                  "output folders or study.json files (figures/ beside each).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the merged report, study.json and figures.")],
    beside: Annotated[list[Path] | None, typer.Option(
        metavar="DIR", help="The report of this study at another budget (repeatable), for the 'holds at which "
                            "scale' table; replaces the parts' own record of that budget.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the report files already in --out.")] = False,
    json_: JsonOption = False,
) -> None:
    """Merge the reports of a study measured in parts (e.g. `nnrun study --only` into separate folders) into one
    report, without their runs: each claim's numbers stay its part's. With one report, re-render it (e.g.
    --beside a newer report of another budget).

    Exit code 0, or 2 for bad input (reports of different studies or budgets, a claim in two reports, a missing
    figure); nothing is written then.
    """
    from nnrun.study.display import summary_table
    from nnrun.study.merge import merge_reports

    result = merge_reports(reports, out, beside=beside or (), overwrite=overwrite)
    if json_:
        print_json(result)
        return
    print_table(summary_table(result))
    print_written(result["files"])


def main() -> None:
    """Console-script entry point."""
    app()
