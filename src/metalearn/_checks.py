"""Argument checks shared by the subpackages (one message format everywhere)."""

from __future__ import annotations

import numbers


def check_int(name: str, value: object, minimum: int | None = None) -> int:
    """``value`` as an int (>= ``minimum`` when given).

    Raises:
        TypeError: naming ``name`` when ``value`` is not an integer (``bool`` and ``"5"``
            included).
        ValueError: naming ``name`` when it is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)
