"""SIGKILL a process while it saves an index, then load it: always the old or the new content.

Run::

    .venv/bin/python benchmarks/kill_loop.py                     # 100 trials of each mode
    .venv/bin/python benchmarks/kill_loop.py --trials 300 --mode save

Each trial starts a fresh child process (``python kill_loop.py --child MODE DIR``) that writes
generation after generation of one index — generation ``g`` has ``40 + g % 7`` documents whose
texts, metadata and float32 vectors are a function of ``g`` — and prints ``saved g`` after each
write returns. The parent kills it with ``SIGKILL`` at a random moment (uniform over the first
``--window`` seconds after the child is ready), then loads the index in its own process:

* ``save``: ``SessionIndex.save_to_disk`` in the child; ``load_from_disk`` of a new session in
  the parent, ids and vectors compared through ``moss.snapshot.read_dir``.
* ``push``: the embedded cloud (``push_index`` and ``wait_for_job``) in the child;
  ``load_index`` in the parent, ids and vectors compared through ``moss.cloud.fetch_snapshot``.

A trial passes when the load succeeds with exactly generation ``last`` or ``last + 1`` (the
write in flight may have committed before its ``saved`` line), or fails with "not found"
(``DESERIALIZATION: no session snapshot`` or, when the killed first save had created the
directory, ``no snapshot found``; ``NOT_FOUND`` for push) when nothing had been reported saved.
Anything else — another error, torn or mixed content, an older generation — is a failure.
Prints a JSON report (machine, trials, failures, outcomes) and a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

import _machine  # noqa: E402
import moss  # noqa: E402
from moss import DocumentInfo, MossClient  # noqa: E402
from moss.errors import MossError  # noqa: E402

DIM = 8
NAME = "victim"
PROJECT = "kill-loop"


def generation(g: int) -> tuple[list[str], np.ndarray, list[DocumentInfo]]:
    """Ids, vectors and documents of generation ``g`` (a pure function of ``g``)."""
    n = 40 + g % 7
    ids = [f"doc-{i:03d}" for i in range(n)]
    vecs = np.random.default_rng(g).standard_normal((n, DIM)).astype(np.float32)
    docs = [
        DocumentInfo(ids[i], f"gen {g} doc {i}", {"gen": str(g)}, vecs[i].tolist())
        for i in range(n)
    ]
    return ids, vecs, docs


# ------------------------------------------------------------------------------ child


async def child(mode: str, root: str) -> None:
    client = MossClient(PROJECT, "key", cache_path=root)
    print("ready", flush=True)
    g = 1
    while True:
        session = await client.session(NAME, model_id="custom")
        ids, _, docs = generation(g)
        # A session of a pushed name starts from the cloud index: drop what g does not have.
        extra = [d.id for d in await session.get_docs() if d.id not in set(ids)]
        if extra:
            await session.delete_docs(extra)
        await session.add_docs(docs)
        if mode == "save":
            await session.save_to_disk()
        else:
            pushed = await session.push_index()
            await client.wait_for_job(pushed.job_id, poll_interval_seconds=0.01)
        await session.close()
        print(f"saved {g}", flush=True)
        g += 1


# ------------------------------------------------------------------------------ parent


def _which(ids: list[str], vecs: np.ndarray | None, metadata: list[Any]) -> int | None:
    """The generation whose exact ids, vectors and metadata these are, else None (torn)."""
    try:
        g = int(metadata[0]["gen"])
    except (IndexError, KeyError, TypeError, ValueError):
        return None
    want_ids, want_vecs, docs = generation(g)
    same = (
        vecs is not None
        and want_ids == ids
        and want_vecs.shape == vecs.shape
        and np.array_equal(want_vecs, vecs)
        and [d.metadata for d in docs] == list(metadata)
    )
    return g if same else None


async def load(mode: str, root: str) -> tuple[str, int | None]:
    """``("ok", generation)``, ``("not found", None)`` or ``(error text, None)``."""
    client = MossClient(PROJECT, "key", cache_path=root)
    try:
        if mode == "save":
            from moss.snapshot import read_dir

            session = await client.session(NAME, model_id="custom")
            try:
                count = await session.load_from_disk()
            finally:
                await session.close()
            path = session._snapshot_dir(None)  # the directory load_from_disk just read
            data = read_dir(path)
        else:
            from moss.cloud import fetch_snapshot

            await client.load_index(NAME)
            data = await fetch_snapshot(client, NAME)
            count = data.doc_count
        ids = list(data.ids)
        vecs = None if data.vectors is None else np.array(data.vectors)
        if count != len(ids):
            return f"loaded {count} documents but the snapshot holds {len(ids)}", None
        return "ok", _which(ids, vecs, list(data.metadata))
    except MossError as e:
        # A save killed before its first generation leaves the directory without one.
        empty = "no session snapshot" in e.message or "no snapshot found" in e.message
        missing = (mode == "save" and empty) or e.code == "NOT_FOUND"
        return ("not found", None) if missing else (f"{e.code}: {e.message}", None)
    except Exception as e:  # an untyped failure is a failure of the trial
        return f"untyped {type(e).__name__}: {e}", None
    finally:
        await client.close()


def trial(mode: str, window: float, rng: random.Random) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="moss-kill-") as root:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", mode, root],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None
        lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.strip())
                ready.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        if not ready.wait(120):
            proc.kill()
            proc.wait()
            return {"mode": mode, "ok": False, "outcome": "child never became ready"}
        delay = rng.uniform(0, window)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(10)
        saved = [int(x.split()[1]) for x in lines if x.startswith("saved ")]
        last = saved[-1] if saved else 0
        outcome, g = asyncio.run(load(mode, root))
        if outcome == "not found":
            ok = last == 0
            label = "not found (before the first save)" if ok else "not found after a save"
        elif outcome == "ok":
            ok = g is not None and g in (last, last + 1)
            label = (
                "old content"
                if g == last
                else "new content"
                if g == last + 1
                else f"wrong content (generation {g}, last reported {last})"
            )
        else:
            ok, label = False, outcome
        return {
            "mode": mode,
            "ok": ok,
            "outcome": label,
            "kill_after_s": round(delay, 3),
            "last_reported": last,
        }


def run(mode: str, trials: int, window: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    outcomes: dict[str, int] = {}
    failures = []
    t0 = time.perf_counter()
    for _ in range(trials):
        r = trial(mode, window, rng)
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
        if not r["ok"]:
            failures.append(r)
    return {
        "mode": mode,
        "trials": trials,
        "failures": len(failures),
        "outcomes": dict(sorted(outcomes.items())),
        "failure_examples": failures[:5],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=100, help="trials per mode")
    ap.add_argument("--mode", choices=["save", "push", "both"], default="both")
    ap.add_argument("--window", type=float, default=1.5, help="kill within this many seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", nargs=2, metavar=("MODE", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        asyncio.run(child(*args.child))
        return
    # The parent's store marks each killed push job failed, with a warning: expected here.
    logging.getLogger("moss").setLevel(logging.ERROR)
    modes = ["save", "push"] if args.mode == "both" else [args.mode]
    results = [run(m, args.trials, args.window, args.seed) for m in modes]
    report = {"machine": _machine.machine(moss=moss.__version__), "results": results}
    print(json.dumps(report, indent=1))
    print()
    print("| mode | trials | failures | outcomes | seconds |")
    print("|---|---:|---:|---|---:|")
    for r in results:
        outcomes = ", ".join(f"{k}: {v}" for k, v in r["outcomes"].items())
        print(f"| {r['mode']} | {r['trials']} | {r['failures']} | {outcomes} | {r['seconds']} |")
    if any(r["failures"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
