"""The web-source crawler: a polite, bounded, same-site crawl, and the diff that makes a resync
re-embed only what changed.

A crawl (:func:`crawl`) starts at a root URL and walks the site breadth-first by link depth:

* **Same site only**: scheme, host and port of the root. Links elsewhere are never requested, and
  a redirect is followed only while it stays on the site (at most 5 hops).
* **robots.txt** (``respect_robots``) through :mod:`urllib.robotparser`: rules for the
  ``mosslite`` agent, else for ``*`` (first matching rule wins, as the standard library reads
  them); ``Crawl-delay`` is honoured up to 5 s between requests. An unreadable robots.txt (404,
  network error) allows everything; 401/403 forbid everything, as the standard library decides.
* **Sitemaps**: the ``Sitemap:`` lines of robots.txt and ``/sitemap.xml`` (a sitemap index too,
  gzip too), at most 10 sitemap files and 50,000 URLs; their pages enter the walk at depth 1.
* **Limits**: ``max_pages`` HTML pages, ``max_depth`` link hops, at most 20 linked PDF/DOCX
  documents per crawl (``parse_documents``), include/exclude path globs (``fnmatch`` on the URL
  path: ``/blog/*`` matches everything under ``/blog/``). The root is always fetched, to find
  links, but indexed only if it passes the globs.
* **Hostile input**: connect/read timeouts, bodies streamed and cut off at 10 MB (HTML) or 50 MB
  (documents) after decompression, URLs canonicalised (fragment dropped, query kept, scheme and
  host lower-cased, default port dropped) so one page is fetched once, a bounded request count and
  an overall time limit. Where the store forbids it (``moss serve`` without
  ``--allow-private-crawl``), a host resolving to a private, loopback or link-local address is
  refused (:func:`check_public_url`).

Only ``text/html`` pages (and PDF/DOCX documents) are kept; each kept page carries the sha256 of
its body, and :attr:`CrawlResult.unreachable` lists the pages that failed transiently (5xx, 429,
timeouts). What a resync re-embeds is decided from that by
:func:`moss.server.ingest_jobs.plan_sync`.

httpx is a core dependency; this module is imported only by the store's crawl jobs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import ipaddress
import socket
import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from urllib.parse import urljoin, urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

import httpx

from .._version import __version__
from ..errors import InvalidArgumentError, MossError
from ..sources import DOCX_CONTENT_TYPE, MAX_FILE_BYTES, PDF_CONTENT_TYPE

__all__ = [
    "MAX_DOCUMENTS_PER_CRAWL",
    "ROBOTS_AGENT",
    "USER_AGENT",
    "CrawlError",
    "CrawlResult",
    "CrawlSettings",
    "Page",
    "check_public_url",
    "crawl",
    "normalize_url",
    "path_allowed",
]

ROBOTS_AGENT = "mosslite"
USER_AGENT = f"mosslite/{__version__} (web source crawler; +https://pypi.org/project/mosslite/)"
MAX_PAGE_BYTES = 10 * 1024 * 1024
MAX_DOCUMENT_BYTES = MAX_FILE_BYTES
MAX_DOCUMENTS_PER_CRAWL = 20
MAX_CRAWL_DELAY_S = 5.0
MAX_REDIRECTS = 5
MAX_SITEMAPS = 10
MAX_SITEMAP_URLS = 50_000
_ROBOTS_BYTES = 512 * 1024
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_DOC_KINDS = {PDF_CONTENT_TYPE: "pdf", DOCX_CONTENT_TYPE: "docx"}
_CANONICAL = {"html": "text/html", "pdf": PDF_CONTENT_TYPE, "docx": DOCX_CONTENT_TYPE}
_SKIP_SUFFIXES = (
    ".png .jpg .jpeg .gif .webp .svg .ico .bmp .tif .tiff .mp3 .mp4 .m4a .wav .ogg .webm .mov "
    ".avi .zip .gz .tgz .bz2 .xz .7z .rar .tar .exe .dmg .iso .bin .woff .woff2 .ttf .otf .eot "
    ".css .js .mjs .json .xml .rss .atom .csv .xls .xlsx .ppt .pptx .doc .odt .apk"
).split()
_TRANSIENT = (429, 500, 502, 503, 504)


class CrawlError(MossError):
    """A crawl that cannot produce anything (its ``code`` becomes the source's
    ``last_error_code``: ``FETCH_FAILED``, ``ROBOTS_DISALLOWED``, ``PRIVATE_ADDRESS``)."""

    default_code = "FETCH_FAILED"


@dataclass(frozen=True)
class CrawlSettings:
    """What one crawl may do (a web source's settings plus the store's policy)."""

    root_url: str
    max_pages: int = 500
    max_depth: int = 3
    include_paths: Sequence[str] = ()
    exclude_paths: Sequence[str] = ()
    respect_robots: bool = True
    parse_documents: bool = True
    allow_private: bool = True
    max_documents: int = MAX_DOCUMENTS_PER_CRAWL
    timeout_s: float = 15.0
    max_seconds: float = 3600.0


@dataclass(frozen=True)
class Page:
    """A fetched page or document: its canonical URL, link depth, kind and body."""

    url: str
    depth: int
    kind: str  # "html", "pdf" or "docx"
    content_type: str
    data: bytes
    sha256: str


@dataclass
class CrawlResult:
    """Pages to index, in crawl order, and what happened to the rest."""

    pages: list[Page] = field(default_factory=list)
    unreachable: set[str] = field(default_factory=set)  # transient failures: keep old chunks
    fetched: int = 0  # pages and documents fetched successfully
    skipped: int = 0  # robots, filters, type, size, off-site redirects, limits
    requests: int = 0
    robots_blocked: list[str] = field(default_factory=list)
    truncated: bool = False  # stopped by max_pages, the request budget or the time limit


# ------------------------------------------------------------------------------ URLs


def normalize_url(url: str, base: str | None = None) -> str | None:
    """The canonical absolute form of ``url`` (resolved against ``base``), or None if it is not
    an http(s) URL. The fragment is dropped, the query kept as is.

    >>> normalize_url("../b?x=1#top", "HTTP://Example.COM:80/a/c")
    'http://example.com/b?x=1'
    """
    try:
        parts = urlsplit(urljoin(base, url.strip()) if base else url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != (443 if scheme == "https" else 80):
        host = f"{host}:{port}"
    path = urlsplit(urljoin("http://h/", parts.path or "/")).path  # resolve ./ and ../
    return urlunsplit((scheme, host, path, parts.query, ""))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def path_allowed(path: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Whether a URL path passes the include (any, when given) and exclude (none) globs.

    >>> path_allowed("/blog/2024/a", ["/blog/*"], ["/blog/drafts/*"])
    True
    >>> path_allowed("/about", ["/blog/*"], [])
    False
    """
    if any(fnmatchcase(path, g) for g in exclude):
        return False
    return not include or any(fnmatchcase(path, g) for g in include)


def check_public_url(url: str) -> None:
    """Refuse a URL whose host resolves to a private, loopback, link-local or otherwise
    non-public address (server-side request forgery guard of ``moss serve``).

    Raises:
        InvalidArgumentError: the host does not resolve, or resolves to such an address.
    """
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as e:
        raise InvalidArgumentError(f"Validation error: cannot resolve host {host!r}: {e}") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not address.is_global or address.is_multicast:
            raise InvalidArgumentError(
                f"Validation error: {host!r} resolves to the non-public address {address}; this "
                "server does not crawl private networks (start it with --allow-private-crawl or "
                "MOSS_ALLOW_PRIVATE_CRAWL=1 to allow it)",
                code="INVALID_ARGUMENT",
            )


def _kind(content_type: str, url: str) -> str | None:
    if content_type in _HTML_TYPES:
        return "html"
    if content_type in _DOC_KINDS:
        return _DOC_KINDS[content_type]
    if content_type in ("", "application/octet-stream", "binary/octet-stream"):
        path = urlsplit(url).path.lower()
        if path.endswith(".pdf"):
            return "pdf"
        if path.endswith(".docx"):
            return "docx"
    return None


# ------------------------------------------------------------------------------ the crawler


class _Skip(Exception):
    """A URL that yields nothing (not an error of the crawl)."""


class _Crawler:
    def __init__(
        self,
        settings: CrawlSettings,
        client: httpx.Client,
        progress: Callable[[int, int], None] | None,
        should_stop: Callable[[], bool] | None,
        sleep: Callable[[float], None],
    ) -> None:
        self.s = settings
        self.client = client
        self.progress = progress
        self.should_stop = should_stop
        self.sleep = sleep
        self.origin = _origin(settings.root_url)
        self.robots: RobotFileParser | None = None
        self.delay = 0.0
        self.last_request = 0.0
        self.deadline = time.monotonic() + settings.max_seconds
        self.max_requests = settings.max_pages * 3 + settings.max_documents + 50
        self.result = CrawlResult()

    # -------------------------------------------------------------- plumbing

    def _same_site(self, url: str) -> bool:
        return _origin(url) == self.origin

    def _allowed_by_robots(self, url: str) -> bool:
        return self.robots is None or self.robots.can_fetch(ROBOTS_AGENT, url)

    def _budget_left(self) -> bool:
        if self.should_stop is not None and self.should_stop():
            raise MossError("the crawl was interrupted", code="INTERRUPTED")
        if self.result.requests >= self.max_requests or time.monotonic() >= self.deadline:
            self.result.truncated = True
            return False
        return True

    def _get(self, url: str, limit_for: Callable[[str, str], int | None]) -> tuple[str, str, bytes]:
        """GET ``url`` following same-site redirects: ``(final url, content type, body)``.

        ``limit_for(content type, url)`` is the size cap of an acceptable response, None to
        refuse it unread. Raises ``_Skip`` (nothing to index), ``_Status`` (HTTP >= 400) or
        ``httpx.HTTPError``."""
        for _ in range(MAX_REDIRECTS + 1):
            wait = self.last_request + self.delay - time.monotonic()
            if wait > 0:
                self.sleep(wait)
            self.last_request = time.monotonic()
            self.result.requests += 1
            with self.client.stream("GET", url) as r:
                if r.is_redirect:
                    target = normalize_url(r.headers.get("location", ""), url)
                    if target is None or not self._same_site(target):
                        raise _Skip("redirect off the site")
                    if not self._allowed_by_robots(target):
                        self.result.robots_blocked.append(target)
                        raise _Skip("redirect to a URL robots.txt disallows")
                    url = target
                    continue
                if r.status_code >= 400:
                    raise _Status(r.status_code)
                if r.status_code != 200:
                    raise _Skip(f"HTTP {r.status_code}")
                ctype = r.headers.get("content-type", "").split(";", 1)[0].strip().lower()
                limit = limit_for(ctype, url)
                if limit is None:
                    raise _Skip(f"content type {ctype!r}")
                declared = r.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise _Skip("too large")
                body = bytearray()
                for chunk in r.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise _Skip("too large")
                return url, ctype, bytes(body)
        raise _Skip("too many redirects")

    # -------------------------------------------------------------- robots and sitemaps

    def _load_robots(self) -> list[str]:
        """Read robots.txt; returns the sitemap URLs it lists."""
        rp = RobotFileParser()
        try:
            _, _, body = self._get(self.origin + "/robots.txt", lambda ctype, url: _ROBOTS_BYTES)
            rp.parse(body.decode("utf-8", errors="replace").splitlines())
        except _Status as e:  # as the standard library reads it: 401/403 forbid everything
            rp.parse(["User-agent: *", "Disallow: /"] if e.status in (401, 403) else [])
        except (httpx.HTTPError, _Skip):
            rp.parse([])
        if self.s.respect_robots:
            self.robots = rp
            delay = rp.crawl_delay(ROBOTS_AGENT)
            if delay is not None:
                self.delay = min(float(delay), MAX_CRAWL_DELAY_S)
        return list(rp.site_maps() or [])

    def _sitemap_urls(self, listed: Iterable[str]) -> list[str]:
        queue = deque(u for u in (normalize_url(x) for x in listed) if u and self._same_site(u))
        default = self.origin + "/sitemap.xml"
        if default not in queue:
            queue.append(default)
        seen: set[str] = set()
        urls: list[str] = []
        while queue and len(seen) < MAX_SITEMAPS and len(urls) < MAX_SITEMAP_URLS:
            sitemap = queue.popleft()
            if sitemap in seen or not self._budget_left():
                continue
            seen.add(sitemap)
            try:
                _, _, body = self._get(sitemap, lambda ctype, url: MAX_PAGE_BYTES)
                if body[:2] == b"\x1f\x8b":
                    body = _gunzip(body, MAX_PAGE_BYTES)
                root = ET.fromstring(body)
            except (httpx.HTTPError, _Skip, _Status, ET.ParseError, OSError, EOFError):
                continue
            locs = [
                (el.text or "").strip() for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "loc"
            ]
            nested = root.tag.rsplit("}", 1)[-1] == "sitemapindex"
            for loc in locs:
                u = normalize_url(loc)
                if u is None or not self._same_site(u):
                    continue
                if nested:
                    queue.append(u)
                elif len(urls) < MAX_SITEMAP_URLS:
                    urls.append(u)
        return urls

    # -------------------------------------------------------------- the walk

    def _wanted(self, url: str, seen: set[str]) -> bool:
        if url in seen or not self._same_site(url):
            return False
        path = urlsplit(url).path
        lowered = path.lower()
        is_doc = lowered.endswith((".pdf", ".docx"))
        if (is_doc and not self.s.parse_documents) or lowered.endswith(tuple(_SKIP_SUFFIXES)):
            return False
        if not path_allowed(path, self.s.include_paths, self.s.exclude_paths):
            return False
        if not self._allowed_by_robots(url):
            self.result.robots_blocked.append(url)
            self.result.skipped += 1
            return False
        return True

    def run(self) -> CrawlResult:
        s, result = self.s, self.result
        root = normalize_url(s.root_url)
        if root is None:
            raise CrawlError(f"cannot crawl {s.root_url!r}: not an http(s) URL")
        if not s.allow_private:
            try:
                check_public_url(root)
            except InvalidArgumentError as e:
                raise CrawlError(e.message, code="PRIVATE_ADDRESS") from None
        sitemaps = self._load_robots()
        if not self._allowed_by_robots(root):
            raise CrawlError(
                f"robots.txt of {self.origin} does not allow crawling {root}",
                code="ROBOTS_DISALLOWED",
            )
        queue: deque[tuple[str, int]] = deque([(root, 0)])
        seen = {root}
        sitemap_done = s.max_depth < 1
        pages = docs = 0
        while queue or not sitemap_done:
            if not queue:  # the links are exhausted: the sitemap's pages come next, at depth 1
                sitemap_done = True
                for u in self._sitemap_urls(sitemaps):
                    if self._wanted(u, seen):
                        seen.add(u)
                        queue.append((u, 1))
                continue
            url, depth = queue.popleft()
            if pages >= s.max_pages:
                result.truncated = True
                break
            if not self._budget_left():
                break
            is_root = url == root

            def limit_for(
                ctype: str, final: str, docs_left: bool = docs < s.max_documents
            ) -> int | None:
                kind = _kind(ctype, final)
                if kind == "html":
                    return MAX_PAGE_BYTES
                if kind is not None and s.parse_documents and docs_left:
                    return MAX_DOCUMENT_BYTES
                return None

            try:
                final, ctype, body = self._get(url, limit_for)
            except _Skip:
                result.skipped += 1
                continue
            except _Status as e:
                if is_root:
                    raise CrawlError(f"cannot fetch the root URL {root}: HTTP {e.status}") from None
                if e.status in _TRANSIENT:
                    result.unreachable.add(url)
                continue
            except httpx.HTTPError as e:
                if is_root:
                    raise CrawlError(
                        f"cannot fetch the root URL {root}: {type(e).__name__}", detail=str(e)
                    ) from None
                result.unreachable.add(url)
                continue
            if final != url:
                if final in seen and not is_root:
                    continue
                seen.add(final)
            kind = _kind(ctype, final) or "html"
            result.fetched += 1
            if kind == "html":
                pages += 1
                if depth < s.max_depth:
                    for link in _links(body, final):
                        if self._wanted(link, seen):
                            seen.add(link)
                            queue.append((link, depth + 1))
            else:
                docs += 1
            path = urlsplit(final).path
            if not is_root or path_allowed(path, s.include_paths, s.exclude_paths):
                digest = hashlib.sha256(body).hexdigest()
                result.pages.append(Page(final, depth, kind, _CANONICAL[kind], body, digest))
            if self.progress is not None:
                self.progress(pages, s.max_pages)
        return result


class _Status(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _gunzip(data: bytes, limit: int) -> bytes:
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
        out = f.read(limit + 1)
    if len(out) > limit:
        raise OSError("sitemap too large")
    return out


def _links(body: bytes, url: str) -> list[str]:
    from .parsers import html_links

    try:
        _, links = html_links(body, url)
    except MossError:
        return []
    out = []
    for link in links:
        u = normalize_url(link, url)
        if u is not None:
            out.append(u)
    return out


def crawl(
    settings: CrawlSettings,
    *,
    client: httpx.Client | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> CrawlResult:
    """Crawl a site (see the module docstring).

    Args:
        settings: the root URL and limits.
        client: an ``httpx.Client`` to use (tests); by default one with the crawler's
            User-Agent and timeouts, closed afterwards.
        progress: called with ``(html pages fetched, max_pages)`` after each page.
        should_stop: polled before each request; True aborts the crawl (``MossError``).
        sleep: how to wait between requests (``Crawl-delay``).

    Raises:
        CrawlError: the root cannot be fetched, robots.txt forbids it, or its address is
            refused.
    """
    own = client is None
    if client is None:
        client = httpx.Client(
            headers={"User-Agent": USER_AGENT},
            timeout=httpx.Timeout(settings.timeout_s, connect=min(5.0, settings.timeout_s)),
            follow_redirects=False,
        )
    try:
        return _Crawler(settings, client, progress, should_stop, sleep).run()
    finally:
        if own:
            client.close()
