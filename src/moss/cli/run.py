"""``main``: parse, run one command, and turn every way it can end into an exit status.

Exit statuses: 0 success; 1 a moss error (one line ``error: <message>`` on stderr); 2 a usage
error (argparse); 130 interrupted by Ctrl-C before anything was changed; 141 stdout was closed
early (``moss query … | head -1``): the reader has what it wanted, so nothing is printed, but
the status is the one a program killed by SIGPIPE reports, so ``set -o pipefail`` scripts see
what they see with other tools.

Why errors are rewritten here: a few library messages are right for a Python caller but unhelpful
at a shell (a rejected key is "invalid project credentials"); the CLI says what to set.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from ..errors import NETWORK, UNAUTHORIZED, MossError
from .parser import build_parser

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_INTERRUPTED", "main"]

EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def _message(e: BaseException) -> str:
    if isinstance(e, MossError) and e.code == UNAUTHORIZED:
        return (
            "the server rejected the project id/key (set MOSS_PROJECT_ID and MOSS_PROJECT_KEY, "
            "or pass --project-id/--project-key)"
        )
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, MossError) and e.code == NETWORK:
        text += " (is `moss serve` running there?)"
    return text


def _resolve(spec: str) -> Callable[..., Any]:
    module, _, name = spec.partition(":")
    fn: Callable[..., Any] = getattr(importlib.import_module(f".{module}", __package__), name)
    return fn


def _silence_stdout() -> None:
    """Point stdout at the null device so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real file descriptor (captured in tests)
        pass


def _ignore_further_interrupts() -> None:
    """After an interrupt, the interpreter's shutdown must not be cut into a traceback."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 error, 2 usage, 130 interrupted, 141 closed
    pipe). Bare ``moss`` (or ``moss index``) prints its help and returns 0."""
    try:
        code = _main(argv)
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:  # before or after the event loop (imports, the server)
        sys.stderr.write("\ninterrupted\n")
        _ignore_further_interrupts()
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for opt in ("project_id", "project_key", "server_url"):
        if not hasattr(args, opt):
            setattr(args, opt, None)
    if args.handler is None:
        args.help_parser.print_help(sys.stdout)
        return 0
    from .interrupt import Interrupted, run_cancellable  # asyncio: 35 ms, not for --help

    try:
        handler = _resolve(args.handler)
        if args.handler == "server:serve":
            code: int = handler(args)
            return code
        result: int = run_cancellable(handler(args))
        return result
    except Interrupted as e:
        sys.stderr.write(f"\n{e}\n")
        sys.stderr.flush()
        _ignore_further_interrupts()
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise
    except (MossError, RuntimeError, TimeoutError, OSError) as e:
        sys.stderr.write(f"error: {_message(e)}\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
