"""Claims that the code checks.

A sentence that rests on a measurement ("the LSTM is fastest at every
length", "within noise of the paper") can be right on the run it was
written from and wrong on the next. In a chapter, such a statement goes
through :func:`claim` in the cell that measures it::

    dlbook.claim("momentum gets furthest in 100 steps",
                 holds=dist["momentum"] > max(dist["sgd"], dist["adam"]),
                 evidence={"momentum": dist["momentum"], "sgd": dist["sgd"], "adam": dist["adam"]})

In the full profile (what the book shows) a claim that holds prints the
statement with its evidence, and a claim that does not hold stops the
notebook with both, so a stored chapter never contradicts its outputs. In
the smoke profile (tiny data, for CI) it prints that it was not checked.
"""

from __future__ import annotations

import math
import numbers
import textwrap
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from ._checks import check_str, describe
from .profiles import is_smoke

WIDTH = 78  # the width of a notebook's output area


class ClaimError(AssertionError):
    """A claim in the text that the measurement beside it does not support."""


@dataclass(frozen=True)
class Claim:
    """A statement, whether this run's measurement supports it, and the evidence."""

    statement: str
    holds: bool
    evidence: str
    checked: bool  # False in the smoke profile

    def __bool__(self) -> bool:
        return self.holds

    def _ipython_display_(self) -> None:
        """Show nothing more in a notebook: :func:`claim` has printed it."""


def _number(value: float) -> str:
    if isinstance(value, numbers.Integral):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
        return f"{value:.3g}"
    return f"{value:.4g}"


def _evidence_text(evidence: Any) -> str:
    if evidence is None:
        return ""
    if isinstance(evidence, str):
        return evidence
    if isinstance(evidence, Mapping):
        parts = []
        for key, value in evidence.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, np.generic):
                value = value.item()
            text = _number(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else str(value)
            parts.append(f"{key} {text}")
        return "; ".join(parts)
    return str(evidence)  # a stats result (Spread, Estimate, Paired, McNemar) says what it is


def _as_bool(holds: Any) -> bool:
    if isinstance(holds, torch.Tensor) and holds.numel() == 1 and holds.dtype == torch.bool:
        return bool(holds.item())
    if isinstance(holds, (bool, np.bool_)):
        return bool(holds)
    raise TypeError(f"holds must be True or False (the comparison that checks the statement); "
                    f"got {describe(holds)}")


def claim(statement: str, holds: Any, evidence: Any = None) -> Claim:
    """Print ``statement`` with its ``evidence``; stop a full-profile run if it does not hold.

    Args:
        statement: the sentence, as the text says it.
        holds: the comparison that decides it (a bool, a NumPy bool or a
            one-element bool tensor), computed from this run's numbers.
        evidence: the numbers it rests on: a string, a mapping of names to
            numbers, or a :mod:`dlbook.stats` result. Where the numbers are
            noisy, give the margin in standard errors or the spread over
            seeds.

    Raises:
        ClaimError: in the full profile, when ``holds`` is false.
    """
    statement = check_str(statement, "statement").strip()
    if not statement:
        raise ValueError("statement must say what is claimed; got an empty string")
    ok = _as_bool(holds)
    text = _evidence_text(evidence)
    result = Claim(statement, ok, text, checked=not is_smoke())
    if not result.checked:
        head = "CLAIM NOT CHECKED (smoke profile: tiny data proves nothing):"
    elif ok:
        head = "CLAIM HOLDS:"
    else:
        raise ClaimError(f"This run does not support the claim {statement!r}. Evidence: {text or 'none given'}. "
                         f"Change the text or the experiment, then run the chapter again.")
    lines = [textwrap.fill(f"{head} {statement}", WIDTH, subsequent_indent="    ",
                           break_long_words=False, break_on_hyphens=False)]
    if text:
        lines.append(textwrap.fill(f"evidence: {text}", WIDTH, initial_indent="    ", subsequent_indent="    ",
                                   break_long_words=False, break_on_hyphens=False))
    print("\n".join(lines))
    return result
