"""How a sweep looks in the terminal: the plan and results tables, and live progress while it runs.

On a terminal the progress is a live table of the runs in progress (epoch read from each run's
`metrics.jsonl`) and the latest finished ones; elsewhere (logs, CI) one line per finished run.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from nnrun.rundir import RunDir
from nnrun.sweep.execute import FINISHED, RunResult, SweepOutcome, sort_results
from nnrun.sweep.plan import SweepPlan, SweepPoint, completed_summary
from nnrun.tables import METRIC_COLUMNS, DataTable, fmt, plural, stderr_console


def status_text(result: RunResult) -> Text:
    styles = {"completed": "green", "failed": "bold red", "interrupted": "yellow", "cancelled": "dim",
              "pruned": "magenta"}
    label = "skipped (done)" if result.skipped else result.status
    return Text(label, style=styles.get(result.status, ""))


def results_table(outcome: SweepOutcome, title: str | None = None) -> DataTable:
    """All runs of a finished sweep, best first: varied keys, status, metrics, run directory, reason."""
    results = sort_results(outcome.results)
    metrics = [m for m in METRIC_COLUMNS if any(r.metric(m) is not None for r in results)]
    with_reason = any(r.reason for r in results)
    n_failed = len(outcome.failed)
    n_pruned = sum(r.status == "pruned" for r in results)
    pruned = f"{n_pruned} pruned, " if n_pruned else ""
    table = DataTable(title or f"sweep: {plural(len(results), 'run')}, {len(results) - n_failed - n_pruned} "
                               f"completed, {pruned}{n_failed} failed or not run")
    table.add_column("#", key=True)
    for key in outcome.plan.keys:
        table.add_column(key, "value")
    table.add_column("status", "label")
    for m in metrics:
        table.add_column(m, digits=3 if m == "seconds" else 4)
    table.add_column("run dir", "text")
    if with_reason:
        table.add_column("reason", "text")
    for r in results:
        cells = [r.point.index + 1, *(r.point.params.get(k) for k in outcome.plan.keys), status_text(r),
                 *(r.metric(m) for m in metrics), r.point.run_dir.name]
        if with_reason:
            cells.append(r.reason or "")
        table.add_row(*cells)
    return table


def plan_table(plan: SweepPlan) -> DataTable:
    """The points of a plan and whether each still has to run (for --dry-run)."""
    table = DataTable(f"sweep plan: {plural(len(plan.points), 'run')} in {plan.runs_dir}")
    table.add_column("#", key=True)
    for key in plan.keys:
        table.add_column(key, "value")
    table.add_column("state", "label")
    table.add_column("run dir", "text")
    for p in plan.points:
        done = completed_summary(p) is not None
        table.add_row(p.index + 1, *(p.params.get(k) for k in plan.keys),
                      Text("done", style="green") if done else Text("to run"), p.run_dir.name)
    return table


def time_left(elapsed: float, finished: int, remaining: int) -> str:
    """`about 3 min left`: the wall time so far per run finished this session, times the runs left (parallel
    runs included, since the wall time already holds them); empty before the first run finishes."""
    if finished < 1 or remaining < 1:
        return ""
    seconds = elapsed / finished * remaining
    if seconds < 90:
        return f"about {seconds:.0f} s left"
    if seconds < 5400:
        return f"about {seconds / 60:.0f} min left"
    return f"about {seconds / 3600:.1f} h left"


class SweepProgress:
    """Shows a sweep while it runs.

    On a terminal: a live table of the runs in progress (epoch read from each run's
    `metrics.jsonl`) and the latest finished ones, under a count of what is done and the time
    left (`time_left`). Elsewhere (logs, CI): one line per finished run, with the time left. The
    final table is printed by the caller.
    """

    def __init__(self, console: Console = stderr_console) -> None:
        self.console = console
        self.live: Live | None = None
        self.plan: SweepPlan | None = None
        self.started = 0.0
        self.reported: set[int] = set()
        self.skipped = 0

    def start(self, plan: SweepPlan, results: dict[int, RunResult], started: float) -> None:
        self.plan, self.started = plan, started
        skipped = len(results)
        self.console.print(f"sweep: {plural(plan.size, 'run')} in {plan.runs_dir}"
                           + (f", {skipped} already completed (skipped)" if skipped else "")
                           + (f", {plan.duplicates} duplicate points merged" if plan.duplicates else ""))
        self.reported = set(results)
        self.skipped = skipped
        if self.console.is_terminal:
            self.live = Live(self._render(results, []), console=self.console, refresh_per_second=2,
                             transient=True)
            self.live.start()

    def update(self, results: dict[int, RunResult], pending: list[SweepPoint]) -> None:
        if self.live is not None:
            self.live.update(self._render(results, pending))
            return
        for index, result in sorted(results.items()):
            if index not in self.reported:
                self.reported.add(index)
                acc = result.metric("val_accuracy")
                extra = f" val_accuracy={fmt(acc)}" if acc is not None else f" ({result.reason})"
                left = time_left(time.time() - self.started, len(self.reported) - self.skipped,
                                 self.plan.size - len(self.reported))
                self.console.print(f"[{len(self.reported)}/{self.plan.size}] {result.status} "
                                   f"{result.point.label}{extra}{f'; {left}' if left else ''}", markup=False,
                                   highlight=False, soft_wrap=True)

    def finish(self, outcome: SweepOutcome) -> None:
        if self.live is None:
            self.update({r.point.index: r for r in outcome.results}, [])
        self.close()

    def close(self) -> None:
        """Stop the live display (also when the sweep stops on an error)."""
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _render(self, results: dict[int, RunResult], pending: list[SweepPoint]) -> Group:
        plan = self.plan
        running = [p for p in pending if _started_since(p.run_dir, self.started)]
        n_failed = sum(r.status not in FINISHED for r in results.values())  # a pruned run finished
        elapsed = time.time() - self.started
        left = time_left(elapsed, len(results) - self.skipped, plan.size - len(results))
        head = Text(f"{len(results)}/{plan.size} done, {n_failed} failed, {len(running)} running, "
                    f"{len(pending) - len(running)} queued  ({elapsed:.0f} s{f', {left}' if left else ''})")
        table = DataTable()
        table.add_column("#", key=True)
        for key in plan.keys:
            table.add_column(key, "value")
        table.add_column("status", "label")
        table.add_column("epoch", "label")
        table.add_column("val_accuracy")
        room = max(self.console.height - 8, 4)
        finished = sorted((r for r in results.values() if not r.skipped), key=lambda r: r.point.index)
        finished = finished[-max(room - len(running), 0):] if room > len(running) else []
        epochs = self.plan.base.train.epochs
        for p in running[:room]:
            total = p.config.get("train", {}).get("epochs", epochs)
            table.add_row(p.index + 1, *(p.params.get(k) for k in plan.keys), Text("running", "cyan"),
                          f"{RunDir(p.run_dir).epochs_done()}/{total}", None)
        for r in finished:
            table.add_row(r.point.index + 1, *(r.point.params.get(k) for k in plan.keys), status_text(r),
                          fmt(r.metric("epochs")), r.metric("val_accuracy"))
        return Group(head, table)


def _started_since(run_dir: Path, since: float) -> bool:
    try:
        return (run_dir / "config.yaml").stat().st_mtime >= since - 1
    except OSError:
        return False
