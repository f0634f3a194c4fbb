"""The ``moss`` command as a user runs it: real subprocesses, signals, pipes, widths, a real server.

Every test starts ``python -m moss`` with its own ``MOSS_DATA_DIR`` under tmp_path. Expected
results come from the input written here (document counts, ids). The SIGINT tests need the
built-in model (embedding is what makes ``docs add`` take seconds); the others use the ``custom``
model with vectors in the JSONL input.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import HAS_MODEL, random_texts, unit_vectors

SRC = Path(__file__).resolve().parents[1] / "src"
DIM = 8


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOSS_") and k != "COLUMNS"}
    env.update(
        PYTHONPATH=str(SRC),
        MOSS_DATA_DIR=str(tmp_path / "data"),
        MOSS_SESSION_CACHE_PATH=str(tmp_path / "cache"),
        MOSS_PROGRESS_INTERVAL="0.2",
    )
    env.update(extra)
    return env


def moss(
    tmp_path: Path, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moss", *args],
        capture_output=True,
        text=True,
        env=env_for(tmp_path, **env),
        timeout=timeout,
    )


def write_jsonl(path: Path, n: int, *, words: int = 8, vectors: bool = True) -> Path:
    texts = random_texts(n, seed=1, length=words)
    vecs = unit_vectors(n, DIM, seed=2)
    with path.open("w") as f:
        for i, text in enumerate(texts):
            doc: dict[str, Any] = {"id": f"d{i}", "text": text, "metadata": {"n": str(i)}}
            if vectors:
                doc["embedding"] = vecs[i].tolist()
            f.write(json.dumps(doc) + "\n")
    return path


posix_signals = pytest.mark.skipif(sys.platform == "win32", reason="POSIX SIGINT delivery")


def clean(stderr: str) -> None:
    for bad in ("Traceback", "Broken pipe", "Exception ignored", "terminate called"):
        assert bad not in stderr, stderr[-2000:]


# --------------------------------------------------------------------------------------------
# Help and start-up


def test_bare_moss_prints_help_on_stdout(tmp_path: Path) -> None:
    proc = moss(tmp_path)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("usage: moss") and "Example:" in proc.stdout
    group = moss(tmp_path, "index")
    assert group.returncode == 0 and group.stdout.startswith("usage: moss index")
    assert "sync" in group.stdout


def test_help_imports_no_library_code(tmp_path: Path) -> None:
    """What made ``moss --help`` slow: numpy and the engine imported eagerly."""
    code = (
        "import sys\nfrom moss.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('numpy', 'asyncio', 'moss.client', 'moss.engine', 'httpx', "
        "'tqdm') if m in sys.modules]\nsys.stderr.write(repr(heavy))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env_for(tmp_path)
    )
    assert proc.returncode == 0 and proc.stderr == "[]", proc.stderr


# --------------------------------------------------------------------------------------------
# Ctrl-C


@posix_signals
@pytest.mark.model
@pytest.mark.skipif(not HAS_MODEL, reason="all-MiniLM-L6-v2 weights not installed")
@pytest.mark.parametrize("signals", [1, 2])
def test_ctrl_c_during_docs_add_changes_nothing(tmp_path: Path, signals: int) -> None:
    seed = tmp_path / "seed.md"
    seed.write_text("# Seed\n\nThe first document of the index.\n")
    assert moss(tmp_path, "index", "create", "kb", str(seed)).returncode == 0
    before = json.loads(moss(tmp_path, "index", "info", "kb", "--json").stdout)
    many = write_jsonl(tmp_path / "many.jsonl", 3000, words=40, vectors=False)

    proc = subprocess.Popen(
        [sys.executable, "-m", "moss", "docs", "add", "kb", str(many)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for(tmp_path),
    )
    assert proc.stderr is not None
    seen = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # wait until embedding is under way (rate shown)
        line = proc.stderr.readline()
        seen.append(line)
        if not line or "docs/s" in line:
            break
    assert "docs/s" in seen[-1], seen
    sent = time.monotonic()
    for _ in range(signals):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=30)
    elapsed = time.monotonic() - sent
    assert proc.returncode == 130, err
    assert elapsed < 3.0, elapsed  # cancelled at the next batch, not after all 3000 documents
    clean(err)
    assert "interrupted: index 'kb' is unchanged" in err and out == ""
    after = json.loads(moss(tmp_path, "index", "info", "kb", "--json").stdout)
    assert (after["doc_count"], after["version"]) == (before["doc_count"], before["version"])
    assert after["doc_count"] == 1


@posix_signals
@pytest.mark.model
@pytest.mark.skipif(not HAS_MODEL, reason="all-MiniLM-L6-v2 weights not installed")
def test_ctrl_c_during_index_sync_creates_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    write_jsonl(folder / "many.jsonl", 3000, words=40, vectors=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "moss", "index", "sync", "kb", str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for(tmp_path),
    )
    assert proc.stderr is not None
    line = ""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and "chunks/s" not in line:
        line = proc.stderr.readline()
        if not line:
            break
    assert "chunks/s" in line, line
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.monotonic() - sent < 3.0, err
    clean(err)
    assert out == "" and "interrupted: index 'kb' is unchanged" in err
    info = moss(tmp_path, "index", "info", "kb")
    assert info.returncode == 1 and "kb" in info.stderr  # never created


@posix_signals
@pytest.mark.model
@pytest.mark.skipif(not HAS_MODEL, reason="all-MiniLM-L6-v2 weights not installed")
def test_ctrl_c_stops_a_command_stuck_in_synchronous_work(tmp_path: Path) -> None:
    """``moss eval`` runs its queries inline (no await suspends): the watchdog interrupts it."""
    root = tmp_path / "ds"
    (root / "qrels").mkdir(parents=True)
    texts = random_texts(3050, seed=3, length=6)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "text": texts[i]}) + "\n" for i in range(50))
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": texts[50 + i]}) + "\n" for i in range(3000))
    )
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i % 50}\t1\n" for i in range(3000))
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "moss", "eval", str(root), "-a", "0.5", "--fusion", "score"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for(tmp_path),
    )
    assert proc.stderr is not None
    line = ""
    while "alpha=0.5" not in line:  # the query phase: 3000 embedded queries, several seconds
        line = proc.stderr.readline()
        assert line, "eval ended early"
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.monotonic() - sent < 3.0, err
    clean(err)
    assert out == "" and err.strip().endswith("interrupted")


def test_index_create_from_a_stdin_pipe(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", 20).read_text()
    proc = subprocess.run(
        [sys.executable, "-m", "moss", "index", "create", "s", "-", "--json"],
        input=data,
        capture_output=True,
        text=True,
        env=env_for(tmp_path),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["doc_count"] == 20


@posix_signals
def test_ctrl_c_while_waiting_for_stdin(tmp_path: Path) -> None:
    """``moss index create x -`` with nothing typed yet: Ctrl-C must not wait for end of input."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "moss", "index", "create", "x", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for(tmp_path),
    )
    try:
        time.sleep(1.5)  # started and blocked reading stdin
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=10)
        assert rc == 130 and time.monotonic() - sent < 3.0
    finally:
        assert proc.stdin and proc.stdout and proc.stderr
        proc.stdin.close()
        out, err = proc.stdout.read(), proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
        proc.wait(timeout=10)
    clean(err)
    assert out == "" and "interrupted" in err


# --------------------------------------------------------------------------------------------
# Pipes and widths


@pytest.fixture
def big_index(tmp_path: Path) -> Path:
    docs = write_jsonl(tmp_path / "docs.jsonl", 1000, words=40)
    proc = moss(tmp_path, "index", "create", "big", str(docs), "-q")
    assert proc.returncode == 0, proc.stderr
    return tmp_path


@pytest.mark.parametrize(
    "args",
    [
        ("docs", "get", "big", "--json"),
        ("docs", "get", "big"),
        ("query", "big", "salmon tiger", "-a", "0", "-k", "1000"),
    ],
)
def test_closed_pipe_is_silent(big_index: Path, args: tuple[str, ...]) -> None:
    """``moss ... | head -1``: read one line, close the pipe; over 64 KiB are still unwritten
    (1000 lines of 100 columns at least), so the writer meets the closed pipe."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "moss", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env_for(big_index),
    )
    assert proc.stdout is not None and proc.stderr is not None
    fd = proc.stdout.fileno()
    first = b""
    while b"\n" not in first:
        chunk = os.read(fd, 100)
        assert chunk, "no output"
        first += chunk
    time.sleep(0.3)  # let the writer block on the full pipe
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 141, err
    assert err == ""


@pytest.mark.parametrize("columns", [60, 120, 200])
def test_tables_fit_the_terminal_width(big_index: Path, columns: int) -> None:
    cols = str(columns)
    query = moss(
        big_index, "query", "big", "salmon tiger", "-a", "0", "-k", "5", "-m", COLUMNS=cols
    )
    docs = moss(big_index, "docs", "get", "big", "--id", "d1", "--id", "d2", "-m", COLUMNS=cols)
    for proc in (query, docs):
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert max(len(line) for line in lines) <= columns
        # the text column grows with the room: 40-word documents fill any of these widths
        assert max(len(line) for line in lines) >= columns - 10
    header = query.stdout.splitlines()[0].split()
    assert header == ["#", "id", "keyword", "text", "metadata"]
    ranks = [line.split()[0] for line in query.stdout.splitlines()[2:7]]
    assert ranks == ["1", "2", "3", "4", "5"]


def test_table_width_defaults_to_100_in_a_pipe(big_index: Path) -> None:
    proc = moss(big_index, "docs", "get", "big", "--id", "d1")
    assert proc.returncode == 0
    assert max(len(line) for line in proc.stdout.splitlines()) == 100
    assert "n=1" not in proc.stdout  # metadata only with -m


# --------------------------------------------------------------------------------------------
# Progress


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    docs = write_jsonl(tmp_path / "docs.jsonl", 3000)
    proc = moss(tmp_path, "index", "create", "p", str(docs), MOSS_PROGRESS_INTERVAL="0")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("indexing: ")]
    assert lines[0] == "indexing: 0/3000 docs (0%)"
    assert lines[-1].startswith("indexing: 3000/3000 docs (100%), ")
    middle = lines[1:-1]
    assert middle and all("docs/s, ETA " in line for line in middle)
    done = [int(line.split()[1].split("/")[0]) for line in lines]
    assert done == sorted(done)
    assert "\r" not in proc.stderr
    quiet = moss(tmp_path, "index", "create", "q", str(docs), "-q")
    assert quiet.returncode == 0 and quiet.stderr == ""


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    import fcntl
    import pty
    import termios

    docs = write_jsonl(tmp_path / "docs.jsonl", 200)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    drawn: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's last writer is gone
                return
            if not chunk:
                return
            drawn.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moss", "index", "create", "t", str(docs)],
            stdout=subprocess.PIPE,
            stderr=slave,
            env=env_for(tmp_path),
        )
        os.close(slave)
        out, _ = proc.communicate(timeout=60)
        reader.join(10)
    finally:
        os.close(master)
    assert proc.returncode == 0
    text = b"".join(drawn).decode(errors="replace")
    assert "\r" in text and "200/200" in text and "doc/s" in text  # tqdm: rate and ETA
    assert b"Created index 't'" in out


# --------------------------------------------------------------------------------------------
# Server errors


def test_serve_errors_are_one_line(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    missing = moss(tmp_path, "serve", "--data", str(tmp_path / "typo"))
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and "moss projects create --data" in missing.stderr
    assert not (tmp_path / "typo").exists()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "srv").mkdir()
        busy = moss(tmp_path, "serve", "--data", str(tmp_path / "srv"), "--port", str(port))
    assert busy.returncode == 1
    assert busy.stderr == (
        f"error: port {port} on 127.0.0.1 is already in use (choose another with --port)\n"
    )


def test_auth_errors_against_a_server(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    from moss.server.testing import ThreadedServer

    with ThreadedServer(tmp_path / "srv") as server:
        project_id, key = server.project
        url = {"MOSS_SERVER_URL": server.url, "MOSS_PROJECT_ID": project_id}
        ok = moss(tmp_path, "index", "list", "--json", MOSS_PROJECT_KEY=key, **url)
        assert ok.returncode == 0 and json.loads(ok.stdout) == []
        wrong = moss(tmp_path, "index", "list", MOSS_PROJECT_KEY=key + "x", **url)
        assert wrong.returncode == 1
        assert wrong.stderr.startswith("error: the server rejected the project id/key (set ")
        broken = moss(tmp_path, "index", "list", MOSS_PROJECT_KEY="bad\nkey", **url)
        assert broken.returncode == 1 and "rejected the project id/key" in broken.stderr
        assert "bad" not in broken.stderr  # the key is never echoed
        empty = moss(tmp_path, "index", "list", MOSS_PROJECT_KEY="", **url)
        assert empty.returncode == 1 and empty.stderr.count("\n") == 1
        assert empty.stderr.startswith("error: no project key for the server at ")
    gone = moss(tmp_path, "index", "list", MOSS_PROJECT_KEY=key, **url)
    assert gone.returncode == 1 and "cannot reach the moss server" in gone.stderr
    assert gone.stderr.count("\n") == 1
