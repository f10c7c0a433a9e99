"""book/exercises.yml and the exercise index (book/_ext/exercise_index.py).

Every exercise a chapter states has an entry and every entry an exercise;
every checked exercise names a check that exists and that its chapter calls;
a malformed entry is refused with what was expected; a small Sphinx build
shows the directive at work and warns about a stray exercise.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sphinx_helpers import build_html, load_extension
import yaml

from dlbook import exercises

ROOT = Path(__file__).resolve().parents[1]


ei = load_extension("exercise_index.py", "dlbook_exercise_index")
BOOK = ei.load_exercises(ROOT / ei.EXERCISES_FILE)


def test_every_exercise_of_every_chapter_is_listed_and_nothing_else():
    assert ei.problems(BOOK, ROOT / "notebooks") == []
    numbers = ei.chapter_numbers(ROOT / "notebooks")
    for slug, number in numbers.items():
        stated = ei.notebook_exercises(ROOT / "notebooks" / f"{number:02d}_{slug}.ipynb")
        assert stated, f"chapter {slug} states no exercise"
        assert [n for n, _ in stated] == list(range(1, len(stated) + 1)), slug  # numbered 1, 2, ...


def test_every_listed_check_exists_and_its_chapter_calls_it():
    registered = set(exercises.keys())
    numbers = ei.chapter_numbers(ROOT / "notebooks")
    for slug, entries in BOOK.items():
        source = "".join("".join(c["source"]) for c in json.loads(
            (ROOT / "notebooks" / f"{numbers[slug]:02d}_{slug}.ipynb").read_text(encoding="utf-8"))["cells"]
            if c["cell_type"] == "code")
        for entry in entries:
            if entry.check is None:
                assert "not checked" in entry.title, f"{slug} {entry.number}: a checked exercise needs its key"
                continue
            assert entry.check in registered, f"{entry.check} is not a key of dlbook.exercises"
            assert re.search(rf"check\(\s*[\"']{re.escape(entry.check)}[\"']", source), (
                f"{slug} never calls check({entry.check!r})")
    listed = {e.check for entries in BOOK.values() for e in entries if e.check}
    chapters = set(BOOK)
    unlisted = {k for k in registered if k.split(".")[0] in chapters} - listed
    assert not unlisted, f"checks of these chapters that no exercise lists: {sorted(unlisted)}"


def _notebook(path: Path, *markdown: str) -> None:
    path.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": [m]} for m in markdown]}))


def test_problems_name_a_missing_an_extra_and_a_renamed_exercise(tmp_path):
    _notebook(tmp_path / "01_toy.ipynb", "# Toy: a chapter", "**Exercise 1 (first).** Do this.",
              "**Exercise 2 (second one).** And this.\n\n**Exercise 3 (explore; not checked).** Play.")
    entry = dict(check=None, difficulty=1, ideas=["an idea"], checks="what it checks")
    data = tmp_path / "exercises.yml"
    data.write_text(yaml.safe_dump({"chapters": {"toy": [
        dict(number=1, title="first", **entry), dict(number=2, title="second", **entry),
        dict(number=4, title="fourth", **entry)], "ghost": [dict(number=1, title="x", **entry)]}}))
    found = ei.problems(ei.load_exercises(data), tmp_path)
    assert any("states Exercise 2 (second one)" in p for p in found)
    assert any("states Exercise 3 (explore; not checked)" in p for p in found)
    assert any("lists Exercise 2 (second)" in p for p in found)
    assert any("lists Exercise 4 (fourth)" in p for p in found)
    assert any("'ghost'" in p and "no notebook" in p for p in found)
    assert not any("Exercise 1 " in p for p in found)


@pytest.mark.parametrize("change, message", [
    ({"number": 0}, "number must be a whole number"),
    ({"number": True}, "number must be a whole number"),
    ({"title": ""}, "title"),
    ({"check": "cnn.output_size"}, "check must be a key 'toy.<name>'"),
    ({"difficulty": 4}, "difficulty must be one of"),
    ({"ideas": "one string"}, "ideas must be a list"),
    ({"checks": " "}, "checks must say"),
])
def test_a_malformed_entry_is_refused_with_what_was_expected(tmp_path, change, message):
    entry = dict(number=1, title="first", check="toy.first", difficulty=1, ideas=["x"], checks="y")
    entry.update(change)
    data = tmp_path / "exercises.yml"
    data.write_text(yaml.safe_dump({"chapters": {"toy": [entry]}}))
    with pytest.raises(ei.ExercisesError, match=message):
        ei.load_exercises(data)
    del entry["checks"]
    data.write_text(yaml.safe_dump({"chapters": {"toy": [entry]}}))
    with pytest.raises(ei.ExercisesError, match="missing checks"):
        ei.load_exercises(data)


def test_the_directive_in_a_sphinx_build(tmp_path):
    """A tiny book with two chapters: the index draws a table per chapter with
    every exercise, one chapter's table alone with :chapter:, and a warning
    names an exercise the data file does not list."""
    src = tmp_path / "src"
    (src / "book").mkdir(parents=True)
    (src / "notebooks").mkdir()
    _notebook(src / "notebooks" / "01_toy.ipynb", "# Toy: a chapter",
              "**What you will learn**\n\n- how to find $\\lambda$;\n- why it matters.\n\n"
              "**Prerequisites**: chapter 0, *Nothing*.\n\n**Runtime** of the notebook: fast.",
              "**Exercise 1 (a $\\lambda$ to find).** Find it.", "**Exercise 2 (explore; not checked).** Play.")
    (src / "results").mkdir()
    (src / "results" / "toy.json").write_text(json.dumps({
        "chapter": "toy", "profile": "full", "device": "cpu", "device_name": "Test CPU", "threads": 2,
        "seconds": 250.0, "metrics": {}}))
    _notebook(src / "notebooks" / "02_more.ipynb", "# More", "**Exercise 1 (only one).** Do it.",
              "**Exercise 2 (not in the file).** Stray.")
    for stem in ("01_toy", "02_more"):
        (src / "notebooks" / f"{stem}.md").write_text(f"# {stem}\n\nA chapter.\n")
    entry = dict(difficulty=2, ideas=["eigenvalues", "stability"], checks="the value to 6 digits")
    (src / "book" / "exercises.yml").write_text(yaml.safe_dump({"chapters": {
        "toy": [dict(number=1, title="a $\\lambda$ to find", check="toy.lam", **entry),
                dict(number=2, title="explore; not checked", check=None, **entry)],
        "more": [dict(number=1, title="only one", check="more.one", **entry)]}}))
    (src / "book" / "exercises.md").write_text("# Exercises\n\n```{exercise-index}\n```\n")
    (src / "book" / "guide.md").write_text("# Guide\n\n```{exercise-index}\n:chapter: more\n```\n\n"
                                           "## Toy\n\n```{chapter-guide} toy\n```\n")
    (src / "index.md").write_text("# Book\n\n```{toctree}\nbook/exercises\nbook/guide\nnotebooks/01_toy\n"
                                  "notebooks/02_more\n```\n")
    (src / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT / 'book' / '_ext')!r})\n"
        "extensions = ['myst_parser', 'exercise_index']\nmyst_enable_extensions = ['dollarmath']\n")
    logged = build_html(src, tmp_path)
    index = (tmp_path / "html" / "book" / "exercises.html").read_text(encoding="utf-8")
    assert index.count("dlbook-exercises") == 2  # a table per chapter
    assert 'href="../notebooks/01_toy.html"' in index and 'href="../notebooks/02_more.html"' in index
    assert "only one" in index and "eigenvalues, stability" in index and "the value to 6 digits" in index
    assert "2. explore; not checked" in index and "●●○ medium" in index
    assert '1. a <span class="math notranslate nohighlight">\\(\\lambda\\)</span> to find' in index  # typeset
    guide = (tmp_path / "html" / "book" / "guide.html").read_text(encoding="utf-8")
    assert guide.count("dlbook-exercises") == 2 and "only one" in guide
    # the chapter guide: the chapter's own list and prerequisites, its run, its exercises
    toy = guide[guide.index('id="toy"'):]
    assert re.search(r"<li><p>how to find <span class=\"math[^\"]*\">\\\(\\lambda\\\)</span>;</p></li>", toy), toy
    assert "chapter 0, <em>Nothing</em>." in toy and "fast" not in toy
    assert "250 s (4.2 min), CPU (Test CPU), 2 threads" in toy
    assert "1. a <span" in toy and "2. explore; not checked" in toy
    assert "states Exercise 2 (not in the file)" in logged, logged
