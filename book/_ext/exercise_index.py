"""The exercise index and the instructor guide's exercise tables.

A Sphinx directive, ``exercise-index``, that reads ``book/exercises.yml``
(every exercise of the book: its title, its check, its difficulty, the ideas
it practises and what its check verifies) and the chapter notebooks, and
draws one table per chapter; ``:chapter: <slug>`` draws one chapter's only.

Every exercise a notebook states (a markdown line starting
``**Exercise N (title).**``) must have an entry with the same number and
title, and every entry must name an exercise of its notebook: a mismatch is a
build warning (an error under ``--warningiserror``) and fails
tests/test_exercise_index.py, so the index cannot drift from the chapters.

The functions above the directives need no Sphinx build, so that the tests
can call them.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # Sphinx puts book/_ext there; a test loading this file may not
    sys.path.insert(0, _HERE)
from results_table import add_static_path, chapter_numbers, run_text  # noqa: E402  (shared with the results page)

EXERCISES_FILE = "book/exercises.yml"
NOTEBOOKS_DIR = "notebooks"
DIFFICULTY = {1: "●○○ short", 2: "●●○ medium", 3: "●●● long"}
# "**Exercise 3 (what the validation set can tell).**" at the start of a line
EXERCISE_LINE = re.compile(r"^\*\*Exercise (\d+) \((.+?)\)\.?\*\*", re.MULTILINE)


class ExercisesError(ValueError):
    """book/exercises.yml is malformed: says where and what was expected."""


@dataclass(frozen=True)
class Exercise:
    number: int
    title: str
    check: str | None
    difficulty: int
    ideas: tuple[str, ...]
    checks: str


def notebook_exercises(path: Path) -> list[tuple[int, str]]:
    """The ``(number, title)`` of every exercise a notebook states, in order."""
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    found = []
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            text = "".join(cell.get("source", []))
            found += [(int(m.group(1)), m.group(2)) for m in EXERCISE_LINE.finditer(text)]
    return found


def load_exercises(path: Path) -> dict[str, list[Exercise]]:
    """``{slug: [Exercise, ...]}`` from book/exercises.yml, checked field by field."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    chapters = data.get("chapters") if isinstance(data, dict) else None
    if not isinstance(chapters, dict):
        raise ExercisesError(f"{path}: expected a mapping 'chapters:' of chapter slugs to lists of exercises")
    loaded = {}
    for slug, entries in chapters.items():
        if not isinstance(entries, list) or not entries:
            raise ExercisesError(f"{path}: chapter {slug!r} must list its exercises; got {entries!r}")
        loaded[slug] = []
        for k, entry in enumerate(entries):
            where = f"{path}: chapter {slug!r}, entry {k + 1}"
            if not isinstance(entry, dict):
                raise ExercisesError(f"{where}: expected a mapping with number, title, check, difficulty, "
                                     f"ideas and checks; got {entry!r}")
            missing = {"number", "title", "check", "difficulty", "ideas", "checks"} - set(entry)
            if missing:
                raise ExercisesError(f"{where}: missing {', '.join(sorted(missing))}")
            number, title, check = entry["number"], entry["title"], entry["check"]
            difficulty, ideas, checks = entry["difficulty"], entry["ideas"], entry["checks"]
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise ExercisesError(f"{where}: number must be a whole number from 1; got {number!r}")
            if not isinstance(title, str) or not title.strip():
                raise ExercisesError(f"{where}: title must be the exercise's title; got {title!r}")
            if check is not None and (not isinstance(check, str) or not check.startswith(f"{slug}.")):
                raise ExercisesError(f"{where}: check must be a key '{slug}.<name>' of dlbook.exercises, "
                                     f"or null for an exercise that is not checked; got {check!r}")
            if difficulty not in DIFFICULTY:
                raise ExercisesError(f"{where}: difficulty must be one of {sorted(DIFFICULTY)}; got {difficulty!r}")
            if not isinstance(ideas, list) or not ideas or not all(isinstance(i, str) and i for i in ideas):
                raise ExercisesError(f"{where}: ideas must be a list of a few words each; got {ideas!r}")
            if not isinstance(checks, str) or not checks.strip():
                raise ExercisesError(f"{where}: checks must say what the check verifies; got {checks!r}")
            loaded[slug].append(Exercise(number, title.strip(), check, difficulty, tuple(ideas), checks.strip()))
    return loaded


def problems(exercises: dict[str, list[Exercise]], notebooks: Path) -> list[str]:
    """Every way the data file and the notebooks disagree, one sentence each."""
    found = []
    numbers = chapter_numbers(notebooks)
    for slug, number in numbers.items():
        stated = notebook_exercises(Path(notebooks) / f"{number:02d}_{slug}.ipynb")
        listed = [(e.number, e.title) for e in exercises.get(slug, [])]
        for item in stated:
            if item not in listed:
                found.append(f"{slug}: the notebook states Exercise {item[0]} ({item[1]}), which "
                             f"{EXERCISES_FILE} does not list with that number and title")
        for item in listed:
            if item not in stated:
                found.append(f"{slug}: {EXERCISES_FILE} lists Exercise {item[0]} ({item[1]}), which the "
                             f"notebook does not state")
    for slug in exercises:
        if slug not in numbers:
            found.append(f"{EXERCISES_FILE} lists chapter {slug!r}, which has no notebook NN_{slug}.ipynb")
    for slug, entries in exercises.items():
        keys = [e.check for e in entries if e.check]
        for key in {k for k in keys if keys.count(k) > 1}:
            found.append(f"{slug}: the check {key!r} is listed for more than one exercise")
    return found


def chapter_intro(path: Path) -> tuple[str, str]:
    """The chapter's own "What you will learn" list and its "Prerequisites"
    sentence, as Markdown (empty strings when the chapter has none)."""
    learn = prerequisites = ""
    for cell in json.loads(Path(path).read_text(encoding="utf-8"))["cells"]:
        if cell.get("cell_type") != "markdown":
            continue
        text = "".join(cell.get("source", []))
        match = re.search(r"\*\*What you will learn\*\*\s*\n(.*?)(?:\n\s*\n(?!- )|\Z)", text, re.DOTALL)
        if match and not learn:
            learn = match.group(1).strip()
        match = re.search(r"\*\*Prerequisites\*\*:?\s*(.+)", text)
        if match and not prerequisites:
            prerequisites = match.group(1).strip()
        if learn and prerequisites:
            break
    return learn, prerequisites


def full_run(results: Path, slug: str) -> str:
    """'293 s (4.9 min), CPU (AMD EPYC), 2 threads' from results/<slug>.json, or ''
    before the chapter's first full run."""
    path = Path(results) / f"{slug}.json"
    if not path.exists():
        return ""
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("profile") != "full" or not isinstance(record.get("seconds"), (int, float)):
        return ""
    time, device = run_text(record)
    return f"{time}, {device}"


def notebook_title(path: Path) -> str:
    """The chapter's title: its first level-1 heading."""
    for cell in json.loads(Path(path).read_text(encoding="utf-8"))["cells"]:
        if cell.get("cell_type") == "markdown":
            match = re.search(r"^# (.+)$", "".join(cell.get("source", [])), re.MULTILINE)
            if match:
                return match.group(1).strip()
    return Path(path).stem


from docutils import nodes  # noqa: E402
from docutils.parsers.rst import directives  # noqa: E402
from sphinx.util import logging  # noqa: E402
from sphinx.util.docutils import SphinxDirective  # noqa: E402


class ExerciseIndex(SphinxDirective):
    """One table per chapter (or ``:chapter:`` one): every exercise with its
    difficulty, the ideas it practises and what its check verifies."""

    has_content = False
    option_spec = {"chapter": directives.unchanged}

    def run(self):
        root = Path(self.env.srcdir)
        data_path = root / EXERCISES_FILE
        self.env.note_dependency(str(data_path))
        try:
            exercises = self.exercises = load_exercises(data_path)
        except (ExercisesError, yaml.YAMLError) as error:
            raise self.error(str(error)) from None
        notebooks = root / NOTEBOOKS_DIR
        numbers = chapter_numbers(notebooks)
        logger = logging.getLogger(__name__)
        for problem in problems(exercises, notebooks):
            logger.warning(problem, location=(self.env.docname, self.lineno))
        only = self.options.get("chapter")
        if only is not None and only not in exercises:
            raise self.error(f"exercise-index: no chapter {only!r} in {EXERCISES_FILE}; "
                             f"it lists {', '.join(exercises)}")
        out = []
        for slug, number in numbers.items():
            if slug not in exercises or (only is not None and slug != only):
                continue
            path = notebooks / f"{number:02d}_{slug}.ipynb"
            self.env.note_dependency(str(path))
            if only is None:
                title = notebook_title(path).split(":")[0]
                heading = nodes.paragraph()
                heading += self.inline(f"**{{doc}}`{number:02d} {title} </{NOTEBOOKS_DIR}/{number:02d}_{slug}>`**")
                out.append(heading)
            out.append(self.chapter_table(slug))
        return out

    def inline(self, text: str) -> list:
        parsed, messages = self.state.inline_text(text, self.lineno)
        return parsed + messages

    def chapter_table(self, slug: str) -> nodes.table:
        rows = [[f"{e.number}. {e.title}",
                 DIFFICULTY[e.difficulty], ", ".join(e.ideas), e.checks]
                for e in self.exercises[slug]]
        return self.table(["exercise", "length", "practises", "what the check verifies"], rows)

    def table(self, header: list[str], rows: list[list[str]]) -> nodes.table:
        table = nodes.table(classes=["colwidths-auto", "dlbook-exercises"])
        group = nodes.tgroup(cols=len(header))
        table += group
        for _ in header:
            group += nodes.colspec(colwidth=1)
        head, body = nodes.thead(), nodes.tbody()
        group += head
        group += body
        for target, cells in ((head, header), *((body, r) for r in rows)):
            row = nodes.row()
            for text in cells:
                entry = nodes.entry()
                para = nodes.paragraph()
                para += self.inline(text)
                entry += para
                row += entry
            target += row
        return table


class ChapterGuide(ExerciseIndex):
    """For the instructor guide: one chapter's own list of what it teaches,
    its prerequisites and the time of its last full run (all read from the
    chapter and its results file, so they cannot drift), then its exercises."""

    required_arguments = 1  # the chapter's slug

    def run(self):
        slug = self.arguments[0]
        root = Path(self.env.srcdir)
        data_path = root / EXERCISES_FILE
        self.env.note_dependency(str(data_path))
        try:
            self.exercises = load_exercises(data_path)
        except (ExercisesError, yaml.YAMLError) as error:
            raise self.error(str(error)) from None
        numbers = chapter_numbers(root / NOTEBOOKS_DIR)
        if slug not in numbers:
            raise self.error(f"chapter-guide: no notebook NN_{slug}.ipynb in {NOTEBOOKS_DIR}/")
        path = root / NOTEBOOKS_DIR / f"{numbers[slug]:02d}_{slug}.ipynb"
        self.env.note_dependency(str(path))
        learn, prerequisites = chapter_intro(path)
        if not learn:
            raise self.error(f"chapter-guide: {path.name} has no '**What you will learn**' list")
        run = full_run(root / "results", slug)
        if run:
            self.env.note_dependency(str(root / "results" / f"{slug}.json"))
        text = (f"**What students learn** (the chapter's own list):\n\n{learn}\n\n"
                f"**Prerequisites**: {prerequisites or 'none stated'}\n\n"
                f"**Full run** (when its stored outputs were made): {run or 'not yet measured'}.\n\n"
                f"**Exercises**:\n")
        out = self.parse_text_to_nodes(text)
        if slug in self.exercises:
            out.append(self.chapter_table(slug))
        else:
            out += self.parse_text_to_nodes(f"none listed in {EXERCISES_FILE} yet.")
        return out


def setup(app):
    app.connect("builder-inited", add_static_path)  # book/_ext/static, as the results page does
    app.add_css_file("dlbook-tables.css")
    app.add_directive("exercise-index", ExerciseIndex)
    app.add_directive("chapter-guide", ChapterGuide)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
