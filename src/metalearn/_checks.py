"""Argument checks shared by the subpackages (one message format everywhere)."""

from __future__ import annotations

import numbers


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; a ``TypeError``/``ValueError`` naming ``name`` else."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)
