"""The package's layers: the core never imports a topic, no module imports the
package's __init__, and no submodule can shadow what dlbook exports."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import sys
import types
from pathlib import Path

import pytest

import dlbook
from dlbook.results import CHAPTERS

PACKAGE = Path(dlbook.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def _imports(name: str, path: Path) -> set[str]:
    """Every dlbook module (or name in one) that the module ``name`` imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "dlbook"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "dlbook":
                found |= {f"{module}.{a.name}" for a in node.names}
    return found


# Topic modules whose name is not their chapter's slug: 02 optimizers, 04 attention (its recurrent part).
NAMED_OTHERWISE = {"optim": "optimizers", "rnn": "attention"}


def is_topic(module: str) -> bool:
    """A module named after a chapter (dlbook.cnn, dlbook.exercises.cnn), or
    one of NAMED_OTHERWISE, is a topic."""
    name = module.rpartition(".")[2]
    return name in CHAPTERS or name in NAMED_OTHERWISE


def test_modules_named_otherwise_belong_to_chapters():
    assert set(NAMED_OTHERWISE.values()) <= set(CHAPTERS)
    assert is_topic("dlbook.rnn") and is_topic("dlbook.exercises.cnn") and not is_topic("dlbook.train")


def test_the_parser_sees_the_imports_it_should():
    imports = _imports("dlbook.exercises.cnn", PACKAGE / "exercises" / "cnn.py")
    assert "dlbook.exercises.exercise" in imports
    assert "dlbook._checks.check_int" in _imports("dlbook.cnn", PACKAGE / "cnn.py")
    assert any(is_topic(m) for m in _sources()), "no topic module found"


def test_the_core_never_imports_a_topic():
    offenders = {}
    for name, path in _sources().items():
        if is_topic(name):
            continue
        topics = sorted(m for m in _imports(name, path)
                        if any(is_topic(".".join(m.split(".")[:i])) for i in range(2, m.count(".") + 2)))
        if topics:
            offenders[name] = topics
    assert not offenders, f"core modules import topic modules: {offenders}"


def test_no_module_imports_the_packages_init():
    """`from . import __version__` runs dlbook/__init__.py, which imports everything."""
    submodules = set(_sources())
    offenders = sorted((name, m) for name, path in _sources().items() if name != "dlbook"
                       for m in _imports(name, path)
                       if m.rpartition(".")[0] == "dlbook" and m not in submodules)
    assert not offenders, f"modules that import names from dlbook/__init__.py: {offenders}"


def test_the_version_lives_in_its_own_module():
    from dlbook import _version

    assert dlbook.__version__ == _version.__version__
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "dlbook._version.__version__"}


def shadowed(package: types.ModuleType) -> list[str]:
    """Names the package exports that a submodule of the same name would replace on import."""
    submodules = {m.name for m in pkgutil.iter_modules(package.__path__)}
    return sorted(name for name, value in vars(package).items()
                  if not name.startswith("__") and name in submodules
                  and not (isinstance(value, types.ModuleType) and value.__name__ == f"{package.__name__}.{name}"))


def test_no_submodule_has_the_name_of_an_export():
    """`import dlbook.evaluate` would replace the function dlbook.evaluate by the module."""
    assert shadowed(dlbook) == []


def test_a_shadowing_submodule_is_caught(tmp_path, monkeypatch):
    package = tmp_path / "shadowpkg"
    package.mkdir()
    (package / "__init__.py").write_text("from .train import evaluate\nfrom . import plot\n")
    (package / "train.py").write_text("def evaluate():\n    return 1\n")
    (package / "plot.py").write_text("")
    (package / "evaluate.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = importlib.import_module("shadowpkg")
        assert shadowed(module) == ["evaluate"]
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == "shadowpkg"]:
            del sys.modules[name]


@pytest.mark.parametrize("module", ["dlbook.env", "dlbook.results"])
def test_reporting_modules_take_the_version_from_its_module(module):
    assert "dlbook._version.__version__" in _imports(module, _sources()[module])
