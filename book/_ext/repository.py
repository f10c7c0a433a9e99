"""The site's repository, issues and Colab buttons follow ``repository.url``.

``_config.yml`` leaves the book's repository empty until the book has a home
of its own. Jupyter Book refuses repository buttons without an address, and
the theme's Colab button fails without one, so the config keeps the buttons
off and this extension decides: with an address, the repository and issues
buttons are on and the Colab button opens the chapter at the release tag
``v<dlbook version>`` (as the chapters' badges do, tools/badges.py); without
one, no button names a repository.

Every page of the book also ends with a "report a problem" link to the
repository's issue tracker, a new issue pre-filled with the page's title, its
address in the site and the release the site was built from. While the
repository is not set, the link is left out (as the chapters' badges are).
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path
from urllib.parse import quote, urlencode

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.badges import GITHUB, release_ref  # noqa: E402

REPORT_CLASS = "dlbook-report-problem"


def configure(options: dict) -> dict:
    """The theme options for the repository set (or not) in ``options["repository_url"]``."""
    options = dict(options)
    url = (options.get("repository_url") or "").strip().rstrip("/")
    launch = dict(options.get("launch_buttons") or {})
    if url:
        if not GITHUB.match(url):
            raise ValueError(f"_config.yml repository.url must be empty or https://github.com/OWNER/NAME; got {url!r}")
        options.update(repository_url=url, repository_branch=release_ref(),
                       use_repository_button=True, use_issues_button=True)
    else:
        options.pop("repository_url", None)
        options.pop("repository_branch", None)
        options.update(use_repository_button=False, use_issues_button=False, use_edit_page_button=False)
        launch.pop("colab_url", None)
    options["launch_buttons"] = launch
    return options


def plain_title(title: str) -> str:
    """A page title as text: Sphinx's title may hold markup (``<code>``) and entities."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", title or "")).split())


def report_url(url: str, pagename: str, title: str, ref: str | None = None) -> str:
    """A new issue on the repository at ``url``, pre-filled with the page's name and where it is.

    ``pagename`` is Sphinx's name of the page (``notebooks/03_cnn``), ``title``
    its title as text, ``ref`` the release the site shows (default: this one).
    """
    if not GITHUB.match(url):
        raise ValueError(f"_config.yml repository.url must be empty or https://github.com/OWNER/NAME; got {url!r}")
    page = f"{pagename}.html"
    body = (f"Page: {title} ({page}, dlbook {ref or release_ref()})\n\n"
            "What is wrong (a sentence, a cell, a figure; what you expected):\n\n")
    query = urlencode({"title": f"Problem on the page \u201c{title}\u201d ({page})", "body": body},
                      quote_via=quote)
    return f"{url}/issues/new?{query}"


def report_link(url: str | None, pagename: str, title: str) -> str:
    """The HTML that ends a page: a "report a problem" link, or nothing while no repository is set."""
    if not url:
        return ""
    href = html.escape(report_url(url, pagename, plain_title(title)), quote=True)
    return (f'<p class="{REPORT_CLASS}">Found a mistake, or something unclear? '
            f'<a class="reference external" href="{href}">Report a problem with this page</a> '
            "on the book\u2019s issue tracker.</p>\n")


def _add_report_link(app, pagename, templatename, context, doctree) -> None:
    """Pages written from the book's sources (not the search page or the index) end with the link."""
    if doctree is None or "body" not in context:
        return
    context["body"] += report_link(app.config.html_theme_options.get("repository_url"), pagename,
                                   context.get("title", pagename))


def _config_inited(app, config) -> None:
    config.html_theme_options = configure(config.html_theme_options)


def setup(app):
    app.connect("config-inited", _config_inited)
    app.connect("html-page-context", _add_report_link)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1.0"}
