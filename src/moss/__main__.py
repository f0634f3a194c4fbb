"""``python -m moss``: the same command line as the ``moss`` script (see :mod:`moss.cli`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
