"""`nnrun study-merge`: one report from finished reports of one study and budget, without their runs.

A study measured in parts (`nnrun study --only A` on one machine, `--only B` on another, or rounds
into separate folders) leaves one `study.json` per part. `merge_reports(sources, out)` checks that
they report the same study, budget and statistics and measure different claims, and writes one
report of all their claims into `out`: `study.json`, `report.md`, `report.html` and the claims'
figures, copied from each part's `figures/`. Each claim's numbers are its part's, unchanged: a
claim's intervals, tests and Holm correction never look beyond its own runs, so merging changes no
verdict. The merged `study.json` lists its parts under `merged` (each part's command, machine, wall
time and runs) and every part's sessions.

With one part, the same command re-renders a report, e.g. beside (`--beside`) the report of another
budget that finished after it. `--beside` records replace a part's own record of that budget.
"""

from __future__ import annotations

import re
import shlex
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from nnrun.errors import UserInputError
from nnrun.io import atomic_write, write_json, write_text
from nnrun.study.display import summary_table
from nnrun.study.report import FIGURES_DIR, Image, build_document, to_html, to_markdown
from nnrun.study.scales import budget_record, load_beside, read_study_json
from nnrun.study.spec import NAME_PATTERN, load_study

MERGED_FILES = {"json": "study.json", "markdown": "report.md", "html": "report.html"}
"""What `merge_reports` writes into its output folder, besides `figures/`."""
RUN_COUNTS = ("entries", "distinct", "diverged", "failed")
"""The run counts of a report's `runs` that a merge adds up over its parts."""


def read_report(source: str | Path) -> tuple[dict[str, Any], Path]:
    """The `study.json` object of `source` (a study's output folder or the file itself) and the folder its
    figure paths are relative to; `UserInputError` naming the file otherwise (also when the report cannot be
    rendered: a field missing or of the wrong type)."""
    report, path = read_study_json(source, str(source))
    if (not isinstance(report, dict) or not isinstance(report.get("claims"), list)
            or not all(isinstance(c, dict) for c in report["claims"])
            or not all(k in report for k in ("study", "budget", "statistics", "runs"))):
        raise UserInputError(f"{source}: {path} is not the study.json of a finished nnrun study")
    for claim in report["claims"]:
        if not isinstance(claim.get("id"), str) or not re.fullmatch(NAME_PATTERN, claim["id"]):
            raise UserInputError(f"{source}: claim id {claim.get('id')!r} is not a claim name (letters, digits, "
                                 "'_', '.', '+', '-')")
    try:
        build_document(report)
        summary_table(report)  # what the command prints
        budget_record(report)
        sum(float(s["wall_seconds"]) for s in report.get("sessions") or [])
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as e:
        raise UserInputError(f"{source}: {path} lacks what a study report holds ({type(e).__name__}: {e})") from None
    return report, path.parent


def merge_reports(sources: list[Path] | tuple[Path, ...], out: Path, *, beside: list[Path] | tuple[Path, ...] = (),
                  overwrite: bool = False) -> dict[str, Any]:
    """Write one report of every claim of `sources` (module docstring) into `out`, and return its object with
    `files` (what was written). Everything is checked and rendered before anything is written."""
    if not sources:
        raise UserInputError("give at least one study report to merge (a study's output folder or its study.json)")
    parts = [(Path(s), *read_report(s)) for s in sources]
    _check_parts(parts)
    others = {}
    for folder in beside:
        record = load_beside(folder, parts[0][1]["study"], parts[0][1]["budget"])
        if record["budget"] in others:
            raise UserInputError(f"--beside {folder}: budget {record['budget']!r} is given twice")
        others[record["budget"]] = record
    figures = _figure_files(parts)
    _check_out(out, [folder for _, _, folder in parts], overwrite)

    merged = _merged_object(parts, others)
    for claim in merged["claims"]:
        if claim["id"] in figures:
            claim["figure"] = f"{FIGURES_DIR}/{claim['id']}{figures[claim['id']].suffix}"
    sources_of = {claim["figure"]: figures[claim["id"]].resolve() for claim in merged["claims"]
                  if claim["id"] in figures}
    blocks = build_document(merged)
    markdown = to_markdown(blocks)
    page = to_html([Image(str(sources_of[b.path]), b.alt) if isinstance(b, Image) and b.path in sources_of else b
                    for b in blocks], out, merged["title"] or merged["study"])
    for relative, path in sources_of.items():
        atomic_write(out / relative, lambda f, source=path: f.write(source.read_bytes()))
    files = {"json": str(write_json(out / MERGED_FILES["json"], merged)),
             "markdown": str(write_text(out / MERGED_FILES["markdown"], markdown)),
             "html": str(write_text(out / MERGED_FILES["html"], page))}
    return {**merged, "files": files, "out": str(out)}


def _check_parts(parts: list[tuple[Path, dict[str, Any], Path]]) -> None:
    """The parts report one study at one budget, measured alike (the budget's seeds and overrides, the
    statistics), and no claim twice."""
    first_source, first, _ = parts[0]
    for source, report, _ in parts[1:]:
        for key in ("study", "budget"):
            if report[key] != first[key]:
                raise UserInputError(f"{source}: {key} {report[key]!r}, but {first_source} has {first[key]!r}; "
                                     "merge reports of one study at one budget")
        if report["statistics"] != first["statistics"]:
            raise UserInputError(f"{source}: its statistics settings (level, power, analysis) differ from "
                                 f"{first_source}'s; its intervals would not compare")
        if _measured_alike(report) != _measured_alike(first):
            raise UserInputError(f"{source}: its budget settings ({_measured_alike(report)}) differ from "
                                 f"{first_source}'s ({_measured_alike(first)}); its runs are not the same budget's")
    owner: dict[str, Path] = {}
    for source, report, _ in parts:
        for claim in report["claims"]:
            if claim["id"] in owner:
                raise UserInputError(f"claim {claim['id']!r} is in both {owner[claim['id']]} and {source}; merge "
                                     "reports of different claims")
            owner[claim["id"]] = source


def _measured_alike(report: dict[str, Any]) -> dict[str, Any]:
    """What a budget sets for every run (its seeds, overrides, selections): parts must agree on it. Its
    description, claim list and time bound may change between parts (a later round adds claims)."""
    settings = report.get("budget_settings") or {}
    return {k: v for k, v in settings.items() if k not in ("description", "claims", "max_minutes")}


def _figure_files(parts: list[tuple[Path, dict[str, Any], Path]]) -> dict[str, Path]:
    """Each claim's figure file: where its report says (`figures/ID.png` beside study.json), or beside
    study.json itself (a published copy of a report, its figures beside it)."""
    files = {}
    for source, report, folder in parts:
        for claim in report["claims"]:
            if not claim.get("figure"):
                continue
            path = folder / claim["figure"]
            if not path.is_file():
                path = folder / Path(claim["figure"]).name
            if not path.is_file():
                raise UserInputError(f"{source}: the figure of claim {claim['id']!r} is missing "
                                     f"({folder / claim['figure']}); copy the study's figures/ folder beside its "
                                     "study.json")
            files[claim["id"]] = path
    return files


def _check_out(out: Path, folders: list[Path], overwrite: bool) -> None:
    """Refuse an output folder that is a file, one of the parts' folders (a merge must not overwrite what it
    reads), or one that holds report files already (unless `overwrite`)."""
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} exists and is not a folder")
    if any(out.resolve() == folder.resolve() for folder in folders):
        raise UserInputError(f"--out {out} holds a report being merged; choose another folder")
    clash = [name for name in MERGED_FILES.values() if (out / name).exists()]
    if clash and not overwrite:
        raise UserInputError(f"{out} already holds {', '.join(clash)}; choose another --out or pass --overwrite")


def _merged_object(parts: list[tuple[Path, dict[str, Any], Path]],
                   others: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The merged `study.json`: the newest part's study, budget and machine fields, every part's claims (in the
    study file's order, as `nnrun study` reports them, where that file can be read; else in the order given),
    every command that worked on a part once (two parts run into one folder share its sessions), run counts
    added up, and `merged`: each part (a part that is itself a merge gives its own parts)."""
    newest = max((report for _, report, _ in parts), key=lambda report: _when(report.get("finished")))
    claims = [claim for _, report, _ in parts for claim in report["claims"]]
    rank = {claim_id: i for i, claim_id in enumerate(_study_order(newest))}
    claims.sort(key=lambda c: rank.get(c["id"], len(rank)))  # stable: the order given for claims not found
    sessions = {}
    for _, report, _ in parts:
        for session in report.get("sessions") or []:
            sessions.setdefault((session.get("started"), session.get("command"), session["wall_seconds"]), session)
    runs = {k: sum(int(report["runs"].get(k) or 0) for _, report, _ in parts) for k in RUN_COUNTS}
    runs.update(trained_now=0, reused=runs["distinct"], runs_dir=None)
    budgets = {}
    for _, report, _ in sorted(parts, key=lambda part: _when(part[1].get("finished"))):
        budgets.update({r["budget"]: r for r in report.get("other_budgets") or []})
    budgets.update(others)
    estimates = [report.get("estimate_seconds") for _, report, _ in parts]
    merged = []
    for source, report, _ in parts:
        merged += report.get("merged") or [
            {"source": str(source), "claims": [c["id"] for c in report["claims"]],
             "commands": len(report.get("sessions") or []) or 1, "wall_seconds": _wall_seconds(report),
             **{k: report.get(k) for k in ("command", "machine", "jobs", "threads_per_run", "executor", "overrides",
                                           "finished", "runs")}}]
    return {
        **{k: newest.get(k) for k in ("study", "title", "description", "file", "budget", "budgets",
                                      "budget_settings", "overrides", "machine", "jobs", "threads_per_run",
                                      "executor", "finished", "statistics")},
        "command": shlex.join(["nnrun", *sys.argv[1:]]),
        "wall_seconds": (sum(float(s["wall_seconds"]) for s in sessions.values())
                         + sum(_wall_seconds(report) for _, report, _ in parts if not report.get("sessions"))),
        "estimate_seconds": None if None in estimates else sum(estimates),
        "sessions": sorted(sessions.values(), key=lambda s: _when(s.get("started"))),
        "runs": runs, "claims": claims, "other_budgets": list(budgets.values()), "merged": merged,
    }


def _when(text: Any) -> float:
    """A report's `finished` or a session's `started` as seconds since the epoch (their time zones apart);
    0 when missing or unreadable."""
    for fmt in ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return datetime.strptime(str(text), fmt).timestamp()
        except ValueError:
            continue
    return 0.0


def _wall_seconds(report: dict[str, Any]) -> float:
    """A report's whole wall time: its sessions' (every command that worked on its folder), else its own."""
    sessions = report.get("sessions") or []
    return (sum(float(s.get("wall_seconds") or 0) for s in sessions) if sessions
            else float(report.get("wall_seconds") or 0))


def _study_order(report: dict[str, Any]) -> list[str]:
    """The claim ids of the study file a report names, in the file's order; none when the file is gone, no
    longer valid, or another study's."""
    try:
        study, _ = load_study(str(report.get("file") or ""))
    except (UserInputError, OSError, TypeError, ValueError):
        return []
    return [claim.id for claim in study.claims] if study.name == report.get("study") else []
