"""Write the student version of a chapter: solution cells replaced by stubs.

    python -m dlbook.student notebooks/03_cnn.ipynb -o student/03_cnn.ipynb

A code cell tagged ``solution`` keeps only what an exercise needs to be
attempted: lines between ``### BEGIN SOLUTION`` and ``### END SOLUTION``
become a stub that raises ``NotImplementedError``; without those markers the
whole cell becomes the stub. Its outputs are cleared. Every other cell is
kept as it is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = "# YOUR CODE HERE\nraise NotImplementedError()"


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


def student_notebook(nb: dict) -> tuple[dict, int]:
    """Return a copy of notebook JSON ``nb`` with solutions stubbed, and how many."""
    nb = json.loads(json.dumps(nb))
    count = 0
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code" or "solution" not in cell.get("metadata", {}).get("tags", []):
            continue
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        cell["source"] = _stub_source(source)
        cell["outputs"] = []
        cell["execution_count"] = None
        tags = [t for t in cell["metadata"]["tags"] if t not in ("solution", "hide-input", "hide-cell")]
        cell["metadata"]["tags"] = tags + ["exercise"]
        count += 1
    return nb, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("-o", "--output", type=Path, help="default: student/<name>")
    args = parser.parse_args(argv)
    if not args.notebook.exists():
        parser.error(f"{args.notebook} does not exist")
    try:
        nb = json.loads(args.notebook.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        parser.error(f"{args.notebook} is not a notebook (invalid JSON: {err})")
    try:
        out_nb, count = student_notebook(nb)
    except ValueError as err:
        parser.error(f"{args.notebook}: {err}")
    output = args.output or Path("student") / args.notebook.name
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(out_nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{output}: {count} solution cells replaced by stubs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
