"""``moss serve`` flags that become server limits: ``--redirect-downloads`` and
``--redirect-expires-s`` reach :class:`moss.server.limits.Limits` (flag over environment), and an
impossible presigned-URL lifetime is refused before the server starts. What the server does with
them (307 to a presigned S3 URL) is tested in tests/test_storage_s3.py. Also: every limit and every
``moss serve`` flag is documented (docs/security.md, docs/cli.md)."""

from __future__ import annotations

import argparse
import re
from dataclasses import fields
from pathlib import Path

import pytest

from moss.cli import main
from moss.cli.parser import build_parser
from moss.server.limits import Limits


def _serve_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *flags: str
) -> tuple[int, Limits | None]:
    """Run ``moss serve`` with ``moss.server.serve`` replaced; its exit code and the limits."""
    pytest.importorskip("starlette")
    import moss.server

    seen: dict[str, object] = {}

    def fake_serve(data: str, host: str, port: int, **kw: object) -> None:
        seen.update(kw)

    monkeypatch.setattr(moss.server, "serve", fake_serve)
    (tmp_path / "d").mkdir(exist_ok=True)
    code = main(["serve", "--data", str(tmp_path / "d"), "--port", "0", *flags])
    limits = seen.get("limits")
    assert limits is None or isinstance(limits, Limits)
    return code, limits


def test_redirect_downloads_off_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOSS_REDIRECT_DOWNLOADS", raising=False)
    monkeypatch.delenv("MOSS_REDIRECT_EXPIRES_S", raising=False)
    code, limits = _serve_limits(tmp_path, monkeypatch)
    assert code == 0 and limits is not None
    assert limits.redirect_downloads == 0
    assert limits.redirect_expires_s == 300.0


def test_redirect_flags_reach_the_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOSS_REDIRECT_DOWNLOADS", raising=False)
    monkeypatch.setenv("MOSS_REDIRECT_EXPIRES_S", "60")  # the flag wins over the variable
    code, limits = _serve_limits(
        tmp_path, monkeypatch, "--redirect-downloads", "--redirect-expires-s", "900"
    )
    assert code == 0 and limits is not None
    assert limits.redirect_downloads == 1
    assert limits.redirect_expires_s == 900.0


def test_redirect_environment_without_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOSS_REDIRECT_DOWNLOADS", "1")
    monkeypatch.setenv("MOSS_REDIRECT_EXPIRES_S", "60")
    code, limits = _serve_limits(tmp_path, monkeypatch)
    assert code == 0 and limits is not None
    assert limits.redirect_downloads == 1
    assert limits.redirect_expires_s == 60.0


@pytest.mark.parametrize("value", ["0", "0.5", "604801"])
def test_redirect_expires_out_of_range_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    value: str,
) -> None:
    code, limits = _serve_limits(tmp_path, monkeypatch, "--redirect-expires-s", value)
    assert code != 0 and limits is None
    assert "--redirect-expires-s must be between 1 and 604800" in capsys.readouterr().err


def test_every_limit_and_serve_flag_is_documented() -> None:
    """docs/security.md names every server limit; docs/cli.md every ``moss serve`` flag."""
    docs = Path(__file__).resolve().parents[1] / "docs"
    security = (docs / "security.md").read_text()
    assert [f.name for f in fields(Limits) if f"`{f.name}`" not in security] == []
    root = build_parser()
    sub = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    serve = sub.choices["serve"]
    common = {"--help", "--project-id", "--project-key", "--server-url"}
    flags = {s for a in serve._actions for s in a.option_strings if s.startswith("--")} - common
    cli = (docs / "cli.md").read_text()
    missing = [f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", cli)]
    assert sorted(missing) == []
