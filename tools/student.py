"""Write the student version of chapters: no solutions, no outputs.

    python tools/student.py notebooks/03_cnn.ipynb               # -> student/03_cnn.ipynb
    python tools/student.py notebooks/03_cnn.ipynb -o out.ipynb
    python tools/student.py notebooks/*.ipynb -o student/        # every chapter into one folder

A code cell tagged ``solution`` (in any case: ``Solution`` too) keeps only
what an exercise needs to be attempted: lines between
``### BEGIN SOLUTION`` and ``### END SOLUTION`` become a stub that raises
``NotImplementedError``; without those markers the whole cell becomes the
stub. A markdown cell tagged ``solution`` is removed. Every output is
cleared (a check cell's stored PASS would print the answer's formula and
value), and so is the notebook's metadata beyond the kernel and language
(stored widget state embeds outputs). The source notebook is never
overwritten.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
SOLUTION = "solution"
HIDING_TAGS = ("hide-input", "hide-cell")  # a stub is for the student to see
NOTEBOOK_METADATA = ("kernelspec", "language_info")  # all else (widget state, ...) is dropped
CELL_METADATA = ("tags", "editable", "deletable", "jupyter", "slideshow")  # no timings or outputs


def _stub_source(source: str) -> str:
    lines = source.splitlines()
    if not any(line.strip() in (BEGIN, END) for line in lines):
        return STUB
    out, inside, indent = [], False, ""
    for number, line in enumerate(lines, start=1):
        if line.strip() == BEGIN:
            if inside:
                raise ValueError(f"line {number}: {BEGIN} inside another solution block")
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            out += [indent + s for s in STUB.splitlines()]
        elif line.strip() == END:
            if not inside:
                raise ValueError(f"line {number}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN} without {END}")
    return "\n".join(out)


def _tags(cell: dict) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def is_solution(cell: dict) -> bool:
    """True for a cell tagged ``solution``, in any case."""
    return any(tag.lower() == SOLUTION for tag in _tags(cell))


def student_notebook(nb: dict) -> tuple[dict, int]:
    """Return the student version of notebook JSON ``nb`` and how many solutions it stubbed.

    ``nb`` itself is not changed.
    """
    nb = json.loads(json.dumps(nb))
    cells, count = [], 0
    for cell in nb.get("cells", []):
        cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k in CELL_METADATA}
        if is_solution(cell):
            if cell.get("cell_type") != "code":
                continue  # a written-out answer: removed
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            cell["source"] = _stub_source(source)
            kept = [t for t in _tags(cell) if t.lower() != SOLUTION and t.lower() not in HIDING_TAGS]
            cell["metadata"]["tags"] = kept + ["exercise"]
            count += 1
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cells.append(cell)
    nb["cells"] = cells
    nb["metadata"] = {k: v for k, v in nb.get("metadata", {}).items() if k in NOTEBOOK_METADATA}
    return nb, count


def _same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file: the same spelling after
    resolving, a symlink to it, or a hard link."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # b does not exist yet
        return False


def write_student_version(notebook: Path, output: Path) -> int:
    """Write the student version of ``notebook`` to ``output``; return how many solutions it stubbed.

    Raises:
        ValueError: when ``output`` is ``notebook`` itself (by any path), or
            the notebook is not valid notebook JSON or has unmatched markers.
    """
    if _same_file(notebook, output):
        raise ValueError(f"{output} is the source notebook {notebook}: refusing to overwrite it")
    try:
        nb = json.loads(notebook.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{notebook} is not a notebook (invalid JSON: {err})") from err
    try:
        out_nb, count = student_notebook(nb)
    except ValueError as err:
        raise ValueError(f"{notebook}: {err}") from err
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(out_nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path,
                        help="a folder (default student/), or a .ipynb file when there is one notebook")
    args = parser.parse_args(argv)
    output = args.output or Path("student")
    if output.suffix == ".ipynb" and len(args.notebooks) > 1:
        parser.error(f"{len(args.notebooks)} notebooks need an output folder, not the file {output}")
    targets = [(nb, output if output.suffix == ".ipynb" else output / nb.name) for nb in args.notebooks]
    for notebook, _ in targets:
        if not notebook.is_file():
            parser.error(f"{notebook} does not exist")
    names = [target.resolve() for _, target in targets]
    if len(set(names)) != len(names):
        parser.error("two notebooks of the same name would be written to one file")
    for notebook, target in targets:
        try:
            count = write_student_version(notebook, target)
        except ValueError as err:
            parser.error(str(err))
        print(f"{target}: {count} solution cells replaced by stubs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
