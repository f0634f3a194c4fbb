"""Legitimate request latency while clients flood ``moss serve`` with wrong project keys.

Issue 12 measured that 16 clients sending wrong keys at 13 requests/s each made real requests
30x slower (p50 3.5 -> 109 ms): every wrong key cost ~70 ms of scrypt. This script reproduces that
and measures the fix, on 127.0.0.1, with the server in a subprocess:

* ``scrypt``   — the old verification (salted scrypt per failed attempt, no throttling), emulated
  by patching :meth:`Store.authenticate` in the server process;
* ``hmac``     — the current verification (HMAC-SHA256 under the server secret), throttling off;
* ``hmac+throttle`` — the current server as shipped (failed attempts throttled per address).

The flood comes from 127.0.0.2 (its own address, as an attacker's would be), the legitimate
client from 127.0.0.1; each phase measures sequential ``GET /v1/indexes`` for ``--seconds``.

    python benchmarks/bench_auth.py --seconds 4 --json auth.json --markdown auth.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _machine

SRC = str(Path(__file__).resolve().parents[1] / "src")
MODES = ("scrypt", "hmac", "hmac+throttle")


def _serve(mode: str, data: str, port: int) -> None:
    """The server process: the current app, with the old key check patched in for ``scrypt``."""
    import hashlib

    import uvicorn

    from moss.errors import UNAUTHORIZED, MossError
    from moss.server.app import create_app
    from moss.server.limits import uvicorn_config
    from moss.server.store import Store

    if mode == "scrypt":
        cache: dict[str, str] = {}

        def old_authenticate(self: Store, project_id: str | None, key: str | None) -> str:
            if not project_id or not key:
                raise MossError("missing project credentials", code=UNAUTHORIZED)
            if cache.get(project_id) == key:  # the old per-process cache of verified keys
                return project_id
            hashlib.scrypt(key.encode(), salt=b"\0" * 16, n=2**14, r=8, p=1, dklen=32)
            original(self, project_id, key)  # raises for a wrong key, as scrypt's compare did
            cache[project_id] = key
            return project_id

        original = Store.authenticate
        Store.authenticate = old_authenticate  # type: ignore[method-assign]
    burst = 10 if mode == "hmac+throttle" else 10**9
    app = create_app(data, auth_failures_burst=burst)
    uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, log_level="warning")).run()


def _start(mode: str, data: str) -> tuple[subprocess.Popen[bytes], str]:
    from moss.server.testing import free_port, wait_until_up

    port = free_port()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, __file__, "--serve", mode, data, str(port)], env=env)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, 60, proc)
    return proc, url


def _flood(url: str, project: str, clients: int, rate: float, stop: threading.Event) -> list[int]:
    sent = [0] * clients

    def one(i: int) -> None:
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        headers = {"X-Moss-Project-Id": project, "Authorization": f"Bearer moss_wrong{i}"}
        with httpx.Client(transport=transport, timeout=30) as c:
            while not stop.is_set():
                t = time.monotonic()
                try:
                    c.get(url + "/v1/indexes", headers=headers)
                except httpx.TransportError:
                    pass
                sent[i] += 1
                stop.wait(max(0.0, 1.0 / rate - (time.monotonic() - t)))

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    return sent


def _legit(url: str, project: tuple[str, str], seconds: float) -> list[float]:
    headers = {"X-Moss-Project-Id": project[0], "Authorization": f"Bearer {project[1]}"}
    times = []
    with httpx.Client(timeout=30) as c:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.perf_counter()
            r = c.get(url + "/v1/indexes", headers=headers)
            times.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, r.text
    return times


def _stats(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2),
    }


def run(seconds: float, clients: int, rate: float) -> dict[str, Any]:
    from moss.server import create_project

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            data = os.path.join(tmp, mode.replace("+", "_"))
            project = create_project(data, "bench")
            proc, url = _start(mode, data)
            try:
                _legit(url, project, 0.5)  # warm up
                quiet = _stats(_legit(url, project, seconds))
                stop = threading.Event()
                sent = _flood(url, project[0], clients, rate, stop)
                time.sleep(0.5)
                loaded = _stats(_legit(url, project, seconds))
                stop.set()
                flood_rate = sum(sent) / (seconds + 0.5)
            finally:
                proc.terminate()
                proc.wait(30)
            rows.append(
                {"mode": mode, "quiet": quiet, "flood": loaded, "flood_req_s": round(flood_rate)}
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
    return {
        "machine": _machine.machine(),
        "clients": clients,
        "rate_per_client": rate,
        "seconds": seconds,
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"Legit `GET /v1/indexes` latency, {result['clients']} clients flooding wrong keys at "
        f"{result['rate_per_client']} req/s each from 127.0.0.2 ({result['seconds']} s per phase; "
        f"{m['cpu']}, {m['cores']} cores, load {m['loadavg'][0]:.1f}, Python {m['python']}).",
        "",
        "| key check | p50 quiet (ms) | p50 flood (ms) | p95 flood (ms) | flood req/s served |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['mode']} | {r['quiet']['p50_ms']} | {r['flood']['p50_ms']} | "
            f"{r['flood']['p95_ms']} | {r['flood_req_s']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command line entry point (see the module docstring)."""
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        _serve(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--rate", type=float, default=13.0, help="requests/s per flooding client")
    p.add_argument("--json", help="write the result here")
    p.add_argument("--markdown", help="write a Markdown table here")
    args = p.parse_args()
    result = run(args.seconds, args.clients, args.rate)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    table = markdown(result)
    if args.markdown:
        Path(args.markdown).write_text(table)
    print(table)


if __name__ == "__main__":
    main()
