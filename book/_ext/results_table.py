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


class ResultsTable(SphinxDirective):
    has_content = False

    def run(self):
        folder = Path(self.env.srcdir) / "results"
        files = sorted(folder.glob("*.json"))
        for f in files:
            self.env.note_dependency(str(f))
        headers = ["chapter", "metric", "value", "wall time (s)", "device", "torch", "finished"]
        table = nodes.table()
        group = nodes.tgroup(cols=len(headers))
        table += group
        for _ in headers:
            group += nodes.colspec(colwidth=1)
        thead = nodes.thead()
        thead += _row(headers)
        group += thead
        body = nodes.tbody()
        for f in files:
            r = json.loads(f.read_text(encoding="utf-8"))
            for i, (key, value) in enumerate(r["metrics"].items()):
                shown = f"{value:.4f}" if isinstance(value, float) else str(value)
                first = i == 0
                body += _row([r["chapter"] if first else "", key, shown,
                              r["seconds"] if first else "",
                              f"{r['device_name']} ({r['threads']} threads)" if first else "",
                              r["torch"] if first else "", r["finished"] if first else ""])
        group += body
        if not files:
            return [nodes.paragraph(text="No chapter has stored results yet.")]
        return [table]


def setup(app):
    app.add_directive("results-table", ResultsTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1.0"}
