"""Shared fixtures of the dlbook unit tests.

Every test runs with its own ``DLBOOK_*`` environment (tmp folders, the smoke
profile, no forced device), the user cache directory redirected into
``tmp_path``, and a guard that fails any download from a host other than
127.0.0.1. Tests that need the real data sets ask for ``shared_data``.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import sys
import threading
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before dlbook imports pyplot

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` run without `python -m` from the repo root
    sys.path.insert(0, str(ROOT))

import dlbook  # noqa: E402

# Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine
# (or with pytest-xdist) threads that wait for each other cost a lot.
torch.set_num_threads(1)
import dlbook.data  # noqa: E402
import dlbook.device  # noqa: E402
import dlbook.paths  # noqa: E402

# The read-only copies of the data sets: ../shared/data beside the checkout
# (development and CI machines), else the data folder that `make data` fills
# (DLBOOK_DATA, else the user cache; read here, before any test changes them).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not SHARED_DATA.is_dir():
    SHARED_DATA = dlbook.paths.data_dir()
ENV_VARS = ("DLBOOK_PROFILE", "DLBOOK_CACHE", "DLBOOK_DATA", "DLBOOK_MODELS", "DLBOOK_CHECKPOINTS",
            "DLBOOK_RESULTS", "DLBOOK_DEVICE", "DLBOOK_MIRRORS")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """Each test gets private folders for everything dlbook may write.

    One variable, DLBOOK_CACHE, moves every default folder (dlbook.paths);
    the specific variables are set too, so that no test sees the caller's.
    """
    monkeypatch.setenv("DLBOOK_PROFILE", "smoke")
    monkeypatch.setenv("DLBOOK_CACHE", str(tmp_path / "user-cache"))
    monkeypatch.setenv("DLBOOK_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DLBOOK_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("DLBOOK_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("DLBOOK_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("DLBOOK_DEVICE", raising=False)
    monkeypatch.delenv("DLBOOK_MIRRORS", raising=False)
    # No test may reach the network beyond 127.0.0.1. fetch() turns any error
    # into a DataError, so a blocked attempt is also recorded and fails the test.
    # dlbook.data.cache._download is the one function that transfers a file.
    real_download = dlbook.data.cache._download
    blocked = []

    def guarded_download(url, folder):
        if not url.startswith("http://127.0.0.1:"):
            blocked.append(url)
            raise ConnectionError(f"blocked by the test suite: {url}")
        return real_download(url, folder)

    monkeypatch.setattr(dlbook.data.cache, "_download", guarded_download)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    yield tmp_path
    assert not blocked, f"the test tried to reach the network: {blocked}"


@pytest.fixture(params=[False, True], ids=["fp32-cpu", "native-bf16-cpu"])
def native_bf16(request, monkeypatch):
    """Run a test twice: as on a CPU without native bfloat16 (autocast is a
    no-op) and as on one with it (autocast computes in bfloat16). Whatever
    the machine under the tests really is."""
    monkeypatch.setattr(dlbook.device, "cpu_has_native_bf16", lambda: request.param)
    return request.param


@pytest.fixture
def shared_data(monkeypatch):
    """Point DLBOOK_DATA at the read-only copies of the data sets."""
    if not (SHARED_DATA / "mnist.npz").exists():
        pytest.skip(f"the data sets are not in {SHARED_DATA}")
    monkeypatch.setenv("DLBOOK_DATA", str(SHARED_DATA))
    return SHARED_DATA


@pytest.fixture
def full_profile(monkeypatch):
    monkeypatch.setenv("DLBOOK_PROFILE", "full")


@pytest.fixture(scope="session")
def mnist_arrays() -> dict[str, np.ndarray]:
    """The four uint8 arrays of MNIST, read straight from the shared npz."""
    path = SHARED_DATA / "mnist.npz"
    if not path.exists():
        pytest.skip(f"{path} is missing")
    with np.load(path) as npz:
        return {key: npz[key] for key in dlbook.data.IDX_FILES}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="session")
def mirror_server(tmp_path_factory, mnist_arrays):
    """A local HTTP server with one folder per kind of mirror.

    ``good/``: the official gzip'ed IDX files (rebuilt from mnist.npz),
    ``input.txt`` and the official Planetoid files (``ind.cora.x``, ...);
    ``truncated/``: the same IDX and text files cut short; ``corrupt/``:
    valid gzip files of altered data; ``missing/``: nothing (404).
    Yields ``base(kind) -> "http://127.0.0.1:PORT/kind/"``.
    """
    root = tmp_path_factory.mktemp("mirrors")
    good, truncated, corrupt = (root / k for k in ("good", "truncated", "corrupt"))
    for folder in (good, truncated, corrupt, root / "missing"):
        folder.mkdir()
    for key, stem in dlbook.data.IDX_FILES.items():
        raw = dlbook.data.write_idx(mnist_arrays[key])
        packed = gzip.compress(raw, compresslevel=1)
        (good / f"{stem}.gz").write_bytes(packed)
        (truncated / f"{stem}.gz").write_bytes(packed[: len(packed) // 2])
        altered = bytearray(raw)
        altered[-1] ^= 0xFF  # one pixel or label changed; the header stays valid
        (corrupt / f"{stem}.gz").write_bytes(gzip.compress(bytes(altered), compresslevel=1))
    text = (SHARED_DATA / "tinyshakespeare.txt").read_bytes()
    (good / "input.txt").write_bytes(text)
    (truncated / "input.txt").write_bytes(text[: len(text) // 2])
    (corrupt / "input.txt").write_bytes(text.replace(b"ROMEO", b"ROMEU", 1))
    for path in (SHARED_DATA / "planetoid").glob("ind.*"):
        shutil.copyfile(path, good / path.name)

    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        yield lambda kind: f"http://127.0.0.1:{port}/{kind}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def toy_classification():
    """A small, linearly separable 3-class problem: (x (N, 2), y (N,))."""
    gen = torch.Generator().manual_seed(0)
    centers = torch.tensor([[2.0, 0.0], [-2.0, 2.0], [-2.0, -2.0]])
    y = torch.arange(240) % 3
    x = centers[y] + 0.5 * torch.randn(240, 2, generator=gen)
    return x, y
