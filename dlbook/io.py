"""Small file helpers shared by the data cache, checkpoints and results."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ._checks import check_callable, describe


def _check_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (a str or a Path); got {describe(path)}")
    if not os.fspath(path).strip():
        raise ValueError("path must name a file; got an empty path")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"path must name a file; {path} is a folder")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], Any]) -> Path:
    """Write a file so that readers see either the old or the new version.

    ``write`` receives an open binary file in the same directory; the file is
    flushed, synced to disk and renamed over ``path`` only when ``write``
    returns. A crash or an exception leaves ``path`` untouched.
    """
    path = _check_path(path)
    check_callable(write, "write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the mode open() would, as the old file had
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def temporaries_of(path: str | os.PathLike) -> list[Path]:
    """The temporaries :func:`atomic_write` makes for ``path`` that exist now:
    files ``.{name}.XXXXXXXX.tmp`` beside it (random letters, digits and
    ``_``). Not those of another file whose name begins with the same one."""
    path = Path(path)
    own = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]+\.tmp")
    try:
        entries = [p for p in path.parent.iterdir() if own.fullmatch(p.name)]
    except OSError:  # no folder yet, or one that cannot be listed: nothing of ours there
        return []
    found = []
    for p in entries:
        try:
            if stat.S_ISREG(p.lstat().st_mode):
                found.append(p)
        except OSError:  # removed meanwhile
            continue
    return sorted(found)


def remove_stale_temporaries(path: str | os.PathLike, max_age: float) -> list[Path]:
    """Delete the temporaries that an :func:`atomic_write` of ``path`` killed
    mid-write left (see :func:`temporaries_of`), once unchanged for
    ``max_age`` seconds: a younger one may belong to a write still running
    in another process. Only regular files; a failure to remove one is
    ignored. Returns what was removed."""
    now = time.time()
    removed = []
    for tmp in temporaries_of(path):
        try:
            info = tmp.lstat()
            if not stat.S_ISREG(info.st_mode) or now - info.st_mtime <= max_age:
                continue
            tmp.unlink()
        except OSError:  # gone already (another process cleaned it) or not ours to remove
            continue
        removed.append(tmp)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes; got {type(data).__name__} (encode text first)")
    return atomic_write(path, lambda f: f.write(data))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()  # a NumPy scalar: the Python number it holds
    raise TypeError(f"{type(value).__name__} cannot be written as JSON: {describe(value)}")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (UTF-8, trailing newline).

    NumPy scalars are written as the numbers they hold.

    Raises:
        ValueError: for NaN or an infinity anywhere in ``obj``: JSON has no
            such numbers (Python would write ``NaN``, which JSON readers refuse).
        TypeError: for a value JSON cannot hold.
    """
    try:
        text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n"
    except ValueError as err:
        raise ValueError(f"cannot write {path} as JSON: it holds NaN or an infinity, which JSON "
                         f"has no number for") from err
    return atomic_write_bytes(path, text.encode("utf-8"))
