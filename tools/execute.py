"""Regenerate a chapter's stored outputs: ``make execute NB=notebooks/03_cnn.ipynb``.

A fresh kernel runs the notebook top to bottom in the full profile, with a
fresh checkpoint folder (so nothing resumes from an earlier run). Streams
are coalesced so that a progress bar keeps only its final state, widget
states are stored so that the website can render them, and the chapter
writes ``results/<slug>.json`` itself through ``dlbook.results.save``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def execute(path: Path, profile: str = "full", timeout: int | None = None) -> float:
    """Run the notebook at ``path`` in a fresh kernel and store its outputs in it; return the seconds.

    The kernel gets its own environment (the profile, a fresh checkpoint
    folder): this process's is left as it was. When a cell fails, the error
    is raised and the notebook file is not touched.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="dlbook-execute-") as tmp:
        env = dict(os.environ, DLBOOK_PROFILE=profile, DLBOOK_CHECKPOINTS=tmp)
        env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                                store_widget_state=True, resources={"metadata": {"path": str(path.parent)}})
        start = time.perf_counter()
        client.execute(env=env)
        seconds = time.perf_counter() - start
    nb, _ = CoalesceStreamsPreprocessor().preprocess(nb, {})
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--profile", default="full", choices=("full", "smoke"),
                        help="smoke only to try the command quickly; the book stores full runs")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        if not path.is_file() or path.suffix != ".ipynb":
            parser.error(f"{path} is not a notebook")
    for path in args.notebooks:
        print(f"executing {path} ({args.profile} profile) ...", flush=True)
        seconds = execute(path.resolve(), args.profile)
        print(f"{path}: {seconds:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
