"""Metadata filters (docs/api.md §3.8): compile once, then test one document or a column store.

The parts, each with its design notes:

* :mod:`moss.filters_values` -- the scalars: :func:`parse_decimal` (the one definition of "a
  number", shared with ``sort_by``), stored values as text (§3.1), and the ``$near`` geometry
  (:func:`haversine_m` on a sphere of radius :data:`EARTH_RADIUS_M`).
* :mod:`moss.filters_compile` -- :func:`compile_filter` validates a whole filter (with exactly the
  §3.8 messages) into an immutable :class:`MetadataFilter`, whose ``matches`` tests one document.
* :mod:`moss.filters_columns` -- :class:`MetadataColumns`, the dictionary-encoded column store
  whose ``evaluate`` gives, row for row, exactly the answer of ``matches``.

This module is the one the rest of moss imports from.
"""

from __future__ import annotations

from .filters_columns import MetadataColumns
from .filters_compile import OPERATORS, MetadataFilter, compile_filter
from .filters_values import EARTH_RADIUS_M, haversine_m, parse_decimal

__all__ = [
    "EARTH_RADIUS_M",
    "OPERATORS",
    "MetadataColumns",
    "MetadataFilter",
    "compile_filter",
    "haversine_m",
    "parse_decimal",
]
