"""A small Sphinx build for the tests of the book's extensions (book/_ext)."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

EXTENSIONS = Path(__file__).resolve().parents[1] / "book" / "_ext"


def load_extension(file_name: str, module_name: str):
    """book/_ext/``file_name``, a local Sphinx extension, as Sphinx loads it
    (a module of its own, registered in ``sys.modules`` because dataclasses
    look their module up there)."""
    spec = importlib.util.spec_from_file_location(module_name, EXTENSIONS / file_name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def build_html(src: Path, out: Path) -> str:
    """Build the HTML of the tiny book in ``src`` (its own conf.py) into
    ``out``/html; return what Sphinx warned.

    Each build runs in a docutils namespace of its own, so that several
    builds in one test process do not see each other's nodes and directives
    (and do not warn that they are registered twice)."""
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace

    warnings = io.StringIO()
    with docutils_namespace():
        app = Sphinx(str(src), str(src), str(out / "html"), str(out / "doctrees"), "html",
                     status=None, warning=warnings, freshenv=True)
        app.build()
    return warnings.getvalue()
