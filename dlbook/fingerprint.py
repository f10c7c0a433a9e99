"""Stable descriptions and digests of the things that make a training run.

A checkpoint may only be resumed by the run that wrote it. To tell, the
training loop describes each ingredient (model, optimizer, data, step
function, ...) with :func:`describe` and compares digests. A description
must be the same in every process (no memory addresses, no ids) and must
change whenever the thing changes in a way that matters: a tensor by its
content, a module by its structure (``repr``), a function by its qualified
name, a ``functools.partial`` or a dataclass by its arguments.

Objects may describe themselves with a ``fingerprint()`` method returning a
string (the data loaders do).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import math
import re
import types
import weakref
from typing import Any

import numpy as np
import torch
from torch import nn

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
MAX_DEPTH = 6


# id(tensor) -> (weak reference, version counter, digest): a tensor that was
# digested and has not been modified in place since is not read again.
_DIGESTS: dict[int, tuple[weakref.ref, int, str]] = {}


def tensor_digest(t: torch.Tensor) -> str:
    """A digest of a tensor's shape, dtype and every byte of its content.

    Remembered for as long as the tensor lives and is not modified in place
    (its version counter, shared with its views, is unchanged), so the
    data of a loader is read once, not at every call of ``fit``.
    """
    key = id(t)
    cached = _DIGESTS.get(key)
    if cached is not None and cached[0]() is t and cached[1] == t._version:
        return cached[2]
    version = t._version
    data = t.detach()
    if data.layout != torch.strided:  # sparse COO, CSR, ...
        data = data.to_dense()
    flat = data.reshape(-1).contiguous().cpu()
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{tuple(data.shape)}|{data.dtype}|".encode())
    if flat.numel():
        h.update(flat.view(torch.uint8).numpy().data)
    result = h.hexdigest()
    try:
        ref = weakref.ref(t, lambda _, key=key: _DIGESTS.pop(key, None))
    except TypeError:
        return result
    _DIGESTS[key] = (ref, version, result)
    return result


def digest(text: str) -> str:
    """A short hex digest of a description."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _name(obj) -> str:
    module = getattr(obj, "__module__", None) or ""
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__
    return f"{module}.{qualname}" if module else qualname


def _own_repr(obj) -> str | None:
    """``repr(obj)`` when its class defines one that names no memory address."""
    if type(obj).__repr__ is object.__repr__:
        return None
    text = repr(obj)
    return None if _ADDRESS.search(text) else text


def _number(v) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    return repr(v)


def optimizer_settings(optimizer: torch.optim.Optimizer) -> list[dict]:
    """Every hyperparameter of every parameter group (the parameters themselves left out)."""
    return [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]


def describe(obj: Any, _depth: int = 0, _seen: set | None = None) -> str:
    """A description of ``obj`` that is the same in every process.

    Tensors and arrays are described by a digest of their content, modules
    by ``repr`` (their structure, not their weights), optimizers by their
    class and hyperparameters, functions by qualified name, partials and
    dataclasses by their arguments, other objects by their class and
    attributes.
    """
    seen = set() if _seen is None else _seen
    if obj is None or isinstance(obj, (bool, str, bytes)):
        return repr(obj)
    if isinstance(obj, (int, float, np.generic)):
        return _number(obj.item() if isinstance(obj, np.generic) else obj)
    if isinstance(obj, torch.Tensor):
        return f"tensor:{tensor_digest(obj)}"
    if isinstance(obj, np.ndarray):
        return f"array:{tensor_digest(torch.from_numpy(np.ascontiguousarray(obj)))}"
    if isinstance(obj, (torch.dtype, torch.device)):
        return str(obj)
    if _depth > MAX_DEPTH:
        return f"<{_name(type(obj))}>"
    if id(obj) in seen:
        return f"<cycle {_name(type(obj))}>"
    seen = seen | {id(obj)}
    d = functools.partial(describe, _depth=_depth + 1, _seen=seen)

    method = getattr(obj, "fingerprint", None)
    if callable(method) and not inspect.isclass(obj):
        return f"fingerprint:{method()}"
    if isinstance(obj, (list, tuple)):
        return f"{type(obj).__name__}[" + ", ".join(d(v) for v in obj) + "]"
    if isinstance(obj, (set, frozenset)):
        return "{" + ", ".join(sorted(d(v) for v in obj)) + "}"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{d(k)}: {d(v)}" for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))) + "}"
    if isinstance(obj, nn.Module):
        return f"module:{repr(obj)}"
    if isinstance(obj, torch.optim.Optimizer):
        return f"{_name(type(obj))}({d(optimizer_settings(obj))})"
    if isinstance(obj, functools.partial):
        return f"partial({d(obj.func)}, {d(list(obj.args))}, {d(obj.keywords)})"
    if isinstance(obj, types.MethodType):
        return f"method({d(obj.__self__)}.{obj.__func__.__name__})"
    if inspect.isfunction(obj):
        # The name, plus the values a closure captured (a lambda's settings).
        cells = obj.__closure__ or ()
        captured = []
        for cell in cells:
            try:
                captured.append(d(cell.cell_contents))
            except ValueError:  # an empty cell
                captured.append("<empty>")
        defaults = list(obj.__defaults__ or ()) + sorted((obj.__kwdefaults__ or {}).items())
        return f"function:{_name(obj)}({', '.join(captured)}; defaults {d(defaults)})"
    if inspect.isclass(obj) or inspect.isbuiltin(obj) or inspect.isroutine(obj):
        return _name(obj)
    if isinstance(obj, torch.utils.data.DataLoader):
        return (f"DataLoader({d(obj.dataset)}, batch_size={obj.batch_size}, drop_last={obj.drop_last}, "
                f"sampler={_name(type(obj.sampler))})")
    if isinstance(obj, torch.utils.data.TensorDataset):
        return f"TensorDataset({d(list(obj.tensors))})"
    if dataclasses.is_dataclass(obj):
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        return f"{_name(type(obj))}({d(fields)})"
    own = _own_repr(obj)
    if own is not None:
        return own
    attrs = getattr(obj, "__dict__", None)
    if attrs is None:
        return _name(type(obj))
    public = {k: v for k, v in attrs.items() if not k.startswith("_")}
    return f"{_name(type(obj))}({d(public)})"
