"""Character-level text: Tiny Shakespeare, a character vocabulary, the
train/validation split and (B, T) windows for language modelling.

The standard split: the first 90% of the characters train, the last 10%
validate. Training draws random windows forever (:class:`RandomWindows`,
a step-based loop decides when to stop); the loss estimate uses every
non-overlapping window of the validation text (:func:`validation_windows`).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch

from ..fingerprint import describe
from .._checks import check_int
from ._checks import check_choice
from .cache import fetch
from .loaders import BatchLoader

TEXT_DATASETS = ("tinyshakespeare",)


def load_text(name: str = "tinyshakespeare") -> str:
    """A text corpus as one string (Tiny Shakespeare: 1,115,394 characters)."""
    name = check_choice(name, "the text data set", TEXT_DATASETS)
    return fetch(name).read_text(encoding="utf-8")


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


class CharVocab:
    """The sorted characters of a text, each with an id (its position).

    Shapes:
        encode: str of length T -> (T,) int64; decode: (T,) -> str of length T.
    """

    def __init__(self, text: str):
        if not isinstance(text, str) or not text:
            got = "an empty string" if isinstance(text, str) else f"a {type(text).__name__}"
            raise ValueError(f"CharVocab needs a non-empty string; got {got}")
        self.chars = sorted(set(text))
        codes = _code_points("".join(self.chars))
        self._ids = np.full(int(codes.max()) + 1, -1, dtype=np.int64)  # code point -> id, -1 if absent
        self._ids[codes] = np.arange(len(codes))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """The ids of the characters of ``text``.

        Raises:
            ValueError: naming the first character that is not in the vocabulary.
        """
        if not isinstance(text, str):
            raise ValueError(f"encode expects a string; got {type(text).__name__}")
        codes = _code_points(text)
        ids = np.full(len(codes), -1, dtype=np.int64)
        known = codes < len(self._ids)
        ids[known] = self._ids[codes[known]]
        if np.any(ids < 0):
            i = int(np.argmax(ids < 0))
            raise ValueError(f"character {text[i]!r} (U+{ord(text[i]):04X}) at position {i} is not in "
                             f"the vocabulary of {len(self)} characters")
        return torch.from_numpy(ids)  # (T,)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """The text of a 1-D tensor or a list of ids.

        Raises:
            ValueError: for anything but integer ids in 0..len(vocab)-1.
        """
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1 or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
                raise ValueError(f"decode expects a 1-D tensor of integer ids; got {ids.dtype} of shape {tuple(ids.shape)}")
            ids = ids.tolist()
        if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
            raise ValueError("decode expects integer ids")
        bad = [i for i in ids if not 0 <= i < len(self)]
        if bad:
            raise ValueError(f"id {bad[0]} is outside the vocabulary (0..{len(self) - 1})")
        return "".join(self.chars[i] for i in ids)

    def fingerprint(self) -> str:
        return repr("".join(self.chars))

    def __repr__(self) -> str:
        return f"CharVocab({len(self)} characters: {''.join(self.chars)!r})"


def train_val_split(seq):
    """The standard split of a text (a string or a 1-D tensor of ids): the
    first 90% train, the last 10% validate.

    Shapes:
        (L,) -> (L * 9 // 10,), (L - L * 9 // 10,)
    """
    if not isinstance(seq, (str, torch.Tensor)) or (isinstance(seq, torch.Tensor) and seq.dim() != 1):
        raise ValueError(f"train_val_split expects a string or a 1-D tensor; got {type(seq).__name__} "
                         f"of shape {tuple(getattr(seq, 'shape', ()))}")
    n_train = len(seq) * 9 // 10
    return seq[:n_train], seq[n_train:]


class CharCorpus(NamedTuple):
    """A text encoded with its vocabulary and split (:func:`load_char_corpus`)."""

    vocab: CharVocab
    train: torch.Tensor  # (L_train,) int64
    val: torch.Tensor  # (L_val,) int64


def load_char_corpus(name: str = "tinyshakespeare") -> CharCorpus:
    """The vocabulary of the whole text, and the encoded train and validation parts.

    Shapes:
        train: (1003854,) int64; val: (111540,) int64 for Tiny Shakespeare.
    """
    text = load_text(name)
    vocab = CharVocab(text)
    train, val = train_val_split(vocab.encode(text))
    return CharCorpus(vocab, train, val)


def _check_ids(ids, T: int, what: str) -> torch.Tensor:
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.dtype != torch.int64:
        raise ValueError(f"{what} expects a 1-D int64 tensor of ids; got "
                         f"{getattr(ids, 'dtype', type(ids).__name__)} of shape {tuple(getattr(ids, 'shape', ()))}")
    if len(ids) < T + 1:
        raise ValueError(f"T={T} is longer than the text allows: a window needs T + 1 = {T + 1} "
                         f"characters (inputs and the next-character targets), the text has {len(ids)}")
    return ids


class RandomWindows:
    """Random (B, T) windows of a text and their next-character targets, forever.

    Each batch draws ``batch_size`` offsets with ``torch.randint`` from the
    global generator, when the batch is made. A loop that restores the
    global RNG state and skips k batches therefore sees the same stream.
    There is no length: a step-based loop decides when to stop.

    Shapes:
        ids: (L,) int64 -> batches x (B, T) int64 and y (B, T) int64, where
        ``y[b, t] = x[b, t + 1]`` (the next character).
    """

    def __init__(self, ids: torch.Tensor, T: int, batch_size: int):
        self.T = check_int(T, "T (the window length)", minimum=1)
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self.ids = _check_ids(ids, self.T, "RandomWindows")

    def __iter__(self):
        offsets = torch.arange(self.T)  # (T,)
        while True:
            starts = torch.randint(len(self.ids) - self.T, (self.batch_size,))  # (B,)
            rows = starts[:, None] + offsets[None, :]  # (B, T)
            yield self.ids[rows], self.ids[rows + 1]  # x (B, T), y (B, T)

    def fingerprint(self) -> str:
        return f"RandomWindows(ids={describe(self.ids)}, T={self.T}, batch_size={self.batch_size})"

    def __repr__(self) -> str:
        return f"RandomWindows({len(self.ids)} ids, T={self.T}, batch_size={self.batch_size})"


def validation_windows(ids: torch.Tensor, T: int, batch_size: int) -> BatchLoader:
    """Every non-overlapping length-T window of ``ids`` with its targets, in order.

    Window i covers ``ids[i*T : (i+1)*T]``; its targets are shifted by one.
    The characters after the last whole window are left out.

    Shapes:
        ids: (L,) int64 -> batches x (B, T) int64 and y (B, T) int64;
        (L - 1) // T windows in all.
    """
    T = check_int(T, "T (the window length)", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    ids = _check_ids(ids, T, "validation_windows")
    n = (len(ids) - 1) // T
    x = ids[: n * T].reshape(n, T)  # (n, T)
    y = ids[1: n * T + 1].reshape(n, T)  # (n, T)
    return BatchLoader(x, y, batch_size=batch_size)
