"""Studies: statements about setup choices, each measured over seeds, with confidence intervals and verdicts.

A study file (YAML) lists claims; each claim names two or more arms (config overrides), the metric
that tells them apart, the relations it expects between them and the number of seeds. `nnrun study`
turns every (claim, arm, seed) into a run of the sweep store, so identical runs are shared between
claims and done ones are skipped, then writes a report (Markdown and HTML with figures, and
`study.json` with every number).

Read in this order: `spec` (the study file), `metrics` (what a run produces and the derived
measurements), `stats` (intervals and the verdict rule), `plan` (configs, checks and the time
estimate), `results` (each claim's numbers), `figures` and `report` (the report files), `run` (the
command's library function) and `display` (its terminal tables).
"""
