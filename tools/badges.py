"""Keep each chapter's "Open in Colab/Kaggle" badges and install cell in step
with the book's repository, set in one place: ``repository: url:`` in
_config.yml.

    python tools/badges.py          # rewrite them in notebooks/*.ipynb
    python tools/badges.py --check  # exit 1 if any notebook is out of step

Badges and install cell name releases, never a branch, so nothing that is
pushed later changes what a reader runs. The badges open the chapter at the
book's current release, the tag ``v<dlbook.__version__>`` (dlbook/_version.py).
The install cell installs the ``dlbook`` the chapter's stored outputs were
made with: the version its full run recorded in ``results/<slug>.json``
(field ``"dlbook"``), or, for a chapter with no stored run yet, the current
version, and the cell says which. ``tools/execute.py`` pins the install cell
to the running version before it runs a chapter, so after ``make execute``
the cell names the version that ``results/<slug>.json`` records. Until the
book has a repository of its own the setting stays empty, and then the badges
and the install cell say so instead of naming someone else's.

The badges are small SVGs inlined as data URIs (in an HTML line, since
Markdown parsers refuse SVG data URIs), so neither the website nor the
notebook loads an image from another host.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import re
import runpy
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "_config.yml"
VERSION_FILE = ROOT / "dlbook" / "_version.py"
RESULTS = "results"  # a chapter's stored results: <book root>/results/<slug>.json
BADGE_LINE = re.compile(r'^(?:<a href="https://colab\.research\.google\.com/|<img alt="Open in Colab).*$', re.M)
INSTALL_MARK = "# Colab and Kaggle: install dlbook"
VERSION = re.compile(r"\d+\.\d+\.\d+[0-9A-Za-z.+-]*")  # what a version may look like (fullmatch)
NAMED = re.compile(r"^# dlbook (\d[^\s:]*)", re.M)  # the install cell's line that names its version
PIP_ARGS = ("install", "--quiet")  # the install cell's pip arguments, before the requirement
GITHUB = re.compile(r"^https://github\.com/[\w.-]+/[\w.-]+$")
NOT_SET = ("Not available until the book's repository is set: set `url:` under `repository:` in "
           "`_config.yml` to its GitHub address (the one line to change), then run "
           "`python tools/badges.py`.")


def load_config(path: Path | None = None) -> dict:
    """The book's configuration (default: _config.yml)."""
    return yaml.safe_load(Path(path or CONFIG).read_text(encoding="utf-8")) or {}


def repository(config: dict) -> str | None:
    """The book's GitHub address from the config, or ``None`` while it is not set.

    Raises:
        ValueError: for anything but empty or ``https://github.com/OWNER/NAME``.
    """
    url = ((config.get("repository") or {}).get("url") or "").strip().rstrip("/")
    if not url:
        return None
    if not GITHUB.match(url):
        raise ValueError(f"_config.yml repository.url must be empty or https://github.com/OWNER/NAME; got {url!r}")
    return url


def version() -> str:
    """dlbook's version, read from its file (without importing dlbook and torch)."""
    return runpy.run_path(str(VERSION_FILE))["__version__"]


def release_ref(version_: str | None = None) -> str:
    """The git tag of a version (default: this one, what badges and launch buttons name)."""
    return f"v{version_ or version()}"


def requirement(url: str, version_: str | None = None) -> str:
    """What pip installs: dlbook at the release tag of a version (default: this one)."""
    return f"dlbook @ git+{url}@{release_ref(version_)}"


def results_file(notebook: Path, root: Path | None = None) -> Path:
    """``results/<slug>.json`` of the chapter ``NN_slug.ipynb``, in the book at ``root`` (default: this one)."""
    slug = Path(notebook).stem.split("_", 1)[-1]
    return Path(root or ROOT) / RESULTS / f"{slug}.json"


def recorded_version(notebook: Path, root: Path | None = None) -> str | None:
    """The dlbook version the chapter's stored run recorded, or ``None`` when it has no results file.

    Raises:
        ValueError: for a results file without a well-formed ``"dlbook"`` version.
    """
    path = results_file(notebook, root)
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text(encoding="utf-8")).get("dlbook")
    except (ValueError, AttributeError) as err:
        raise ValueError(f"{path} is not a results record (a JSON object): {err}") from err
    if not isinstance(recorded, str) or not VERSION.fullmatch(recorded):
        raise ValueError(f'{path} records no dlbook version ("dlbook": "X.Y.Z"); got {recorded!r}')
    return recorded


def named_version(source: str) -> str | None:
    """The dlbook version an install cell's source names, or ``None``."""
    match = NAMED.search(source)
    return match.group(1) if match else None


def _svg(label: str, color: str) -> str:
    width = 14 + 7 * len(label)
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" '
           f'aria-label="{label}"><rect width="{width}" height="20" rx="3" fill="{color}"/>'
           f'<text x="{width / 2}" y="14" fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" '
           f'font-size="11" text-anchor="middle">{label}</text></svg>')
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def badge_line(rel_path: str, config: dict) -> str:
    """The badge line of the notebook at ``rel_path`` (relative to the book's root)."""
    url = repository(config)
    if url is None:
        # Grey badges that link nowhere, and why.
        return (f'<img alt="Open in Colab (not available yet)" src="{_svg("Open in Colab", "#9e9e9e")}"> '
                f'<img alt="Open in Kaggle (not available yet)" src="{_svg("Open in Kaggle", "#9e9e9e")}"> '
                f"{NOT_SET}")
    ref = release_ref()
    colab = f"https://colab.research.google.com/github/{url.removeprefix('https://github.com/')}/blob/{ref}/{rel_path}"
    kaggle = f"https://kaggle.com/kernels/welcome?src={url}/blob/{ref}/{rel_path}"
    # Raw HTML: Markdown parsers refuse SVG data URIs in ![](...) images.
    return (f'<a href="{colab}"><img alt="Open in Colab" src="{_svg("Open in Colab", "#e8710a")}"></a> '
            f'<a href="{kaggle}"><img alt="Open in Kaggle" src="{_svg("Open in Kaggle", "#20beff")}"></a>')


def install_source(config: dict, recorded: str | None = None) -> str:
    """The first code cell of a chapter.

    It installs ``recorded``, the dlbook version the chapter's stored run
    recorded; a chapter with no stored run (``None``) gets the current
    version, and the cell says so.
    """
    if recorded is not None and not VERSION.fullmatch(recorded):
        raise ValueError(f"not a dlbook version: {recorded!r}")
    pinned = recorded or version()
    head = (f"{INSTALL_MARK} when missing (keeps the platform's torch).\n"
            + (f"# dlbook {pinned}: the version this chapter's outputs were made with.\n" if recorded else
               f"# dlbook {pinned} (the current one): this chapter has no stored run yet.\n"))
    url = repository(config)
    if url is None:
        return (head + "import importlib.util\n"
                "if importlib.util.find_spec(\"dlbook\") is None:\n"
                "    raise RuntimeError(\n"
                "        \"dlbook is not installed, and the book's repository is not set\"\n"
                "        \" yet, so there is nothing to install it from. Install dlbook\"\n"
                f"        \" {pinned} from a copy of the book: pip install PATH_TO_THE_BOOK\")")
    args = ", ".join(f'"{a}"' for a in ("-m", "pip", *PIP_ARGS))
    return (head + "import importlib.util, subprocess, sys\n"
            "if importlib.util.find_spec(\"dlbook\") is None:\n"
            "    subprocess.check_call([\n"
            f"        sys.executable, {args},\n"
            f"        \"{requirement(url, pinned)}\"])")


def _source(cell) -> str:
    return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


def _set_source(cell, text: str) -> None:
    """Set a cell's source in the form it had: one string, or lines as nbformat writes them."""
    cell["source"] = text if isinstance(cell["source"], str) else text.splitlines(keepends=True)


def pin_install_cell(nb: dict, config: dict, recorded: str | None, name: str = "the notebook",
                     why: str = "") -> list[str]:
    """Make the install cell of ``nb`` (a notebook's JSON, changed in place)
    install ``recorded`` (see :func:`install_source`); return what was wrong."""
    code = next((c for c in nb["cells"] if c["cell_type"] == "code"), None)
    if code is None or not _source(code).startswith(INSTALL_MARK):
        return [f"{name}: the first code cell is not the install cell"]
    wanted = install_source(config, recorded)
    if _source(code) == wanted:
        return []
    named, pinned = named_version(_source(code)), named_version(wanted)
    _set_source(code, wanted)
    if named != pinned:
        said = f"dlbook {named}" if named else "no dlbook version"
        return [f"{name}: the install cell names {said}, not {pinned}{why}"]
    return [f"{name}: the install cell does not match _config.yml"]


def update(notebook: Path, config: dict, write: bool, root: Path | None = None) -> list[str]:
    """Bring one notebook in step; return what was (or would be) changed.

    The install cell installs the version that ``results/<slug>.json``
    records (in the book at ``root``), the current one when there is none.
    """
    notebook, root = Path(notebook), Path(root or ROOT)
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    original = copy.deepcopy(nb)
    rel = notebook.resolve().relative_to(root.resolve()).as_posix()
    problems = []
    md = next((c for c in nb["cells"] if c["cell_type"] == "markdown"), None)
    if md is None or not BADGE_LINE.search(_source(md)):
        problems.append(f"{notebook.name}: the first markdown cell has no badge line")
    else:
        new = BADGE_LINE.sub(lambda _: badge_line(rel, config), _source(md))
        if new != _source(md):
            problems.append(f"{notebook.name}: badges do not match _config.yml")
            _set_source(md, new)
    recorded = recorded_version(notebook, root)
    where = results_file(notebook, root).relative_to(root).as_posix()
    why = f" (recorded in {where})" if recorded else f" (the current version: no {where} yet)"
    problems += pin_install_cell(nb, config, recorded, notebook.name, why)
    if write and nb != original:
        notebook.write_text(json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report; exit 1 when out of step")
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    try:
        config = load_config()
        repository(config)
    except ValueError as err:
        parser.error(str(err))
    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    problems = []
    for nb in notebooks:
        try:
            problems += update(nb, config, write=not args.check)
        except ValueError as err:  # a results file without a version
            problems.append(f"{Path(nb).name}: {err}")
        if not results_file(nb).is_file():
            print(f"note: {Path(nb).name} has no {RESULTS}/{results_file(nb).name} yet, so its install "
                  f"cell names the current version, {version()}")
    for p in problems:
        print(p)
    return 1 if (args.check and problems) else 0


if __name__ == "__main__":
    sys.exit(main())
