"""How a study looks in the terminal: its plan (runs per claim, the estimate) and its summary (one row per
relation, with the verdicts)."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from nnrun.study.report import analysis_text, relation_cells
from nnrun.tables import DataTable, fmt, plural

VERDICT_STYLES = {"supported": "green", "contradicted": "bold red", "not resolved": "yellow"}


def plan_table(report: dict[str, Any]) -> DataTable:
    """Runs per claim (entries, distinct, done) and the totals, with the estimated time of what is left."""
    est = report.get("estimate_seconds")
    bound = report.get("max_minutes")
    title = (f"study {report['study']} (budget {report['budget']}): {plural(report['distinct'], 'distinct run')}, "
             f"{report['done']} done, {report['to_run']} to run"
             + (f", about {fmt(est / 60, 3)} min" if est is not None else "")
             + (f" (bound {fmt(float(bound), 3)} min)" if bound is not None else ""))
    table = DataTable(title)
    table.add_column("claim", "label", key=True)
    for name in ("arms", "seeds", "runs", "distinct", "done"):
        table.add_column(name)
    for claim in report["claims"]:
        table.add_row(claim["id"], claim["arms"], claim["seeds"], claim["runs"], claim["distinct"], claim["done"])
    if table.rows:
        table.rows[-1].end_section = True
    table.add_row("all", "", "", report["entries"], report["distinct"], report["done"])
    return table


def summary_table(report: dict[str, Any]) -> DataTable:
    """One row per relation: claim and its verdict, relation, metric, test, a, b, a - b [95 % CI], verdict. The
    composite cells (`0.3911 ± 0.0052 (n=3)`) are text that wraps at spaces, never inside a number."""
    claims = report["claims"]
    table = DataTable(f"study {report['study']} (budget {report['budget']}): "
                      + ", ".join(f"{sum(c['verdict'] == v for c in claims)} {v}"
                                  for v in ("supported", "contradicted", "not resolved")))
    table.add_column("claim", "label", key=True)
    table.add_column("verdict", "text", movable=False)
    table.add_column("relation", "text", movable=False)
    table.add_column("metric", "text", movable=False)
    table.add_column("test", "text", movable=False)
    for name in ("a: mean ± std (n)", "b", "a - b [95% CI]"):
        table.add_column(name, "text", movable=False)
    table.add_column("relation's verdict", "text", movable=False)
    for claim in claims:
        relations = claim["relations"]
        for i, r in enumerate(relations):
            a, b, diff = relation_cells(r)
            table.add_row(claim["id"] if i == 0 else "",
                          Text(claim["verdict"], style=VERDICT_STYLES.get(claim["verdict"], "")) if i == 0 else "",
                          r["label"], r["metric"] or "diverged", analysis_text(r), a, b, diff,
                          Text(r["verdict_label"], style=VERDICT_STYLES.get(r["verdict"], "")),
                          end_section=i == len(relations) - 1)
    return table
