"""The weights_tool CLI in a subprocess, and the bad-input contract its tests check: exit code 2, one
line ``error: ...`` naming the problem, no traceback, nothing left behind (no OUT, no OUT.tmp-*)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*argv, timeout: int = 300):
    """``python -m weights_tool ARGV...`` from the repository root."""
    return subprocess.run([sys.executable, "-m", "weights_tool", *map(str, argv)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def assert_clean_failure(r, out: Path, *words):
    """``r`` failed as bad input should: exit 2, one ``error:`` line holding every one of
    ``words``, no traceback, and neither ``out`` nor a temporary ``out.*`` beside it."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(out.name + ".")] == []
