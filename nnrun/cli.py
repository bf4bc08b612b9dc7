"""The `nnrun` command line: thin Typer commands over the library.

Each command parses its options, calls a library function and maps errors to exit codes:
0 success, 2 bad input (`UserInputError`, bad options), 1 a failed run (`RunFailed`).
Human output goes to stderr; `--json` prints exactly one JSON object on stdout.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from nnrun.config import ExperimentConfig, load_config
from nnrun.errors import RunFailed, UserInputError
from nnrun.report import RichReporter, stderr_console

app = typer.Typer(
    help="nnrun: train NumPy MLPs from YAML configs and see what each setup choice does.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

SetOption = Annotated[list[str], typer.Option(
    "--set", "-s", metavar="KEY=VALUE", help="Override a config value, e.g. --set optim.lr=0.01 (repeatable).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def command(name: str | None = None, **kwargs: Any) -> Callable:
    """Register a command whose `UserInputError` exits 2 and `RunFailed` exits 1, each with one message."""
    def register(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args: Any, **kw: Any) -> Any:
            try:
                return fn(*args, **kw)
            except UserInputError as e:
                stderr_console.print(Text("error: ", style="bold red") + Text(str(e)), soft_wrap=True)
                raise typer.Exit(2) from None
            except RunFailed as e:
                stderr_console.print(Text("run failed: ", style="bold red") + Text(str(e)), soft_wrap=True)
                raise typer.Exit(1) from None
        return app.command(name, **kwargs)(run)
    return register


def print_json(obj: Any) -> None:
    """Write `obj` as one JSON object on stdout."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


@command()
def train(
    config: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    set_: SetOption = [],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (default: RUNS_DIR/NAME-TIME).")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Parent folder of default run directories.")] = Path("runs"),
    overwrite: Annotated[bool, typer.Option(help="Reuse an --out folder that already holds files.")] = False,
    json_: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or tables.")] = False,
) -> None:
    """Train the MLP a config describes; write the run directory; print tables (stderr) or --json (stdout)."""
    from nnrun.runs import RunDir
    from nnrun.train import SilentReporter, default_run_path, run_experiment

    cfg = load_config(config, set_)
    run = RunDir.create(out or default_run_path(runs_dir, cfg.name), overwrite=overwrite)
    reporter = SilentReporter() if quiet else RichReporter()
    try:
        summary = run_experiment(cfg, run, reporter)
    finally:
        if isinstance(reporter, RichReporter):
            reporter.close()
    if json_:
        print_json(summary)
    elif not quiet:
        stderr_console.print(f"run directory: {run.path}")


@command()
def validate(
    config: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    set_: SetOption = [],
    json_: JsonOption = False,
) -> None:
    """Check a config and print it resolved (defaults filled in, overrides applied)."""
    cfg = load_config(config, set_)
    if json_:
        print_json(cfg.model_dump(mode="json"))
    else:
        sys.stdout.write(cfg.to_yaml())


@command()
def schema() -> None:
    """Print the JSON schema of experiment configs (for editor completion)."""
    print_json(ExperimentConfig.model_json_schema())


def main() -> None:
    """Console-script entry point."""
    app()
