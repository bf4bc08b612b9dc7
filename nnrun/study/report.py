"""A study's report: one document rendered as Markdown (figures as PNG files beside it) and as one
self-contained HTML file (figures embedded as base64), from the numbers `study.json` holds.

The document is a list of blocks (`Heading`, `Text`, `Table`, `Image`), rendered twice, so
the two files always say the same. Text is a small Markdown subset: paragraphs, `- ` lists,
`code`, **bold** and [links](url); the HTML renderer escapes everything else.

Contents: a header (the exact command, the machine, the wall time, the runs), the study's
description, how to read it (the analyses, tests and the verdict rule), a summary table (one row per
relation), with other budgets' reports given (`--beside`) a "holds at which scale" table (each
relation's verdict and interval at every budget, `nnrun.study.scales`), then one section per claim:
its setup (with the selections at a grid edge), its arms (metric per arm, mean ± std over seeds,
what the selection chose), its relations (test, difference with 95 % interval, p-values, effect
size, verdict, and for those not resolved the reason and the seeds needed) and its figure. It
reads older `study.json` files too (keys they lack show as `-`).
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnrun.study.scales import scale_rows
from nnrun.study.stats import ALPHA, DIVERGE_RATE, LEVEL, MAX_SEEDS_NEEDED, POWER
from nnrun.tables import fmt

FIGURES_DIR = "figures"
"""Folder of the figures, beside the report."""


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Text:
    """Markdown-subset text: paragraphs separated by blank lines, `- ` list items."""

    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    align: str = ""
    """One letter per column: l (left, default) or r (right)."""


@dataclass
class Image:
    path: str
    """Relative to the report."""
    alt: str


Block = Heading | Text | Table | Image


# ---- content ------------------------------------------------------------------------------------

def value_text(stats: dict[str, Any] | None) -> str:
    """`0.3911 ± 0.0052 (n=3)`: mean, std over seeds and the count."""
    if not stats or stats.get("mean") is None:
        return "-"
    std = f" ± {fmt(stats['std'], 2)}" if stats.get("std") is not None else ""
    return f"{fmt(stats['mean'])}{std} (n={stats['n']})"


def interval_text(interval: dict[str, Any] | None) -> str:
    """`+0.0123 [+0.0051, +0.0195]`: the difference and its interval."""
    if interval is None:
        return "too few runs"
    return f"{_signed(interval['estimate'])} [{_signed(interval['low'])}, {_signed(interval['high'])}]"


def difference_text(relation: dict[str, Any]) -> str:
    """The interval of a - b, or why there is none: diverged runs without a diverged value, too few runs."""
    if relation.get("interval") is None and relation.get("diverged_left_out"):
        return "none: " + ", ".join(f"{arm} {k} diverged" for arm, k in relation["diverged_left_out"].items())
    return interval_text(relation.get("interval"))


def _signed(value: float) -> str:
    text = fmt(float(value), 3)
    return text if text.startswith("-") else "+" + text


def diverged_text(relation: dict[str, Any]) -> str:
    """`huge: 3/3 diverged; base: 0/3 diverged (p = 0.1)`: the diverged runs of each arm and the exact test's
    p-value in the relation's direction."""
    counts = relation.get("diverged") or {}
    text = "; ".join(f"{relation[role]}: {k}/{n} diverged" for role, (k, n) in counts.items())
    p = relation.get("p_support")
    return text + (f" (p = {fmt(p, 2)})" if p is not None else "")


TESTS = {"paired": "paired t", "welch": "Welch t", "one-sample": "one-sample t"}
"""How the report names each analysis."""


def analysis_text(relation: dict[str, Any]) -> str:
    """The relation's test: `paired t`, `Welch t`, `one-sample t`, `Fisher exact`, `exact binomial`."""
    if relation["relation"] == "diverges":
        test = relation.get("test") or {}
        return {"fisher exact": "Fisher exact", "exact binomial": "exact binomial"}.get(test.get("method"), "-")
    analysis = relation.get("analysis")
    if analysis is None:  # a study.json from before analyses were chosen: its interval says what it was
        method = (relation.get("interval") or {}).get("method")
        return {"welch": "Welch t", "one-sample t": "one-sample t"}.get(method, "-")
    return TESTS.get(analysis, analysis)


def p_text(relation: dict[str, Any]) -> str:
    """`0.012 / 0.99 (0.99)`: the p-values of support and contradiction, the latter Holm-adjusted in brackets."""
    if relation.get("p_support") is None:
        return "-"
    holm = relation.get("p_contradict_holm")
    return (f"{fmt(relation['p_support'], 2)} / {fmt(relation['p_contradict'], 2)}"
            + (f" ({fmt(holm, 2)})" if holm is not None and holm != relation["p_contradict"] else ""))


def effect_text(relation: dict[str, Any]) -> str:
    """`d_z = 1.7`, `rate difference +1`: the standardized effect (the difference itself is in its own column)."""
    effect = relation.get("effect")
    if not effect:
        return "-"
    if relation["relation"] == "diverges":
        return f"{effect['kind']} {_signed(effect['difference'])}"
    if effect.get("standardized") is None:
        return "-"
    return f"{effect['kind']} = {fmt(effect['standardized'], 2)}"


def seeds_needed_text(relation: dict[str, Any]) -> str:
    if relation.get("verdict") != "not resolved":
        return ""
    if relation.get("seeds_needed") is not None:
        return str(relation["seeds_needed"])
    return "-"


def search_text(search: dict[str, Any]) -> str:
    """`a tpe search of 20 trials over `optim.lr` loguniform(0.0001, 0.1)`: an arm's search selection."""
    space = ", ".join(f"`{k}` {d}" for k, d in search["space"].items())
    return f"a {search['sampler']} search of {search['trials']} trials over {space}"


def grid_edge_lines(claim: dict[str, Any]) -> list[str]:
    """One line per arm, key and edge where a selection chose the smallest or largest value of its grid."""
    lines = []
    for name, arm in claim["arms"].items():
        for edge in arm.get("grid_edges") or []:
            lines.append(f"- **Grid edge**: arm {name} chose the {edge['edge']} `{edge['key']}` ({fmt(edge['value'])} "
                         f"of {fmt(edge['grid'])}) at seed{'s' if len(edge['seeds']) > 1 else ''} "
                         f"{', '.join(map(str, edge['seeds']))}: the best value may lie beyond the grid")
    return lines


def relation_cells(relation: dict[str, Any]) -> tuple[str, str, str]:
    """A relation's a (mean ± std (n)), b (the same, or its fixed value) and a - b [95 % CI] cells; for
    `diverges`, two empty cells and the diverged counts with the exact test's p."""
    if relation["relation"] == "diverges":
        return "", "", diverged_text(relation)
    b = value_text(relation.get("b_stats")) if relation["b"] is not None else fmt(relation["value"])
    return value_text(relation.get("a_stats")), b, difference_text(relation)


def summary_rows(claims: list[dict[str, Any]]) -> list[list[str]]:
    """One row per relation: claim (and its verdict on its first row), relation, metric, a, b, a - b, verdict."""
    rows = []
    for claim in claims:
        for i, r in enumerate(claim["relations"]):
            first = i == 0
            a, b, diff = relation_cells(r)
            rows.append([f"**{claim['id']}**" if first else "", f"**{claim['verdict']}**" if first else "",
                         f"`{r['label']}`", r["metric"] or "diverged", analysis_text(r), a, b, diff,
                         r["verdict_label"]])
    return rows


def build_document(report: dict[str, Any]) -> list[Block]:
    """The report's blocks from the `study.json` object."""
    claims = report["claims"]
    blocks: list[Block] = [Heading(1, f"{report['title'] or report['study']} (budget {report['budget']})")]
    blocks.append(Text("\n".join(_header_lines(report))))
    if report.get("description"):
        blocks.append(Text(report["description"]))
    blocks += [Heading(2, "How to read this report"), Text(_method_text(report))]
    blocks += [Heading(2, "Summary"),
               Text(f"{len(claims)} claims: " + ", ".join(
                   f"{sum(c['verdict'] == v for c in claims)} {v}" for v in ("supported", "contradicted",
                                                                              "not resolved")) + "."),
               Table(["claim", "verdict", "relation", "metric", "test", "a: mean ± std (n)", "b", "a - b [95 % CI]",
                      "relation's verdict"], summary_rows(claims), "lllllrrrl")]
    if report.get("other_budgets"):
        blocks += scale_blocks(report)
    edges = [c["id"] for c in claims if any(arm.get("grid_edges") for arm in c["arms"].values())]
    if edges:
        blocks.append(Text(f"Selections at a grid edge (the best value may lie beyond the grid; see each claim): "
                           f"{', '.join(edges)}."))
    for number, claim in enumerate(claims, 1):
        blocks += _claim_blocks(number, claim)
    return blocks


def scale_cell(relation: dict[str, Any]) -> str:
    """`supported: +0.012 [+0.005, +0.020]`, `supported: 5/5 vs 0/5 diverged`: a relation's verdict and what it
    rests on, at one budget."""
    if relation["relation"] == "diverges":
        counts = relation.get("diverged") or {}
        detail = " vs ".join(f"{k}/{n}" for k, n in counts.values()) + " diverged"
    else:
        detail = difference_text(relation)
    return f"{relation['verdict']}: {detail}"


def scale_blocks(report: dict[str, Any]) -> list[Block]:
    """"Holds at which scale": each relation's verdict and a - b [95 % CI] at every budget measured."""
    budgets, rows = scale_rows(report, scale_cell)
    header = ["claim", "relation", "metric", *(f"{b['budget']} ({b['seeds']} seeds)" if b.get("seeds")
                                                else b["budget"] for b in budgets)]
    sources = [f"`{b['budget']}`: {b['source']} (finished {b.get('finished') or '-'})" for b in budgets
               if b.get("source")]
    return [Heading(2, "Holds at which scale"),
            Text("Each relation of this report at every budget of the study measured: its verdict and a - b with "
                 "its 95 % interval (diverged runs for a divergence test). A budget's verdict holds for its data, "
                 "epochs and seeds; a relation resolved only at the larger budget needed its precision. A heading's "
                 "seeds are its budget's; a claim may set its own (its section there says). Other "
                 "budgets read from " + "; ".join(sources) + "."),
            Table(header, rows, "lll" + "r" * len(budgets))]


def _header_lines(report: dict[str, Any]) -> list[str]:
    runs = report["runs"]
    sessions = report.get("sessions") or []
    parts = report.get("merged") or []
    counts = (f"- Runs: {runs['distinct']} distinct runs for {runs['entries']} claim, arm, seed and selection "
              f"entries ({runs['entries'] - runs['distinct']} shared: identical configs run once); ")
    if parts:
        lines = [f"- Command: `{report['command']}`, which "
                 + (f"re-rendered the report in `{parts[0]['source']}`" if len(parts) == 1 else
                    f"merged the reports of {len(parts)} parts of this study at this budget (each claim's "
                    "numbers are its part's)")]
        lines += [_part_line(part, alone=len(parts) == 1) for part in parts]
        lines.append(counts + f"{runs['diverged']} diverged, {runs['failed']} failed"
                     + ("; summed over the parts (a run two parts share counts in each)" if len(parts) > 1 else ""))
    else:
        lines = [f"- Command: `{report['command']}`", f"- Machine: {_machine_text(report)}",
                 counts + f"{runs['trained_now']} trained by this command, {runs['reused']} found done; "
                 f"{runs['diverged']} diverged, {runs['failed']} failed"]
    lines.insert(-1, _sessions_text(sessions, last_is_this=not parts) if len(sessions) > 1 else
                 f"- Wall time: {_minutes(report['wall_seconds'])} (estimated beforehand: "
                 f"{_minutes(report['estimate_seconds'])})")
    lines += [f"- Budget `{report['budget']}`: "
              + (f"{report['budget_settings']['description'].strip()} " if report['budget_settings'].get('description')
                 else "")
              + f"{report['budget_settings']['seeds']} seeds per arm unless a claim says otherwise; overrides: "
              f"{_overrides(report['budget_settings'].get('set') or {})}",
              f"- Finished {report['finished']}; every number is in `study.json`"]
    return lines


def _part_line(part: dict[str, Any], alone: bool) -> str:
    """`- Part `SOURCE` (claims): measured by `COMMAND` (the last of 3 commands), 40 min in all, ...`: one part of a
    merged report (`alone`: the only one, a re-rendered report)."""
    commands = part.get("commands") or 1
    return ("- Measured by " if alone else f"- Part `{part['source']}` ({', '.join(part['claims'])}): measured by ") \
        + f"`{part['command']}`" + (f" (the last of {commands} commands)" if commands > 1 else "") \
        + f", {_minutes(part['wall_seconds'])} in all, finished {part['finished']}; machine: {_machine_text(part)}" \
        + (f"; overrides: {', '.join(f'`{o}`' for o in part['overrides'])}" if part.get("overrides") else "")


def _machine_text(report: dict[str, Any]) -> str:
    """`vm, AMD EPYC, 2 cores, Linux 6.1; BLAS openblas (Haswell), 1 thread(s) per run, ...`: where a report's
    runs ran."""
    machine = report["machine"]
    return (f"{machine.get('hostname')}, {machine.get('cpu') or machine.get('architecture')}, "
            f"{machine.get('cores')} cores, {machine.get('kernel')}; BLAS {machine.get('blas') or '-'} "
            f"({machine.get('blas_kernel') or '-'}), {report['threads_per_run']} thread(s) per run, "
            f"{report['jobs']} runs at a time ({report['executor']}); nnrun {machine.get('nnrun_version')}"
            + (f" at commit {str(machine.get('git_commit'))[:10]}" + (" (uncommitted changes)"
                                                                       if machine.get("git_dirty") else "")
               if machine.get("git_commit") else "")
            + f", Python {machine.get('python')}, NumPy {machine.get('numpy')}")


def _sessions_text(sessions: list[dict[str, Any]], last_is_this: bool = True) -> str:
    """`- Wall time: 7 min 40 s over 2 commands: START: 7 min 20 s (192 runs trained); START: 20 s (0 runs
    trained, this command)`, each with its estimate where it was recorded (`last_is_this`: the last session is
    the command that wrote the report)."""
    parts = []
    for i, s in enumerate(sessions):
        estimate = f", estimated {_minutes(s['estimate_seconds'])}" if s.get("estimate_seconds") is not None else ""
        notes = ((", interrupted" if s.get("interrupted") else "")
                 + (", this command" if last_is_this and i == len(sessions) - 1 else ""))
        parts.append(f"{s['started']}: {_minutes(s['wall_seconds'])} ({s['trained']} runs trained{estimate}{notes})")
    total = _minutes(sum(s["wall_seconds"] for s in sessions))
    return f"- Wall time: {total} over {len(sessions)} commands: " + "; ".join(parts)


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s"


def _overrides(overrides: dict[str, Any]) -> str:
    """`` `optim.lr=0.01`, `data.train_size=null` ``: overrides as `--set` would take them (YAML values)."""
    return ", ".join(f"`{k}={_yaml_value(v)}`" for k, v in overrides.items()) or "none"


def _yaml_value(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return fmt(value)


def _method_text(report: dict[str, Any]) -> str:
    level = int(round(100 * LEVEL))
    default = (report.get("statistics") or {}).get("analysis")
    return (
        f"Each arm runs once per seed (the seed drives every random stream of a run: the split, the initial "
        f"weights, the batch order, the dropout masks). For each relation the report gives the arms' metric as "
        f"mean ± standard deviation over seeds, and the difference a - b with its {level} % confidence interval "
        f"by the analysis the study file chose for it before anything ran"
        + (f" (default here: {default})" if default else "") + ":\n\n"
        f"- **paired t**: the arms run at the same seeds, so each seed gives a pair; the interval is the t "
        f"interval of the per-seed differences (n - 1 degrees of freedom, n the seeds where both arms have a "
        f"value);\n"
        f"- **Welch t**: the arms as independent samples (unequal variances, Welch-Satterthwaite degrees of "
        f"freedom);\n"
        f"- **one-sample t** against a fixed value.\n\n"
        f"Verdict rule, with [lo, hi] the interval of a - b and m the relation's margin:\n\n"
        f"- greater: supported if lo > 0, contradicted if hi < 0;\n"
        f"- less: supported if hi < 0, contradicted if lo > 0;\n"
        f"- about equal: *equivalent within the margin* if -m < lo and hi < m, *not equivalent* if lo > m or "
        f"hi < -m;\n"
        f"- at least (not worse by more than m): supported if lo > -m, contradicted if hi < -m;\n"
        f"- at most (not better by more than m): supported if hi < m, contradicted if lo > m;\n"
        f"- diverges (a loss that was not finite), by exact tests of the diverged runs: with b, Fisher's exact "
        f"test, supported if a diverges more often than b, contradicted if less often; without b, the exact "
        f"binomial test against {DIVERGE_RATE:g}, supported if a diverges in more than half its runs, "
        f"contradicted if in fewer. 3 of 3 against 0 of 3 gives p = 0.1: not resolved;\n"
        f"- anything else is *not resolved at this budget*.\n\n"
        f"Each rule is a pair of one-sided tests at {ALPHA / 2:g}; the p column gives each doubled (support / "
        f"contradiction), to compare with {ALPHA:g}. A claim is supported when all its relations are (each "
        f"must hold, so no correction is needed), and contradicted when a relation's contradiction survives "
        f"**Holm's correction** over the claim's relations (its adjusted p, in brackets where it differs, below "
        f"{ALPHA:g}); a relation contradicted alone but not after the correction is not resolved, and says so. "
        f"With a selection, each arm and seed keeps the candidate run with the best validation metric, and its "
        f"test metrics are reported; a selection at the smallest or largest value of its grid is flagged. A run "
        f"that diverged counts as the claim's diverged value where it states one; without one, a relation with "
        f"diverged runs is not resolved (the runs that survived would be a biased sample), never computed over "
        f"the survivors. The effect column gives the difference in units of its spread (paired: d_z, the mean "
        f"difference over the differences' standard deviation; Welch: d_av, over the root mean of the two "
        f"variances). For a relation not resolved, *seeds needed* is the seeds per arm at which its test would "
        f"have {POWER:.0%} power were the observed difference and spread the true ones (a planning figure, at "
        f"most {MAX_SEEDS_NEEDED:,}). A verdict holds for this budget's data, epochs and networks only.")


def _claim_blocks(number: int, claim: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = [Heading(2, f"{number}. {claim['id']}: {claim['verdict']}"),
                           Text(f"**Statement.** {claim['statement']}" +
                                (f" ({claim['source']})" if claim.get("source") else ""))]
    own = {name: arm["seeds"] for name, arm in claim["arms"].items()
           if arm.get("seeds", claim["seeds"]) != claim["seeds"]}  # arms that start their own seeds
    setup = [f"- Seeds: {', '.join(map(str, claim['seeds']))}"
             + "".join(f" ({name}: {', '.join(map(str, seeds))})" for name, seeds in own.items())
             + f"; metric `{claim['metric']}`",
             f"- Every arm: {_overrides(claim['set'])}"]
    selects = {name: arm["select"] for name, arm in claim["arms"].items() if arm["select"] or arm.get("search")}
    if selects:
        by = claim.get("select_by") or "the loss's validation metric"
        setup.append(f"- Selected per arm and seed on the validation split (by {by}): " + "; ".join(
            f"{name}: " + (search_text(claim["arms"][name]["search"]) if claim["arms"][name].get("search") else
                           ", ".join(f"`{k}` in {fmt(v)}" for k, v in select.items()))
            for name, select in selects.items()))
    if claim.get("diverged_value") is not None:
        setup.append(f"- A diverged run counts as {fmt(claim['diverged_value'])}")
    setup += grid_edge_lines(claim)
    blocks.append(Text("\n".join(setup)))
    if claim.get("note"):
        blocks.append(Text(f"**Note.** {claim['note']}"))
    metrics = list(next(iter(claim["arms"].values()))["metrics"])
    rows = []
    for name, arm in claim["arms"].items():
        selected = "; ".join(_overrides(r["selected"]) for r in arm["runs"] if r["selected"]) or "-"
        row = [f"**{name}**", _overrides(arm["overrides"]) if arm["overrides"] else "(the claim's base)"]
        for metric in metrics:
            entry = arm["metrics"][metric]
            row.append(value_text(entry))
        row.append(", ".join("-" if v is None else fmt(v) for v in arm["metrics"][claim["metric"]]["values"]))
        outcomes = [r["outcome"] for r in arm["runs"]]
        failed = len(outcomes) - outcomes.count("completed") - outcomes.count("diverged")
        row.append(f"{outcomes.count('diverged')}" + (f", {failed} failed or missing" if failed else ""))
        if selects:
            row.insert(2, selected)
        rows.append(row)
    headers = ["arm", "overrides", *(["selected (per seed)"] if selects else []), *metrics,
               f"{claim['metric']} per seed", "diverged"]
    blocks.append(Table(headers, rows, "ll" + ("l" if selects else "") + "r" * len(metrics) + "lr"))
    rel_rows = []
    reasons = []
    for r in claim["relations"]:
        if r["relation"] == "diverges":
            rel_rows.append([f"`{r['label']}`", "diverged", analysis_text(r), diverged_text(r), "", "", "-", p_text(r),
                             effect_text(r), r["verdict_label"], seeds_needed_text(r)])
        else:
            interval = r.get("interval")
            df = "-" if not interval or interval["df"] is None else fmt(interval["df"], 3)
            rel_rows.append([f"`{r['label']}`", r["metric"], analysis_text(r), value_text(r.get("a_stats")),
                             value_text(r.get("b_stats")) if r["b"] is not None else fmt(r["value"]),
                             difference_text(r), df, p_text(r), effect_text(r), r["verdict_label"],
                             seeds_needed_text(r)])
        why = [r["reason"]] if r.get("reason") else []
        if r.get("verdict") == "not resolved" and r.get("seeds_needed") is None and r.get("seeds_needed_note"):
            why.append(f"seeds needed: {r['seeds_needed_note']}")
        if why:
            reasons.append(f"- `{r['label']}`: " + "; ".join(why))
    blocks.append(Table(["relation", "metric", "test", "a", "b", "a - b [95 % CI]", "df",
                         "p: support / contradiction (Holm)", "effect", "verdict", "seeds needed"], rel_rows,
                        "lllrrrrrllr"))
    if reasons:
        blocks.append(Text("\n".join(reasons)))
    if claim.get("figure"):
        blocks.append(Image(claim["figure"], f"{claim['id']}: metric per arm, differences with intervals, curves"))
    return blocks


# ---- rendering -------------------------------------------------------------------------------------

def to_markdown(blocks: list[Block]) -> str:
    """The document as Markdown (tables as pipe tables, images as links to their files)."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Text):
            parts.append(block.text.strip())
        elif isinstance(block, Image):
            parts.append(f"![{block.alt}]({block.path})")
        elif isinstance(block, Table):
            align = block.align.ljust(len(block.headers), "l")
            lines = ["| " + " | ".join(_cell(h) for h in block.headers) + " |",
                     "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
            lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in block.rows]
            parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_html(blocks: list[Block], base: Path, title: str) -> str:
    """The document as one HTML page; figures (`Image.path` relative to `base`) embedded as base64 PNG."""
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Text):
            body.append(_paragraphs(block.text))
        elif isinstance(block, Image):
            data = base64.b64encode((base / block.path).read_bytes()).decode()
            body.append(f'<p><img alt="{html.escape(block.alt)}" src="data:image/png;base64,{data}"></p>')
        elif isinstance(block, Table):
            align = block.align.ljust(len(block.headers), "l")
            head = "".join(f"<th>{_inline(h)}</th>" for h in block.headers)
            rows = "".join("<tr>" + "".join(
                f'<td class="{"r" if a == "r" else "l"}">{_inline(c)}</td>' for c, a in zip(row, align, strict=False))
                + "</tr>" for row in block.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


STYLE = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.45}"
         "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 7px}"
         "th{background:#f3f3f3}td.r{text-align:right}code{background:#f3f3f3;padding:0 3px}"
         "img{max-width:100%}h2{border-bottom:1px solid #ddd;margin-top:2em}")


def _paragraphs(text: str) -> str:
    out = []
    for chunk in re.split(r"\n\s*\n", text.strip()):
        lines = chunk.splitlines()
        if lines and all(line.lstrip().startswith("- ") or not line.strip() or line.startswith("  ")
                         for line in lines) and lines[0].lstrip().startswith("- "):
            items: list[str] = []
            for line in lines:
                if line.lstrip().startswith("- "):
                    items.append(line.lstrip()[2:])
                elif items:
                    items[-1] += " " + line.strip()
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
        else:
            out.append(f"<p>{_inline(' '.join(line.strip() for line in lines))}</p>")
    return "\n".join(out)


def _inline(text: str) -> str:
    """Escape `text` and turn `code`, **bold**, *italics* and [links](url) into HTML."""
    pieces = re.split(r"(`[^`]*`)", str(text))
    out = []
    for piece in pieces:
        if piece.startswith("`") and piece.endswith("`") and len(piece) >= 2:
            out.append(f"<code>{html.escape(piece[1:-1])}</code>")
            continue
        piece = html.escape(piece)
        piece = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", piece)
        piece = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<i>\1</i>", piece)
        piece = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', piece)
        out.append(piece)
    return "".join(out)
