"""Checkpoint files: written atomically, verified and loaded safely.

A checkpoint file is a short header, the SHA-256 of the payload, and the
payload, which is what ``torch.save`` writes. :func:`load_checkpoint`
checks the header and the checksum before it unpickles anything, and then
unpickles with ``weights_only=True``: tensors, numbers, strings and plain
containers only, so a tampered file cannot run code. Whatever is wrong with
a file, the error is one :class:`CheckpointError` that names the file and
says how to start afresh.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from ._checks import check_device
from .io import atomic_write

MAGIC = b"DLBOOK-CHECKPOINT v1\n"
DIGEST_SIZE = 32  # SHA-256


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names it and the fix."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        super().__init__(
            f"The checkpoint {self.path} {problem}. Delete it to start afresh "
            f"(in Python: os.remove({str(self.path)!r})), or pass another checkpoint path."
        )


def save_checkpoint(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` (tensors, numbers, strings, lists, tuples and dicts of
    them) to ``path`` atomically, with a checksum."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    header = MAGIC + hashlib.sha256(payload).digest()
    return atomic_write(Path(path).expanduser(), lambda f: (f.write(header), f.write(payload)))


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Read a file written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        CheckpointError: when it cannot be read, is not a dlbook checkpoint,
            is truncated or corrupt, or holds anything but tensors, numbers,
            strings and plain containers.
    """
    path = Path(path).expanduser()
    if isinstance(map_location, (str, torch.device)):
        map_location = check_device(map_location, "map_location")
    elif map_location is not None and not isinstance(map_location, dict) and not callable(map_location):
        raise TypeError(f"map_location must be a device, a dict, a function or None (see torch.load); "
                        f"got {type(map_location).__name__}")
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise CheckpointError(path, "is a folder, not a file") from None
    except OSError as err:
        raise CheckpointError(path, f"cannot be read ({err.strerror or type(err).__name__})") from None
    if not data.startswith(MAGIC):
        raise CheckpointError(path, "is not a dlbook checkpoint (it lacks the header that dlbook writes)")
    body = data[len(MAGIC):]
    if len(body) < DIGEST_SIZE:
        raise CheckpointError(path, "is truncated (it ends inside its header)")
    digest, payload = body[:DIGEST_SIZE], body[DIGEST_SIZE:]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(path, "is corrupt: its content does not match the checksum stored in it "
                                    "(a truncated write, a disk error, or an edit)")
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message advises weights_only=False, i.e. running the file's code: never repeat it.
        raise CheckpointError(path, "holds objects other than tensors, numbers, strings and plain "
                                    "containers, so it was not written by dlbook or was tampered with; "
                                    "it was not loaded") from None
    except Exception as err:  # noqa: BLE001 - any other failure of a verified file is one error
        raise CheckpointError(path, f"could not be unpickled ({type(err).__name__})") from None
