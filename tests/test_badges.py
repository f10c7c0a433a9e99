"""tools/badges.py and book/_ext/repository.py: the launch cell, the badges and
the site's buttons follow the one repository setting, set or not."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import dlbook
from sphinx_helpers import build_html, load_extension
from tools import badges

ROOT = Path(__file__).resolve().parents[1]


site_repository = load_extension("repository.py", "dlbook_site_repository")

URL = "https://github.com/some-owner/some.book"
UNSET = {"repository": {"url": ""}}
SET = {"repository": {"url": URL + "/"}}
TAG = f"v{dlbook.__version__}"


def test_the_book_has_no_repository_yet():
    """The setting must never name a repository that belongs to someone else;
    until the book has its own, it stays empty."""
    config = badges.load_config()
    assert badges.repository(config) is None, (
        "_config.yml names a repository: make sure it is the book's own, then update this test")


def test_version_and_release_tag_come_from_the_package():
    assert badges.version() == dlbook.__version__
    assert badges.release_ref() == TAG
    assert badges.release_ref("0.1.0") == "v0.1.0"
    assert badges.VERSION.fullmatch(dlbook.__version__)


def test_the_version_is_semantic_and_the_changelog_describes_it():
    """X.Y.Z, bumped when the API changes; CHANGELOG.md has a section for it."""
    assert re.fullmatch(r"\d+\.\d+\.\d+", dlbook.__version__)
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(rf"^## {re.escape(dlbook.__version__)}\b", changelog, re.M), (
        f"CHANGELOG.md has no section '## {dlbook.__version__}'")


@pytest.mark.parametrize("config, expected", [
    ({}, None), ({"repository": None}, None), (UNSET, None), ({"repository": {"url": "  "}}, None),
    (SET, URL), ({"repository": {"url": URL}}, URL),
])
def test_repository(config, expected):
    assert badges.repository(config) == expected


@pytest.mark.parametrize("url", ["http://github.com/a/b", "https://gitlab.com/a/b", "github.com/a/b",
                                 "https://github.com/a", "https://github.com/a/b/c", "https://github.com/a b/c"])
def test_repository_must_be_a_github_address(url):
    with pytest.raises(ValueError, match="OWNER/NAME"):
        badges.repository({"repository": {"url": url}})


# the install cell -----------------------------------------------------------------------

def _run(source: str, namespace: dict | None = None):
    exec(compile(source, "install cell", "exec"), namespace if namespace is not None else {})


def test_install_cell_with_a_repository_names_the_release_tag(monkeypatch):
    source = badges.install_source(SET)
    assert source.startswith(badges.INSTALL_MARK)
    assert f'"dlbook @ git+{URL}@{TAG}"' in source
    assert "@main" not in source and "branch" not in source
    assert max(len(line) for line in source.splitlines()) <= 79
    # run it as on Colab, where dlbook is missing: pip gets exactly these arguments
    calls = []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(subprocess, "check_call", lambda args: calls.append(args))
    _run(source)
    assert calls == [[sys.executable, "-m", "pip", *badges.PIP_ARGS, badges.requirement(URL)]]
    assert badges.requirement(URL) == f"dlbook @ git+{URL}@{TAG}"


def test_install_cell_without_a_repository_says_so(monkeypatch):
    source = badges.install_source(UNSET)
    assert source.startswith(badges.INSTALL_MARK)
    assert "github" not in source and "pip install PATH_TO_THE_BOOK" in source
    assert max(len(line) for line in source.splitlines()) <= 79
    _run(source)  # dlbook is installed here: nothing happens
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="repository is not set"):
        _run(source)


# the badges -------------------------------------------------------------------------------

def test_badges_with_a_repository_open_the_release():
    line = badges.badge_line("notebooks/03_cnn.ipynb", SET)
    hrefs = re.findall(r'href="([^"]+)"', line)
    assert hrefs == [
        f"https://colab.research.google.com/github/some-owner/some.book/blob/{TAG}/notebooks/03_cnn.ipynb",
        f"https://kaggle.com/kernels/welcome?src={URL}/blob/{TAG}/notebooks/03_cnn.ipynb",
    ]
    assert 'alt="Open in Colab"' in line and 'alt="Open in Kaggle"' in line
    assert badges.BADGE_LINE.fullmatch(line)


def test_badges_without_a_repository_link_nowhere_and_say_why():
    line = badges.badge_line("notebooks/03_cnn.ipynb", UNSET)
    assert "href" not in line and "github" not in line
    assert "Open in Colab" in line and "Open in Kaggle" in line
    assert "`url:` under `repository:` in `_config.yml`" in line and "python tools/badges.py" in line
    assert badges.BADGE_LINE.fullmatch(line)
    images = re.findall(r'src="(data:[^"]+)"', line)
    assert len(images) == 2  # inline: no image from another host


def _chapter(folder: Path, config: dict, recorded: str | None = None) -> Path:
    nb = new_notebook(cells=[
        new_markdown_cell("# Title\n\nOne line.\n\n" + badges.badge_line("notebooks/01_x.ipynb", config)),
        new_code_cell(badges.install_source(config, recorded)),
        new_code_cell("import dlbook"),
    ])
    path = folder / "notebooks" / "01_x.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


@pytest.mark.parametrize("old, new", [(UNSET, SET), (SET, UNSET)])
def test_update_brings_a_chapter_in_step(tmp_path, old, new):
    path = _chapter(tmp_path, old)
    assert badges.update(path, old, write=False, root=tmp_path) == []
    before = path.read_text()
    problems = badges.update(path, new, write=False, root=tmp_path)
    assert problems == ["01_x.ipynb: badges do not match _config.yml",
                        "01_x.ipynb: the install cell does not match _config.yml"]  # same version
    assert path.read_text() == before  # --check writes nothing
    assert badges.update(path, new, write=True, root=tmp_path) == problems
    nb = json.loads(path.read_text())
    assert nb["cells"][0]["source"].endswith(badges.badge_line("notebooks/01_x.ipynb", new))
    assert nb["cells"][0]["source"].startswith("# Title\n\nOne line.\n\n")
    assert nb["cells"][1]["source"] == badges.install_source(new)
    assert badges.update(path, new, write=False, root=tmp_path) == []


def test_update_reports_a_chapter_without_badges_or_install_cell(tmp_path):
    path = tmp_path / "notebooks" / "01_x.ipynb"
    path.parent.mkdir()
    path.write_text(json.dumps(new_notebook(cells=[new_markdown_cell("# T"), new_code_cell("import dlbook")])))
    assert badges.update(path, UNSET, write=True, root=tmp_path) == [
        "01_x.ipynb: the first markdown cell has no badge line",
        "01_x.ipynb: the first code cell is not the install cell"]


# the install cell names the version the chapter was run with --------------------------------

def _results(folder: Path, slug: str, version: str) -> Path:
    path = folder / "results" / f"{slug}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"chapter": slug, "dlbook": version, "seconds": 1.0}), encoding="utf-8")
    return path


@pytest.mark.parametrize("config", [UNSET, SET])
def test_install_cell_names_the_version_a_chapter_recorded(tmp_path, config):
    """A chapter whose stored run recorded 0.1.0 installs 0.1.0, whatever the package says now."""
    path = _chapter(tmp_path, config)  # written with the current version
    _results(tmp_path, "x", "0.1.0")
    problems = badges.update(path, config, write=True, root=tmp_path)
    assert problems == [f"01_x.ipynb: the install cell names dlbook {dlbook.__version__}, not 0.1.0 "
                        f"(recorded in results/x.json)"] or dlbook.__version__ == "0.1.0"
    source = json.loads(path.read_text())["cells"][1]["source"]
    assert badges.named_version(source) == "0.1.0"
    assert "# dlbook 0.1.0: the version this chapter's outputs were made with." in source
    if config is SET:
        assert f'"dlbook @ git+{URL}@v0.1.0"' in source and TAG not in source.replace("v0.1.0", "")
    else:
        assert " 0.1.0 from a copy of the book" in source
    assert max(len(line) for line in source.splitlines()) <= 79
    # the badges still open the book's current release
    assert f"/blob/{TAG}/" in json.loads(path.read_text())["cells"][0]["source"] or config is UNSET
    assert badges.update(path, config, write=False, root=tmp_path) == []


def test_install_cell_follows_a_new_recorded_version(tmp_path):
    path = _chapter(tmp_path, SET, recorded="0.1.0")
    _results(tmp_path, "x", "0.1.0")
    assert badges.update(path, SET, write=False, root=tmp_path) == []
    _results(tmp_path, "x", "0.3.1")  # the chapter was run again
    assert badges.update(path, SET, write=True, root=tmp_path) == [
        "01_x.ipynb: the install cell names dlbook 0.1.0, not 0.3.1 (recorded in results/x.json)"]
    source = json.loads(path.read_text())["cells"][1]["source"]
    assert badges.named_version(source) == "0.3.1" and '@v0.3.1"' in source


def test_a_chapter_without_results_installs_the_current_version_and_says_so(tmp_path):
    path = _chapter(tmp_path, SET, recorded="0.1.0")
    problems = badges.update(path, SET, write=True, root=tmp_path)
    assert problems == [f"01_x.ipynb: the install cell names dlbook 0.1.0, not {dlbook.__version__} "
                        f"(the current version: no results/x.json yet)"]
    source = json.loads(path.read_text())["cells"][1]["source"]
    assert badges.named_version(source) == dlbook.__version__ and f'@{TAG}"' in source
    assert f"# dlbook {dlbook.__version__} (the current one): this chapter has no stored run yet." in source


def test_the_command_notes_a_chapter_without_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(badges, "ROOT", tmp_path)
    path = _chapter(tmp_path, badges.load_config())
    assert badges.main(["--check", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"note: 01_x.ipynb has no results/x.json yet, so its install cell names the current version, " \
           f"{dlbook.__version__}" in out


@pytest.mark.parametrize("record", ['{"seconds": 1}', '{"dlbook": "0.1"}', '{"dlbook": "0.1.0\\n"}',
                                    '{"dlbook": "0.1.0\\n import os"}', "[1, 2]", "not json"])
def test_a_results_file_without_a_good_version_is_refused(tmp_path, record):
    path = _chapter(tmp_path, SET)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "x.json").write_text(record)
    with pytest.raises(ValueError, match="x.json"):
        badges.update(path, SET, write=True, root=tmp_path)


def _chapters():
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", _chapters(), ids=lambda p: p.name)
def test_every_chapter_installs_the_version_its_results_record(path):
    """The book's own chapters: the install cell names exactly the dlbook that
    results/<slug>.json says the stored outputs were made with."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    source = next(c for c in nb["cells"] if c["cell_type"] == "code")["source"]
    source = source if isinstance(source, str) else "".join(source)
    results = badges.results_file(path)
    assert results.is_file(), f"{path.name}: no {results.relative_to(ROOT)}"
    recorded = json.loads(results.read_text(encoding="utf-8"))["dlbook"]
    assert badges.named_version(source) == recorded, (
        f"{path.name} installs {badges.named_version(source)}, its stored run recorded {recorded}: "
        f"run python tools/badges.py")
    assert source == badges.install_source(badges.load_config(), recorded)


def test_check_refuses_a_bad_setting(tmp_path, monkeypatch, capsys):
    config = tmp_path / "_config.yml"
    config.write_text("repository:\n  url: https://example.com/x/y\n")
    monkeypatch.setattr(badges, "CONFIG", config)
    with pytest.raises(SystemExit) as exit_:
        badges.main(["--check"])
    assert exit_.value.code == 2 and "OWNER/NAME" in capsys.readouterr().err


# the site's buttons ---------------------------------------------------------------------------

def _theme_options(config: dict) -> dict:
    """What Jupyter Book makes of _config.yml with this repository setting, after our extension."""
    from jupyter_book.config import get_final_config

    user = badges.load_config() | {"repository": {**badges.load_config()["repository"], **config["repository"]}}
    final, _ = get_final_config(user_yaml=user, cli_config={"latex_individualpages": False}, sourcedir=ROOT)
    return site_repository.configure(final["html_theme_options"])


def test_site_without_a_repository_has_no_repository_buttons():
    options = _theme_options(UNSET)
    assert options["use_repository_button"] is False and options["use_issues_button"] is False
    assert "repository_url" not in options and "repository_branch" not in options
    assert "colab_url" not in options["launch_buttons"]  # the theme needs a repository for it
    assert options.get("use_download_button", True)


def test_site_with_a_repository_has_its_buttons_at_the_release():
    options = _theme_options(SET)
    assert options["use_repository_button"] is True and options["use_issues_button"] is True
    assert options["repository_url"] == URL and options["repository_branch"] == TAG
    assert options["launch_buttons"]["colab_url"] == "https://colab.research.google.com"


def test_site_refuses_an_address_that_is_not_github():
    with pytest.raises(ValueError, match="OWNER/NAME"):
        site_repository.configure({"repository_url": "https://example.com/a/b"})


def test_the_config_keeps_the_buttons_off_for_the_extension_to_decide():
    """Jupyter Book refuses repository buttons without an address, before any extension runs."""
    config = badges.load_config()
    assert config["html"]["use_repository_button"] is False and config["html"]["use_issues_button"] is False
    assert config["sphinx"]["local_extensions"]["repository"] == "book/_ext"
    from jupyter_book.config import get_final_config

    with pytest.raises(ValueError, match="repository URL"):
        get_final_config(user_yaml=config | {"html": config["html"] | {"use_repository_button": True}},
                         cli_config={"latex_individualpages": False}, sourcedir=ROOT)


# the "report a problem" link that ends every page -----------------------------------------------

def _query(href: str) -> dict:
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(href)
    return {"base": f"{parts.scheme}://{parts.netloc}{parts.path}",
            **{k: v[0] for k, v in parse_qs(parts.query, strict_parsing=True).items()}}


def test_report_url_opens_a_new_issue_named_after_the_page():
    found = _query(site_repository.report_url(URL, "notebooks/03_cnn", "3. Convolutional networks & ResNet"))
    assert found["base"] == URL + "/issues/new"
    assert "3. Convolutional networks & ResNet" in found["title"] and "notebooks/03_cnn.html" in found["title"]
    assert "notebooks/03_cnn.html" in found["body"] and TAG in found["body"]


def test_report_link_takes_the_title_as_text():
    link = site_repository.report_link(URL, "book/glossary", "Glossary <code>English</code> / 中文 &amp; more")
    href = re.search(r'href="([^"]+)"', link).group(1).replace("&amp;", "&")
    assert _query(href)["title"] == "Problem on the page \u201cGlossary English / 中文 & more\u201d (book/glossary.html)"
    assert site_repository.REPORT_CLASS in link and "Report a problem" in link


@pytest.mark.parametrize("url", [None, ""])
def test_report_link_is_left_out_without_a_repository(url):
    assert site_repository.report_link(url, "book/intro", "Intro") == ""


def test_report_url_refuses_an_address_that_is_not_github():
    with pytest.raises(ValueError, match="OWNER/NAME"):
        site_repository.report_url("https://example.com/a/b", "book/intro", "Intro")


def _build_tiny_site(tmp_path: Path, url: str) -> Path:
    """A two-page Sphinx site with the book's theme and book/_ext/repository.py, built quietly."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    (src / "conf.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT / 'book' / '_ext')!r})\n"
        "extensions = ['repository']\n"
        "html_theme = 'sphinx_book_theme'\n"
        f"html_theme_options = {{'repository_url': {url!r}, 'launch_buttons': {{}}}}\n", encoding="utf-8")
    (src / "index.rst").write_text("The *first* page\n================\n\n.. toctree::\n\n   second\n",
                                   encoding="utf-8")
    (src / "second.rst").write_text("Second page\n===========\n\nText.\n", encoding="utf-8")
    build_html(src, out)
    return out / "html"


@pytest.mark.parametrize("url", [URL, ""])
def test_every_page_of_a_built_site_ends_with_the_link_only_when_the_repository_is_set(tmp_path, url):
    out = _build_tiny_site(tmp_path, url)
    for page, title in (("index", "The first page"), ("second", "Second page")):
        html = (out / f"{page}.html").read_text(encoding="utf-8")
        links = re.findall(rf'<p class="{site_repository.REPORT_CLASS}">.*?href="([^"]+)"', html)
        if not url:
            assert not links and "/issues/new" not in html, f"{page}: a report link with no repository set"
            continue
        assert len(links) == 1, f"{page}: {len(links)} report links"
        found = _query(links[0].replace("&amp;", "&"))
        assert found["base"] == URL + "/issues/new"
        assert f"\u201c{title}\u201d ({page}.html)" in found["title"]
    search = (out / "search.html").read_text(encoding="utf-8")
    assert site_repository.REPORT_CLASS not in search  # a page of the site's own, not of the book
