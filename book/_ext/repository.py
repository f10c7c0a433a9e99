"""The site's repository, issues and Colab buttons follow ``repository.url``.

``_config.yml`` leaves the book's repository empty until the book has a home
of its own. Jupyter Book refuses repository buttons without an address, and
the theme's Colab button fails without one, so the config keeps the buttons
off and this extension decides: with an address, the repository and issues
buttons are on and the Colab button opens the chapter at the release tag
``v<dlbook version>`` (as the chapters' badges do, tools/badges.py); without
one, no button names a repository.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.badges import GITHUB, release_ref  # noqa: E402


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


def _config_inited(app, config) -> None:
    config.html_theme_options = configure(config.html_theme_options)


def setup(app):
    app.connect("config-inited", _config_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1.0"}
