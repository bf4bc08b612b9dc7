"""Sweeps: many runs of one config with some keys varied, each in its own run directory.

Read in this order: `space` (grid lists and random distributions -> points), `plan` (points ->
validated configs and run directories; completed ones are skipped), `execute` (runs on local
worker processes or a Dask cluster), `display` (tables and live progress).
"""
