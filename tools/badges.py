"""Keep each chapter's "Open in Colab/Kaggle" badges and install cell in step
with the repository address in _config.yml (the one place it is set).

    python tools/badges.py          # rewrite them in notebooks/*.ipynb
    python tools/badges.py --check  # exit 1 if any notebook is out of step

The badges are small SVGs inlined as data URIs (in an HTML line, since
Markdown parsers refuse SVG data URIs), so neither the website nor the
notebook loads an image from another host.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BADGE_LINE = re.compile(r'^<a href="https://colab\.research\.google\.com/.*$', re.M)
INSTALL_MARK = "# Colab and Kaggle: install dlbook"


def repository() -> tuple[str, str]:
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    repo = config["repository"]
    url = repo["url"].rstrip("/")
    if not re.match(r"^https://github\.com/[\w.-]+/[\w.-]+$", url):
        raise ValueError(f"_config.yml repository.url must be https://github.com/OWNER/NAME; got {url!r}")
    return url, repo.get("branch", "main")


def _svg(label: str, color: str) -> str:
    width = 14 + 7 * len(label)
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" '
           f'aria-label="{label}"><rect width="{width}" height="20" rx="3" fill="{color}"/>'
           f'<text x="{width / 2}" y="14" fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" '
           f'font-size="11" text-anchor="middle">{label}</text></svg>')
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def badge_line(notebook: Path) -> str:
    url, branch = repository()
    owner_name = url.removeprefix("https://github.com/")
    rel = notebook.resolve().relative_to(ROOT).as_posix()
    colab = f"https://colab.research.google.com/github/{owner_name}/blob/{branch}/{rel}"
    kaggle = f"https://kaggle.com/kernels/welcome?src={url}/blob/{branch}/{rel}"
    # Raw HTML: Markdown parsers refuse SVG data URIs in ![](...) images.
    return (f'<a href="{colab}"><img alt="Open in Colab" src="{_svg("Open in Colab", "#e8710a")}"></a> '
            f'<a href="{kaggle}"><img alt="Open in Kaggle" src="{_svg("Open in Kaggle", "#20beff")}"></a>')


def install_source() -> str:
    url, branch = repository()
    return (f"{INSTALL_MARK} when it is missing (the platform's torch is kept).\n"
            "import importlib.util, subprocess, sys\n"
            "if importlib.util.find_spec(\"dlbook\") is None:\n"
            f"    subprocess.check_call([sys.executable, \"-m\", \"pip\", \"install\", \"--quiet\",\n"
            f"                           \"dlbook @ git+{url}@{branch}\"])")


def _source(cell) -> str:
    return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


def update(notebook: Path, write: bool) -> list[str]:
    """Bring one notebook in step; return what was (or would be) changed."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    problems = []
    md = next((c for c in nb["cells"] if c["cell_type"] == "markdown"), None)
    if md is None or not BADGE_LINE.search(_source(md)):
        problems.append(f"{notebook.name}: the first markdown cell has no badge line")
    else:
        new = BADGE_LINE.sub(lambda _: badge_line(notebook), _source(md))
        if new != _source(md):
            problems.append(f"{notebook.name}: badges do not match _config.yml")
            md["source"] = new
    code = next((c for c in nb["cells"] if c["cell_type"] == "code"), None)
    if code is None or not _source(code).startswith(INSTALL_MARK):
        problems.append(f"{notebook.name}: the first code cell is not the install cell")
    elif _source(code) != install_source():
        problems.append(f"{notebook.name}: the install cell does not match _config.yml")
        code["source"] = install_source()
    if write and problems:
        notebook.write_text(json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report; exit 1 when out of step")
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args()
    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    problems = [p for nb in notebooks for p in update(nb, write=not args.check)]
    for p in problems:
        print(p)
    return 1 if (args.check and problems) else 0


if __name__ == "__main__":
    sys.exit(main())
