"""Every benchmark script parses its options: `--help` exits 0 (a clash between a part's options and the
shared ones in bench/common.py fails here, not in the middle of `make bench`). No timing is measured."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name != "common.py")


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_bench_script_answers_help(script):
    result = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True,
                            timeout=120, cwd=BENCH.parent)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout.lower()
