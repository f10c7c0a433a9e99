"""Data sets with verified downloads and a local cache.

The cache directory is ``DLBOOK_DATA`` (default: the user cache directory,
``~/.cache/dlbook`` on Linux). Cache files have fixed names and fixed
SHA-256 checksums: ``mnist.npz``, ``fashion_mnist.npz`` (arrays ``x_train``,
``y_train``, ``x_test``, ``y_test``, uint8) and ``tinyshakespeare.txt``.

On a cache miss the official files are downloaded (each source in turn),
checked against their published SHA-256, converted to the cache format and
written atomically. The conversion is byte-for-byte reproducible, so the
cache file itself is verified against a fixed checksum on every load.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .io import atomic_write
from .paths import data_dir

IMAGE_DATASETS = ("mnist", "fashion_mnist")
SPLITS = ("train", "test")

#: Mean and standard deviation of the training pixels, scaled to [0, 1].
NORMALIZATION = {
    "mnist": (0.1307, 0.3081),
    "fashion_mnist": (0.2860, 0.3530),
}

CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
}

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class Source:
    """Where a cache file comes from and how to check it."""

    filename: str
    sha256: str
    mirrors: tuple[str, ...]
    # Published SHA-256 of each uncompressed official file, by array name.
    parts: dict[str, str] = field(default_factory=dict)
    licence: str = ""
    # For .npz caches: the digest of the arrays themselves (array_digest), which
    # still matches when another zlib compressed the same arrays differently.
    content_sha256: str | None = None


SOURCES: dict[str, Source] = {
    "mnist": Source(
        filename="mnist.npz",
        sha256="06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        parts={
            "x_train": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "y_train": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "x_test": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "y_test": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        licence="CC BY-SA 3.0 (LeCun, Cortes, Burges)",
        content_sha256="869043a08a4d18821fa17546401bfbe66053b5e347a0a99c9ae9e6cbd1f08db0",
    ),
    "fashion_mnist": Source(
        filename="fashion_mnist.npz",
        sha256="5b6d2c4c694a91887af8ab7d039c04f80af3c29378d731c93a538d2e831aa469",
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        parts={
            "x_train": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "y_train": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "x_test": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "y_test": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        licence="MIT (Zalando Research)",
        content_sha256="82aa995a3fccbc9bfb41fa0853f4a48f92e8e42aeb13f78237dd85be83c6e51e",
    ),
    "tinyshakespeare": Source(
        filename="tinyshakespeare.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        mirrors=(
            "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/",
        ),
        parts={"input.txt": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"},
        licence="public domain text",
    ),
}


class DataError(RuntimeError):
    """A data set could not be found, downloaded or verified."""


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, as lowercase hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_verified: dict[tuple[str, int, int], str] = {}


def _check_cached(path: Path, source: Source) -> None:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if _verified.get(key) == source.sha256:
        return
    actual = sha256_file(path)
    if actual != source.sha256 and not _same_arrays(path, source):
        raise DataError(
            f"The cached file {path} fails its checksum: expected SHA-256 "
            f"{source.sha256}, found {actual}. It is corrupted or not the "
            f"expected data set. Delete it so that dlbook downloads it again, "
            f"or replace it with a good copy."
        )
    _verified[key] = source.sha256


def array_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the image arrays."""
    digest = hashlib.sha256()
    for key in IDX_FILES:
        a = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def _same_arrays(path: Path, source: Source) -> bool:
    """True when an .npz whose bytes differ still holds exactly the expected arrays
    (the file was written by a zlib that compresses differently)."""
    if source.content_sha256 is None:
        return False
    try:
        with np.load(path, allow_pickle=False) as npz:
            return array_digest({key: npz[key] for key in IDX_FILES}) == source.content_sha256
    except Exception:  # noqa: BLE001 - unreadable means not the expected file
        return False


def fetch(name: str, mirrors: tuple[str, ...] | None = None) -> Path:
    """Return the path of a verified cache file, downloading it if needed.

    Args:
        name: one of ``mnist``, ``fashion_mnist``, ``tinyshakespeare``.
        mirrors: base URLs to try in order (default: the official sources).

    Raises:
        ValueError: for an unknown data set name.
        DataError: when the cached file fails its checksum, or no source
            delivered a file with the published checksum.
    """
    if name not in SOURCES:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(SOURCES)}")
    source = SOURCES[name]
    path = data_dir() / source.filename
    if path.exists():
        _check_cached(path, source)
        return path
    mirrors = source.mirrors if mirrors is None else tuple(mirrors)
    failures = []
    for base in mirrors:
        try:
            _download_and_convert(name, source, base, path)
        except Exception as err:  # noqa: BLE001 - every failure moves on to the next mirror
            failures.append(f"  {base}: {type(err).__name__}: {err}")
            continue
        _check_cached(path, source)
        return path
    tried = "\n".join(failures) or "  (no sources given)"
    raise DataError(
        f"{source.filename} is not in the cache {path.parent} and could not be "
        f"downloaded. Sources tried:\n{tried}\n"
        f"To fix: connect to the internet and run again, or copy a good "
        f"{source.filename} (SHA-256 {source.sha256}) into a folder and set "
        f"DLBOOK_DATA to that folder's absolute path."
    )


def _download(url: str, folder: Path) -> Path:
    import pooch

    pooch.get_logger().setLevel("WARNING")
    print(f"Downloading {url}", flush=True)
    # The official files are gzip-compressed while the published checksums
    # are of the uncompressed files, so pooch only transfers; we verify below.
    return Path(pooch.retrieve(url, known_hash=None, path=folder, progressbar=False))


def _verify_part(path: Path, expected: str, url: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(f"{url} has SHA-256 {actual}, expected {expected}")


def _download_and_convert(name: str, source: Source, base: str, target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if name in IMAGE_DATASETS:
            arrays = {}
            for key, stem in IDX_FILES.items():
                url = base + stem + ".gz"
                packed = _download(url, folder)
                raw = folder / stem
                try:
                    with gzip.open(packed, "rb") as src, open(raw, "wb") as dst:
                        dst.write(src.read())
                except (OSError, EOFError) as err:
                    raise DataError(f"{url} is not a complete gzip file ({err})") from err
                _verify_part(raw, source.parts[key], url)
                arrays[key] = read_idx(raw)
            atomic_write(target, lambda f: write_npz(f, arrays))
        else:
            (stem, expected), = source.parts.items()
            url = base + stem
            raw = _download(url, folder)
            _verify_part(raw, expected, url)
            atomic_write(target, lambda f: f.write(raw.read_bytes()))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an uncompressed IDX file (the MNIST format) into a uint8 array."""
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


def write_npz(f, arrays: dict[str, np.ndarray]) -> None:
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


def load_arrays(name: str) -> dict[str, np.ndarray]:
    """The raw uint8 arrays of MNIST or Fashion-MNIST.

    Returns ``{"x_train": (60000, 28, 28), "y_train": (60000,),
    "x_test": (10000, 28, 28), "y_test": (10000,)}``.
    """
    if name not in IMAGE_DATASETS:
        raise ValueError(f"expected an image data set, one of {', '.join(IMAGE_DATASETS)}; got {name!r}")
    with np.load(fetch(name)) as npz:
        return {key: npz[key] for key in IDX_FILES}


def subset_indices(n: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """``limit`` distinct indices out of ``range(n)``, the same for a seed.

    ``limit=None`` (or ``limit >= n``) keeps all ``n`` in their order.
    """
    if limit is None:
        return np.arange(n)
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"limit must be a positive integer or None; got {limit!r}")
    if limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def load_images(name: str, split: str = "train", limit: int | None = None,
                normalize: bool = True, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST or Fashion-MNIST as tensors.

    Args:
        name: ``"mnist"`` or ``"fashion_mnist"``.
        split: ``"train"`` or ``"test"``.
        limit: keep a fixed random subset of this many examples (smoke runs).
        normalize: subtract the training mean and divide by its standard
            deviation (:data:`NORMALIZATION`); otherwise scale to [0, 1].
        seed: which subset ``limit`` takes.

    Shapes:
        x: (N, 1, 28, 28) float32; y: (N,) int64.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    arrays = load_arrays(name)
    images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
    keep = subset_indices(len(labels), limit, seed)
    x = torch.from_numpy(images[keep]).float().div_(255).unsqueeze(1)  # (N, 1, H, W)
    if normalize:
        mean, std = NORMALIZATION[name]
        x = x.sub_(mean).div_(std)
    y = torch.from_numpy(labels[keep].astype(np.int64))  # (N,)
    return x, y


def image_dataset(name: str, split: str = "train", limit: int | None = None,
                  normalize: bool = True, seed: int = 0) -> TensorDataset:
    """:func:`load_images` wrapped as a ``TensorDataset`` of ``(x, y)`` pairs."""
    return TensorDataset(*load_images(name, split, limit, normalize, seed))


def denormalize(x: torch.Tensor, name: str) -> torch.Tensor:
    """Undo the normalisation of :func:`load_images`, back to [0, 1]."""
    mean, std = NORMALIZATION[name]
    return x * std + mean


class BatchLoader:
    """Mini-batches straight from in-memory tensors.

    A ``DataLoader`` over a ``TensorDataset`` indexes and collates one
    example at a time; for small images held in memory this costs as much as
    the model. This loader slices whole batches out of the tensors instead,
    with the same ``shuffle``/``drop_last`` meaning and the same use of the
    global torch random generator (so seeding makes it reproducible).

    ``transform`` is applied to each batch of inputs, for augmentation.
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int = 128, shuffle: bool = False,
                 drop_last: bool = False, transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if not tensors:
            raise ValueError("BatchLoader needs at least one tensor")
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError(f"all tensors must have the same first dimension; got {[len(t) for t in tensors]}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        self.tensors, self.batch_size = tensors, batch_size
        self.shuffle, self.drop_last, self.transform = shuffle, drop_last, transform
        self.dataset = TensorDataset(*tensors)

    def __len__(self) -> int:
        n = len(self.tensors[0])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.tensors[0])
        order = torch.randperm(n) if self.shuffle else None
        for b in range(len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            batch = [t[order[sl]] if order is not None else t[sl] for t in self.tensors]
            if self.transform is not None:
                batch[0] = self.transform(batch[0])
            yield tuple(batch)


def random_shift(x: torch.Tensor, max_shift: int = 2) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels in each direction.

    The border is filled with the image's background value (its minimum).

    Shapes:
        x: (B, C, H, W) -> (B, C, H, W)
    """
    if x.dim() != 4:
        raise ValueError(f"random_shift expects (B, C, H, W) images; got shape {tuple(x.shape)}")
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0; got {max_shift}")
    if max_shift == 0:
        return x
    B, C, H, W = x.shape
    s = max_shift
    fill = x.amin(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1): each image's background
    padded = torch.nn.functional.pad(x - fill, (s, s, s, s)) + fill  # (B, C, H+2s, W+2s)
    dy = torch.randint(0, 2 * s + 1, (B,))
    dx = torch.randint(0, 2 * s + 1, (B,))
    rows = (dy[:, None] + torch.arange(H)[None, :])  # (B, H)
    cols = (dx[:, None] + torch.arange(W)[None, :])  # (B, W)
    b = torch.arange(B)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)


def image_loaders(name: str, batch_size: int = 128, limit_train: int | None = None,
                  limit_test: int | None = None, augment: Callable | None = None,
                  seed: int = 0) -> tuple[BatchLoader, BatchLoader]:
    """Training and test loaders for MNIST or Fashion-MNIST.

    The training loader shuffles (with the global torch generator) and
    applies ``augment`` to each batch; the test loader does neither.
    """
    x, y = load_images(name, "train", limit_train, seed=seed)
    xt, yt = load_images(name, "test", limit_test, seed=seed)
    train = BatchLoader(x, y, batch_size=batch_size, shuffle=True, transform=augment)
    test = BatchLoader(xt, yt, batch_size=1000)
    return train, test


def load_text(name: str = "tinyshakespeare") -> str:
    """A text corpus as one string (Tiny Shakespeare: 1,115,394 characters)."""
    if name != "tinyshakespeare":
        raise ValueError(f"expected a text data set, 'tinyshakespeare'; got {name!r}")
    return fetch(name).read_text(encoding="utf-8")
