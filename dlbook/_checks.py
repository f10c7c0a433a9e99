"""Argument checks shared by dlbook's public functions.

A wrong number (a float or a bool where an int belongs, a negative size,
NaN) is a ``ValueError``, as in the rest of dlbook; an object of the wrong
kind (not a tensor, not a module, not callable, a switch that is not True
or False) is a ``TypeError``, as in torch. Either names the argument, what
was expected and what came. NumPy integers, floats and bools are accepted
wherever Python's are.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from torch import nn


def describe(value: Any) -> str:
    """``repr`` of a short value, else its type: for error messages."""
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"


def is_int(value: Any) -> bool:
    """True for a Python or NumPy integer; False for a bool, a float or anything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_int(value: Any, name: str, minimum: int | None = None) -> int:
    """``value`` as an ``int``: a Python or NumPy integer (not a bool) of at least ``minimum``."""
    if not is_int(value):
        expected = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {expected}; got {describe(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {int(value)}")
    return int(value)


def check_pair(value: Any, name: str, minimum: int | None = None) -> tuple[int, int]:
    """An int, or a pair of ints, as a pair of ints of at least ``minimum``."""
    if is_int(value):
        value = (value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints; got {describe(value)}")
    first, second = (check_int(v, name, minimum) for v in value)
    return first, second


def check_float(value: Any, name: str, minimum: float | None = None, maximum: float | None = None,
                *, open_max: bool = False) -> float:
    """``value`` as a finite ``float`` in [minimum, maximum] (or [minimum, maximum) with ``open_max``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {describe(value)}")
    value = float(value)
    low_ok = minimum is None or value >= minimum
    high_ok = maximum is None or (value < maximum if open_max else value <= maximum)
    if not (low_ok and high_ok):
        low = "(-inf" if minimum is None else f"[{minimum}"
        high = "inf)" if maximum is None else f"{maximum}{')' if open_max else ']'}"
        raise ValueError(f"{name} must lie in {low}, {high}; got {value}")
    return value


def check_bool(value: Any, name: str) -> bool:
    """``value`` as a ``bool``; a string such as ``"no"`` would silently count as true."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {describe(value)}")
    return bool(value)


def check_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string; got {describe(value)}")
    return value


def check_tensor(value: Any, name: str, floating: bool = False) -> torch.Tensor:
    """``value`` when it is a tensor (of a floating dtype, with ``floating``)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
    if floating and not value.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype (float32, ...); got {value.dtype}")
    return value


def check_module(value: Any, name: str = "model") -> nn.Module:
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module; got {type(value).__name__}")
    return value


def check_callable(value: Any, name: str) -> Any:
    if not callable(value):
        raise TypeError(f"{name} must be callable (a function); got {describe(value)}")
    return value


def check_device(value: Any, name: str = "device") -> torch.device:
    """A ``torch.device`` from a device or a name such as ``"cpu"`` or ``"cuda:0"``.

    A name torch cannot read is one line naming the devices dlbook uses,
    not torch's list of every device type it was built to know.
    """
    if isinstance(value, torch.device):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a device name such as 'cpu' or 'cuda', or a torch.device; "
                        f"got {describe(value)}")
    try:
        return torch.device(value)
    except (RuntimeError, ValueError):
        raise ValueError(f"{name} must be a device name: 'cpu', 'cuda', 'cuda:N' (N = 0, 1, ...) or 'mps'; "
                         f"got {value!r}") from None
