"""The verified cache: :func:`fetch` returns a checked cache file, downloading it if needed.

The cache folder is ``DLBOOK_DATA``, else the user cache directory
(:func:`dlbook.paths.data_dir`). A cache file that is present is checked
against its fixed SHA-256 (once per process and file version) and used as
it is. A missing one is made in one way for every data set:

1. check that the cache folder can be written (before downloading anything);
2. for each mirror in turn (those of ``DLBOOK_MIRRORS`` first, then the
   official ones): download every remote file of the
   :class:`~dlbook.data.sources.Source` into a scratch folder inside the
   cache folder, decompress and verify each against its published SHA-256,
   convert, verify the result, and move it into place atomically.

Each download shows a progress bar (tqdm, on stderr). :func:`fetch_files`
keeps a data set's official files themselves, verified, in a folder of their
own (the tests of a converter read them).

``DLBOOK_MIRRORS`` names mirrors of every data set at once, for readers
behind a firewall: one or more base URLs (``http://``, ``https://`` or
``file:///``), separated by spaces or commas. A base holds one folder per
data set, named as in :data:`SOURCES`, with the official file names inside:
``BASE/mnist/train-images-idx3-ubyte.gz``, ``BASE/cora/ind.cora.x``,
``BASE/tinyshakespeare/input.txt``. (One folder per data set, because MNIST
and Fashion-MNIST name their files alike.)

Nothing unverified ever sits under a cache file's name. A process killed
mid-download leaves only a scratch folder named ``.{file}.download-*`` (or a
half-written ``.{file}.*.tmp``) in the cache folder. Every later
:func:`fetch` removes such leftovers once they have been untouched for
:data:`STALE_AFTER` seconds (a younger one may belong to a download still
running in another process, which writes to it every few seconds; a
stalled transfer times out in 30).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from ..io import atomic_write, remove_stale_temporaries
from ..paths import data_dir, writable_dir
from ._checks import check_choice
from .formats import DataError, gunzip, npz_digest, sha256_file
from .sources import SOURCES, RemoteFile, Source

STALE_AFTER = 600.0  # seconds without a change before a leftover counts as abandoned
MIRRORS_VAR = "DLBOOK_MIRRORS"

_verified: dict[tuple[str, int, int], str] = {}


def fetch(name: str, mirrors: tuple[str, ...] | None = None) -> Path:
    """Return the path of a verified cache file, downloading it if needed.

    Each call also removes stale leftovers of killed downloads from the cache
    folder (:func:`remove_stale_downloads`).

    Args:
        name: a key of :data:`SOURCES` (``mnist``, ``fashion_mnist``,
            ``cora``, ``citeseer``, ``tinyshakespeare``).
        mirrors: base URLs to try in order, under which the data set's files
            lie (``http://``, ``https://`` or ``file:///``); they replace
            every other source. Default: the mirrors of ``DLBOOK_MIRRORS``
            (:func:`env_mirrors`), then the official sources.

    Raises:
        ValueError: for an unknown data set name, malformed ``mirrors`` or a
            malformed ``DLBOOK_MIRRORS``.
        DataError: when the cached file fails its checksum, a folder stands
            where it should be, the cache folder cannot be written, or no
            mirror delivered files with the published checksums.
    """
    name = check_choice(name, "the data set name", SOURCES)
    source = SOURCES[name]
    bases = _bases(source, mirrors) if mirrors is not None else env_mirrors(name) + source.mirrors
    path = data_dir() / source.filename
    remove_stale_downloads(path.parent)
    if path.is_dir():
        raise DataError(
            f"{path} is a folder, but dlbook keeps the data set {source.filename} there as a "
            f"file. Move or delete that folder (dlbook then downloads the file again), or set "
            f"DLBOOK_DATA to another folder (an absolute path)."
        )
    if path.exists():
        _check_cached(path, source)
        return path
    return _download_into(path, source, bases)


def _download_into(path: Path, source: Source, bases: tuple[str, ...]) -> Path:
    """Make the missing cache file ``path`` from the first mirror that delivers."""
    folder = _writable_cache(path.parent, source)
    failures = []
    for base in bases:
        try:
            _download_and_convert(source, base, path)
        except Exception as err:  # noqa: BLE001 - every failure moves on to the next mirror
            failures.append(f"  {base}: {type(err).__name__}: {err}")
        else:
            return path
    tried = "\n".join(failures) or "  (no sources given)"
    raise DataError(
        f"{source.filename} is not in the cache {folder} and could not be "
        f"downloaded. Sources tried:\n{tried}\n"
        f"To fix: connect to the internet and run again, or name a mirror "
        f"you can reach in {MIRRORS_VAR}, or copy a good "
        f"{source.filename} (SHA-256 {source.sha256}) into a folder and set "
        f"DLBOOK_DATA to that folder's absolute path."
    )


def stored_name(remote: RemoteFile) -> str:
    """The name a kept official file has on disk: its own, less ``.gz`` where it comes gzip'ed."""
    return remote.name[: -len(".gz")] if remote.gunzip else remote.name


def fetch_files(name: str, folder: str | os.PathLike, mirrors: tuple[str, ...] | None = None) -> list[Path]:
    """Keep the official files of data set ``name`` themselves, verified, in ``folder``.

    :func:`fetch` keeps only the cache file it converts them into; a test of
    the converter needs the originals (the Planetoid pickles, which
    :func:`dlbook.data.fetch_all` keeps in ``planetoid/`` of the data folder).
    A file that is present is checked against its published SHA-256. The
    missing ones are downloaded as :func:`fetch` downloads (``DLBOOK_MIRRORS``,
    then the official sources, or ``mirrors``), decompressed where they come
    gzip'ed (:func:`stored_name`), verified, and moved into place one by one:
    a mirror that fails half-way leaves the files it delivered.

    Returns:
        The paths of the files, in the order of the source's files.

    Raises:
        ValueError: for an unknown data set name or malformed mirrors.
        DataError: when a present file fails its checksum, or the missing
            ones could not be stored or downloaded.
    """
    name = check_choice(name, "the data set name", SOURCES)
    source = SOURCES[name]
    bases = _bases(source, mirrors) if mirrors is not None else env_mirrors(name) + source.mirrors
    folder = Path(folder)
    targets = {remote: folder / stored_name(remote) for remote in source.files}
    if folder.is_dir():
        remove_stale_downloads(folder)
    for remote, path in targets.items():
        if path.is_dir():
            found = "a folder"
        elif path.exists():
            actual = sha256_file(path)
            if actual == remote.sha256:
                continue
            found = f"SHA-256 {actual}"
        else:
            continue
        raise DataError(
            f"The official file {path} of {name} fails its checksum: expected SHA-256 "
            f"{remote.sha256}, found {found}. Delete it so that dlbook downloads it again, "
            f"or replace it with a good copy.")
    missing = [remote for remote, path in targets.items() if not path.exists()]
    if missing:
        _download_files(name, missing, bases, folder)
    return list(targets.values())


def _download_files(name: str, remotes: list[RemoteFile], bases: tuple[str, ...], folder: Path) -> None:
    source = SOURCES[name]
    try:
        writable_dir(folder, "data cache", "DLBOOK_DATA")
    except PermissionError as err:
        raise DataError(f"Official files of {name} are missing from {folder} and must be downloaded, "
                        f"but they could not be stored: {err}") from err
    failures = []
    for base in bases:
        todo = [remote for remote in remotes if not (folder / stored_name(remote)).exists()]
        try:
            with tempfile.TemporaryDirectory(dir=folder, prefix=f".{source.filename}.download-") as tmp:
                for remote in todo:
                    os.replace(_download_verified(remote, base, Path(tmp)), folder / stored_name(remote))
        except Exception as err:  # noqa: BLE001 - every failure moves on to the next mirror
            failures.append(f"  {base}: {type(err).__name__}: {err}")
        else:
            return
    left = [stored_name(remote) for remote in remotes if not (folder / stored_name(remote)).exists()]
    tried = "\n".join(failures) or "  (no sources given)"
    raise DataError(
        f"{', '.join(left)} (official files of {name}) are not in {folder} and could not be "
        f"downloaded. Sources tried:\n{tried}\n"
        f"To fix: connect to the internet and run again, or name a mirror you can reach in "
        f"{MIRRORS_VAR}, or copy good copies of these files into {folder} (their SHA-256 are "
        f"in dlbook.data.SOURCES[{name!r}].files).")


def _bases(source: Source, mirrors) -> tuple[str, ...]:
    if mirrors is None:
        return source.mirrors
    if not isinstance(mirrors, (list, tuple)) or not all(isinstance(m, str) for m in mirrors):
        raise ValueError(f"mirrors must be a list or tuple of base URLs (strings); got {mirrors!r}")
    return tuple(m if m.endswith("/") else m + "/" for m in mirrors)


def env_mirrors(name: str) -> tuple[str, ...]:
    """The mirrors of data set ``name`` that ``DLBOOK_MIRRORS`` names: ``BASE/name/`` for each BASE.

    The variable holds base URLs separated by spaces or commas (empty or
    unset: none). Each must be an ``http://`` or ``https://`` URL with a
    host, or a ``file:///`` URL of an absolute path.

    Raises:
        ValueError: naming the variable, for any other value.
    """
    raw = os.environ.get(MIRRORS_VAR, "")
    bases = [b for b in re.split(r"[\s,]+", raw) if b]
    for base in bases:
        parts = urllib.parse.urlsplit(base)
        scheme = parts.scheme.lower()
        good = (scheme in ("http", "https") and parts.netloc) or (
            scheme == "file" and parts.netloc in ("", "localhost") and parts.path.startswith("/"))
        if not good or parts.query or parts.fragment:
            raise ValueError(
                f"{MIRRORS_VAR} must hold base URLs separated by spaces or commas, each "
                f"http://HOST/..., https://HOST/... or file:///ABSOLUTE/PATH; got {base!r} "
                f"in {MIRRORS_VAR}={raw!r}. A base holds one folder per data set "
                f"(BASE/mnist/train-images-idx3-ubyte.gz, ...); unset the variable to use "
                f"the official sources.")
    return tuple(base.rstrip("/") + f"/{name}/" for base in bases)


def _writable_cache(folder: Path, source: Source) -> Path:
    try:
        return writable_dir(folder, "data cache", "DLBOOK_DATA")
    except PermissionError as err:
        raise DataError(f"{source.filename} is not in the cache and must be downloaded, "
                        f"but it could not be stored: {err}") from err


def _matches(path: Path, source: Source) -> tuple[bool, str]:
    """Whether ``path`` holds the data of ``source``, and its SHA-256.

    An ``.npz`` whose bytes differ (another zlib compressed the same arrays
    differently) still matches when its arrays do.
    """
    actual = sha256_file(path)
    same = actual == source.sha256 or (
        source.content_sha256 is not None and npz_digest(path) == source.content_sha256)
    return same, actual


def _remember(path: Path, source: Source) -> None:
    stat = path.stat()
    _verified[(str(path), stat.st_size, stat.st_mtime_ns)] = source.sha256


def _check_cached(path: Path, source: Source) -> None:
    stat = path.stat()
    if _verified.get((str(path), stat.st_size, stat.st_mtime_ns)) == source.sha256:
        return
    same, actual = _matches(path, source)
    if not same:
        raise DataError(
            f"The cached file {path} fails its checksum: expected SHA-256 "
            f"{source.sha256}, found {actual}. It is corrupted or not the "
            f"expected data set. Delete it so that dlbook downloads it again, "
            f"or replace it with a good copy."
        )
    _remember(path, source)


def _download(url: str, folder: Path) -> Path:
    """Transfer ``url`` into ``folder`` with a progress bar (tqdm, on stderr); checking is the caller's job."""
    import pooch

    pooch.get_logger().setLevel("WARNING")
    print(f"Downloading {url}", flush=True)
    return Path(pooch.retrieve(url, known_hash=None, path=folder, progressbar=True))


def _copy_local(url: str, folder: Path) -> Path:
    """Copy the file that a ``file://`` URL names into ``folder`` (a mirror on a local disk)."""
    source = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
    print(f"Copying {url}", flush=True)
    target = folder / source.name
    shutil.copyfile(source, target)
    return target


def _download_verified(remote: RemoteFile, base: str, scratch: Path) -> Path:
    """Download one remote file (decompressed if gzip'ed) and check its SHA-256."""
    url = base + remote.name
    # _download is the one function that reaches the network; a file:// mirror is copied.
    path = _copy_local(url, scratch) if url.lower().startswith("file:") else _download(url, scratch)
    if remote.gunzip:
        path = gunzip(path, scratch / remote.name[: -len(".gz")], label=url)
    actual = sha256_file(path)
    if actual != remote.sha256:
        raise DataError(f"{url} has SHA-256 {actual}, expected {remote.sha256}")
    return path


def _download_and_convert(source: Source, base: str, target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{source.filename}.download-") as tmp:
        scratch = Path(tmp)
        files = {remote.name: _download_verified(remote, base, scratch) for remote in source.files}
        converted = atomic_write(scratch / source.filename, lambda f: source.convert(files, f))
        same, actual = _matches(converted, source)
        if not same:
            raise DataError(f"the converted {source.filename} has SHA-256 {actual}, expected {source.sha256}")
        os.replace(converted, target)
    _remember(target, source)


def _last_change(path: Path) -> float:
    """The newest modification time of ``path`` and everything inside it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for entry in dirs + files:
                newest = max(newest, os.lstat(os.path.join(root, entry)).st_mtime)
    return newest


def remove_stale_downloads(folder: Path, max_age: float = STALE_AFTER) -> list[Path]:
    """Delete dlbook's own leftovers of killed downloads in ``folder``.

    Only names dlbook makes for a cache file of :data:`SOURCES` count:
    scratch folders ``.{file}.download-*`` and half-written ``.{file}.*.tmp``,
    and only those unchanged for ``max_age`` seconds. Returns what was removed.
    """
    now = time.time()
    removed = []
    for source in SOURCES.values():
        removed += remove_stale_temporaries(Path(folder) / source.filename, max_age)  # atomic_write's
        for path in Path(folder).glob(f".{source.filename}.download-*"):
            try:
                if now - _last_change(path) <= max_age:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except OSError:  # gone already (another process cleaned it) or not ours to remove
                continue
            removed.append(path)
    return removed
