"""Run a real ``moss serve`` for tests and benchmarks: in a subprocess or in a thread.

>>> with ServerProcess(tmp_dir) as server:          # doctest: +SKIP
...     client = MossClient(*server.project, server_url=server.url)

:class:`ServerProcess` starts ``python -m moss.server`` on 127.0.0.1 with a free port and a data
directory, and can be stopped gracefully, killed with SIGKILL and restarted on the same port and
directory (crash and offline tests). :class:`ThreadedServer` runs uvicorn in a thread of the
current process (cheaper to start; used where a crash is not the point).

Both take ``catalog=``/``blobs=`` (and the process ``role=``) to run a cluster node over a shared
catalog and blob store; several :class:`ServerProcess` objects on one catalog form a cluster (a
``worker`` process has no URL: it opens no port).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from .store import create_project

__all__ = ["ServerProcess", "ThreadedServer", "free_port", "wait_until_up"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(
    url: str, timeout: float = 30.0, proc: subprocess.Popen[Any] | None = None
) -> None:
    """Poll ``<url>/healthz`` until it answers (raises ``TimeoutError``/``RuntimeError``)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"the server at {url} did not come up within {timeout}s")


class ServerProcess:
    """``python -m moss.server`` in a subprocess.

    Args:
        data_dir: the server's data directory.
        env: extra environment variables for the server process.
        project: ``(project_id, key)`` of an existing project; by default one is created.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        env: dict[str, str] | None = None,
        project: tuple[str, str] | None = None,
        *,
        catalog: str | None = None,
        blobs: str | None = None,
        role: str = "all",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env or {}
        self.catalog, self.blobs, self.role = catalog, blobs, role
        self.project = project or create_project(self.data_dir, "test", catalog=catalog)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> ServerProcess:
        """Start (or restart) the server on the same port and directory; waits until it is up."""
        env = {**os.environ, **self.env}
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "moss.server",
                "--data",
                str(self.data_dir),
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                *(["--catalog", self.catalog] if self.catalog else []),
                *(["--store", self.blobs] if self.blobs else []),
                "--role",
                self.role,
            ],
            env=env,
        )
        if self.role != "worker":  # a worker has no port to poll
            wait_until_up(self.url, timeout, self.proc)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (SIGTERM; uvicorn finishes requests and the store drains its jobs)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as in a crash or power loss of the process."""
        if self.proc is not None and self.proc.poll() is None:
            if os.name == "nt":
                self.proc.kill()
            else:
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ThreadedServer:
    """uvicorn serving :func:`moss.server.app.create_app` in a daemon thread of this process."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        catalog: str | None = None,
        blobs: str | None = None,
        role: str = "all",
        **limits: Any,
    ) -> None:
        import uvicorn

        from .app import create_app
        from .limits import uvicorn_config

        self.data_dir = Path(data_dir)
        self.project = create_project(self.data_dir, "test", catalog=catalog)
        options = {"catalog": catalog, "blobs": blobs, "role": role}
        self.app = create_app(self.data_dir, store_options=options, **limits)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn_config(
            self.app, "127.0.0.1", self.port, self.app.state.limits, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ThreadedServer:
        self._thread.start()
        wait_until_up(self.url)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(30)

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
