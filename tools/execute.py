"""Regenerate a chapter's stored outputs: ``make execute NB=notebooks/03_cnn.ipynb``.

A fresh kernel runs the notebook top to bottom in the full profile, with a
fresh checkpoint folder (so nothing resumes from an earlier run). Streams
are coalesced so that a progress bar keeps only its final state, widget
states are stored so that the website can render them, and the chapter
writes ``results/<slug>.json`` itself through ``dlbook.results.save``.

Before the full run, the notebook runs once in the smoke profile (its
outputs are thrown away) to measure the smoke wall time. Both times then
go into the chapter's runtime table (the rows ``| `smoke` |`` and
``| `full` |``, whose last cell is the time): the full time is the one
``results/<slug>.json`` records. Run it on an idle machine: the times are
the book's published figures.

Before a run, the chapter's install cell is pinned to the dlbook version of
this checkout (tools/badges.py), the one the kernel imports and the run
records in ``results/<slug>.json``: the stored cell installs the version
the stored outputs were made with. After a full run the recorded version is
checked against it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: tools/ is on the path, the checkout is not
    sys.path.insert(0, str(ROOT))

from tools import badges  # noqa: E402


def execute(path: Path, profile: str = "full", timeout: int | None = None,
            workdir: Path | None = None) -> float:
    """Run the notebook at ``path`` in a fresh kernel and store its outputs in it; return the seconds.

    Its install cell (if it has one) is first pinned to the running dlbook
    version, :func:`tools.badges.version`. The kernel gets its own environment
    (the profile, a fresh checkpoint folder): this process's is left as it
    was. When a cell fails, the error is raised and the notebook file is not
    touched.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor

    nb = nbformat.read(path, as_version=4)
    # A notebook without an install cell (not a chapter) is run as it is.
    badges.pin_install_cell(nb, badges.load_config(), badges.version())
    with tempfile.TemporaryDirectory(prefix="dlbook-execute-") as tmp:
        env = dict(os.environ, DLBOOK_PROFILE=profile, DLBOOK_CHECKPOINTS=tmp)
        env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                                store_widget_state=True, resources={"metadata": {"path": str(workdir or path.parent)}})
        start = time.perf_counter()
        client.execute(env=env)
        seconds = time.perf_counter() - start
    nb, _ = CoalesceStreamsPreprocessor().preprocess(nb, {})
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return seconds


RUNTIME_ROW = re.compile(r"^(\| `(smoke|full)` \|[^|\n]*\|)[^|\n]*(\|\s*)$", re.M)


def format_seconds(seconds: float) -> str:
    """``19 s``, or ``424 s (7.1 min)`` from a minute on."""
    text = f"{seconds:.0f} s"
    return text if seconds < 60 else f"{text} ({seconds / 60:.1f} min)"


def fill_runtime_table(nb, times: dict[str, float]) -> int:
    """Write ``times`` ({"smoke": s, "full": s}) into the runtime table's rows; return how many."""
    filled = 0
    for cell in nb.cells:
        if cell.cell_type != "markdown" or "**Runtime**" not in cell.source:
            continue

        def replace(match):
            nonlocal filled
            profile = match.group(2)
            if profile not in times:
                return match.group(0)
            filled += 1
            return f"{match.group(1)} {format_seconds(times[profile])} {match.group(3).lstrip()}"

        cell.source = RUNTIME_ROW.sub(replace, cell.source)
    return filled


def recorded(path: Path) -> dict:
    """The record that the chapter's full run wrote to results/<slug>.json."""
    slug = path.stem.split("_", 1)[1]
    results = Path(os.environ.get("DLBOOK_RESULTS") or ROOT / "results") / f"{slug}.json"
    return json.loads(results.read_text(encoding="utf-8"))


def recorded_seconds(path: Path) -> float:
    """The wall time that the chapter's full run wrote to results/<slug>.json."""
    return float(recorded(path)["seconds"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--profile", default="full", choices=("full", "smoke"),
                        help="smoke only to try the command quickly; the book stores full runs")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        if not path.is_file() or path.suffix != ".ipynb":
            parser.error(f"{path} is not a notebook")
    import nbformat

    status = 0
    for path in args.notebooks:
        path = path.resolve()
        times = {}
        if args.profile == "full":
            print(f"executing {path.name} (smoke profile, to time it) ...", flush=True)
            with tempfile.TemporaryDirectory(prefix="dlbook-smoke-") as tmp:
                scratch = Path(tmp) / path.name
                scratch.write_bytes(path.read_bytes())
                times["smoke"] = execute(scratch, "smoke", workdir=path.parent)
            print(f"{path.name}: smoke {times['smoke']:.1f} s", flush=True)
        print(f"executing {path.name} ({args.profile} profile) ...", flush=True)
        seconds = execute(path, args.profile)
        print(f"{path.name}: {args.profile} {seconds:.1f} s", flush=True)
        if args.profile == "full":
            record = recorded(path)
            times["full"] = float(record["seconds"])
            nb = nbformat.read(path, as_version=4)
            if fill_runtime_table(nb, times) != 2:
                print(f"{path.name}: no runtime table with `smoke` and `full` rows to fill", flush=True)
            nbformat.write(nb, path)
            if record.get("dlbook") != badges.version():
                print(f"{path.name}: the run recorded dlbook {record.get('dlbook')}, but its install cell "
                      f"names {badges.version()}, this checkout's version: the kernel imported another "
                      f"dlbook. Install this checkout's (make venv, or pip install -e .) and run again.",
                      file=sys.stderr, flush=True)
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
