"""book/glossary.yml and the glossary page (book/_ext/glossary_table.py).

No term is defined twice; every term of a written chapter has a section of
that chapter to link to; a malformed entry is refused with what was
expected; a small Sphinx build links each term to its section's anchor and
warns about a link with nowhere to go; on the built site every glossary link
lands on an element of its chapter's page.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sphinx_helpers import build_html, load_extension
import yaml

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"


gt = load_extension("glossary_table.py", "dlbook_glossary_table")
GLOSSARY = gt.load_glossary(ROOT / gt.GLOSSARY_FILE)


def test_no_term_twice_and_every_term_of_a_written_chapter_has_its_section():
    assert gt.problems(GLOSSARY, ROOT / "notebooks") == []
    numbers = gt.chapter_numbers(ROOT / "notebooks")
    assert set(numbers) <= set(GLOSSARY), f"chapters without terms: {set(numbers) - set(GLOSSARY)}"


def test_the_page_has_one_table_for_every_chapter_of_the_file():
    page = (ROOT / "book" / "glossary.md").read_text(encoding="utf-8")
    tables = re.findall(r"```\{glossary-table\} (\S+)", page)
    assert sorted(tables) == sorted(GLOSSARY) and len(tables) == len(set(tables))


def test_forms_of_a_term():
    term = gt.Term(term="linear region (linear piece)", zh="线性区域", definition="d")
    assert term.forms == ["linear region (linear piece)", "linear region", "linear piece"]
    assert gt.Term(term="target, label", zh="标签", definition="d").forms == ["target, label", "target", "label"]
    assert "sharp" in gt.Term(term="sharp / flat minimum", zh="z", definition="d").forms


def _notebook(path: Path, *markdown: str) -> None:
    path.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": [m]} for m in markdown]}))


def test_the_teaching_section_is_the_named_one_then_a_heading_then_bold_then_a_mention(tmp_path):
    _notebook(tmp_path / "01_toy.ipynb",
              "# Toy\n\n**What you will learn**: kernels, strides, pools and padding.",
              "## Kernels\n\nA kernel slides. The stride is mentioned here first.",
              "## Padding and more\n\nThe **stride** is defined here. A pool too.",
              "```python\n## not a heading: a comment\n```\n\n## Exercises\n\nUse a strange thing.",
              "### The pool\n\nPools.")
    sections = gt.notebook_sections(tmp_path / "01_toy.ipynb")
    assert [h for h, _ in sections] == ["", "Kernels", "Padding and more", "Exercises", "The pool"]

    def where(term, section=""):
        return gt.teaching_section(gt.Term(term=term, zh="z", definition="d", section=section), sections)

    assert where("kernel") == "Kernels"  # a heading names it
    assert where("stride") == "Padding and more"  # bold beats a first mention
    assert where("pool") == "The pool"  # a heading, although mentioned before
    assert where("padding, zero padding") == "Padding and more"
    assert where("strange thing") is None  # only in the exercises: teaches nothing
    assert where("stride", section="Kernels") == "Kernels"
    assert where("stride", section="No such section") is None
    assert where("learn nothing") is None


def test_problems_name_a_term_defined_twice_and_a_term_with_nowhere_to_go(tmp_path):
    _notebook(tmp_path / "01_toy.ipynb", "# Toy", "## Kernels\n\nA kernel.")
    data = tmp_path / "glossary.yml"
    data.write_text(yaml.safe_dump({"chapters": {
        "toy": [dict(term="kernel", zh="卷积核", definition="d"), dict(term="zebra", zh="斑马", definition="d"),
                dict(term="kernel", zh="核", definition="again", section="Gone")],
        "later": [dict(term="Kernel", zh="核", definition="d"), dict(term="unwritten", zh="z", definition="d")]}},
        allow_unicode=True, sort_keys=False))
    found = gt.problems(gt.load_glossary(data), tmp_path)
    assert "the term 'kernel' is defined twice: under 'toy' and 'toy'" in found
    assert "the term 'Kernel' is defined twice: under 'toy' and 'later'" in found
    assert any("never mentions the term 'zebra'" in p for p in found)
    assert any("names the section 'Gone'" in p for p in found)
    assert not any("unwritten" in p for p in found)  # its chapter is not written yet


@pytest.mark.parametrize("entry, message", [
    (dict(zh="z", definition="d"), "term must be a non-empty string"),
    (dict(term="t", zh="", definition="d"), "zh must be a non-empty string"),
    (dict(term="t", zh="z", definition="d", code=""), "code, when given"),
    (dict(term="t", zh="z", definition="d", chapter="x"), "unknown field"),
    ("just a string", "expected a mapping"),
])
def test_a_malformed_entry_is_refused_with_what_was_expected(tmp_path, entry, message):
    data = tmp_path / "glossary.yml"
    data.write_text(yaml.safe_dump({"chapters": {"toy": [entry]}}))
    with pytest.raises(gt.GlossaryError, match=message):
        gt.load_glossary(data)


def test_the_directive_in_a_sphinx_build(tmp_path):
    """A tiny book: a term links to its section's anchor on the chapter page,
    a term of an unwritten chapter is plain text, and a section that the
    notebook has but the built page lacks is a warning, not a dead link."""
    src = tmp_path / "src"
    (src / "book").mkdir(parents=True)
    (src / "notebooks").mkdir()
    _notebook(src / "notebooks" / "01_toy.ipynb", "# Toy", "## The kernel, $k$ by $k$\n\nA **kernel** slides.",
              "## Only in the notebook\n\nA **ghost**.")
    (src / "notebooks" / "01_toy.md").write_text("# Toy\n\n## Intro\n\nText.\n\n## The kernel, $k$ by $k$\n\n"
                                                  "A kernel slides.\n")
    (src / "book" / "glossary.yml").write_text(yaml.safe_dump({"chapters": {
        "toy": [dict(term="kernel", zh="卷积核", code="`w`", definition="The small $k \\times k$ array."),
                dict(term="ghost", zh="幽灵", definition="Not on the page.")],
        "later": [dict(term="future term", zh="未来", definition="Waits for its chapter.")]}}, allow_unicode=True))
    (src / "book" / "glossary.md").write_text("# Glossary\n\n## Toy\n\n```{glossary-table} toy\n```\n\n"
                                               "## Later\n\n```{glossary-table} later\n```\n")
    (src / "index.md").write_text("# Book\n\n```{toctree}\nbook/glossary\nnotebooks/01_toy\n```\n")
    (src / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT / 'book' / '_ext')!r})\n"
        "extensions = ['myst_parser', 'glossary_table']\nmyst_enable_extensions = ['dollarmath']\n")
    logged = build_html(src, tmp_path)
    html = (tmp_path / "html" / "book" / "glossary.html").read_text(encoding="utf-8")
    chapter = (tmp_path / "html" / "notebooks" / "01_toy.html").read_text(encoding="utf-8")
    link = re.search(r'<a class="[^"]*dlbook-glossary-link[^"]*" href="([^"]+)">kernel</a>', html)
    assert link, html
    page, _, anchor = link.group(1).partition("#")
    assert page == "../notebooks/01_toy.html" and anchor and f'id="{anchor}"' in chapter
    assert "卷积核" in html and "<code" in html and 'class="math' in html  # Chinese, code, math
    assert re.search(r"<p>future term</p>", html)  # no link before its chapter lands
    assert re.search(r"<p>ghost</p>", html)  # no dead link either
    assert "links to the section 'Only in the notebook'" in logged, logged


def test_every_glossary_link_of_the_built_site_lands_on_its_chapter():
    assert (SITE / "book" / "glossary.html").exists(), "build the site first (make book)"
    html = (SITE / "book" / "glossary.html").read_text(encoding="utf-8")
    links = re.findall(r'class="[^"]*dlbook-glossary-link[^"]*" href="([^"]+)"', html)
    written = gt.chapter_numbers(ROOT / "notebooks")
    assert len(links) == sum(len(GLOSSARY[slug]) for slug in written)  # every term of a written chapter
    pages: dict[str, str] = {}
    for href in links:
        page, _, anchor = href.partition("#")
        target = (SITE / "book" / page).resolve()
        text = pages.setdefault(page, target.read_text(encoding="utf-8"))
        assert not anchor or f'id="{anchor}"' in text, f"{href}: no element with that id"
