"""Ingestion benchmark: a generated Markdown folder through collect_documents and sync_directory.

How to run (from the repository root)::

    .venv/bin/python benchmarks/bench_ingest.py                  # 1,000 files
    .venv/bin/python benchmarks/bench_ingest.py --files 200      # quicker
    .venv/bin/python benchmarks/bench_ingest.py --json /tmp/ingest.json

It writes ``--files`` Markdown/MDX documents into a temporary folder: YAML front matter (title,
description, tags), a few ``##`` sections of prose, now and then a fenced code block or a JSX
component, sizes log-normally spread around ~3 KB (0.4 to 16 KB), so a file makes a few chunks at
the default chunking (1200 characters). Words come from a fixed vocabulary with a seeded RNG: the
same folder every run. It then times, through the public API and the embedded store (a temporary
``MOSS_DATA_DIR``):

* ``discover`` (listing) and ``collect_documents`` (read, parse, chunk every file);
* the first ``sync_directory`` into a new index (embeds every chunk, one push);
* a no-op sync (every file read and hashed, nothing parsed, embedded or pushed);
* a sync after editing 1% of the files (those re-parsed and re-embedded, one push);

and checks that the index then equals a fresh ``collect_documents`` of the folder. It prints one
JSON report (machine, load averages, versions, numbers) and a markdown table. Embedding dominates
the first sync; on a shared machine read the load average next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import _machine  # noqa: E402  (benchmarks/_machine.py, beside this script)

WORDS = (
    "index query vector search document chunk embedding model latency memory snapshot session "
    "cloud server client filter metadata keyword hybrid fusion score rank recall token batch "
    "thread cache disk folder file parser heading section title description policy refund "
    "order customer account billing invoice shipping delivery warehouse product catalog price "
    "discount coupon return exchange warranty support ticket agent response time language "
    "the a of to and in is that for it with as on be by this are or from at which an have not"
).split()


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(8, 22))]
    return " ".join(words).capitalize() + "."


def paragraph(rng: random.Random) -> str:
    return " ".join(sentence(rng) for _ in range(rng.randint(2, 6)))


def make_file(rng: random.Random, k: int) -> tuple[str, str]:
    """``(rel, text)`` of document ``k``: about 3 KB, log-normally spread."""
    target = int(min(max(rng.lognormvariate(7.9, 0.7), 400), 16_000))
    title = f"{rng.choice(WORDS).title()} {rng.choice(WORDS)} guide {k}"
    mdx = k % 3 == 0
    parts = [
        "---",
        f'title: "{title}"',
        f"description: {sentence(rng)}",
        f"tags: [{rng.choice(WORDS)}, {rng.choice(WORDS)}]",
        "---",
    ]
    if mdx:
        parts.append("import { Note } from '@/components';\n")
    size = sum(len(p) + 1 for p in parts)
    section = 0
    while size < target:
        if section == 0 or rng.random() < 0.3:
            section += 1
            parts.append(f"\n## {rng.choice(WORDS).title()} {section}\n")
        r = rng.random()
        if r < 0.08:
            block = "```python\nclient.query(" + repr(rng.choice(WORDS)) + ", top_k=5)\n```"
        elif r < 0.15 and mdx:
            block = f"<Note>\n  {sentence(rng)}\n</Note>"
        else:
            block = paragraph(rng)
        parts.append(block + "\n")
        size += len(block) + 1
    folder = f"section-{k % 20:02d}/{'deep/' if k % 7 == 0 else ''}"
    return f"{folder}page-{k:05d}.{'mdx' if mdx else 'md'}", "\n".join(parts)


def generate(root: Path, n: int, seed: int = 0) -> dict[str, str]:
    rng = random.Random(seed)
    files = dict(make_file(rng, k) for k in range(n))
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return files


def timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


async def sync_once(folder: Path, name: str) -> tuple[Any, float]:
    from moss import MossClient
    from moss.ingest import sync_directory

    t0 = time.perf_counter()
    async with MossClient("bench", "key") as client:
        report = await sync_directory(client, name, folder)
    return report, time.perf_counter() - t0


async def stored_docs(name: str) -> dict[str, tuple[str, Any]]:
    from moss import MossClient

    async with MossClient("bench", "key") as client:
        return {d.id: (d.text, d.metadata) for d in await client.get_docs(name)}


def summary(report: Any, seconds: float) -> dict[str, Any]:
    return {
        "seconds": round(seconds, 3),
        "added": len(report.added),
        "changed": len(report.changed),
        "removed": len(report.removed),
        "unchanged": len(report.unchanged),
        "chunks_added": report.chunks_added,
        "chunks_deleted": report.chunks_deleted,
        "doc_count": report.doc_count,
        "pushed": report.job_id is not None,
    }


def run(n_files: int, edit_fraction: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="moss-bench-ingest-") as tmp:
        base = Path(tmp)
        os.environ["MOSS_DATA_DIR"] = str(base / "data")
        os.environ["MOSS_SESSION_CACHE_PATH"] = str(base / "cache")
        folder = base / "docs"
        files, gen_s = timed(lambda: generate(folder, n_files))
        total_bytes = sum(len(t.encode()) for t in files.values())

        from moss.ingest import collect_documents, discover

        found, discover_s = timed(lambda: discover([folder]))
        batch, collect_s = timed(lambda: collect_documents([folder]))
        chunks = len(batch.documents)
        first, first_s = asyncio.run(sync_once(folder, "bench"))
        noop, noop_s = asyncio.run(sync_once(folder, "bench"))

        rng = random.Random(1)
        edited = rng.sample(sorted(files), max(1, round(n_files * edit_fraction)))
        for rel in edited:
            p = folder / rel
            p.write_text(p.read_text(encoding="utf-8") + "\n" + paragraph(rng) + "\n", "utf-8")
        edit, edit_s = asyncio.run(sync_once(folder, "bench"))

        expected = {d.id: (d.text, d.metadata) for d in collect_documents([folder]).documents}
        equal = asyncio.run(stored_docs("bench")) == expected
        return {
            "files": n_files,
            "listed": len(found),
            "bytes": total_bytes,
            "chunks": chunks,
            "chunks_per_file": round(chunks / n_files, 2),
            "generate_s": round(gen_s, 3),
            "discover_s": round(discover_s, 4),
            "collect_s": round(collect_s, 3),
            "collect_files_per_s": round(n_files / collect_s),
            "collect_mb_per_s": round(total_bytes / 2**20 / collect_s, 2),
            "first_sync": summary(first, first_s),
            "first_sync_chunks_per_s": round(first.chunks_added / first_s, 1),
            "noop_sync": summary(noop, noop_s),
            "edited_files": len(edited),
            "edit_sync": summary(edit, edit_s),
            "index_equals_fresh_build": equal,
        }


def table(r: dict[str, Any]) -> str:
    rows = [
        ("discover (list the folder)", f"{r['discover_s'] * 1000:.1f} ms", ""),
        (
            "collect_documents (read, parse, chunk)",
            f"{r['collect_s']:.2f} s",
            f"{r['collect_files_per_s']} files/s, {r['collect_mb_per_s']} MB/s",
        ),
        (
            "first sync (embed everything, push)",
            f"{r['first_sync']['seconds']:.2f} s",
            f"{r['first_sync']['chunks_added']} chunks, {r['first_sync_chunks_per_s']} chunks/s",
        ),
        (
            "no-op sync",
            f"{r['noop_sync']['seconds']:.2f} s",
            f"{r['noop_sync']['unchanged']} unchanged, pushed: {r['noop_sync']['pushed']}",
        ),
        (
            f"sync after editing {r['edited_files']} files",
            f"{r['edit_sync']['seconds']:.2f} s",
            f"{r['edit_sync']['changed']} changed, {r['edit_sync']['chunks_added']} chunks "
            f"re-embedded",
        ),
    ]
    lines = [
        f"{r['files']} files, {r['bytes'] / 2**20:.1f} MB, {r['chunks']} chunks "
        f"(default chunking); index equals a fresh build: {r['index_equals_fresh_build']}",
        "",
        "| step | time | notes |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("mosslite", "onnxruntime", "PyYAML"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--files", type=int, default=1000, help="number of files (default 1000)")
    p.add_argument("--edit", type=float, default=0.01, help="fraction of files edited (0.01)")
    p.add_argument("--json", metavar="PATH", help="also write the JSON report here")
    args = p.parse_args()
    if args.files < 1:
        p.error("--files must be at least 1")
    results = run(args.files, args.edit)
    report = {
        "benchmark": "bench_ingest",
        "machine": _machine.machine(**versions()),
        "loadavg_end": list(os.getloadavg()),
        "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print()
    print(table(results))
    if not results["index_equals_fresh_build"]:
        sys.exit("the synced index differs from a fresh build of the folder")


if __name__ == "__main__":
    main()
