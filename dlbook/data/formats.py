"""File formats of the cache: checksums, IDX files, reproducible ``.npz``.

Pure functions on bytes and files; nothing here downloads or knows where
the cache is.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np


class DataError(RuntimeError):
    """A data set could not be found, downloaded, verified or read."""


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, as lowercase hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gunzip(packed: Path, raw: Path, label: str | None = None) -> Path:
    """Decompress the gzip file ``packed`` into ``raw``.

    Raises:
        DataError: when ``packed`` is not a complete gzip file; the message
            names ``label`` (the URL it came from), else ``packed``.
    """
    try:
        with gzip.open(packed, "rb") as src, open(raw, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (OSError, EOFError) as err:
        raise DataError(f"{label or packed} is not a complete gzip file ({err})") from err
    return raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an uncompressed IDX file (the MNIST format) into a uint8 array.

    Shapes:
        the shape stored in the header, e.g. (60000, 28, 28) for images.
    """
    data = Path(path).read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + int(np.prod(shape)):
        raise DataError(f"{path}: IDX header says shape {shape}, but the file has the wrong size")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def write_idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file (the inverse of :func:`read_idx`)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    return header + array.tobytes()


def write_npz(f: BinaryIO, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays as a reproducible ``.npz``: fixed timestamps, deflate.

    ``np.savez_compressed`` stamps each member with the current time, so two
    conversions of the same data differ; this writes the same bytes every
    time, which lets the cache file carry one fixed checksum.
    """
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            with z.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


def array_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``arrays``, by sorted name.

    Two ``.npz`` files holding the same arrays have the same digest, however
    they were compressed.
    """
    digest = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def npz_digest(path: str | os.PathLike) -> str | None:
    """:func:`array_digest` of every array in an ``.npz``; ``None`` when it is unreadable."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return array_digest({key: npz[key] for key in npz.files})
    except Exception:  # noqa: BLE001 - unreadable means not the expected file
        return None
