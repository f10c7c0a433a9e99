"""Keep every page of the site free of CDN references.

- sphinx-thebe (pulled in by Jupyter Book even with thebe off) writes an
  inline script naming a CDN, and writes it twice, which is a JavaScript
  error ("THEBE_JS_URL has already been declared"). The book has no thebe,
  so its scripts are dropped.
- The widget manager (``html-manager/embed-amd.js``) loads its fonts from a
  path derived from its RequireJS module name; a small RequireJS config,
  written before it on the pages that have widgets, points that name at the
  copy in ``_static/html-manager``. The same script lets the manager's
  MathJax 2 call reach MathJax 3.
- A script or stylesheet with an absolute URL is a warning, which the
  build (run with warnings as errors) turns into a failure.
- Matplotlib's JavaScript animations (``to_jshtml``) link Font Awesome from
  a CDN for their button icons; that link is removed from the written pages
  (the theme's own Font Awesome, served from the site, draws the icons).
"""

from __future__ import annotations

import re
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)

WIDGETS_CONFIG = (
    'require.config({paths: {"@jupyter-widgets/html-manager/dist": '
    'document.documentElement.dataset.content_root + "_static/html-manager"}});'
    # The widget manager typesets labels with MathJax 2's MathJax.Hub.Queue;
    # the site has MathJax 3, so map that call to MathJax.typesetPromise.
    'window.addEventListener("load", function () {'
    ' var mj = window.MathJax; if (!mj || mj.Hub) return;'
    ' mj.Hub = {Queue: function () {'
    '  for (var i = 0; i < arguments.length; i++) { var a = arguments[i];'
    '   if (Array.isArray(a) && a[0] === "Typeset" && mj.typesetPromise) {'
    '    mj.typesetPromise([a[2]]).catch(function (e) { console.warn(e); }); } } }};'
    '});'
)


def _filename(asset) -> str:
    return str(getattr(asset, "filename", asset) or "")


def _body(asset) -> str:
    return str(getattr(asset, "attributes", {}).get("body", ""))


def clean_page(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if scripts is None:
        return
    kept = []
    for js in scripts:
        if "THEBE_JS_URL" in _body(js) or "sphinx-thebe" in _filename(js):
            continue
        if _filename(js).startswith("html-manager/embed-amd.js") or _filename(js).endswith("/html-manager/embed-amd.js"):
            kept.append(type(js)(None, body=WIDGETS_CONFIG) if hasattr(js, "attributes") else js)
        kept.append(js)
    scripts[:] = kept
    for asset in list(scripts) + list(context.get("css_files", [])):
        name = _filename(asset)
        if name.startswith(("http:", "https:", "//")):
            logger.warning(f"{pagename}: {name} would be loaded from another host; serve it from the site")


FONT_AWESOME_LINK = re.compile(r'<link[^>]*href="https?://[^"]*font-awesome[^"]*"[^>]*>\s*')


def drop_font_awesome(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    for page in Path(app.outdir).rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        if "font-awesome" in text:
            page.write_text(FONT_AWESOME_LINK.sub("", text), encoding="utf-8")


def setup(app):
    app.connect("html-page-context", clean_page, priority=900)
    app.connect("build-finished", drop_font_awesome)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1.0"}
