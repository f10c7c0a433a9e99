"""The glossary page, built from book/glossary.yml.

A Sphinx directive, ``glossary-table <slug>``, draws the table of one
chapter's terms: the English term, linked to the section of the chapter that
teaches it, its Chinese name, the name the code gives it, and a one-line
definition. The section is the one the entry names (``section:``), or else
the one where one of the term's forms first appears in the chapter's text (a
bold occurrence first: that is where a chapter defines a term). A chapter
that has no notebook yet gets its terms without links.

A term defined twice, an entry whose section cannot be found, or a link
whose section has no anchor in the built chapter is a build warning (an
error under ``--warningiserror``); tests/test_glossary.py checks the same
without a build, and the built page's links against the built chapters.

The functions above the directive need no Sphinx build, so that the tests
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
from results_table import add_static_path, chapter_numbers  # noqa: E402  (shared with the results page)

GLOSSARY_FILE = "book/glossary.yml"
NOTEBOOKS_DIR = "notebooks"
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
# sections that mention everything and teach nothing new: never chosen by themselves
NOT_TEACHING = {"exercises", "results", "reproducibility", "summary", "references"}


class GlossaryError(ValueError):
    """book/glossary.yml is malformed: says where and what was expected."""


@dataclass(frozen=True)
class Term:
    term: str
    zh: str
    definition: str
    code: str = ""
    section: str = ""

    @property
    def forms(self) -> list[str]:
        """The ways the text may write the term: 'linear region (linear piece)'
        -> ['linear region (linear piece)', 'linear region', 'linear piece']."""
        forms = [self.term]
        for part in re.split(r",\s*|\s+/\s+|\s*\(|\)", self.term):
            part = part.strip()
            if part and part not in forms:
                forms.append(part)
        return forms


def load_glossary(path: Path) -> dict[str, list[Term]]:
    """``{chapter slug: [Term, ...]}`` from book/glossary.yml, checked entry by entry."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    chapters = data.get("chapters") if isinstance(data, dict) else None
    if not isinstance(chapters, dict) or not chapters:
        raise GlossaryError(f"{path}: expected a mapping 'chapters:' of chapter slugs to lists of terms")
    loaded = {}
    for slug, entries in chapters.items():
        if not isinstance(entries, list) or not entries:
            raise GlossaryError(f"{path}: chapter {slug!r} must list its terms; got {entries!r}")
        loaded[slug] = []
        for k, entry in enumerate(entries):
            where = f"{path}: chapter {slug!r}, term {k + 1}"
            if not isinstance(entry, dict):
                raise GlossaryError(f"{where}: expected a mapping with term, zh and definition; got {entry!r}")
            unknown = set(entry) - {"term", "zh", "code", "definition", "section"}
            if unknown:
                raise GlossaryError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; a term has term, "
                                    f"zh, definition, and optionally code and section")
            for name in ("term", "zh", "definition"):
                if not isinstance(entry.get(name), str) or not entry[name].strip():
                    raise GlossaryError(f"{where} ({entry.get('term')!r}): {name} must be a non-empty string")
            for name in ("code", "section"):
                if name in entry and (not isinstance(entry[name], str) or not entry[name].strip()):
                    raise GlossaryError(f"{where} ({entry['term']!r}): {name}, when given, must be a "
                                        f"non-empty string")
            loaded[slug].append(Term(**{k: v.strip() for k, v in entry.items()}))
    return loaded


def plain(text: str) -> str:
    """Heading or term text without Markdown marks, lower case, spaces folded."""
    text = re.sub(r"[`*$]|\\(?=[a-zA-Z])", "", text)
    text = text.translate(str.maketrans("“”‘’", "\"\"''"))  # Sphinx's smart quotes
    return re.sub(r"\s+", " ", text).strip().lower()


def notebook_sections(path: Path) -> list[tuple[str, str]]:
    """The chapter as ``(heading, text)`` pairs in order: the text under each
    heading of level 2 or deeper (the part before the first one under the
    chapter's title, with the heading '')."""
    sections = [("", "")]
    for cell in json.loads(Path(path).read_text(encoding="utf-8"))["cells"]:
        if cell.get("cell_type") != "markdown":
            continue
        fenced = False
        for line in "".join(cell.get("source", [])).splitlines():
            fenced ^= line.lstrip().startswith("```")
            match = None if fenced else HEADING.match(line)
            if match and len(match.group(1)) >= 2:
                sections.append((match.group(2), ""))
            elif not (match and len(match.group(1)) == 1):
                heading, text = sections[-1]
                sections[-1] = (heading, text + line + "\n")
    return sections


def _mentions(text: str, form: str, bold: bool) -> bool:
    f = re.escape(form.lower())
    pattern = rf"\*\*{f}\*\*" if bold else rf"(?<![\w-]){f}(?![\w-])"
    return re.search(pattern, text.lower()) is not None


def teaching_section(term: Term, sections: list[tuple[str, str]]) -> str | None:
    """The heading of the section that teaches ``term`` ('' for the chapter's
    opening), or None when the chapter never mentions it (or has no section
    of the name the entry gives). Without a ``section:`` in the entry: the
    first section whose heading names the term, else the first that writes it
    in bold (where a chapter defines a term), else the first that mentions it;
    the chapter's opening (its list of what it teaches) only when nothing
    else does."""
    if term.section:
        wanted = plain(term.section)
        return next((h for h, _ in sections if h and plain(h) == wanted), None)
    body = [(h, t) for h, t in sections if h and plain(h) not in NOT_TEACHING]
    searches = ([(h, h) for h, _ in body], [(h, t) for h, t in body], [(h, t) for h, t in body],
                [(h, h + "\n" + t) for h, t in sections if not h])
    for (bold, candidates) in zip((False, True, False, False), searches):
        for heading, text in candidates:
            if any(_mentions(text, form, bold) for form in term.forms):
                return heading
    return None


def problems(glossary: dict[str, list[Term]], notebooks: Path) -> list[str]:
    """Every term defined twice and every term of a written chapter with no
    section to link to, one sentence each."""
    found = []
    seen: dict[str, str] = {}
    for slug, terms in glossary.items():
        for term in terms:
            key = plain(term.term)
            if key in seen:
                found.append(f"the term {term.term!r} is defined twice: under {seen[key]!r} and {slug!r}")
            seen.setdefault(key, slug)
    numbers = chapter_numbers(notebooks)
    for slug, terms in glossary.items():
        if slug not in numbers:
            continue  # not written yet: its terms wait for it
        sections = notebook_sections(Path(notebooks) / f"{numbers[slug]:02d}_{slug}.ipynb")
        for term in terms:
            if teaching_section(term, sections) is None:
                found.append(f"{slug}: " + (f"the term {term.term!r} names the section {term.section!r}, which "
                                            f"the chapter does not have" if term.section else
                                            f"the chapter never mentions the term {term.term!r} (give "
                                            f"'section:' the heading of the section that teaches it)"))
    return found


from docutils import nodes  # noqa: E402
from sphinx.util import logging  # noqa: E402
from sphinx.util.docutils import SphinxDirective  # noqa: E402

logger = logging.getLogger(__name__)


class glossary_link(nodes.Inline, nodes.TextElement):
    """A term to link, once every chapter is read, to its section's anchor."""


class GlossaryTable(SphinxDirective):
    """The table of one chapter's terms."""

    required_arguments = 1  # the chapter's slug
    has_content = False

    def run(self):
        slug = self.arguments[0]
        root = Path(self.env.srcdir)
        path = root / GLOSSARY_FILE
        self.env.note_dependency(str(path))
        try:
            glossary = load_glossary(path)
        except (GlossaryError, yaml.YAMLError) as error:
            raise self.error(str(error)) from None
        if slug not in glossary:
            raise self.error(f"glossary-table: no chapter {slug!r} in {GLOSSARY_FILE}; it has {', '.join(glossary)}")
        if slug == next(iter(glossary)):  # once per build: the whole file's problems
            for problem in problems(glossary, root / NOTEBOOKS_DIR):
                logger.warning(problem, location=(self.env.docname, self.lineno))
        numbers = chapter_numbers(root / NOTEBOOKS_DIR)
        sections = None
        if slug in numbers:
            notebook = root / NOTEBOOKS_DIR / f"{numbers[slug]:02d}_{slug}.ipynb"
            self.env.note_dependency(str(notebook))
            sections = notebook_sections(notebook)
        table = nodes.table(classes=["colwidths-auto", "dlbook-glossary"])
        group = nodes.tgroup(cols=4)
        table += group
        for _ in range(4):
            group += nodes.colspec(colwidth=1)
        head, body = nodes.thead(), nodes.tbody()
        group += head
        group += body
        head += self.row([nodes.Text("English"), nodes.Text("中文"), nodes.Text("in code"),
                          nodes.Text("definition")])
        for term in glossary[slug]:
            heading = teaching_section(term, sections) if sections is not None else None
            if heading is None:
                english = self.inline(term.term)
            else:
                english = [glossary_link("", "", *self.inline(term.term),
                                         docname=f"{NOTEBOOKS_DIR}/{numbers[slug]:02d}_{slug}", heading=heading)]
            body += self.row([english, self.inline(term.zh), self.inline(term.code) if term.code else [],
                              self.inline(term.definition)])
        return [table]

    def inline(self, text: str) -> list:
        parsed, messages = self.state.inline_text(text, self.lineno)
        return parsed + messages

    @staticmethod
    def row(cells) -> nodes.row:
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            para = nodes.paragraph()
            para += cell
            entry += para
            row += entry
        return row


def anchor(env, docname: str, heading: str) -> str | None:
    """'#id' of the section of ``docname`` whose title is ``heading`` ('' for the page's top)."""
    if not heading:
        return ""
    toc = env.tocs.get(docname)
    if toc is None:
        return None
    wanted = plain(heading)
    for ref in toc.findall(nodes.reference):
        if plain(ref.astext()) == wanted:
            return ref.get("anchorname", "")
    return None


def resolve_links(app, doctree, fromdocname):
    for node in list(doctree.findall(glossary_link)):
        docname, heading = node["docname"], node["heading"]
        found = anchor(app.env, docname, heading)
        if found is None:
            logger.warning(f"glossary: the term {node.astext()!r} links to the section {heading!r} of "
                           f"{docname}, which has no such section", location=node)
            node.replace_self(node.children)
            continue
        uri = app.builder.get_relative_uri(fromdocname, docname) + found
        reference = nodes.reference("", "", *node.children, internal=True, refuri=uri,
                                    classes=["dlbook-glossary-link"])
        node.replace_self(reference)


def setup(app):
    app.connect("builder-inited", add_static_path)  # book/_ext/static, as the results page does
    app.add_css_file("dlbook-tables.css")
    app.add_node(glossary_link)
    app.add_directive("glossary-table", GlossaryTable)
    app.connect("doctree-resolved", resolve_links)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
