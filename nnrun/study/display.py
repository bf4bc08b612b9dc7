"""How a study looks in the terminal: its plan (runs per claim, the estimate) and its summary (one row per
relation, with the verdicts)."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from nnrun.study.report import diverged_text, interval_text, value_text
from nnrun.tables import fmt, plural

VERDICT_STYLES = {"supported": "green", "contradicted": "bold red", "not resolved": "yellow"}


def plan_table(report: dict[str, Any]) -> Table:
    """Runs per claim (entries, distinct, done) and the totals, with the estimated time of what is left."""
    est = report.get("estimate_seconds")
    bound = report.get("max_minutes")
    title = (f"study {report['study']} (budget {report['budget']}): {plural(report['distinct'], 'distinct run')}, "
             f"{report['done']} done, {report['to_run']} to run"
             + (f", about {fmt(est / 60, 3)} min" if est is not None else "")
             + (f" (bound {fmt(float(bound), 3)} min)" if bound is not None else ""))
    table = Table(title=title)
    for name, justify in (("claim", "left"), ("arms", "right"), ("seeds", "right"), ("runs", "right"),
                          ("distinct", "right"), ("done", "right")):
        table.add_column(name, justify=justify)
    for claim in report["claims"]:
        table.add_row(claim["id"], str(claim["arms"]), str(claim["seeds"]), str(claim["runs"]),
                      str(claim["distinct"]), str(claim["done"]))
    table.add_section()
    table.add_row("all", "", "", str(report["entries"]), str(report["distinct"]), str(report["done"]))
    return table


def summary_table(report: dict[str, Any]) -> Table:
    """One row per relation: claim and its verdict, relation, metric, a, b, a - b [95 % CI], verdict."""
    claims = report["claims"]
    table = Table(title=f"study {report['study']} (budget {report['budget']}): "
                        + ", ".join(f"{sum(c['verdict'] == v for c in claims)} {v}"
                                    for v in ("supported", "contradicted", "not resolved")))
    for name, justify in (("claim", "left"), ("verdict", "left"), ("relation", "left"), ("metric", "left"),
                          ("a", "right"), ("b", "right"), ("a - b [95% CI]", "right"), ("relation's verdict", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    for claim in claims:
        for i, r in enumerate(claim["relations"]):
            if r["relation"] == "diverges":
                a, b, diff = "", "", diverged_text(r)
            else:
                a = value_text(r.get("a_stats"))
                b = value_text(r.get("b_stats")) if r["b"] is not None else fmt(r["value"])
                diff = interval_text(r.get("interval"))
            table.add_row(claim["id"] if i == 0 else "",
                          Text(claim["verdict"], style=VERDICT_STYLES.get(claim["verdict"], "")) if i == 0 else "",
                          r["label"], r["metric"] or "diverged", a, b, diff,
                          Text(r["verdict_label"], style=VERDICT_STYLES.get(r["verdict"], "")))
        table.add_section()
    return table
