"""Holds at which scale: one study's verdicts at several budgets, side by side.

`nnrun study FILE --budget B --beside DIR` reads `DIR/study.json`, the report of the same study at another
budget, and keeps a compact copy of its verdicts in this budget's `study.json` (`other_budgets`: per claim,
each relation's verdict and a - b with its 95 % interval), so that the report can show, for every relation
it measured, what it found at each budget measured. A relation is matched across budgets by its label and
metric; a claim the other budget did not measure shows `-` there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nnrun.errors import UserInputError

REPORT_FILE = "study.json"
"""The study report a `--beside` folder must hold."""
RELATION_KEYS = ("label", "relation", "metric", "a", "b", "verdict", "verdict_label", "interval", "diverged",
                 "diverged_left_out", "p_support")
"""What a compact record keeps of each relation (what a scale cell shows)."""


def read_study_json(source: str | Path, label: str) -> tuple[Any, Path]:
    """The parsed `study.json` of `source` (a study's output folder or the file itself) and its path;
    `UserInputError` starting with `label` when it is missing or unreadable."""
    path = Path(source)
    if path.is_dir():
        path = path / REPORT_FILE
    try:
        return json.loads(path.read_text()), path
    except FileNotFoundError:
        raise UserInputError(f"{label}: no {REPORT_FILE} there (give the output folder of a finished nnrun "
                             "study, or its study.json)") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserInputError(f"{label}: cannot read {path} as a study report: {e}") from None


def load_beside(folder: str | Path, study: str, budget: str) -> dict[str, Any]:
    """The compact record (`budget_record`) of study `study`'s report in `folder` (or the `study.json` given
    itself), measured at a budget other than `budget`; `UserInputError` naming the file otherwise."""
    report, path = read_study_json(folder, f"--beside {folder}")
    if not isinstance(report, dict) or not isinstance(report.get("claims"), list) or "budget" not in report:
        raise UserInputError(f"--beside {folder}: {path} is not the study.json of an nnrun study")
    if report.get("study") != study:
        raise UserInputError(f"--beside {folder}: {path} reports study {report.get('study')!r}, expected {study!r} "
                             f"(the study of this command)")
    if report["budget"] == budget:
        raise UserInputError(f"--beside {folder}: {path} is budget {budget!r} too; give a report of another budget")
    try:
        return budget_record(report, source=str(path))
    except (KeyError, TypeError, AttributeError) as e:
        raise UserInputError(f"--beside {folder}: {path} lacks what a study report holds ({e})") from None


def budget_record(report: dict[str, Any], source: str | None = None) -> dict[str, Any]:
    """What the scale table needs of one budget's report: its budget, seeds, when it finished, and each claim's
    verdict with its relations' verdicts and intervals."""
    settings = report.get("budget_settings") or {}
    return {"budget": report["budget"], "source": source, "finished": report.get("finished"),
            "seeds": settings.get("seeds"), "set": settings.get("set") or {},
            "claims": [{"id": c["id"], "verdict": c["verdict"],
                        "relations": [{k: r.get(k) for k in RELATION_KEYS} for r in c["relations"]]}
                       for c in report["claims"]]}


def ordered_budgets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """This report's record and those of `report["other_budgets"]`, in the study file's budget order (then by
    name); one record per budget."""
    records = {r["budget"]: r for r in report.get("other_budgets") or []}
    records[report["budget"]] = budget_record(report)
    order = list(report.get("budgets") or [])
    return sorted(records.values(), key=lambda r: (order.index(r["budget"]) if r["budget"] in order else len(order),
                                                   r["budget"]))


def scale_rows(report: dict[str, Any], cell: Callable[[dict[str, Any]], str]
               ) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """The scale table: the budgets' records in column order (`ordered_budgets`), and one row per relation of
    this report: claim, relation, metric, then `cell(relation)` at each budget (`-` where it has no such
    relation)."""
    budgets = ordered_budgets(report)
    found = [{(c["id"], r["label"], r["metric"]): r for c in b["claims"] for r in c["relations"]} for b in budgets]
    rows = []
    for claim in report["claims"]:
        for i, relation in enumerate(claim["relations"]):
            key = (claim["id"], relation["label"], relation["metric"])
            rows.append([f"**{claim['id']}**" if i == 0 else "", f"`{relation['label']}`",
                         relation["metric"] or "diverged",
                         *(cell(by_key[key]) if key in by_key else "-" for by_key in found)])
    return budgets, rows
