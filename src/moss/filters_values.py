"""The scalars of metadata filters (docs/api.md §3.8): numbers, stored values as text, geometry.

* **One definition of "a number"**, :func:`parse_decimal`, shared with ``sort_by`` (grouping.py):
  an ASCII decimal literal -- optional sign, digits with an optional fraction, optional exponent
  (``"10"``, ``"-9.5"``, ``".5"``, ``"5."``, ``"1e3"``, ``"+2E-4"``) -- whose value is finite in
  float64. Not numbers: ``"nan"``, ``"inf"``, ``"1e999"`` (overflows), hex, ``"1_000"``,
  surrounding whitespace, non-ASCII digits, ``""``. Numbers are compared as float64.
* **Stored values as text.** A non-string scalar converts as §3.1 says (``30`` -> ``"30"``,
  ``True`` -> ``"true"``, a float by ``repr``).
* **Geometry.** ``$near`` uses the haversine great-circle distance on a sphere of radius
  :data:`EARTH_RADIUS_M` = 6,371,008.8 m (the IUGG mean Earth radius). Numbers in the query and
  in the field's ``"lat,lng"`` may have spaces around them; a field value that is not exactly two
  such decimals does not match. Coordinates are not range checked: any three finite numbers form
  a valid query, as the §3.8 message says. :func:`haversine_m` is the scalar formula
  ``MetadataFilter.matches`` uses; ``_haversine_np`` its vectorised twin for the column store.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["EARTH_RADIUS_M", "haversine_m", "parse_decimal"]

EARTH_RADIUS_M = 6371008.8
"""Mean Earth radius (IUGG) in metres, used by ``$near``."""


def parse_decimal(value: str) -> float | None:
    """Parse ``value`` as a finite decimal number, the one rule for filters and ``sort_by``.

    A number is an ASCII decimal literal: an optional ``+``/``-``, digits with an optional
    fractional part (``"5."`` and ``".5"`` count), and an optional exponent (``"1e3"``). No
    surrounding whitespace, underscores, hex, or non-ASCII digits; ``nan``/``inf`` and literals
    that overflow float64 (``"1e999"``) are not numbers. Underflow rounds (``"1e-999"`` is 0.0).

    Args:
        value: a metadata value.

    Returns:
        The float64 value, or ``None`` if ``value`` is not a finite decimal.

    >>> [parse_decimal(s) for s in ["10", "-9.5", "1e3", " 1", "nan", "1e999", "abc"]]
    [10.0, -9.5, 1000.0, None, None, None, None]
    """
    if not isinstance(value, str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    # float() also takes whitespace, "_" separators, Unicode digits and nan/inf spellings.
    if (
        not math.isfinite(number)
        or not value.isascii()
        or "_" in value
        or value[0].isspace()
        or value[-1].isspace()
    ):
        return None
    return number


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance in metres between two points given in degrees (haversine)."""
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    # Convert before subtracting: two huge finite longitudes could overflow their difference.
    dl = math.radians(lng2) - math.radians(lng1)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    a = min(1.0, max(0.0, a))
    return 2.0 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def _haversine_np(
    lat1: float, lng1: float, lat2: npt.NDArray[np.float64], lng2: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    p1 = math.radians(lat1)
    p2 = np.radians(lat2)
    dl = np.radians(lng2) - math.radians(lng1)
    a = np.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    a = np.clip(a, 0.0, 1.0)
    result: npt.NDArray[np.float64] = 2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(a))
    return result


def _parse_point(value: str) -> tuple[float, float] | None:
    """``"lat,lng"`` (spaces around either number allowed) -> floats, else ``None``."""
    parts = value.split(",")
    if len(parts) != 2:
        return None
    lat = parse_decimal(parts[0].strip())
    lng = parse_decimal(parts[1].strip())
    if lat is None or lng is None:
        return None
    return lat, lng


def _cell_text(value: object) -> str | None:
    """A stored metadata value as text; non-string scalars get the §3.1 conversion."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        try:
            return _scalar_text(value)
        except ValueError:
            return None
    return None


def _scalar_text(value: bool | int | float) -> str:
    # int.__repr__/float.__repr__ rather than str()/repr(): subclasses (IntEnum, numpy.float64)
    # must convert like the plain number they are.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    return float.__repr__(value)


def _type_name(value: object) -> str:
    return "None" if value is None else type(value).__name__
