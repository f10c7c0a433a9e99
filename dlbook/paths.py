"""Where dlbook keeps its files: one rule for every folder.

Every folder is "this environment variable, else a folder inside the cache
root". The cache root is ``DLBOOK_CACHE``, else the user cache directory
(``~/.cache/dlbook`` on Linux). Redirecting ``DLBOOK_CACHE`` moves every
default folder at once, which is what the tests do.

=======================  ==============================
variable                 default
=======================  ==============================
``DLBOOK_CACHE``         the user cache directory
``DLBOOK_DATA``          the cache root itself
``DLBOOK_MODELS``        ``<cache root>/models``
``DLBOOK_CHECKPOINTS``   ``<cache root>/checkpoints``
=======================  ==============================

A value may start with ``~``. A relative value is made absolute the first
time it is read, against the folder the process was in then, and keeps that
meaning for the rest of the process: a later ``os.chdir`` (or a notebook
kernel started in another folder that changes directory) does not move the
data.
"""

from __future__ import annotations

import os
from pathlib import Path

# (variable, relative value) -> the absolute path it meant when first read
_RESOLVED: dict[tuple[str, str], Path] = {}


def _user_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("dlbook", appauthor=False))


def env_path(var: str) -> Path | None:
    """The absolute folder named by environment variable ``var``, or ``None`` when unset.

    ``~`` is expanded; a relative path is resolved once, the first time this
    process reads that value.
    """
    raw = os.environ.get(var, "").strip()
    if not raw:
        return None
    expanded = os.path.expanduser(raw)
    if os.path.isabs(expanded):
        return Path(os.path.normpath(expanded))
    key = (var, expanded)  # relative: fixed against the folder of the first read
    if key not in _RESOLVED:
        _RESOLVED[key] = Path(os.path.abspath(expanded))
    return _RESOLVED[key]


def cache_root() -> Path:
    """``DLBOOK_CACHE``, else the user cache directory."""
    return env_path("DLBOOK_CACHE") or _user_cache_dir()


def folder(var: str, default_subfolder: str = "") -> Path:
    """``var`` if set, else ``<cache root>/<default_subfolder>``."""
    path = env_path(var)
    if path is not None:
        return path
    root = cache_root()
    return root / default_subfolder if default_subfolder else root


def data_dir() -> Path:
    """The data cache: ``DLBOOK_DATA``, else the cache root."""
    return folder("DLBOOK_DATA")


def models_dir() -> Path:
    """Trained models shared between chapters: ``DLBOOK_MODELS``, else ``<cache root>/models``."""
    return folder("DLBOOK_MODELS", "models")


def checkpoints_dir() -> Path:
    """Training checkpoints: ``DLBOOK_CHECKPOINTS``, else ``<cache root>/checkpoints``."""
    return folder("DLBOOK_CHECKPOINTS", "checkpoints")


def writable_dir(path: Path, what: str, var: str) -> Path:
    """Create ``path`` if needed and check that files can be written in it.

    Raises:
        PermissionError: naming the folder, what it is for and the variable
            that moves it, when it cannot be created or written.
    """
    path = Path(path)
    problem = None
    if path.exists() and not path.is_dir():
        problem = "it exists and is not a folder"
    else:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            problem = f"it cannot be created ({err.strerror or err})"
        else:
            if not os.access(path, os.W_OK | os.X_OK):
                problem = "this user may not write in it"
    if problem:
        raise PermissionError(
            f"The {what} folder {path} is not usable: {problem}. Set {var} to a "
            f"folder you can write to (an absolute path), or fix the folder's permissions."
        )
    return path
