"""Checked exercises.

Each exercise has a key such as ``"cnn.output_size"`` and a checker kept in
this package. :func:`check` runs the checker on a reader's answer and prints
the verdict: a pass, with the worked explanation folded behind a click in a
notebook (the website shows stored outputs right under the exercise), or a
fail with a hint that does not give the answer away.

A chapter's exercises live in a module of this package named after the
chapter (``dlbook/exercises/cnn.py``); a new module is found by itself.
"""

from __future__ import annotations

import contextlib
import functools
import html
import importlib
import math
import pkgutil
import re
import textwrap
import types
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .._checks import check_bool, is_int  # noqa: F401 - checkers use is_int: np.int64(7) is as right as 7

_REGISTRY: dict[str, "Exercise"] = {}
_KEY = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+$")
WIDTH = 78  # verdicts are wrapped to fit a notebook's output area


def as_number(value) -> float | None:
    """``value`` as a float when it is a finite real number (Python, NumPy or
    a one-element tensor), else None: for checkers of numeric answers."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    try:
        if isinstance(value, (bool, str, bytes)) or not math.isfinite(float(value)):
            return None
        return float(value)
    except (TypeError, ValueError):
        return None


def near(got: float, right: float, rel: float) -> bool:
    """``got`` within a relative tolerance ``rel`` of ``right``."""
    return abs(got - right) <= rel * abs(right)


class Wrong(Exception):
    """Raised by a checker: the answer is wrong; the message is the hint."""


@dataclass(frozen=True)
class Exercise:
    key: str
    prompt: str
    checker: Callable[[Any], None]
    explanation: str


@dataclass(frozen=True)
class Result:
    key: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.key}: {self.message}"

    def _ipython_display_(self) -> None:
        """Show nothing in a notebook: :func:`check` has printed the verdict already."""


@contextlib.contextmanager
def forbid(rule: str, *targets: tuple[Any, str]):
    """Enforce an exercise's rule: within the block, calling any of ``targets``
    (``(module_or_class, "name")`` pairs) raises :class:`Wrong` naming the rule
    and what the answer called. Everything is restored afterwards."""
    missing = object()  # a name the owner inherits: restored by deleting our override
    saved = [(owner, name, vars(owner).get(name, missing)) for owner, name in targets]

    def refuse(name):
        def refused(*args, **kwargs):
            raise Wrong(f"the rule is: {rule}. Your answer called {name}.")
        return refused

    try:
        for owner, name, _ in saved:
            label = f"{getattr(owner, '__name__', type(owner).__name__)}.{name}"
            setattr(owner, name, refuse(label))
        yield
    finally:
        for owner, name, original in saved:
            if original is missing:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


# Enforcing a rule on functions, not on names ----------------------------------------
# forbid() replaces a module's or a class's attribute, so an answer that bound the
# function to another name before the check (``from numpy.lib.stride_tricks import
# sliding_window_view``, ``init = nn.Conv2d.__init__``) still reaches it. forbid_ops()
# sees torch's operators however they are reached, but a function written in Python
# out of ordinary operators (dlbook's, numpy's, scipy's, nn.MultiheadAttention's
# path that returns weights) looks at that level like any answer. forbid_functions
# refuses the function objects themselves: every name, saved method, subclass and deep
# copy of a module shares them.


def _python_functions(obj) -> list[types.FunctionType]:
    """The Python functions that run when ``obj`` is called: ``obj`` itself and
    what it wraps (``functools.wraps`` decorators such as ``torch.no_grad``,
    numpy's array-function dispatchers). Empty for a built-in."""
    found: list[types.FunctionType] = []
    todo = [obj]
    while todo:
        f = todo.pop()
        f = getattr(f, "__func__", f)  # a method, staticmethod or classmethod
        if not isinstance(f, types.FunctionType) and not hasattr(f, "_implementation"):
            continue
        if isinstance(f, types.FunctionType):
            if any(f is g for g in found):
                continue
            found.append(f)
        todo += [inner for inner in (getattr(f, "__wrapped__", None), getattr(f, "_implementation", None))
                 if inner is not None]
    return found


@functools.lru_cache(maxsize=512)
def _refusing_code(free_variables: int, message: str) -> types.CodeType:
    """A function body that raises :class:`Wrong` with ``message``. It runs
    with the globals and closure of the function it replaces, so it imports
    ``Wrong`` by name and has as many free variables as the body it replaces
    (Python swaps a function's code only for one with as many)."""
    cells = [f"_cell{i}" for i in range(free_variables)]
    lines = ["def _outer():", *(f"    {c} = None" for c in cells),
             "    def refused(*args, **kwargs):",
             f"        raise __import__('dlbook.exercises', fromlist=['Wrong']).Wrong({message!r})"]
    if cells:
        lines.append(f"        {', '.join(cells)},  # never reached: makes them free variables")
    lines.append("    return refused")
    namespace: dict = {}
    exec("\n".join(lines), namespace)  # noqa: S102 - our own fixed template
    return namespace["_outer"]().__code__


@contextlib.contextmanager
def forbid_functions(rule: str, *targets: tuple):
    """Enforce an exercise's rule on functions: like :func:`forbid`
    (``(owner, "name")`` pairs), but within the block the
    Python functions behind the targets refuse, whatever name reaches them.
    A built-in target (a ufunc, a C function) is replaced by name, as forbid
    does; the rule's operator-level part is what catches those."""
    swaps: list[tuple[types.FunctionType, str]] = []
    by_name = []
    for owner, name in targets:
        label = f"{getattr(owner, '__name__', type(owner).__name__)}.{name}"
        functions = _python_functions(getattr(owner, name))
        if not functions:
            by_name.append((owner, name))
        swaps += [(f, label) for f in functions if not any(f is g for g, _ in swaps)]
    swapped: list[tuple[types.FunctionType, types.CodeType]] = []
    try:
        with forbid(rule, *by_name):
            for f, label in swaps:
                code = _refusing_code(len(f.__code__.co_freevars),
                                      f"the rule is: {rule}. Your answer called {label}.")
                swapped.append((f, f.__code__))
                f.__code__ = code
            yield
    finally:
        for f, code in reversed(swapped):
            f.__code__ = code


def module_functions(module) -> list[tuple]:
    """(module, name) of every function defined in ``module`` (not those it imports)."""
    return [(module, name) for name, value in sorted(vars(module).items())
            if isinstance(value, types.FunctionType) and value.__module__ == module.__name__]


# Operators that make or fill the storage of a tensor: building a layer runs them (torch.empty,
# then an init such as uniform_ or fill_), so do a deep copy (clone), a layer built on the meta
# device, skip_init (empty_like) and a resize. A count needs none of them: an answer that
# computes with Python integers never reaches torch's operators at all.
LAYER_OPS = ("empty", "uniform", "normal", "fill", "zero", "ones", "full", "rand", "clone", "copy", "set_",
             "resize")


class _ForbidOps:
    """A torch dispatch mode that refuses every operator whose name contains one of ``parts``."""

    def __init__(self, rule: str, parts: tuple[str, ...]):
        from torch.utils._python_dispatch import TorchDispatchMode

        outer = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = func.overloadpacket.__name__
                if any(part in name for part in outer.parts):
                    raise Wrong(f"the rule is: {outer.rule}. Your answer used the operation {name}.")
                return func(*args, **(kwargs or {}))

        self.rule, self.parts, self.mode = rule, parts, Mode()

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


def forbid_ops(rule: str, *parts: str) -> _ForbidOps:
    """Enforce an exercise's rule at the level of PyTorch's operators: within
    the block, any tensor operation whose name contains one of ``parts``
    (``"conv"``, ``"fft"``, ...) raises :class:`Wrong`, however the answer
    reached it (a function, a method, a private alias)."""
    return _ForbidOps(rule, tuple(parts))


def exercise(key: str, prompt: str, explanation: str):
    """Decorator: register ``checker`` as the test of exercise ``key``
    (``"topic.name"``, lower case)."""
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError(f"an exercise key is 'topic.name' in lower case; got {key!r}")
    for name, text in (("prompt", prompt), ("explanation", explanation)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"exercise {key!r}: {name} must be a non-empty string; got {text!r}")

    def register(checker: Callable[[Any], None]) -> Callable[[Any], None]:
        if key in _REGISTRY:
            raise ValueError(f"exercise {key!r} is defined twice")
        _REGISTRY[key] = Exercise(key, prompt, checker, explanation)
        return checker
    return register


def _load_all() -> None:
    """Import every module of this package: importing one registers its exercises."""
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


def keys() -> list[str]:
    """All exercise keys."""
    _load_all()
    return sorted(_REGISTRY)


def get(key: str) -> Exercise:
    """The exercise registered under ``key``."""
    _load_all()
    if not isinstance(key, str) or key not in _REGISTRY:
        raise ValueError(f"unknown exercise {key!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def check(key: str, answer: Any, verbose: bool = True) -> Result:
    """Check ``answer`` to exercise ``key``; print and return the verdict.

    A wrong answer gives a hint; an answer that raises (for example the
    ``NotImplementedError`` of a student stub) says what it raised.
    """
    ex = get(key)
    verbose = check_bool(verbose, "verbose")
    try:
        ex.checker(answer)
    except Wrong as hint:
        result = Result(key, False, f"not yet. Hint: {hint}")
    except NotImplementedError:
        result = Result(key, False, "not yet: the answer still raises NotImplementedError. Fill it in and run the cell again.")
    except Exception as err:  # noqa: BLE001 - a reader's code may raise anything
        result = Result(key, False, f"your answer raised {type(err).__name__}: {err}")
    else:
        result = Result(key, True, ex.explanation)
    if verbose:
        _show(result)
    return result


def _wrap(text: str) -> str:
    return textwrap.fill(text, WIDTH, subsequent_indent="    ", break_long_words=False, break_on_hyphens=False)


def _in_notebook() -> bool:
    """True inside a Jupyter kernel, where rich (HTML) output is shown."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def _show(result: Result) -> None:
    """Print the verdict; after a pass, put the worked explanation behind a click.

    The verdict (``PASS [key]``, or ``FAIL [key]`` with a hint that does not
    give the answer away) is always visible. A pass's explanation holds the
    answer, and the website shows stored outputs right under the exercise:
    in a notebook it goes into a folded ``<details>`` block (its plain-text
    form says only that it is folded), elsewhere it is printed below.
    """
    if not result.passed:
        print(_wrap(f"FAIL [{result.key}] {result.message}"))
        return
    print(f"PASS [{result.key}]")
    if not _in_notebook():
        print(_wrap(f"Why: {result.message}"))
        return
    from IPython.display import display

    body = html.escape(result.message)
    display({
        "text/html": f'<details class="dlbook-explanation"><summary>Why it is right (the worked answer)'
                     f'</summary><p>{body}</p></details>',
        "text/plain": "(the worked answer is folded; open it in a notebook viewer that shows HTML)",
    }, raw=True)
