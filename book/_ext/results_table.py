"""Sphinx directive ``results-table``: a table of results/*.json at build time.

The results page therefore always shows what the stored full-profile runs
measured, with no copy of a number to drift.
"""

from __future__ import annotations

import json
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective


def _row(cells, header=False):
    row = nodes.row()
    for text in cells:
        entry = nodes.entry()
        entry += nodes.paragraph(text=str(text))
        row += entry
    return row


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


class ResultsTable(SphinxDirective):
    has_content = False

    def run(self):
        folder = Path(self.env.srcdir) / "results"
        files = sorted(folder.glob("*.json"))
        for f in files:
            self.env.note_dependency(str(f))
        headers = ["chapter", "metric", "value", "run"]
        table = nodes.table()
        group = nodes.tgroup(cols=len(headers))
        table += group
        for width in (2, 5, 2, 5):
            group += nodes.colspec(colwidth=width)
        thead = nodes.thead()
        thead += _row(headers)
        group += thead
        body = nodes.tbody()
        for f in files:
            r = json.loads(f.read_text(encoding="utf-8"))
            run = (f"{r['seconds']:.0f} s on {r['device_name']} ({r['threads']} threads), "
                   f"torch {r['torch']}, seed {r['seed']}, {r['finished'][:10]}")
            for i, (key, value) in enumerate(r["metrics"].items()):
                first = i == 0
                body += _row([r["chapter"] if first else "", key, _format(value), run if first else ""])
        group += body
        if not files:
            return [nodes.paragraph(text="No chapter has stored results yet.")]
        return [table]


def setup(app):
    app.add_directive("results-table", ResultsTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1.0"}
