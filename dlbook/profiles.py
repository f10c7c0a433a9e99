"""Run profiles: ``smoke`` for CI, ``full`` for what the book shows.

The active profile comes from the environment variable ``DLBOOK_PROFILE``
(default ``full``). Every size, epoch count and subset in a chapter goes
through :func:`budget`, so one notebook serves both profiles.
"""

from __future__ import annotations

import os
from typing import TypeVar

PROFILES = ("smoke", "full")
DEFAULT_PROFILE = "full"

T = TypeVar("T")


def get_profile() -> str:
    """Return the active profile, ``"smoke"`` or ``"full"``.

    Raises:
        ValueError: if ``DLBOOK_PROFILE`` is set to anything else.
    """
    value = os.environ.get("DLBOOK_PROFILE", "").strip() or DEFAULT_PROFILE
    if value not in PROFILES:
        raise ValueError(
            f"DLBOOK_PROFILE must be one of {', '.join(PROFILES)}; got {value!r}"
        )
    return value


def is_smoke() -> bool:
    """True when the smoke profile is active."""
    return get_profile() == "smoke"


def budget(*, smoke: T, full: T) -> T:
    """Pick the value for the active profile.

    >>> import os; os.environ["DLBOOK_PROFILE"] = "smoke"
    >>> budget(smoke=1, full=20)
    1
    """
    return smoke if get_profile() == "smoke" else full
