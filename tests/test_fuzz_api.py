"""A property-based fuzzer over every public method and option type of the Python API.

Each example picks one public call (a ``MossClient`` method, a ``SessionIndex`` method, or an
option type's constructor) and fills its arguments with hostile values: ``None``, wrong types,
huge integers (``-10**5000``), NaN and infinities, lists and dicts nested thousands deep, long
names, names and keys with lone surrogates, control characters and ``/``, plus well-formed
values so that calls also get past the first check (the values: tests/fuzz_values.py). The
call runs against the embedded store in a temporary directory. Three properties:

* the call returns, or raises a ``MossError`` (or a documented ``RuntimeError`` /
  ``TimeoutError``: a failed job, an index that is not loaded). Anything else is *untyped*;
* a rejected call leaves the stored data unchanged: the cloud index ``idx`` (its documents and
  version) and the open session ``sess`` (its documents);
* the session and the store accept or reject the same ``add_docs`` / ``get_docs`` /
  ``delete_docs`` arguments alike (:func:`agreement`).

The test here is bounded (30 derandomised examples per call, 1,320 in all, a few seconds; set
``MOSS_FUZZ_EXAMPLES`` for more);
``benchmarks/fuzz_api.py`` runs :func:`fuzz_api` for longer and reports untyped exceptions by
group instead of stopping at the first. File names are only ever created under the temporary
directory: cache paths are drawn as hostile names *inside* it, never as arbitrary paths, and
web-source URLs are never ``http(s)`` ones (nothing may be crawled).
"""

from __future__ import annotations

import asyncio
import os
import reprlib
import tempfile
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import moss
from moss import (
    Chunking,
    CreateWebSourceOptions,
    DocumentInfo,
    GetDocumentsOptions,
    MossClient,
    MossError,
    MutationOptions,
    ParentGrouping,
    ParseFileInput,
    ParseOptions,
    QueryOptions,
    UpdateWebSourceOptions,
)

from .conftest import HAS_MODEL
from .fuzz_values import (
    chunker_arg,
    chunking_arg,
    clean_docs,
    docs_arg,
    get_options,
    hostile,
    maybe,
    mutation_options,
    names,
    query_options,
)

# --------------------------------------------------------------------------------------------
# The environment and the calls


@dataclass
class Env:
    """One client (embedded store under ``root``), a cloud index ``idx``, a session ``sess``."""

    root: Path
    loop: asyncio.AbstractEventLoop
    client: MossClient
    session: moss.SessionIndex
    counts: Counter[str] = field(default_factory=Counter)
    untyped: dict[str, str] = field(default_factory=dict)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def state(self) -> tuple[Any, ...]:
        docs = self.run(self.client.get_docs("idx"))
        info = self.run(self.client.get_index("idx"))
        sess = self.run(self.session.get_docs()) if not self.session._closed else None
        return (_rows(docs), info.version, info.doc_count, None if sess is None else _rows(sess))

    def local_path(self, value: Any) -> Any:
        """A cache path argument that can only point inside ``root``."""
        if isinstance(value, str):
            return str(self.root / "paths" / value) if value else value
        return value


def _rows(docs: list[DocumentInfo]) -> list[tuple[Any, ...]]:
    return [(d.id, d.text, d.metadata, d.payload) for d in docs]


@contextmanager
def environment(server: bool = False) -> Iterator[Env]:
    """Build the environment in a fresh temporary directory and tear it down; with ``server``
    the client talks to a ``moss serve`` on 127.0.0.1 (in a thread) instead of the embedded
    store."""
    with tempfile.TemporaryDirectory(prefix="moss-fuzz-") as tmp, ExitStack() as stack:
        # Fuzz values include relative paths (Path("nowhere.txt") as a cache_path): whatever
        # they create lands in the temporary directory, not in the caller's working directory.
        stack.callback(os.chdir, os.getcwd())
        os.chdir(tmp)
        loop = asyncio.new_event_loop()
        root = Path(tmp)
        if server:
            from moss.server.testing import ThreadedServer

            srv = stack.enter_context(ThreadedServer(root / "server"))
            pid, key = srv.project
            client = MossClient(pid, key, cache_path=str(root / "cache"), server_url=srv.url)
        else:
            client = MossClient("fuzz", "key", cache_path=str(root / "cache"))
        seed = [
            DocumentInfo(str(i), f"seed text {i}", {"team": "a", "n": str(i)}) for i in range(3)
        ]
        loop.run_until_complete(client.create_index("idx", seed))
        session = loop.run_until_complete(client.session("sess"))
        loop.run_until_complete(session.add_docs(seed))
        env = Env(root, loop, client, session)
        try:
            yield env
        finally:
            loop.run_until_complete(client.close())
            loop.close()


Call = Callable[[Env, list[Any]], Any]


def _client_ctor(env: Env, a: list[Any]) -> Any:
    async def go() -> None:
        cache = env.local_path(a[2]) if a[4] else str(env.root / "cache")
        c = MossClient(a[0], a[1], cache_path=cache)
        try:
            await c.list_indexes()
        finally:
            await c.close()

    return go()


def _session_call(method: str) -> Call:
    def call(env: Env, a: list[Any]) -> Any:
        if env.session._closed:  # an earlier example closed it: reopen
            env.session = env.run(env.client.session("sess"))
        return getattr(env.session, method)(*a)

    return call


def _load(env: Env, a: list[Any]) -> Any:
    async def go() -> Any:
        try:
            return await env.client.load_index(a[0], a[1], a[2], env.local_path(a[3]))
        finally:
            if isinstance(a[0], str):
                try:
                    await env.client.unload_index(a[0])
                except MossError:
                    pass

    return go()


def _load_many(env: Env, a: list[Any]) -> Any:
    async def go() -> Any:
        try:
            return await env.client.load_indexes(a[0], a[1], a[2], env.local_path(a[3]))
        finally:
            env.client._runtime.close()  # stop any poller it started

    return go()


def _web_url(value: Any) -> Any:
    if isinstance(value, str) and ("http" in value.lower() or "." in value):
        return "ftp:/" + value  # never a crawlable URL
    return value


def _ctor(cls: Any) -> Call:
    def call(env: Env, a: list[Any]) -> Any:
        return cls(*a)

    return call


CALLS: dict[str, tuple[Call, list[st.SearchStrategy[Any]]]] = {
    "MossClient()": (_client_ctor, [names, hostile, names, st.none(), st.booleans()]),
    "client.session": (
        lambda e, a: e.client.session(a[0], a[1], artifact_version=a[2], manifest_sha256=a[3]),
        [names, maybe(st.just("moss-minilm")), maybe(st.just("1")), maybe(st.just("ab"))],
    ),
    "client.create_index": (
        lambda e, a: e.client.create_index(
            a[0], a[1], a[2], wait=a[3], chunker=a[4], chunking=a[5]
        ),
        [
            names,
            docs_arg,
            maybe(st.just("moss-minilm")),
            st.one_of(st.just(True), hostile),
            chunker_arg,
            chunking_arg,
        ],
    ),
    "client.add_docs": (
        lambda e, a: e.client.add_docs(a[0], a[1], a[2], chunker=a[3], chunking=a[4]),
        [names, docs_arg, mutation_options, chunker_arg, chunking_arg],
    ),
    "client.delete_docs": (
        lambda e, a: e.client.delete_docs(a[0], a[1]),
        [names, st.one_of(st.just(["99"]), hostile)],
    ),
    "client.get_docs": (lambda e, a: e.client.get_docs(a[0], a[1]), [names, get_options]),
    "client.get_index": (lambda e, a: e.client.get_index(a[0]), [names]),
    "client.list_indexes": (lambda e, a: e.client.list_indexes(), []),
    "client.delete_index": (
        lambda e, a: e.client.delete_index("gone" if a[0] == "idx" else a[0]),
        [names],
    ),
    "client.get_job_status": (lambda e, a: e.client.get_job_status(a[0]), [hostile]),
    "client.wait_for_job": (
        lambda e, a: e.client.wait_for_job(a[0], poll_interval_seconds=a[1], timeout_seconds=a[2]),
        [hostile, st.one_of(st.just(0.01), hostile), st.one_of(st.just(0.05), hostile)],
    ),
    "client.create_index_from_files": (
        lambda e, a: e.client.create_index_from_files(a[0], a[1], a[2], a[3]),
        [
            names,
            st.one_of(
                hostile,
                st.lists(
                    st.builds(
                        ParseFileInput,
                        st.one_of(st.just("a.md"), hostile),
                        st.one_of(st.just("text/markdown"), hostile),
                        data=st.one_of(st.just(b"# T\n\nbody"), hostile),
                    ),
                    max_size=2,
                ),
            ),
            maybe(st.just("moss-minilm")),
            st.one_of(st.none(), hostile, st.builds(ParseOptions, ocr_mode=hostile)),
        ],
    ),
    "client.create_web_source": (
        lambda e, a: e.client.create_web_source(_web_url(a[0]), a[1], a[2]),
        [hostile, names, st.one_of(hostile, st.builds(CreateWebSourceOptions, max_pages=hostile))],
    ),
    "client.list_web_sources": (lambda e, a: e.client.list_web_sources(a[0]), [names]),
    "client.get_web_source": (lambda e, a: e.client.get_web_source(a[0]), [hostile]),
    "client.update_web_source": (
        lambda e, a: e.client.update_web_source(a[0], a[1]),
        [hostile, st.one_of(hostile, st.builds(UpdateWebSourceOptions, max_depth=hostile))],
    ),
    "client.resync_web_source": (lambda e, a: e.client.resync_web_source(a[0]), [hostile]),
    "client.delete_web_source": (lambda e, a: e.client.delete_web_source(a[0]), [hostile]),
    "client.load_index": (
        _load,
        [names, st.one_of(st.just(False), hostile), st.one_of(st.just(600), hostile), hostile],
    ),
    "client.load_indexes": (
        _load_many,
        [
            st.one_of(st.lists(names, max_size=3), hostile),
            st.one_of(st.just(False), hostile),
            st.one_of(st.just(600), hostile),
            hostile,
        ],
    ),
    "client.unload_index": (lambda e, a: e.client.unload_index(a[0]), [names]),
    "client.unload_indexes": (lambda e, a: e.client.unload_indexes(a[0]), [hostile]),
    "client.was_served_stale": (lambda e, a: e.client.was_served_stale(a[0]), [names]),
    "client.query": (
        lambda e, a: e.client.query(a[0], a[1], a[2]),
        [names, st.one_of(st.just("apples"), hostile), query_options],
    ),
    "client.query_multi_index": (
        lambda e, a: e.client.query_multi_index(a[0], a[1], a[2]),
        [
            st.one_of(st.lists(names, max_size=2), hostile),
            st.one_of(st.just("apples"), hostile),
            query_options,
        ],
    ),
    "session.add_docs": (
        lambda e, a: _session_call("add_docs")(e, [a[0], a[1]]),
        [docs_arg, mutation_options],
    ),
    "session.add_docs(chunking)": (
        lambda e, a: e.session.add_docs(a[0], chunker=a[1], chunking=a[2]),
        [docs_arg, chunker_arg, chunking_arg],
    ),
    "session.delete_docs": (_session_call("delete_docs"), [st.one_of(st.just(["99"]), hostile)]),
    "session.get_docs": (_session_call("get_docs"), [get_options]),
    "session.query": (
        _session_call("query"),
        [st.one_of(st.just("apples"), hostile), query_options],
    ),
    "session.save_to_disk": (lambda e, a: e.session.save_to_disk(e.local_path(a[0])), [hostile]),
    "session.load_from_disk": (
        lambda e, a: e.session.load_from_disk(e.local_path(a[0]), rebuild_legacy=a[1]),
        [hostile, st.one_of(st.just(True), hostile)],
    ),
    "session.push_index": (lambda e, a: e.session.push_index(), []),
    "session.close": (lambda e, a: e.session.close(), []),
    "JobHandle.status": (lambda e, a: moss.JobHandle(e.client, a[0]).status(), [hostile]),
    "JobHandle.wait": (lambda e, a: moss.JobHandle(e.client, a[0]).wait(), [hostile]),
    "DocumentInfo()": (_ctor(DocumentInfo), [hostile] * 5),
    "QueryOptions()": (_ctor(QueryOptions), [hostile] * 8),
    "GetDocumentsOptions()": (_ctor(GetDocumentsOptions), [hostile] * 5),
    "MutationOptions()": (_ctor(MutationOptions), [hostile]),
    "ParentGrouping()": (_ctor(ParentGrouping), [hostile] * 2),
    "Chunking()": (_ctor(Chunking), [hostile] * 4),
    "ParseOptions()": (_ctor(ParseOptions), [hostile] * 4),
    "CreateWebSourceOptions()": (_ctor(CreateWebSourceOptions), [hostile] * 3),
}

_DOCUMENTED_RUNTIME = ("Moss job ", "MossClient is closed", "is not loaded")


def _typed(e: BaseException) -> bool:
    if isinstance(e, (MossError, TimeoutError)):
        return True
    return type(e) is RuntimeError and any(s in str(e) for s in _DOCUMENTED_RUNTIME)


def _safe(value: object) -> str:
    """A short repr that survives 5000-digit integers and 3000-deep lists."""
    try:
        return reprlib.repr(value)[:300]
    except Exception:
        if isinstance(value, int):
            return f"<int of {value.bit_length()} bits>"
        return f"<{type(value).__name__}>"


def run_one(env: Env, name: str, args: list[Any]) -> str:
    """Run one call; returns ``ok``, ``rejected`` or ``untyped``. A rejected call whose stored
    data changed raises ``AssertionError``."""
    call, _ = CALLS[name]
    if env.session._closed:  # an earlier example closed it: reopen
        env.session = env.run(env.client.session("sess"))
    before = env.state()
    try:
        result = call(env, args)
        if asyncio.iscoroutine(result):
            env.run(result)
    except Exception as e:
        if not _typed(e):
            group = f"{name}: {type(e).__name__}"
            where = traceback.extract_tb(e.__traceback__)[-1]
            shown = ", ".join(_safe(x) for x in args)
            env.untyped.setdefault(
                group, f"{_safe(e)} at {Path(where.filename).name}:{where.lineno} args=({shown})"
            )
            env.counts["untyped"] += 1
            return "untyped"
        after = env.state()
        assert after == before, f"{name} was rejected ({e}) but changed stored data"
        env.counts["rejected"] += 1
        return "rejected"
    env.counts["ok"] += 1
    return "ok"


def _fuzz_call(env: Env, name: str, examples: int, derandomize: bool, stop: bool) -> None:
    @settings(
        max_examples=examples,
        derandomize=derandomize,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.tuples(*CALLS[name][1]).map(list))
    def body(args: list[Any]) -> None:
        outcome = run_one(env, name, args)
        if stop:
            assert outcome != "untyped", env.untyped
        env.counts[f"call:{name}"] += 1

    body()


def fuzz_api(
    examples: int, *, derandomize: bool = True, stop_at_untyped: bool = True, server: bool = False
) -> Env:
    """Run about ``examples`` fuzzed calls, spread evenly over every public call, in a fresh
    environment; returns it (``counts`` and the first example of each ``untyped`` group)."""
    per_call = max(1, examples // len(CALLS))
    with environment(server) as env:
        for name in sorted(CALLS):
            _fuzz_call(env, name, per_call, derandomize, stop_at_untyped)
        return env


@pytest.mark.skipif(not HAS_MODEL, reason="the model wheel is not installed")
def test_fuzz_public_api() -> None:
    env = fuzz_api(int(os.environ.get("MOSS_FUZZ_EXAMPLES", 30 * len(CALLS))))
    assert env.counts["untyped"] == 0, env.untyped
    assert env.counts["rejected"] > 100 and env.counts["ok"] > 40, env.counts
    covered = {k[5:] for k in env.counts if k.startswith("call:")}
    assert covered == set(CALLS)


def _outcome(env: Env, coro: Any) -> str:
    try:
        env.run(coro)
    except Exception as e:
        assert _typed(e), f"untyped {type(e).__name__}: {_safe(e)}"
        return f"rejected ({type(e).__name__})"
    return "ok"


def agreement(examples: int, *, derandomize: bool = True, server: bool = False) -> Counter[str]:
    """The same hostile ``add_docs`` / ``get_docs`` / ``delete_docs`` arguments on the cloud
    index and on the session must be accepted by both or rejected by both: the session is not
    more lenient than the store (nor stricter). Returns outcome counts."""
    counts: Counter[str] = Counter()
    with environment(server) as env:

        @settings(
            max_examples=examples,
            derandomize=derandomize,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(
            st.sampled_from(["add_docs", "get_docs", "delete_docs"]),
            st.one_of(clean_docs, docs_arg),
            mutation_options,
            get_options,
            st.one_of(st.just(["99"]), hostile),
        )
        def body(method: str, docs: Any, mopts: Any, gopts: Any, ids: Any) -> None:
            c, s = env.client, env.session
            if method == "add_docs":
                pair = (c.add_docs("idx", docs, mopts), s.add_docs(docs, mopts))
            elif method == "get_docs":
                pair = (c.get_docs("idx", gopts), s.get_docs(gopts))
            else:
                if isinstance(ids, (list, tuple, set, frozenset)) and not ids:
                    ids = ["99"]  # documented difference: the cloud refuses an empty list
                pair = (c.delete_docs("idx", ids), s.delete_docs(ids))
            cloud, session = _outcome(env, pair[0]), _outcome(env, pair[1])
            assert cloud.split()[0] == session.split()[0], (method, cloud, session)
            counts[f"{method}: {cloud.split()[0]}"] += 1

        body()
    return counts


@pytest.mark.skipif(not HAS_MODEL, reason="the model wheel is not installed")
def test_session_and_store_agree_on_what_they_reject() -> None:
    counts = agreement(300)
    assert counts["add_docs: rejected"] > 10 and counts["add_docs: ok"] > 3, counts
