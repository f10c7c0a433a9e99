"""Copy the scripts the website serves itself into book/vendor/.

MathJax, require.js and the Jupyter widget manager come from the npm
registry (tools/assets/package.json, installed with ``npm ci``); this copies
the files a page needs, so that no page loads anything from a CDN. The
folder is deliberately not called ``_static``: Jupyter Book would load every
script in a ``_static`` folder on every page.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ROOT / "tools" / "assets" / "node_modules"
VENDOR = ROOT / "book" / "vendor"

# MathJax combined components other than tex-chtml that the site does not use.
MATHJAX_SKIP = {"tex-chtml-full-speech.js", "tex-chtml-full.js", "tex-mml-chtml.js", "tex-mml-svg.js",
                "tex-svg-full.js", "tex-svg.js", "mml-chtml.js", "mml-svg.js", "node-main.js"}


def main() -> int:
    if not MODULES.is_dir():
        print(f"{MODULES} is missing: run `npm ci --prefix tools/assets` first", file=sys.stderr)
        return 1
    if VENDOR.exists():
        shutil.rmtree(VENDOR)
    mathjax = MODULES / "mathjax" / "es5"
    shutil.copytree(mathjax, VENDOR / "mathjax",
                    ignore=lambda d, names: [n for n in names if n in MATHJAX_SKIP or n.endswith(".map")])
    (VENDOR / "requirejs").mkdir(parents=True)
    shutil.copy2(MODULES / "requirejs" / "require.js", VENDOR / "requirejs" / "require.js")
    widgets = MODULES / "@jupyter-widgets" / "html-manager" / "dist"
    shutil.copytree(widgets, VENDOR / "html-manager",
                    ignore=lambda d, names: [n for n in names if n.endswith((".map", ".txt")) or n in ("embed.js", "libembed-amd.js")])
    size = sum(f.stat().st_size for f in VENDOR.rglob("*") if f.is_file())
    print(f"book/vendor: {size / 1e6:.1f} MB of site assets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
