"""`nnrun report RUNS --html OUT`: one static HTML page of the runs under a folder, for the browser.

The page (`OUT/index.html`) holds, in this order:

- the runs table: the columns `nnrun runs` shows (`nnrun.runs.select_runs`: run, status, the headline
  metrics, epochs, the config keys that differ), its cells formatted by the same rules
  (`DataTable.formatted`: one number of decimals per metric column, settings as given), best run
  first; a click on a header sorts by that column (numbers before text, runs without a value last,
  ties by run name, as `nnrun runs --sort`), a second click reverses. Each run names its folder and
  its files as relative links;
- the runs' curves (`nnrun.plot.plot_figure`, as `nnrun plot` draws them) and the headline validation
  metric against each config key that differs (`nnrun plot --x KEY`), as PNG files in `OUT/figures/`;
- the study reports the folder holds (a folder with a study's `study.json` and `report.html`, as
  `nnrun study` writes them): each claim's verdict, with links to the study's own report files.

It needs no server and no network: the sorting is a small inline script, the styles are inline, the
figures and links are relative paths, so the page opens from `file://` (and keeps working when `OUT`
and the runs are copied together). A Content-Security-Policy allows only the page's own script and
style (by hash), so text from run files can never run as script even if it were not escaped; and every
such text (run names, config values, statuses, study titles and claims) is HTML-escaped, with control
characters shown as escapes (`nnrun.tables.printable`).

Writing follows the output-folder rules of `nnrun.io`: `OUT` must be new, empty, or hold an earlier
`nnrun report` (which is replaced); anything else in it (a file nnrun report did not write) is refused.
`OUT/report.json` (the manifest) names what the command wrote. Figures get names that hash their
content, are written before the page, and the page is renamed into place last, so a reader never sees
a page pointing at a missing or newer figure; an earlier report's figures the new page does not show
are removed after it. Two reports writing into one folder take turns (`OUT/.report.lock`, an OS lock:
the second waits up to a minute, then checks the folder again and replaces the first one's page). A
command killed half way leaves the earlier page (or none) and files the next run recognises as its own.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import os
import re
import shlex
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from filelock import FileLock, Timeout
from matplotlib.figure import Figure
from rich.text import Text

from nnrun import __version__, plots
from nnrun.errors import UserInputError
from nnrun.io import TEMP_SUFFIX, atomic_write, remove_stale_temporaries, write_json, write_text
from nnrun.plot import plot_figure
from nnrun.runs import runs_table, select_runs, shown_keys
from nnrun.runstore import RunRecord, collect_runs, headline_metric, is_run_dir
from nnrun.study.run import REPORT_FILES as STUDY_FILES
from nnrun.tables import csv_cell, is_number, plural, printable

PAGE = "index.html"
"""The page, in the output folder."""
MANIFEST = "report.json"
"""What `nnrun report` wrote into the output folder (how a later run knows the folder is its own)."""
FIGURES_DIR = "figures"
"""The page's figures, beside it."""
REPORT_LOCK = ".report.lock"
"""The lock two `nnrun report` commands writing into one folder take in turn (an OS lock through filelock)."""
LOCK_WAIT_S = 60.0
"""How long a report waits for another one writing into the same folder."""
GENERATOR = "nnrun report"
"""The manifest's and the page's `generator`."""
FIGURE_RE = re.compile(r"^[a-z0-9][a-z0-9-]*-[0-9a-f]{12}\.png$")
"""A figure's file name: what it shows, then 12 hex digits of its content's SHA-256."""
SKIPPED_KEYS = ("seed", "name")
"""Config keys the page draws no metric-against-key plot for (seeds are averaged over; names are labels)."""
MAX_KEY_PLOTS = 8
"""Metric-against-key plots the page draws at most (one per config key that differs, as the table shows them)."""
MAX_FILE_LINKS = 24
"""Files of a run directory the table links to at most (the folder link shows them all)."""
MAX_STUDY_JSON_BYTES = 64 * 2**20
"""A `study.json` larger than this is linked but not read."""
STATUS_CLASSES = ("completed", "failed", "interrupted", "running", "broken", "pruned")
"""Statuses the page colours (any other status is shown as plain text)."""


@dataclass
class PageFigure:
    """A figure of the page: its section (`curves` or `against-keys`), its file name under `figures/`, its PNG
    bytes, caption and alternative text."""

    section: str
    name: str
    png: bytes
    caption: str
    alt: str


@dataclass
class Study:
    """A study's output folder as the page shows it: its title, budget, the claims' verdicts, its report files."""

    path: Path
    title: str
    budget: str
    claims: list[dict[str, str]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    note: str = ""


# ---- the output folder ----------------------------------------------------------------------------

def _temporary_of(name: str, names: Iterable[str]) -> bool:
    """Whether `name` is what a killed atomic write of one of `names` left (`.NAME.RANDOM.tmp`, `nnrun.io`)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX) and any(name.startswith(f".{n}.") for n in names)


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest of an earlier `nnrun report` in `out`, None when there is none or it is not one."""
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(manifest, dict) or manifest.get("generator") != GENERATOR:
        return None
    figures = manifest.get("figures")
    manifest["figures"] = [f for f in figures if isinstance(f, str) and FIGURE_RE.match(f)] \
        if isinstance(figures, list) else []
    return manifest


def check_report_folder(out: str | Path) -> tuple[Path, list[str]]:
    """`out` as a Path, and the figures an earlier report there wrote; a `UserInputError` when `out` is not a
    folder, or holds anything `nnrun report` did not write (the project's output-folder rule: never write
    over what is not ours)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--html {out} exists and is not a folder; give a new or empty folder")
    if not out.is_dir():
        return out, []
    entries = sorted(p.name for p in out.iterdir() if p.name != REPORT_LOCK)
    if not entries:
        return out, []
    manifest = read_manifest(out)
    ours = (PAGE, MANIFEST)
    if manifest is None:
        shown = ", ".join(printable(n) for n in entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise UserInputError(f"--html {out} already holds files that nnrun report did not write ({shown}); give a "
                             f"new or empty folder (nnrun report replaces only a page it wrote itself)")
    figures = manifest["figures"]
    foreign = [n for n in entries if n not in (*ours, FIGURES_DIR) and not _temporary_of(n, ours)]
    foreign += [n for n in ours if os.path.lexists(out / n) and not _plain_file(out / n)]
    folder = out / FIGURES_DIR
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        foreign.append(FIGURES_DIR)
    elif folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.name in figures and _plain_file(p) or _temporary_of(p.name, figures):
                continue
            foreign.append(f"{FIGURES_DIR}/{p.name}")
    if foreign:
        shown = ", ".join(printable(n) for n in foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise UserInputError(f"--html {out} holds an earlier nnrun report but also {shown}, which nnrun report did "
                             f"not write; give a new or empty folder")
    return out, figures


def _plain_file(path: Path) -> bool:
    """A regular file, not a link (a link nnrun would write through is not nnrun's)."""
    return path.is_file() and not path.is_symlink()


# ---- what the page shows ------------------------------------------------------------------------

def _figure(section: str, fig: Figure, what: str, caption: str, alt: str) -> PageFigure:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=plots.DPI)
    png = buffer.getvalue()
    slug = re.sub(r"[^a-z0-9]+", "-", what.lower()).strip("-")[:60] or "figure"
    return PageFigure(section, f"{slug}-{hashlib.sha256(png).hexdigest()[:12]}.png", png, caption, alt)


def draw_figures(root: Path, records: list[RunRecord], *, recursive: bool) -> tuple[list[PageFigure], list[str]]:
    """The curves, and the headline validation metric against each config key the table shows (not the seed),
    with a note for each figure that could not be drawn (no run finished an epoch, ...)."""
    figures: list[PageFigure] = []
    notes: list[str] = []
    metric = f"val_{headline_metric(records)}"
    runs = collect_runs([root], recursive=recursive)  # read once for every figure, in nnrun plot's order
    try:
        fig, result = plot_figure([root], recursive=recursive, records=runs)
        caption = f"{' and '.join(result['metrics'])} per epoch, one line per run (as nnrun plot draws them)"
        figures.append(_figure("curves", fig, "curves", caption, "curves of every run"))
    except UserInputError as e:
        notes.append(f"no curves: {e}")
    keys = [k for k in shown_keys(records)[0] if k not in SKIPPED_KEYS][:MAX_KEY_PLOTS]
    for key in keys:
        try:
            fig, result = plot_figure([root], x=key, recursive=recursive, records=runs)
        except UserInputError as e:
            notes.append(f"no plot of {metric} against {key}: {e}")
            continue
        caption = f"each run's final {', '.join(result['metrics'])} against {key} (nnrun plot --x {key})"
        figures.append(_figure("against-keys", fig, f"{metric}-vs-{key}", caption, f"{metric} against {key}"))
    return figures, notes


def find_studies(root: Path, *, recursive: bool) -> list[Path]:
    """The study output folders (a `study.json` beside a `report.html` or `report.md`) at `root`, in its
    sub-folders, and deeper with `recursive`; run directories are not looked into."""
    found = []
    frontier = [(root, 0)]
    while frontier:
        folder, depth = frontier.pop(0)
        if (folder / STUDY_FILES["json"]).is_file() and any(
                (folder / STUDY_FILES[k]).is_file() for k in ("html", "markdown")):
            found.append(folder)
        if depth >= 1 and not recursive:
            continue
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError:
            continue
        frontier += [(p, depth + 1) for p in children if not is_run_dir(p)]
    return found


def _text(value: Any, limit: int = 2000) -> str:
    text = printable(str(value))
    return text if len(text) <= limit else text[:limit] + "…"


def read_study(folder: Path) -> Study:
    """What the page shows of a study's output folder; a `study.json` that cannot be read gives a note."""
    files = [name for name in (STUDY_FILES["html"], STUDY_FILES["markdown"], STUDY_FILES["json"])
             if (folder / name).is_file()]
    study = Study(folder, folder.name, "", files=files)
    path = folder / STUDY_FILES["json"]
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_STUDY_JSON_BYTES + 1)
        if len(raw) > MAX_STUDY_JSON_BYTES:
            raise ValueError(f"larger than {MAX_STUDY_JSON_BYTES // 2**20} MiB")
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        study.note = f"{STUDY_FILES['json']} could not be read ({_text(e, 200)})"
        return study
    study.title = _text(data.get("title") or data.get("study") or folder.name, 300)
    study.budget = _text(data.get("budget") or "", 100)
    claims = data.get("claims")
    for claim in claims if isinstance(claims, list) else []:
        if isinstance(claim, dict):
            study.claims.append({k: _text(claim.get(k) if claim.get(k) is not None else "-")
                                 for k in ("id", "verdict", "statement")})
    return study


# ---- HTML -----------------------------------------------------------------------------------------

def esc(value: Any) -> str:
    """Text from anywhere (run files above all) as HTML text or attribute value: control characters as escapes,
    `& < > " '` as entities."""
    return html.escape(printable(str(value)), quote=True)


def href(target: Path, page_folder: Path, *, folder: bool = False) -> str:
    """A relative URL from the page's folder to `target`, every segment percent-encoded (a name holding `:`,
    `#`, `?` or `<` stays a path, never a scheme or markup), escaped for an attribute."""
    relative = os.path.relpath(os.path.abspath(target), os.path.abspath(page_folder))
    url = "/".join(quote(part, safe="") for part in Path(relative).parts)
    return html.escape(url + ("/" if folder else ""), quote=True)


SCRIPT = """
(function () {
  "use strict";
  var table = document.getElementById("runs");
  if (!table) { return; }
  var body = table.tBodies[0];
  var heads = table.tHead.rows[0].cells;
  function key(row, i) {
    var cell = row.cells[i];
    if (cell.hasAttribute("data-n")) { return [0, Number(cell.getAttribute("data-n")), ""]; }
    if (cell.hasAttribute("data-v")) { return [1, 0, cell.getAttribute("data-v")]; }
    return [2, 0, ""];
  }
  function sortBy(i, descending) {
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, i), y = key(b, i), c = 0;
      if (x[0] !== y[0]) { return x[0] - y[0]; }
      if (x[0] === 0) { c = x[1] < y[1] ? -1 : (x[1] > y[1] ? 1 : 0); }
      else if (x[0] === 1) { c = x[2] < y[2] ? -1 : (x[2] > y[2] ? 1 : 0); }
      if (c !== 0) { return descending ? -c : c; }
      var p = a.getAttribute("data-run"), q = b.getAttribute("data-run");
      return p < q ? -1 : (p > q ? 1 : 0);
    });
    rows.forEach(function (row) { body.appendChild(row); });
    for (var j = 0; j < heads.length; j++) {
      heads[j].setAttribute("aria-sort", j === i ? (descending ? "descending" : "ascending") : "none");
    }
    table.setAttribute("data-sorted", (descending ? "-" : "") + heads[i].getAttribute("data-column"));
  }
  Array.prototype.forEach.call(heads, function (head, i) {
    var button = head.querySelector("button");
    if (!button) { return; }
    button.addEventListener("click", function () {
      sortBy(i, head.getAttribute("aria-sort") === "ascending");
    });
  });
})();
"""
"""The table's sorting: a header's button sorts by its column, ascending first, then reversing. Each cell holds
its value to sort by (`data-n` a number, `data-v` text; neither: no value, always last), each row its run's
name (`data-run`, ties). The table says how it is sorted in `data-sorted` (`KEY` or `-KEY`)."""

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:1400px;padding:0 1em;
line-height:1.4;color:#1b1b1b}
h1{font-size:1.5em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;margin-top:1.8em}
nav a{margin-right:1em}.meta,.note,figcaption{color:#555;font-size:.9em}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.88em;margin:.6em 0}
th,td{border:1px solid #d4d4d4;padding:3px 7px;vertical-align:top}
th{background:#f2f2f2;position:sticky;top:0}
th button{font:inherit;font-weight:600;background:none;border:0;padding:0;cursor:pointer;text-align:left;color:inherit}
th[aria-sort=ascending] button::after{content:" \\25B2"}th[aria-sort=descending] button::after{content:" \\25BC"}
td.number,td.value{text-align:right;font-variant-numeric:tabular-nums}td.n{white-space:nowrap}
td.text{min-width:12em}td.files{font-size:.9em;white-space:nowrap}summary{cursor:pointer;color:#555}
.status-completed{color:#17803d}.status-failed,.status-broken{color:#b42318;font-weight:600}
.status-interrupted{color:#9a6700}.status-running{color:#0969da}.status-pruned{color:#8250df}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
"""
"""The page's styles (inline: the page loads nothing)."""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSP = (f"default-src 'none'; script-src {_csp_hash(SCRIPT)}; style-src {_csp_hash(STYLE)}; "
       "img-src 'self' file:; base-uri 'none'; form-action 'none'")
"""The page's Content-Security-Policy: only its own script and styles, images from files beside it."""


def _sort_attributes(value: Any) -> str:
    """A cell's value to sort by, as `nnrun runs --sort` compares it: a number (`data-n`), else its CSV text
    (`data-v`), nothing for a missing value."""
    if is_number(value) and math.isfinite(value):
        return f' data-n="{value!r}"'
    if value is None:
        return ""
    return f' data-v="{esc(csv_cell(value))}"'


def runs_section(records: list[RunRecord], columns: list[str], hidden: list[str], page_folder: Path,
                 title: str) -> str:
    """The runs table: the cells as `nnrun runs` formats them, sortable, each run linked with its files."""
    table = runs_table(title, records, columns)
    cells = table.formatted()
    head = "".join(f'<th scope="col" data-column="{esc(c)}" aria-sort="none" class="{column.kind}">'
                   f'<button type="button">{esc(column.header)}</button></th>'
                   for c, column in zip(columns, table.columns, strict=True))
    head += '<th scope="col">files</th>'
    rows = []
    for record, row in zip(records, cells, strict=True):
        tds = []
        for c, column, cell in zip(columns, table.columns, row, strict=True):
            raw = record.get(c)
            shown = cell.plain if isinstance(cell, Text) else cell
            if c == "run":
                content = f'<a href="{href(record.path, page_folder, folder=True)}">{esc(shown)}</a>'
            elif c == "status":
                status = str(raw)
                klass = f' class="status-{status}"' if status in STATUS_CLASSES else ""
                content = f"<span{klass}>{esc(shown)}</span>"
            else:
                content = esc(shown)
            number = " n" if is_number(raw) or c == "run" else ""
            tds.append(f'<td class="{column.kind}{number}"{_sort_attributes(raw)}>{content}</td>')
        tds.append(f'<td class="files">{_file_links(record.path, page_folder)}</td>')
        rows.append(f'<tr data-run="{esc(record.name)}">{"".join(tds)}</tr>')
    caption = ""
    if hidden:
        caption = (f'<p class="note">{esc(plural(len(hidden), "more config key"))} '
                   f'{"differs" if len(hidden) == 1 else "differ"} between the runs: {esc(", ".join(hidden))} '
                   f'(nnrun runs --columns run,KEY,... shows any)</p>')
    return (f'<section id="table"><h2>{esc(title)}</h2>'
            f'<p class="note">Best run first (completed, then the best headline validation metric); click a '
            f'header to sort by its column, again to reverse.</p>'
            f'<div class="scroll"><table id="runs" data-sorted=""><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>{caption}</section>')


def _file_links(path: Path, page_folder: Path) -> str:
    try:
        files = sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file())
    except OSError:
        return ""
    if not files:
        return ""
    links = [f'<a href="{href(p, page_folder)}">{esc(p.name)}</a>' for p in files[:MAX_FILE_LINKS]]
    if len(files) > MAX_FILE_LINKS:
        links.append(f'<a href="{href(path, page_folder, folder=True)}">{len(files) - MAX_FILE_LINKS} more</a>')
    return f"<details><summary>{plural(len(files), 'file')}</summary>{'<br>'.join(links)}</details>"


def figures_section(section: str, heading: str, figures: list[PageFigure]) -> str:
    if not figures:
        return ""
    items = "".join(f'<figure><img src="{FIGURES_DIR}/{f.name}" alt="{esc(f.alt)}">'
                    f'<figcaption>{esc(f.caption)}</figcaption></figure>' for f in figures)
    return f'<section id="{section}"><h2>{esc(heading)}</h2>{items}</section>'


def studies_section(studies: list[Study], page_folder: Path) -> str:
    if not studies:
        return ""
    parts = []
    for s in studies:
        links = " · ".join(f'<a href="{href(s.path / name, page_folder)}">{esc(name)}</a>' for name in s.files)
        budget = f" (budget {esc(s.budget)})" if s.budget else ""
        part = (f'<h3>{esc(s.title)}{budget}</h3><p class="meta">{esc(s.path)}: {links}</p>')
        if s.note:
            part += f'<p class="note">{esc(s.note)}</p>'
        if s.claims:
            rows = "".join(f"<tr><td>{esc(c['id'])}</td><td>{esc(c['verdict'])}</td><td>{esc(c['statement'])}</td>"
                           f"</tr>" for c in s.claims)
            part += ("<table><thead><tr><th>claim</th><th>verdict</th><th>statement</th></tr></thead>"
                     f"<tbody>{rows}</tbody></table>")
        parts.append(part)
    return f'<section id="studies"><h2>Study reports</h2>{"".join(parts)}</section>'


def render_page(*, root: Path, records: list[RunRecord], columns: list[str], hidden: list[str],
                figures: list[PageFigure], notes: list[str], studies: list[Study], page_folder: Path,
                command: str) -> str:
    """The whole page (module docstring)."""
    title = f"{plural(len(records), 'run')} in {root}"
    curves = [f for f in figures if f.section == "curves"]
    against = [f for f in figures if f.section == "against-keys"]
    nav = [("table", "runs")] if records else []
    nav += [("curves", "curves")] if curves else []
    nav += [("against-keys", "metric against keys")] if against else []
    nav += [("studies", "study reports")] if studies else []
    body = [f"<h1>{esc(title)}</h1>",
            f'<p class="meta">Written {esc(time.strftime("%Y-%m-%d %H:%M:%S"))} by nnrun {esc(__version__)}: '
            f"<code>{esc(command)}</code></p>",
            "<nav>" + "".join(f'<a href="#{anchor}">{esc(label)}</a>' for anchor, label in nav) + "</nav>"]
    if records:
        body.append(runs_section(records, columns, hidden, page_folder, title))
    body.append(figures_section("curves", "Curves", curves))
    body.append(figures_section("against-keys", "The headline metric against each key that differs", against))
    if notes:
        body.append('<section id="notes">' + "".join(f'<p class="note">{esc(n)}</p>' for n in notes) + "</section>")
    body.append(studies_section(studies, page_folder))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="generator" content="{GENERATOR} {esc(__version__)}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(part for part in body if part)
            + f"\n<script>{SCRIPT}</script>\n</body></html>\n")


# ---- the command ----------------------------------------------------------------------------------

def write_report(runs_dir: str | Path, *, out: str | Path, recursive: bool = False) -> dict[str, Any]:
    """`nnrun report`: write the page of the runs (and study reports) under `runs_dir` into the folder `out` and
    return what it wrote: `page`, `out`, `runs`, `figures` (paths), `studies` (folders) and `notes` (figures
    that could not be drawn). No runs and no study reports, or an `out` that holds what nnrun report did not
    write, is a `UserInputError` (exit 2), raised before anything is written."""
    root = Path(runs_dir)
    records, columns = select_runs(root, recursive=recursive)
    studies = [read_study(folder) for folder in find_studies(root, recursive=recursive)]
    if not records and not studies:
        hint = "" if recursive else " (--recursive looks in sub-folders at any depth)"
        raise UserInputError(f"no run directories or study reports in {root}{hint}")
    out, _ = check_report_folder(out)  # refused before the figures are drawn
    hidden = shown_keys(records)[1] if records else []
    figures, notes = draw_figures(root, records, recursive=recursive) if records else ([], [])
    if not records and not recursive:
        notes.append(f"no run directories directly in {root} (--recursive also reads its sub-folders, where a study "
                     f"keeps its runs)")
    command = shlex.join(["nnrun", "report", str(root), "--html", str(out), *(["--recursive"] if recursive else [])])
    page = render_page(root=root, records=records, columns=columns, hidden=hidden, figures=figures, notes=notes,
                       studies=studies, page_folder=out, command=command)
    manifest = {"generator": GENERATOR, "nnrun_version": __version__, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "runs_dir": str(root), "recursive": recursive, "page": PAGE,
                "runs": [{"run": r.name, "path": str(r.path)} for r in records],
                "studies": [str(s.path) for s in studies], "notes": notes}
    out.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(out / REPORT_LOCK, timeout=LOCK_WAIT_S):
            # Checked again under the lock: another report may have written here since.
            _, old_figures = check_report_folder(out)
            names = _write_files(out, manifest, figures, page, old_figures)
    except Timeout:
        raise UserInputError(f"another nnrun report has been writing into {out} for {LOCK_WAIT_S:.0f} s; "
                             f"try again when it has finished") from None
    folder = out / FIGURES_DIR
    return {"page": str(out / PAGE), "out": str(out), "runs": len(records),
            "figures": [str(folder / n) for n in names], "studies": [str(s.path) for s in studies], "notes": notes}


def _write_files(out: Path, manifest: dict[str, Any], figures: list[PageFigure], page: str,
                 old_figures: list[str]) -> list[str]:
    """Write the figures, the page and the manifest into `out` (locked), remove the earlier report's figures
    the page no longer shows, and return the figures' file names."""
    names = [f.name for f in figures]
    remove_stale_temporaries(out, (PAGE, MANIFEST))
    # First claim every file about to be written (a run killed in between leaves only files the manifest names),
    # then the figures, then the page, then the manifest of what the page uses, then the old figures go.
    write_json(out / MANIFEST, {**manifest, "figures": sorted({*old_figures, *names})})
    folder = out / FIGURES_DIR
    if figures or folder.is_dir():
        folder.mkdir(exist_ok=True)
        remove_stale_temporaries(folder, sorted({*old_figures, *names}))
    for f in figures:
        if not (folder / f.name).is_file():
            atomic_write(folder / f.name, lambda handle, png=f.png: handle.write(png))
    write_text(out / PAGE, page)
    write_json(out / MANIFEST, {**manifest, "figures": names})
    for name in old_figures:
        if name not in names:
            (folder / name).unlink(missing_ok=True)
    return names
