"""The whole data folder at once: :func:`fetch_all`, behind ``python -m dlbook.data fetch --all``.

A complete data folder (``DLBOOK_DATA``, else dlbook's user cache) holds
everything the notebooks and the tests read, laid out as ``../shared/data``
on the project's own machines (:func:`folder_files` lists it):

==========================================  =====================================================
``mnist.npz``, ``fashion_mnist.npz``,       the cache files of :data:`~dlbook.data.SOURCES`
``cora.npz``, ``citeseer.npz``,             (what the notebooks load)
``tinyshakespeare.txt``
``SHA256SUMS``                              their checksums (``sha256sum -c SHA256SUMS``)
``planetoid/ind.{cora,citeseer}.*``         the 16 official Planetoid files: the tests of the
                                            converter (:mod:`.planetoid`) run on their real bytes
``planetoid/SHA256SUMS``                    their checksums
==========================================  =====================================================

:func:`fetch_all` verifies what is there and downloads what is missing, so
that it can be run once before going offline. On a complete folder it only
verifies: it downloads and writes nothing (a read-only folder is fine).
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

from ..io import atomic_write_bytes
from ..paths import data_dir
from .cache import env_mirrors, fetch, fetch_files, stored_name
from .formats import DataError, sha256_file
from .sources import SOURCES

#: The data sets whose official files are kept too, and the subfolder that keeps them.
KEPT = ("cora", "citeseer")
RAW_FOLDER = "planetoid"
CHECKSUMS = "SHA256SUMS"
_SAID = {"verified": "present, SHA-256 verified", "downloaded": "downloaded and verified",
         "converted": f"converted from {RAW_FOLDER}/ and verified"}


def _raw_names(name: str) -> list[str]:
    return [stored_name(remote) for remote in SOURCES[name].files]


def folder_files() -> list[str]:
    """Every file of a complete data folder, as paths relative to it (``/``-separated)."""
    raw = sorted(n for name in KEPT for n in _raw_names(name))
    return (sorted(s.filename for s in SOURCES.values()) + [CHECKSUMS]
            + [f"{RAW_FOLDER}/{n}" for n in raw] + [f"{RAW_FOLDER}/{CHECKSUMS}"])


def _checksums_text(folder: Path, names: list[str]) -> str:
    """``sha256sum``'s format: one ``<hex>  <name>`` line per file, sorted by name."""
    return "".join(f"{sha256_file(folder / n)}  {n}\n" for n in sorted(names))


def _parse_checksums(text: str) -> dict[str, str] | None:
    """``{name: hex digest}`` of a ``sha256sum`` file; ``None`` when a line is not of that form."""
    sums = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        if match is None:
            return None
        sums[match.group(2)] = match.group(1)
    return sums


def _check_or_write_checksums(folder: Path, names: list[str]) -> str:
    """Write ``folder/SHA256SUMS`` for ``names``, or check the one there. Returns what was done."""
    path = folder / CHECKSUMS
    expected = _checksums_text(folder, names)
    if not path.exists():
        atomic_write_bytes(path, expected.encode("ascii"))
        return "written"
    found = _parse_checksums(path.read_text(encoding="utf-8", errors="replace"))
    if found != _parse_checksums(expected):
        raise DataError(
            f"{path} does not match the files beside it (expected:\n{textwrap.indent(expected, '  ')}"
            f"). Delete it (this command then writes it again from the verified files), or "
            f"replace it with a good copy.")
    return "verified"


def _say(item: str, what: str) -> None:
    print(f"{item}: {what}", flush=True)


def fetch_all() -> dict[str, str]:
    """Make the data folder complete: verify what is there, download what is missing.

    Goes through every item of the folder (:func:`folder_files`), in the order
    of :data:`~dlbook.data.SOURCES`: each cache file with :func:`fetch`
    (``DLBOOK_MIRRORS`` first, then the official sources); for Cora and
    CiteSeer first their official files with :func:`fetch_files` into
    ``planetoid/``, from which the cache file is then converted without a
    second download. When every file is there, the two ``SHA256SUMS`` are
    written (or, when present, checked against the files). Prints one line
    per item, and while downloading the URL and a progress bar.

    Returns:
        item -> what was done: ``verified`` (present and checked),
        ``downloaded``, ``converted`` (from the kept files) or ``written``.

    Raises:
        ValueError: for a malformed ``DLBOOK_MIRRORS``, before anything is done.
        DataError: after trying every item, naming each one that is missing
            or bad and could not be made, and how to fix that.
    """
    for name in SOURCES:
        env_mirrors(name)  # a bad setting is one error before anything else, not one per data set
    folder = data_dir()
    raw = folder / RAW_FOLDER
    print(f"Data folder: {folder}", flush=True)
    done: dict[str, str] = {}
    failed: dict[str, str] = {}

    def fail(item: str, err: Exception) -> None:
        failed[item] = str(err)
        _say(item, "FAILED\n" + textwrap.indent(str(err), "    "))

    for name, source in SOURCES.items():
        mirrors = None
        if name in KEPT:
            item = f"{RAW_FOLDER}/ind.{name}.*"
            present = all((raw / n).exists() for n in _raw_names(name))
            try:
                fetch_files(name, raw)
            except DataError as err:
                fail(item, err)
                if not (folder / source.filename).exists():
                    fail(source.filename, DataError(f"missing; it is made from the official files in {raw}, "
                                                    f"which could not all be had (above)"))
                    continue
            else:
                done[item] = "verified" if present else "downloaded"
                _say(item, f"{len(source.files)} official files, {_SAID[done[item]]}")
                mirrors = (raw.as_uri(),)  # a missing cache file is converted from them, not downloaded again
        present = (folder / source.filename).exists()
        try:
            fetch(name, mirrors=mirrors)
        except DataError as err:
            fail(source.filename, err)
            continue
        done[source.filename] = "verified" if present else ("converted" if mirrors else "downloaded")
        _say(source.filename, _SAID[done[source.filename]])

    if not failed:
        for where, names in ((folder, [s.filename for s in SOURCES.values()]),
                             (raw, [n for name in KEPT for n in _raw_names(name)])):
            item = (where / CHECKSUMS).relative_to(folder).as_posix()
            try:
                done[item] = _check_or_write_checksums(where, names)
            except (DataError, OSError) as err:
                fail(item, err)
            else:
                _say(item, "present, matches the files" if done[item] == "verified" else "written")

    if failed:
        raise DataError(
            f"The data folder {folder} is not complete: {len(failed)} item(s) missing or bad: "
            f"{', '.join(failed)} (why: above). To fix: connect to the internet and run "
            f"`python -m dlbook.data fetch --all` (or `make data`) again; or name a mirror you can "
            f"reach in DLBOOK_MIRRORS; or copy these files from a complete data folder into {folder}. "
            f"A bad file is never replaced by itself: delete it first.")
    size = sum(os.path.getsize(folder / f) for f in folder_files())
    print(f"The data folder {folder} is complete: {len(folder_files())} files, {size / 1e6:.1f} MB. "
          f"The notebooks and the tests can now run offline.", flush=True)
    return done
