"""Argument checks of :mod:`dlbook.data` beyond the package-wide ones in :mod:`dlbook._checks`."""

from __future__ import annotations

from typing import Iterable

from .._checks import check_int


def check_choice(value, name: str, choices: Iterable[str]) -> str:
    """``value`` when it is one of ``choices``; otherwise a ``ValueError`` listing them."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_limit(value, name: str = "limit") -> int | None:
    """``None`` (no limit) or a positive integer; otherwise a ``ValueError`` naming ``name``."""
    if value is None:
        return None
    try:
        return check_int(value, name, minimum=1)
    except ValueError:
        raise ValueError(f"{name} must be a positive integer or None; got {value!r}") from None
