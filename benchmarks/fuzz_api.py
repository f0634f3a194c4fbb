"""A longer run of the Python-API fuzzer of ``tests/test_fuzz_api.py``.

Run::

    .venv/bin/python benchmarks/fuzz_api.py                    # 3000 calls, one seed
    .venv/bin/python benchmarks/fuzz_api.py --examples 20000 --random
    .venv/bin/python benchmarks/fuzz_api.py --server       # the same calls through moss serve

Every public ``MossClient`` / ``SessionIndex`` method and option constructor is called with
hostile arguments against an embedded store in a temporary directory. ``INTERNAL`` errors (a
server's 500, with ``--server``) are counted apart: typed, but a bug all the same. Unlike the test, the run
does not stop at the first untyped exception: it counts them and groups them by call and
exception type (the first example of each group is printed). A rejected call that changed
stored data still stops the run (``AssertionError``), and so does a disagreement between the
session and the store on the same ``add_docs`` / ``get_docs`` / ``delete_docs`` arguments (one
accepts, the other rejects). Prints a JSON report.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import tests.test_fuzz_api as fuzz_module  # noqa: E402
from tests.test_fuzz_api import CALLS, agreement, fuzz_api  # noqa: E402

import _machine  # noqa: E402
import moss  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=3000)
    ap.add_argument("--agree", type=int, default=1000, help="session/store agreement examples")
    ap.add_argument("--random", action="store_true", help="a fresh random seed (else fixed)")
    ap.add_argument("--server", action="store_true", help="through moss serve on 127.0.0.1")
    args = ap.parse_args()
    logging.disable(logging.CRITICAL)  # refresh warnings of pollers are expected noise here
    internal: dict[str, int] = {}
    typed = fuzz_module._typed

    def counting_typed(e: BaseException) -> bool:
        # A server's 500 reaches the client as MossError(code="INTERNAL"): typed, but a bug.
        if getattr(e, "code", None) == "INTERNAL":
            key = str(getattr(e, "message", e))[:120]
            internal[key] = internal.get(key, 0) + 1
        return typed(e)

    fuzz_module._typed = counting_typed
    t0 = time.perf_counter()
    env = fuzz_api(
        args.examples, derandomize=not args.random, stop_at_untyped=False, server=args.server
    )
    t1 = time.perf_counter()
    agreed = agreement(args.agree, derandomize=not args.random, server=args.server)
    per_call = {k[5:]: v for k, v in sorted(env.counts.items()) if k.startswith("call:")}
    report = {
        "machine": _machine.machine(moss=moss.__version__),
        "backend": "moss serve (HTTP, 127.0.0.1)" if args.server else "embedded store",
        "calls_covered": f"{len(per_call)} of {len(CALLS)}",
        "inputs": env.counts["ok"] + env.counts["rejected"] + env.counts["untyped"],
        "ok": env.counts["ok"],
        "rejected_typed": env.counts["rejected"],
        "untyped": env.counts["untyped"],
        "untyped_groups": env.untyped,
        "internal_errors": sum(internal.values()),  # HTTP 5xx with --server
        "internal_error_groups": internal,
        "rejected_but_changed_data": 0,  # any such outcome raises before this point
        "seconds": round(t1 - t0, 1),
        "session_store_agreement": dict(sorted(agreed.items())),
        "session_store_disagreements": 0,  # any raises before this point
        "agreement_seconds": round(time.perf_counter() - t1, 1),
    }
    print(json.dumps(report, indent=1, ensure_ascii=True))


if __name__ == "__main__":
    main()
