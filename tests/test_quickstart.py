"""The customer's example runs unchanged, offline, with the exact expected output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import HAS_MODEL, REPO

# Run the example with every internet socket forbidden (asyncio's self-pipe uses AF_UNIX).
GUARD = r"""
import runpy, socket, sys
_real = socket.socket
class NoNet(_real):
    def __init__(self, family=-1, *a, **k):
        if family in (socket.AF_INET, socket.AF_INET6, -1):
            raise OSError("network disabled by test: socket(%r)" % (family,))
        super().__init__(family, *a, **k)
    def connect(self, *a):
        raise OSError("network disabled by test: connect")
socket.socket = NoNet
socket.create_connection = lambda *a, **k: (_ for _ in ()).throw(OSError("network disabled"))
sys.argv = [sys.argv[1]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.model
@pytest.mark.skipif(not HAS_MODEL, reason="all-MiniLM-L6-v2 weights not installed")
def test_quickstart_runs_offline_with_expected_output(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update(MOSS_SESSION_CACHE_PATH=str(tmp_path / "c"), MOSS_DATA_DIR=str(tmp_path / "d"))
    env.pop("MOSS_SERVER_URL", None)
    out = subprocess.run(
        [sys.executable, "-c", GUARD, str(REPO / "examples" / "quickstart.py")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "2 added, 0 updated, 2 total"
    assert len(lines) == 3
    assert lines[1].startswith("1 score=") and lines[1].endswith(
        "Ship the on-device SDK by Friday."
    )
    assert lines[2].startswith("2 score=")
    s1, s2 = (float(line.split("score=")[1].split()[0]) for line in lines[1:])
    assert 0.0 <= s2 <= 1.0 and 0.0 < s1 <= 1.0
