"""Crash safety, bounded: ``benchmarks/kill_loop.py`` with a few trials per mode.

Real child processes write generation after generation of one index (``save_to_disk``, or
``push_index`` to the embedded cloud) and are killed with SIGKILL at a random moment; the loaded
index must be exactly the old or the new generation (ids, vectors, metadata), or "not found"
before the first save. The full run (100+ trials per mode) is the script itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "kill_loop.py"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_during_save_or_push_never_tears_an_index() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--trials", "3", "--window", "0.8", "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(proc.stdout.split("\n\n|")[0])
    results = {r["mode"]: r for r in report["results"]}
    assert set(results) == {"save", "push"}
    for r in results.values():
        assert r["trials"] == 3 and r["failures"] == 0, r
        assert sum(r["outcomes"].values()) == 3
    assert proc.returncode == 0, proc.stderr[-2000:]
