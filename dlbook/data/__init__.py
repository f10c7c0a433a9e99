"""Data sets with verified downloads and a local cache, and loaders for every chapter.

==================  =========================================================
module              what
==================  =========================================================
:mod:`.cache`       :func:`fetch`: the verified cache folder (``DLBOOK_DATA``)
:mod:`.folder`      :func:`fetch_all`: the whole folder at once (``python -m dlbook.data fetch --all``)
:mod:`.sources`     where each cache file comes from (:data:`SOURCES`)
:mod:`.formats`     checksums, IDX files, reproducible ``.npz``
:mod:`.planetoid`   the official Planetoid pickles, read without running code
:mod:`.loaders`     :class:`BatchLoader`, fixed random subsets
:mod:`.images`      MNIST, Fashion-MNIST: train/val/test, loaders, augmentation
:mod:`.graphs`      Cora, CiteSeer as a :class:`Graph`
:mod:`.text`        Tiny Shakespeare: vocabulary, split, (B, T) windows
==================  =========================================================

Cache files (format as in ``../shared/data``): ``mnist.npz``,
``fashion_mnist.npz``, ``cora.npz``, ``citeseer.npz``, ``tinyshakespeare.txt``.
"""

from ..paths import data_dir
from .cache import STALE_AFTER, fetch, fetch_files, remove_stale_downloads
from .formats import DataError, array_digest, read_idx, sha256_file, write_idx, write_npz
from .folder import fetch_all, folder_files
from .graphs import GRAPH_DATASETS, Graph, load_graph
from .images import (CLASS_NAMES, IMAGE_DATASETS, NORMALIZATION, SPLITS, VAL_SIZE, ImageLoaders, denormalize,
                     image_dataset, image_loaders, load_arrays, load_images, random_shift)
from .loaders import BatchLoader, subset_indices
from .sources import IDX_FILES, SOURCES, RemoteFile, Source
from .text import (TEXT_DATASETS, CharCorpus, CharVocab, RandomWindows, load_char_corpus, load_text,
                   train_val_split, validation_windows)

__all__ = [
    "BatchLoader", "CLASS_NAMES", "CharCorpus", "CharVocab", "DataError", "GRAPH_DATASETS", "Graph",
    "IDX_FILES", "IMAGE_DATASETS", "ImageLoaders", "NORMALIZATION", "RandomWindows", "RemoteFile",
    "SOURCES", "SPLITS", "STALE_AFTER", "Source", "TEXT_DATASETS", "VAL_SIZE", "array_digest", "data_dir",
    "denormalize", "fetch", "fetch_all", "fetch_files", "folder_files", "image_dataset", "image_loaders",
    "load_arrays", "load_char_corpus", "load_graph", "load_images", "load_text", "random_shift", "read_idx",
    "remove_stale_downloads",
    "sha256_file", "subset_indices", "train_val_split", "validation_windows", "write_idx", "write_npz",
]
