"""Draw the chapter map of the landing page: which chapter builds on which.

    python tools/chapter_map.py          # write book/images/chapter_map.svg
    python tools/chapter_map.py --check  # exit 1 if the stored map is out of step

A written chapter's arrows come from its notebook: the chapters its
``**Prerequisites**`` line names ("(chapter 2, *Optimizers*)"). The chapters
that are not written yet (``COMING``) are drawn dashed, marked "coming", with
the chapters their plans build on. An arrow that a longer path already implies
is left out (every chapter builds on chapter 1; only chapter 2 draws the
arrow), so the map shows the order in which to read, not every dependency.

The figure is an SVG written here, by hand: no network, no graphviz, and the
same file on every machine, so ``--check`` can compare it byte for byte.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from html import escape
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
TOC = ROOT / "_toc.yml"
OUT = ROOT / "book" / "images" / "chapter_map.svg"

# Chapters that have no notebook yet: number -> (short title, the chapters their plan builds on).
# From the chapter issues: 07 uses the core training of 01-02; 08 and 09 the VAE chapter's generative
# yardstick; 10 the MNIST classifier of the CNN chapter; 11 the char-GPT of the Transformer chapter.
COMING = {
    7: ("Variational autoencoders", (1, 2)),
    8: ("GANs and WGAN", (7,)),
    9: ("Diffusion models", (7,)),
    10: ("Adversarial examples", (3,)),
    11: ("Beyond one machine", (5,)),
}

PREREQUISITES = re.compile(r"^\*\*Prerequisites\*\*:(.*)$", re.M)
CHAPTER_REF = re.compile(r"\bchapters? (\d+)\b")


@dataclass(frozen=True)
class Chapter:
    number: int
    title: str
    builds_on: tuple[int, ...]
    written: bool
    page: str | None = None  # the page in _toc.yml (notebooks/03_cnn), None for a coming chapter


def short_title(heading: str) -> str:
    """A notebook's title without its subtitle: "Foundations: from ... to ..." -> "Foundations"."""
    return heading.lstrip("#").strip().split(":", 1)[0].strip()


def read_notebook(path: Path) -> tuple[str, tuple[int, ...]]:
    """A chapter notebook's short title and the chapter numbers its prerequisites name.

    Raises:
        ValueError: when the notebook has no title or no ``**Prerequisites**:`` line.
    """
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    heading = next((line for line in text.splitlines() if line.startswith("# ")), None)
    found = PREREQUISITES.search(text)
    if heading is None or found is None:
        raise ValueError(f"{path}: a chapter starts with a '# title' and a '**Prerequisites**:' line")
    return short_title(heading), tuple(sorted({int(n) for n in CHAPTER_REF.findall(found.group(1))}))


def toc_chapters(toc: Path = TOC) -> list[str]:
    """The chapter pages _toc.yml lists (notebooks/NN_slug), in its order."""
    data = yaml.safe_load(Path(toc).read_text(encoding="utf-8"))
    files = [c["file"] for part in data.get("parts", []) for c in part.get("chapters", [])]
    return [f for f in files if re.fullmatch(r"notebooks/\d\d_\w+", f)]


def chapters(root: Path = ROOT) -> list[Chapter]:
    """Every chapter: the written ones of _toc.yml from their notebooks, then those still coming."""
    found = {}
    for page in toc_chapters(root / "_toc.yml"):
        number = int(Path(page).name[:2])
        title, builds_on = read_notebook(root / f"{page}.ipynb")
        found[number] = Chapter(number, title, builds_on, True, page)
    for number, (title, builds_on) in COMING.items():
        if number not in found:
            found[number] = Chapter(number, title, builds_on, False)
    for chapter in found.values():
        unknown = [n for n in chapter.builds_on if n not in found or n >= chapter.number]
        if unknown:
            raise ValueError(f"chapter {chapter.number} builds on {unknown}, which is no earlier chapter")
    return [found[n] for n in sorted(found)]


def reduced_edges(builds_on: dict[int, tuple[int, ...]]) -> list[tuple[int, int]]:
    """The arrows (earlier, later) left when every arrow a longer path implies is dropped."""
    def reachable(start: int) -> set[int]:
        seen, todo = set(), list(builds_on.get(start, ()))
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(builds_on.get(n, ()))
        return seen

    edges = []
    for later, earlier in builds_on.items():
        for n in earlier:
            through_others = set().union(*(reachable(m) for m in earlier if m != n)) if len(earlier) > 1 else set()
            if n not in through_others:
                edges.append((n, later))
    return sorted(edges)


def layers(builds_on: dict[int, tuple[int, ...]]) -> dict[int, int]:
    """Each chapter's row: one below the lowest of the chapters it builds on (row 0: builds on none)."""
    row: dict[int, int] = {}
    for n in sorted(builds_on):
        row[n] = 1 + max((row[m] for m in builds_on[n]), default=-1)
    return row


# Layout, in SVG pixels.
BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 152, 62, 14, 30, 8
LINE_CHARS = 15  # a title longer than this is set on two lines
LEGEND_H = 44
INK, WRITTEN_FILL, COMING_INK, COMING_FILL = "#1f2933", "#e3f0fb", "#6b7280", "#ffffff"
FONT = "DejaVu Sans, Verdana, Arial, sans-serif"


def title_lines(title: str, width: int = LINE_CHARS) -> list[str]:
    """A box's title on one line, or on two split at the space nearest the middle when it is long."""
    if len(title) <= width or " " not in title:
        return [title]
    spaces = [i for i, ch in enumerate(title) if ch == " "]
    cut = min(spaces, key=lambda i: abs(i - len(title) / 2))
    return [title[:cut], title[cut + 1:]]


def layout(chapters_: list[Chapter]) -> dict[int, tuple[float, float]]:
    """The top-left corner of each chapter's box: rows by :func:`layers`; in a row, the chapters
    ordered by where the chapters they build on stand (after :func:`reduced_edges`), and the row
    shifted to sit under them, so that arrows do not cross."""
    builds_on = {c.number: c.builds_on for c in chapters_}
    parents: dict[int, list[int]] = {n: [] for n in builds_on}
    for earlier, later in reduced_edges(builds_on):
        parents[later].append(earlier)
    row = layers(builds_on)
    rows: dict[int, list[int]] = {}
    for n in sorted(row):
        rows.setdefault(row[n], []).append(n)
    width = max(len(r) for r in rows.values())
    x_of: dict[int, float] = {}
    for r in sorted(rows):
        under = {n: sum(x_of[m] for m in parents[n]) / len(parents[n]) if parents[n] else (width - 1) / 2
                 for n in rows[r]}
        rows[r].sort(key=lambda n: (under[n], n))
        # the row's boxes side by side, centred under the mean of the chapters they build on
        start = sum(under.values()) / len(under) - (len(rows[r]) - 1) / 2
        start = min(max(start, 0), width - len(rows[r]))
        for i, n in enumerate(rows[r]):
            x_of[n] = start + i
    return {n: (MARGIN + x_of[n] * (BOX_W + GAP_X), MARGIN + row[n] * (BOX_H + GAP_Y)) for n in row}


def svg(chapters_: list[Chapter]) -> str:
    """The chapter map as an SVG document."""
    where = layout(chapters_)
    by_number = {c.number: c for c in chapters_}
    width = max(x for x, _ in where.values()) + BOX_W + MARGIN
    height = max(y for _, y in where.values()) + BOX_H + MARGIN + LEGEND_H
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:g} {height:g}" '
           f'width="{width:g}" height="{height:g}" role="img" font-family="{FONT}">',
           "<title>Chapter map: which chapter builds on which</title>",
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
           f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{INK}"/></marker></defs>',
           f'<rect width="{width:g}" height="{height:g}" fill="#ffffff"/>']
    for earlier, later in reduced_edges({c.number: c.builds_on for c in chapters_}):
        (x0, y0), (x1, y1) = where[earlier], where[later]
        dashed = "" if by_number[later].written else ' stroke-dasharray="5 4"'
        out.append(f'<path class="builds-on" data-from="{earlier:02d}" data-to="{later:02d}" '
                   f'd="M{x0 + BOX_W / 2:g},{y0 + BOX_H:g} C{x0 + BOX_W / 2:g},{y0 + BOX_H + GAP_Y / 2:g} '
                   f'{x1 + BOX_W / 2:g},{y1 - GAP_Y / 2:g} {x1 + BOX_W / 2:g},{y1 - 1:g}" fill="none" '
                   f'stroke="{INK}" stroke-width="1.4"{dashed} marker-end="url(#arrow)"/>')
    for c in chapters_:
        x, y = where[c.number]
        ink, fill = (INK, WRITTEN_FILL) if c.written else (COMING_INK, COMING_FILL)
        dashed = "" if c.written else ' stroke-dasharray="5 4"'
        label = f"{c.number:02d}" + ("" if c.written else " \u00b7 coming")
        out += [f'<g class="chapter{"" if c.written else " coming"}" data-chapter="{c.number:02d}">',
                f'<rect x="{x:g}" y="{y:g}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{fill}" '
                f'stroke="{ink}" stroke-width="1.2"{dashed}/>',
                f'<text x="{x + BOX_W / 2:g}" y="{y + 16:g}" text-anchor="middle" font-size="12" '
                f'fill="{ink}">{escape(label)}</text>']
        lines = title_lines(c.title)
        first = y + (37 if len(lines) == 1 else 33)
        out += [f'<text x="{x + BOX_W / 2:g}" y="{first + 17 * i:g}" text-anchor="middle" font-size="15" '
                f'font-weight="{"bold" if c.written else "normal"}" fill="{ink}">{escape(line)}</text>'
                for i, line in enumerate(lines)]
        out.append("</g>")
    legend_y = height - LEGEND_H
    out += [f'<text x="{MARGIN}" y="{legend_y + 6:g}" font-size="14" fill="{INK}">'
            "An arrow from A to B: B builds on A (arrows that a longer</text>",
            f'<text x="{MARGIN}" y="{legend_y + 24:g}" font-size="14" fill="{INK}">'
            "path implies are left out). Dashed: chapters still to come.</text>",
            "</svg>", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the stored map is out of step")
    args = parser.parse_args(argv)
    drawn = svg(chapters())
    if args.check:
        stored = OUT.read_text(encoding="utf-8") if OUT.exists() else None
        if stored != drawn:
            print(f"{OUT.relative_to(ROOT)} is out of step with the notebooks: run python tools/chapter_map.py",
                  file=sys.stderr)
            return 1
        return 0
    OUT.write_text(drawn, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
