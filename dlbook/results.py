"""What a chapter's full-profile run measured: ``results/<slug>.json``."""

from __future__ import annotations

import datetime as dt
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from ._checks import check_float, check_int, describe
from ._version import __version__
from .device import device_name, get_device
from .io import atomic_write_json
from .profiles import get_profile

# The chapters in number order (CONVENTIONS.md): chapter NN is CHAPTERS[NN - 1].
CHAPTERS = ("foundations", "optimizers", "cnn", "attention", "transformer",
            "gnn", "vae", "gan", "diffusion", "adversarial", "scale")


def results_dir() -> Path:
    """Where results files go: ``DLBOOK_RESULTS``, else the ``results/``
    folder of the book checkout that contains the working directory, else
    ``./results``."""
    env = os.environ.get("DLBOOK_RESULTS", "").strip()
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").exists() and (folder / "dlbook").is_dir():
            return folder / "results"
    return here / "results"


def process_start_time() -> float:
    """When this Python process (the notebook's kernel) started, as a Unix time."""
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - psutil is optional
        return _IMPORT_TIME


_IMPORT_TIME = time.time()


def save(slug: str, metrics: dict, seed: int = 0, seconds: float | None = None) -> dict:
    """Record a chapter's metrics; write ``results/<slug>.json`` in the full profile.

    Args:
        slug: the chapter's slug, one of :data:`CHAPTERS`.
        metrics: name -> finite number.
        seed: the seed the run used.
        seconds: the run's wall time; default, the time since the kernel
            started, which for a notebook run top to bottom is its wall time.

    Returns the record. In the smoke profile nothing is written: smoke
    metrics mean nothing.
    """
    if not isinstance(slug, str) or slug not in CHAPTERS:
        raise ValueError(f"unknown chapter slug {slug!r}; expected one of {', '.join(CHAPTERS)}")
    if not isinstance(metrics, dict) or not metrics:
        raise ValueError(f"metrics must be a non-empty dict of name -> number; got {describe(metrics)}")
    clean = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"metric names must be non-empty strings; got {key!r}")
        if (isinstance(value, torch.Tensor) and value.numel() == 1) or isinstance(value, np.generic):
            value = value.item()  # a one-element tensor or a NumPy scalar: a Python number
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"metric {key!r} must be a finite number; got {describe(value)}")
        clean[key] = value
    seed = check_int(seed, "seed", 0)
    if seconds is not None:
        seconds = check_float(seconds, "seconds", 0.0)
    device = get_device()
    record = {
        "chapter": slug,
        "profile": get_profile(),
        "device": device.type,
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "dlbook": __version__,
        "seed": seed,
        "finished": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(seconds if seconds is not None else time.time() - process_start_time(), 1),
        "metrics": clean,
    }
    if record["profile"] == "full":
        path = results_dir() / f"{slug}.json"
        atomic_write_json(path, record)
        print(f"Wrote {path.name}: {len(clean)} metrics, {record['seconds']} s on {record['device_name']}.")
    else:
        print(f"Smoke profile: {len(clean)} metrics recorded, nothing written.")
    return record


def comparison_table(rows: list[tuple]) -> str:
    """A Markdown table of ``(what, this run, reference, source)`` rows.

    The reference is a published number or one of the book's targets; the
    source says which. Floats are shown with four decimals; a ``|`` in a
    cell is escaped so that it does not split the cell.
    """
    def cell(value) -> str:
        text = f"{value:.4f}" if isinstance(value, (float, np.floating)) else str(value)
        return text.replace("|", "\\|")

    if isinstance(rows, (str, bytes)) or not isinstance(rows, (list, tuple)):
        raise TypeError(f"rows must be a list of (what, this run, reference, source) tuples; got {describe(rows)}")
    lines = ["| what | this run | reference | source |", "|---|---|---|---|"]
    for i, row in enumerate(rows):
        if isinstance(row, (str, bytes)) or not isinstance(row, (tuple, list)) or len(row) != 4:
            raise ValueError(f"row {i} must be a (what, this run, reference, source) tuple; got {describe(row)}")
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)
