"""tools/chapter_map.py: the landing page's map of which chapter builds on which."""

from __future__ import annotations

import json
import re

import pytest
from nbformat.v4 import new_markdown_cell, new_notebook

from tools import chapter_map

ROOT = chapter_map.ROOT


def _stored() -> str:
    return chapter_map.OUT.read_text(encoding="utf-8")


def test_every_chapter_of_the_toc_is_on_the_map_as_written():
    svg = _stored()
    pages = chapter_map.toc_chapters()
    assert len(pages) >= 6
    for page in pages:
        number = page.split("/")[1][:2]
        title, _ = chapter_map.read_notebook(ROOT / f"{page}.ipynb")
        group = re.search(rf'<g class="([^"]*)" data-chapter="{number}">(.*?)</g>', svg, re.S)
        assert group, f"chapter {number} ({page}) is not on the map: run python tools/chapter_map.py"
        assert group.group(1) == "chapter", f"chapter {number} is written but drawn as {group.group(1)!r}"
        texts = re.findall(r">([^<]*)</text>", group.group(2))  # the number, then the title's lines
        assert " ".join(texts[1:]) == title, f"chapter {number}'s box says {texts}, not {title!r}"


def test_the_stored_map_is_what_the_notebooks_say():
    assert chapter_map.main(["--check"]) == 0, "the map is out of step: run python tools/chapter_map.py"


def test_every_arrow_is_drawn():
    svg = _stored()
    drawn = sorted((int(a), int(b)) for a, b in re.findall(r'data-from="(\d+)" data-to="(\d+)"', svg))
    chapters = chapter_map.chapters()
    assert drawn == chapter_map.reduced_edges({c.number: c.builds_on for c in chapters})
    # every chapter but the first is reached from chapter 1
    assert {b for _, b in drawn} == {c.number for c in chapters} - {1}


def test_the_landing_page_shows_the_map():
    intro = (ROOT / "book" / "intro.md").read_text(encoding="utf-8")
    assert "```{figure} images/chapter_map.svg" in intro


def _notebook(path, title, prerequisites):
    cells = [new_markdown_cell(f"# {title}\n\nOne line.\n\n**Prerequisites**: {prerequisites}\n")]
    path.write_text(json.dumps(new_notebook(cells=cells)), encoding="utf-8")


def test_read_notebook_takes_the_chapters_its_prerequisites_name(tmp_path):
    _notebook(tmp_path / "x.ipynb", "Diffusion models: DDPM",
              "the VAE (chapter 7, *Variational autoencoders*); Adam (chapter 2, *Optimizers*) and chapter 2 again.")
    assert chapter_map.read_notebook(tmp_path / "x.ipynb") == ("Diffusion models", (2, 7))
    _notebook(tmp_path / "y.ipynb", "Foundations", "Python. This is the first chapter.")
    assert chapter_map.read_notebook(tmp_path / "y.ipynb") == ("Foundations", ())


def test_a_notebook_without_prerequisites_is_refused(tmp_path):
    (tmp_path / "z.ipynb").write_text(json.dumps(new_notebook(cells=[new_markdown_cell("# T\n\ntext")])))
    with pytest.raises(ValueError, match="Prerequisites"):
        chapter_map.read_notebook(tmp_path / "z.ipynb")


@pytest.mark.parametrize("builds_on, edges", [
    ({1: (), 2: (1,), 3: (1, 2), 4: (1, 2, 3)}, [(1, 2), (2, 3), (3, 4)]),
    ({1: (), 2: (1,), 3: (1,), 4: (2, 3)}, [(1, 2), (1, 3), (2, 4), (3, 4)]),
    ({1: (), 2: (1,), 3: (1, 2), 4: (1, 2), 5: (3, 4, 1)}, [(1, 2), (2, 3), (2, 4), (3, 5), (4, 5)]),
])
def test_reduced_edges_leave_out_what_a_longer_path_implies(builds_on, edges):
    assert chapter_map.reduced_edges(builds_on) == edges


def test_a_chapter_that_lands_is_drawn_from_its_notebook(tmp_path, monkeypatch):
    monkeypatch.setattr(chapter_map, "COMING", {7: ("Variational autoencoders", (1,)), 8: ("GANs", (7,))})
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "_toc.yml").write_text("root: book/intro\nparts:\n  - chapters:\n"
                                       "      - file: notebooks/01_one\n      - file: notebooks/07_vae\n")
    _notebook(tmp_path / "notebooks" / "01_one.ipynb", "One", "none. This is the first chapter.")
    _notebook(tmp_path / "notebooks" / "07_vae.ipynb", "Autoencoders: and VAEs", "the MLP (chapter 1, *One*).")
    found = {c.number: c for c in chapter_map.chapters(tmp_path)}
    assert found[7] == chapter_map.Chapter(7, "Autoencoders", (1,), True, "notebooks/07_vae")
    assert not found[8].written and found[8].builds_on == (7,)
    svg = chapter_map.svg(list(found.values()))
    assert 'data-chapter="07"' in svg and "07 \u00b7 coming" not in svg and "08 \u00b7 coming" in svg


def test_a_chapter_cannot_build_on_a_later_one(tmp_path, monkeypatch):
    monkeypatch.setattr(chapter_map, "COMING", {})
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "_toc.yml").write_text("root: book/intro\nparts:\n  - chapters:\n      - file: notebooks/02_two\n")
    _notebook(tmp_path / "notebooks" / "02_two.ipynb", "Two", "chapter 4.")
    with pytest.raises(ValueError, match="no earlier chapter"):
        chapter_map.chapters(tmp_path)


@pytest.mark.parametrize("title, lines", [
    ("Attention", ["Attention"]), ("The Transformer", ["The Transformer"]),
    ("Convolutional networks", ["Convolutional", "networks"]),
    ("Graph neural networks", ["Graph neural", "networks"]),
])
def test_a_long_title_takes_two_lines(title, lines):
    assert chapter_map.title_lines(title) == lines
