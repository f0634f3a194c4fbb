"""The ``moss`` command line: a thin shell over the public library API.

Why it is a package shaped like this: every command parses its arguments, makes a few library
calls and formats the result, so the CLI cannot drift from what a Python user gets. The modules
split by concern, and start-up cost decides what imports what:

* :mod:`.parser` — the ``argparse`` tree (no extra dependency). It names each command's handler
  as a string, so ``moss --help`` imports no command module and no library code (numpy, the
  engine, httpx); :mod:`.run` imports the one handler module a command needs.
* :mod:`.run` — :func:`main`: Ctrl-C (cancel at the next ``await``, exit 130, nothing
  half-applied), a closed stdout pipe (silent, exit 141) and the one-line ``error:`` messages.
* :mod:`.output` — JSON, and tables that fit the terminal; :mod:`.progress` — progress bars
  (tqdm on a terminal, plain periodic lines otherwise).
* :mod:`.common` — client construction, ingestion flags, and the embed-locally-then-push-once
  routine that ``index create`` and ``docs add`` share.
* :mod:`.index`, :mod:`.docs`, :mod:`.query` (query and eval), :mod:`.server` (``serve``,
  ``projects create``) — the command handlers; they import library modules inside the handlers.

docs/cli.md documents every command, flag, JSON key and exit code.
"""

from __future__ import annotations

from .parser import build_parser
from .run import main

__all__ = ["build_parser", "main"]
