"""What each cache file is made of: its remote files, their checksums, the converter.

A :class:`Source` lists the files to download (each with the SHA-256 it
must have once downloaded, and decompressed where it is gzip'ed), the base
URLs that serve them (the official ones; ``DLBOOK_MIRRORS`` adds mirrors
tried first, one folder per key of :data:`SOURCES`: see
:func:`dlbook.data.cache.env_mirrors`), and a converter that writes the
cache file from the verified downloads. The cache file itself has a fixed SHA-256 because every
converter is byte-for-byte reproducible.
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from .formats import read_idx, write_npz
from .planetoid import PLANETOID_PARTS, planetoid_arrays

#: The npz key of each MNIST array and the stem of its official IDX file.
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

#: ``convert(files, f)``: write the cache file to the open binary file ``f``
#: from ``files``, which maps each remote file name to its verified local copy.
Converter = Callable[[dict, BinaryIO], None]


@dataclass(frozen=True)
class RemoteFile:
    """One file to download: its name under a mirror's base URL and its SHA-256.

    With ``gunzip=True`` the file is gzip-compressed and ``sha256`` is that of
    the decompressed bytes (MNIST publishes the checksums of the raw files).
    """

    name: str
    sha256: str
    gunzip: bool = False


@dataclass(frozen=True)
class Source:
    """Where a cache file comes from and how to check it."""

    filename: str
    sha256: str
    mirrors: tuple[str, ...]
    files: tuple[RemoteFile, ...]
    convert: Converter
    licence: str = ""
    # For .npz caches: the digest of the arrays themselves (array_digest), which
    # still matches when another zlib compressed the same arrays differently.
    content_sha256: str | None = None


def idx_to_npz(files: dict[str, Path], f: BinaryIO) -> None:
    """MNIST's four IDX files (``*.gz`` names) -> one ``.npz`` of uint8 arrays."""
    write_npz(f, {key: read_idx(files[stem + ".gz"]) for key, stem in IDX_FILES.items()})


def copy_file(files: dict[str, Path], f: BinaryIO) -> None:
    """A single downloaded file, cached as it is."""
    (path,) = files.values()
    with open(path, "rb") as src:
        shutil.copyfileobj(src, f, 1 << 20)


def planetoid_to_npz(name: str, files: dict[str, Path], f: BinaryIO) -> None:
    """The eight Planetoid files of ``name`` -> one ``.npz`` (see :mod:`.planetoid`)."""
    write_npz(f, planetoid_arrays(name, files))


def _image_source(filename, sha256, content_sha256, mirrors, published, licence) -> Source:
    files = tuple(RemoteFile(IDX_FILES[key] + ".gz", published[key], gunzip=True) for key in IDX_FILES)
    return Source(filename, sha256, mirrors, files, idx_to_npz, licence, content_sha256)


def _planetoid_source(name, sha256, content_sha256, published) -> Source:
    files = tuple(RemoteFile(f"ind.{name}.{part}", published[part]) for part in PLANETOID_PARTS)
    return Source(f"{name}.npz", sha256, PLANETOID_MIRRORS, files,
                  functools.partial(planetoid_to_npz, name), "MIT (kimiyoung/planetoid); LINQS data",
                  content_sha256)


PLANETOID_MIRRORS = (
    "https://raw.githubusercontent.com/kimiyoung/planetoid/master/data/",
    "https://github.com/kimiyoung/planetoid/raw/master/data/",
)

SOURCES: dict[str, Source] = {
    "mnist": _image_source(
        "mnist.npz",
        sha256="06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64",
        content_sha256="bd930a59a860c3d5915c6d67631a728a21bc7c535055bac61f9487e95b28eaa5",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        published={
            "x_train": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "y_train": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "x_test": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "y_test": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        licence="CC BY-SA 3.0 (LeCun, Cortes, Burges)",
    ),
    "fashion_mnist": _image_source(
        "fashion_mnist.npz",
        sha256="5b6d2c4c694a91887af8ab7d039c04f80af3c29378d731c93a538d2e831aa469",
        content_sha256="88a0cb70ffe426e8e0cd39fae4f0e26704de80d25115b03948798eeadc3aead8",
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        published={
            "x_train": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "y_train": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "x_test": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "y_test": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        licence="MIT (Zalando Research)",
    ),
    "cora": _planetoid_source(
        "cora",
        sha256="9fbc385c55aa478546081d9ec72ee9409e719428867b5a9afe73bc5354b1bce0",
        content_sha256="baf157af980c881e3b30a8684d0f63e8e2b7031c856173c70261db100499c024",
        published={
            "x": "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab",
            "y": "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1",
            "tx": "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
            "ty": "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
            "allx": "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
            "ally": "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
            "graph": "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
            "test.index": "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875",
        },
    ),
    "citeseer": _planetoid_source(
        "citeseer",
        sha256="30525f592e9948edeaa4b665d8a983b0085aeee268128731972244817b36b7de",
        content_sha256="635eee290cd6a030599482496f547f3f2b35790d7c1e676b60b9f8d10093da77",
        published={
            "x": "d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6",
            "y": "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924",
            "tx": "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21",
            "ty": "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce",
            "allx": "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668",
            "ally": "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95",
            "graph": "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7",
            "test.index": "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4",
        },
    ),
    "tinyshakespeare": Source(
        "tinyshakespeare.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        mirrors=("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/",),
        files=(RemoteFile("input.txt", "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),),
        convert=copy_file,
        licence="public domain text",
    ),
}
