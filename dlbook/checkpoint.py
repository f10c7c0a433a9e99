"""Checkpoint files: written atomically, verified and loaded safely.

A checkpoint file is a short header, the SHA-256 of the payload, and the
payload, which is what ``torch.save`` writes. :func:`load_checkpoint`
checks the header and the checksum before it unpickles anything, and then
unpickles with ``weights_only=True``: tensors, numbers, strings and plain
containers only, so a tampered file cannot run code. Whatever is wrong with
a file, the error is one :class:`CheckpointError` that names the file and
says how to start afresh.

:func:`save_checkpoint` refuses, before it writes anything, what such a load
would refuse (it names where in the object the value sits), so that no
checkpoint is written that cannot be read back. A process killed while
writing leaves a half-written ``.{name}.XXXXXXXX.tmp`` beside the file; the
next write of that checkpoint removes it once it is :data:`STALE_AFTER`
seconds old.
"""

from __future__ import annotations

import collections
import hashlib
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._checks import check_device
from .io import atomic_write, remove_stale_temporaries

MAGIC = b"DLBOOK-CHECKPOINT v1\n"
DIGEST_SIZE = 32  # SHA-256
# Seconds without a change after which a temporary of a checkpoint counts as
# abandoned. A live write fills its temporary in one go from memory (the
# payload is serialised first), so a minute of silence means a dead writer.
STALE_AFTER = 60.0

# What torch.load(weights_only=True) reads back (tests/test_checkpoint.py
# round-trips each): scalars, torch's small types, plain containers, tensors.
_SCALARS = (type(None), bool, int, float, complex, str, bytes, bytearray, torch.Size, torch.dtype,
            torch.device, torch.layout)
_TENSORS = (torch.Tensor, nn.Parameter)
_ALLOWED = ("tensors, None, bool, int, float, complex, str, bytes, torch.Size, torch.dtype, torch.device, "
            "and lists, tuples, dicts, OrderedDicts and sets of those (NumPy arrays and scalars are converted)")


def _type_name(value: Any) -> str:
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _key_path(where: str, key: Any) -> str:
    if not where and isinstance(key, str) and key.isidentifier():
        return key  # the first key bare: state['ema']['shadow']
    return f"{where}[{key!r}]"


def _refuse(where: str, what: str, path: Path) -> TypeError:
    place = where if where.startswith(("a key of ", "an element of ")) else f"the value at {where or 'the top level'}"
    return TypeError(f"the checkpoint {path} was not written: {place} is {what}, which a "
                     f"checkpoint cannot hold (torch.load(weights_only=True) would refuse it). A checkpoint "
                     f"holds {_ALLOWED}; save a state_dict() or convert the value")


def _storable(value: Any, where: str, path: Path, active: frozenset = frozenset()) -> Any:
    """``value`` as a checkpoint can hold it, or a TypeError naming where it sits.

    NumPy arrays become tensors (``torch.from_numpy``), NumPy scalars Python
    numbers, subclasses of ``str`` and of the number types (torch's
    ``TorchVersion``) the plain type. Containers are copied, never changed.
    """
    cls = type(value)
    if cls in _TENSORS or cls in _SCALARS:
        return value
    if isinstance(value, np.ndarray):
        if not value.flags.writeable or not value.flags.c_contiguous:
            value = np.array(value, order="C", copy=True)
        try:
            return torch.from_numpy(value)
        except TypeError:
            raise _refuse(where, f"a NumPy array of dtype {value.dtype}", path) from None
    if isinstance(value, (np.bool_, np.number, np.str_, np.bytes_)):
        item = value.item()
        if isinstance(item, np.generic):  # np.longdouble: no Python type holds it
            raise _refuse(where, f"a NumPy scalar of type {_type_name(value)}", path)
        return item
    if isinstance(value, torch.Tensor):
        raise _refuse(where, f"a tensor of the subclass {_type_name(value)}", path)
    for plain in (str, bytes, int, float, complex):
        if isinstance(value, plain) and not isinstance(value, bool):
            return plain(value)
    if cls in (list, tuple, set, dict, collections.OrderedDict):
        if id(value) in active:
            raise _refuse(where, f"a {cls.__name__} that contains itself", path)
        active = active | {id(value)}
        if cls in (dict, collections.OrderedDict):
            items = []
            for key, item in value.items():
                inner = _key_path(where, key)
                items.append((_storable(key, f"a key of {where or 'the top level'}", path, active),
                              _storable(item, inner, path, active)))
            return cls(items)
        if cls is set:
            return {_storable(item, f"an element of the set at {where or 'the top level'}", path, active)
                    for item in value}
        return cls(_storable(item, f"{where}[{i}]", path, active) for i, item in enumerate(value))
    raise _refuse(where, f"of type {_type_name(value)}", path)


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
    them) to ``path`` atomically, with a checksum.

    NumPy arrays in ``obj`` are stored as tensors and NumPy scalars as Python
    numbers (so they load back as such). Half-written temporaries of this
    checkpoint that a killed process left are removed once stale.

    Raises:
        TypeError: before anything is written, for a value that
            :func:`load_checkpoint` could not read back (any other object);
            the message names where it sits, e.g. ``state['ema']['shadow']``.
    """
    path = Path(path).expanduser()
    obj = _storable(obj, "", path)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    header = MAGIC + hashlib.sha256(payload).digest()
    remove_stale_temporaries(path, STALE_AFTER)
    return atomic_write(path, lambda f: (f.write(header), f.write(payload)))


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
