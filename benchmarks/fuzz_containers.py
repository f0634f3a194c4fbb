"""A longer run of the snapshot container mutation fuzzer of ``tests/test_storage_integrity.py``.

Run::

    .venv/bin/python benchmarks/fuzz_containers.py                   # 20k mutations per blob
    .venv/bin/python benchmarks/fuzz_containers.py --per-blob 200000 --seed 7

Mutates six valid containers (three snapshots: 30 documents with texts, metadata, payloads and
vectors, 5 documents, and an empty one; each compressed and raw) with bit flips, byte sets,
truncations, extensions, edits of digits (header and manifest numbers) and random runs. Every
outcome must be ``MossError(code="DESERIALIZATION")`` or a load whose content is identical to
the original; the script stops at the first other outcome. Prints a JSON report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.test_storage_integrity import fuzz_containers  # noqa: E402

import _machine  # noqa: E402
import moss  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-blob", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    t0 = time.perf_counter()
    counts = fuzz_containers(args.seed, args.per_blob)
    report = {
        "machine": _machine.machine(moss=moss.__version__),
        "seed": args.seed,
        "mutations": sum(counts.values()),
        "rejected_deserialization": counts["rejected"],
        "loaded_identical": counts["identical"],
        "untyped_or_different": 0,  # any such outcome raises before this point
        "seconds": round(time.perf_counter() - t0, 2),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
