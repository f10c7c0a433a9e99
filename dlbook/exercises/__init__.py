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
import html
import importlib
import pkgutil
import re
import textwrap
from dataclasses import dataclass
from typing import Any, Callable

from .._checks import check_bool, is_int  # noqa: F401 - checkers use is_int: np.int64(7) is as right as 7

_REGISTRY: dict[str, "Exercise"] = {}
_KEY = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+$")
WIDTH = 78  # verdicts are wrapped to fit a notebook's output area


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
