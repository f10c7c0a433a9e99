"""Stable descriptions and digests of the things that make a training run.

A checkpoint may only be resumed by the run that wrote it. To tell, the
training loop describes each ingredient (model, optimizer, data, step
function, ...) with :func:`describe` and compares digests. A description
must be the same in every process (no memory addresses, no ids) and must
change whenever the thing changes in a way that matters: a tensor by its
content, a module by its state (its class, its settings such as
``label_smoothing`` or ``p``, its buffers by content, its parameters by
shape and dtype, and its submodules), a function by its qualified name, a
``functools.partial`` or a dataclass by its arguments.

What a description leaves out, the *code*, :func:`code_description` covers:
the source of the functions and of the methods of the classes that an object
runs, outside torch (whose version is known), so that an edited
``forward()`` or step function counts as a change.

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
import sys
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


# What nn.Module.__init__ puts in every module's __dict__: the registries of
# parameters, buffers, submodules and hooks (described apart or not at all),
# and the training flag (fit sets it).
_MODULE_INTERNALS = frozenset(nn.Module().__dict__) | {"training"}


def _plain_value(v) -> bool:
    """Whether ``v`` is a number, string, None or a tuple or list of those."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    return isinstance(v, (tuple, list)) and all(_plain_value(x) for x in v)


def _describe_module(m: nn.Module, seen: set) -> str:
    """A module by its state: its class, its settings (the non-module
    attributes in its ``__dict__``: public ones, and, for classes outside
    torch, private ones that hold plain values), its buffers by content,
    its parameters by shape, dtype and ``requires_grad`` (their values are
    the initial weights, digested apart), and its submodules, in order.
    Never its ``repr``, which leaves settings out (``label_smoothing`` and
    ``weight`` of a loss)."""
    d = functools.partial(describe, _depth=1, _seen=seen)  # each module's settings start at depth 1: modules nest deep
    # torch's own layers keep their settings in public attributes (their private ones
    # may hold ids); a user's layer may keep a setting in a private one (self._p = p).
    private = not _versioned(type(m))
    settings = {k: v for k, v in vars(m).items()
                if k not in _MODULE_INTERNALS and (not k.startswith("_") or private and _plain_value(v))}
    params = ", ".join(f"{k}: " + ("None" if p is None else f"{tuple(p.shape)} {p.dtype} grad={p.requires_grad}")
                       for k, p in m._parameters.items())
    buffers = ", ".join(f"{k}: {d(b)}" for k, b in m._buffers.items())
    transient = sorted(m._non_persistent_buffers_set)
    children = []
    for k, child in m._modules.items():
        if child is None:
            children.append(f"{k}: None")
        elif id(child) in seen:
            children.append(f"{k}: <cycle {_name(type(child))}>")
        else:
            children.append(f"{k}: {_describe_module(child, seen | {id(child)})}")
    return (f"module:{_name(type(m))}({d(settings)}; parameters {{{params}}}; buffers {{{buffers}}} "
            f"non-persistent {transient}; children {{{', '.join(children)}}})")


def describe(obj: Any, _depth: int = 0, _seen: set | None = None) -> str:
    """A description of ``obj`` that is the same in every process.

    Tensors and arrays are described by a digest of their content, modules
    by their state (class, settings, buffers, parameter shapes, submodules:
    not their weights, and not their ``repr``, which omits settings),
    optimizers by their class and hyperparameters, functions by qualified
    name, partials and dataclasses by their arguments, other objects by their
    class and attributes.
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
    if id(obj) in seen:
        return f"<cycle {_name(type(obj))}>"
    method = getattr(obj, "fingerprint", None)
    if isinstance(obj, nn.Module) and not callable(method):  # however deep: its submodules are its structure
        return _describe_module(obj, seen | {id(obj)})
    if _depth > MAX_DEPTH:
        return f"<{_name(type(obj))}>"
    seen = seen | {id(obj)}
    d = functools.partial(describe, _depth=_depth + 1, _seen=seen)

    if callable(method) and not inspect.isclass(obj):
        return f"fingerprint:{method()}"
    if isinstance(obj, (list, tuple)):
        return f"{type(obj).__name__}[" + ", ".join(d(v) for v in obj) + "]"
    if isinstance(obj, (set, frozenset)):
        return "{" + ", ".join(sorted(d(v) for v in obj)) + "}"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{d(k)}: {d(v)}" for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))) + "}"
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


# code -------------------------------------------------------------------------

def _versioned(obj) -> bool:
    """Whether ``obj`` comes with a version already recorded: torch's own
    code, the standard library's and builtins. Their source is not read."""
    top = (getattr(obj, "__module__", None) or "").partition(".")[0]
    return top == "torch" or (top in sys.stdlib_module_names and top != "__main__")


def _const_text(c) -> str:
    if isinstance(c, types.CodeType):
        return _code_text(c)
    if isinstance(c, (frozenset, set)):  # the order of a set's items varies between processes
        return "{" + ", ".join(sorted(_const_text(x) for x in c)) + "}"
    if isinstance(c, tuple):
        return "(" + ", ".join(_const_text(x) for x in c) + ")"
    return repr(c)


def _code_text(code: types.CodeType) -> str:
    """A code object by what it does, not where it sits: its bytecode, the
    names it reads and its constants (nested functions included), without
    its file name or line numbers."""
    return (f"code {code.co_qualname}({code.co_argcount}, {code.co_kwonlyargcount}, {code.co_flags}) "
            f"{code.co_code.hex()} names {code.co_names} locals {code.co_varnames} free {code.co_freevars} "
            f"cells {code.co_cellvars} exceptions {code.co_exceptiontable.hex()} "
            f"consts [{', '.join(_const_text(c) for c in code.co_consts)}]")


def _names_read(code: types.CodeType) -> list[str]:
    """The global (and attribute) names a code object and its nested functions read."""
    names = list(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names.extend(_names_read(c))
    return names


def function_source(func: types.FunctionType) -> str:
    """The source of ``func`` when Python can find it (a file, a notebook
    cell), else a description of its code object that changes when its code
    does (a function made by ``exec`` of a string)."""
    try:
        return "source " + inspect.getsource(func)
    except Exception:  # noqa: BLE001 - no file (OSError), or one that changed on disk and no longer parses
        return _code_text(func.__code__)


class _CodeCollector:
    """Collects ``(name, digest of source)`` for every function outside torch
    that some objects run: functions and their closures, defaults and the
    functions and classes of their own module that they name; the methods of
    classes (and of their bases); the classes of a module's submodules; the
    attributes of objects (a dataclass's ``loss_fn``)."""

    def __init__(self):
        self.parts: list[str] = []
        self.seen: set[int] = set()
        self.keep: list = []  # what ``seen`` refers to stays alive until the end

    def _first_visit(self, obj) -> bool:
        if id(obj) in self.seen:
            return False
        self.seen.add(id(obj))
        self.keep.append(obj)
        return True

    def add(self, obj, depth: int = 0) -> None:
        if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, torch.Tensor, np.ndarray,
                                           np.generic, torch.dtype, torch.device)):
            return
        if depth > MAX_DEPTH or not self._first_visit(obj):
            return
        if isinstance(obj, nn.Module):
            for m in obj.modules():
                self.add_class(type(m))
                if m is not obj and not self._first_visit(m):
                    continue
                for key, value in vars(m).items():  # functions kept in attributes (self.act = my_act)
                    if not key.startswith("_"):
                        self.add(value, 1)
            return
        if isinstance(obj, functools.partial):
            for value in (obj.func, *obj.args, *obj.keywords.values()):
                self.add(value, depth + 1)
            return
        if isinstance(obj, types.MethodType):
            self.add(obj.__func__, depth + 1)
            self.add(obj.__self__, depth + 1)
            return
        if inspect.isfunction(obj):
            self.add_function(obj, depth)
            return
        if inspect.isclass(obj):
            self.add_class(obj)
            return
        if isinstance(obj, (list, tuple, set, frozenset)):
            for value in obj:
                self.add(value, depth + 1)
            return
        if isinstance(obj, dict):
            for value in obj.values():
                self.add(value, depth + 1)
            return
        if _versioned(type(obj)) or inspect.isroutine(obj) or inspect.ismodule(obj):
            return  # an optimizer, a builtin function, a module of Python or torch
        self.add_class(type(obj))
        for key, value in getattr(obj, "__dict__", {}).items():
            if not key.startswith("_"):
                self.add(value, depth + 1)

    def add_function(self, func: types.FunctionType, depth: int = 0) -> None:
        try:
            func = inspect.unwrap(func)
        except ValueError:  # a loop of __wrapped__: describe the outer function
            pass
        if _versioned(func):
            return
        self.parts.append(f"{_name(func)}: {digest(function_source(func))}")
        for cell in func.__closure__ or ():
            try:
                self.add(cell.cell_contents, depth + 1)
            except ValueError:  # an empty cell
                pass
        for value in (*(func.__defaults__ or ()), *(func.__kwdefaults__ or {}).values()):
            self.add(value, depth + 1)
        home = getattr(func, "__module__", None)
        for name in dict.fromkeys(_names_read(func.__code__)):
            value = func.__globals__.get(name)
            if (inspect.isfunction(value) or inspect.isclass(value)) and getattr(value, "__module__", None) == home:
                self.add(value, depth + 1)

    def add_class(self, cls: type) -> None:
        for klass in cls.__mro__:
            if _versioned(klass) or not self._first_visit(klass):
                continue
            for value in vars(klass).values():
                if isinstance(value, (staticmethod, classmethod)):
                    value = value.__func__
                if isinstance(value, property):
                    functions = [value.fget, value.fset, value.fdel]
                elif isinstance(value, functools.cached_property):
                    functions = [value.func]
                else:
                    functions = [value]
                for f in functions:
                    if inspect.isfunction(f):
                        self.add(f, 1)


def code_description(*objs: Any) -> str:
    """A description of the code that ``objs`` run, the same in every process.

    For every function outside torch and the standard library (whose versions
    are known) that the objects reach: its qualified name and a digest of its
    source, or, when Python cannot find the source, of its code object. A
    module reaches the methods of the classes of all its submodules (and of
    their base classes); a function its closure, its defaults and the
    functions and classes of its own module that it names; an object the
    methods of its class and what its public attributes reach. ``inspect``
    cannot read a class defined in a notebook, but it can read the class's
    methods: those are what is read.
    """
    collector = _CodeCollector()
    for obj in objs:
        collector.add(obj)
    return "\n".join(collector.parts)
