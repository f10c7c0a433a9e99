"""dlbook.data: the verified cache, the loaders and augmentation.

Facts come from ../shared/data/README.md. Downloads are tested against a
local HTTP server (conftest.mirror_server) that serves the official gzip'ed
IDX files rebuilt from mnist.npz; nothing leaves 127.0.0.1.
"""

import hashlib
import os
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dlbook import data
from dlbook.data import DataError

# The read-only copies of the data sets: ../shared/data beside the checkout
# (development and CI machines), else wherever DLBOOK_DATA points.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not SHARED_DATA.is_dir() and os.environ.get("DLBOOK_DATA"):
    SHARED_DATA = Path(os.environ["DLBOOK_DATA"])

# Published SHA-256 of the uncompressed official files (data README).
PUBLISHED = {
    "mnist": {
        "x_train": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "y_train": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "x_test": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "y_test": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion_mnist": {
        "x_train": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "y_train": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "x_test": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "y_test": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}
MNIST_TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_PIXEL_SUMS = {"train": 1_567_298_545, "test": 264_923_200}
TINYSHAKESPEARE_CHARS = 1_115_394


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# Checksums and file formats ---------------------------------------------------

def test_sources_agree_with_the_shared_sha256sums(shared_data):
    sums = dict(reversed(line.split()) for line in (shared_data / "SHA256SUMS").read_text().splitlines())
    for name, source in data.SOURCES.items():
        assert sums[source.filename] == source.sha256, name
        assert data.sha256_file(shared_data / source.filename) == source.sha256


def test_sources_carry_the_published_part_checksums():
    for name, parts in PUBLISHED.items():
        assert data.SOURCES[name].parts == parts
    assert data.SOURCES["tinyshakespeare"].parts == {"input.txt": data.SOURCES["tinyshakespeare"].sha256}


def test_rebuilt_idx_files_have_the_published_checksums(mnist_arrays):
    for key, expected in PUBLISHED["mnist"].items():
        assert sha256(data.write_idx(mnist_arrays[key])) == expected, key


def test_write_npz_reproduces_the_cache_file_byte_for_byte(mnist_arrays, shared_data):
    buf = io.BytesIO()
    data.write_npz(buf, mnist_arrays)
    digest = sha256(buf.getvalue())
    assert digest == data.SOURCES["mnist"].sha256
    assert digest == data.sha256_file(shared_data / "mnist.npz")


def test_write_npz_is_a_loadable_npz(tmp_path):
    arrays = {"a": np.arange(12, dtype=np.uint8).reshape(3, 4), "b": np.array([1.5, -2.0])}
    path = tmp_path / "x.npz"
    with open(path, "wb") as f:
        data.write_npz(f, arrays)
    first = path.read_bytes()
    with np.load(path) as npz:
        assert sorted(npz.files) == ["a", "b"]
        for key, value in arrays.items():
            assert np.array_equal(npz[key], value) and npz[key].dtype == value.dtype
    with open(path, "wb") as f:
        data.write_npz(f, arrays)
    assert path.read_bytes() == first  # reproducible


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4), (0,), (2, 0, 3), (1, 1, 1, 2)])
def test_idx_roundtrip(tmp_path, shape):
    array = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    encoded = data.write_idx(array)
    assert len(encoded) == 4 + 4 * len(shape) + array.size
    path = tmp_path / "f-idx-ubyte"
    path.write_bytes(encoded)
    back = data.read_idx(path)
    assert back.dtype == np.uint8 and back.shape == shape and np.array_equal(back, array)
    back[...] = 0  # a writable copy, not a view of the bytes


def test_idx_header_is_big_endian():
    encoded = data.write_idx(np.zeros((60000, 28, 28), dtype=np.uint8)[:1])
    assert encoded[:8] == bytes([0, 0, 8, 3, 0, 0, 0, 1])


@pytest.mark.parametrize("payload", [
    b"", b"\x00\x00", b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00",  # float IDX
    b"\x01\x00\x08\x01\x00\x00\x00\x02ab",  # bad magic
    b"\x00\x00\x08\x01\x00\x00\x00\x03ab",  # too short
    b"\x00\x00\x08\x01\x00\x00\x00\x01ab",  # too long
])
def test_read_idx_rejects_bad_files(tmp_path, payload):
    path = tmp_path / "bad"
    path.write_bytes(payload)
    with pytest.raises(DataError, match="bad"):
        data.read_idx(path)


# The arrays and the facts of the README ---------------------------------------

def test_load_arrays_shapes_dtypes_and_readme_facts(shared_data):
    arrays = data.load_arrays("mnist")
    assert sorted(arrays) == ["x_test", "x_train", "y_test", "y_train"]
    assert arrays["x_train"].shape == (60000, 28, 28) and arrays["y_train"].shape == (60000,)
    assert arrays["x_test"].shape == (10000, 28, 28) and arrays["y_test"].shape == (10000,)
    assert all(a.dtype == np.uint8 for a in arrays.values())
    assert np.bincount(arrays["y_train"], minlength=10).tolist() == MNIST_TRAIN_LABEL_COUNTS
    assert np.bincount(arrays["y_test"], minlength=10).sum() == 10000
    for split, total in MNIST_PIXEL_SUMS.items():
        assert int(arrays[f"x_{split}"].sum(dtype=np.int64)) == total
    counts = np.bincount(arrays["x_train"].ravel(), minlength=256)  # pixel histogram
    values = np.arange(256) / 255.0
    mean = (counts * values).sum() / counts.sum()
    std = np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    assert (mean, std) == pytest.approx((0.13066, 0.30811), abs=1e-5)


@pytest.fixture(scope="module")
def mnist_train():
    """The whole normalised MNIST training set, loaded once for this module."""
    if not (SHARED_DATA / "mnist.npz").exists():
        pytest.skip(f"the data sets are not in {SHARED_DATA}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLBOOK_DATA", str(SHARED_DATA))
        return data.load_images("mnist", "train")


def test_load_images_shapes_and_dtypes(mnist_train, shared_data):
    x, y = mnist_train
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (60000,) and y.dtype == torch.int64
    xt, yt = data.load_images("mnist", "test", limit=50)
    assert xt.shape == (50, 1, 28, 28) and yt.shape == (50,)


def test_normalized_train_set_has_mean_0_std_1(mnist_train):
    x, _ = mnist_train
    assert abs(x.mean().item()) < 1e-3
    assert abs(x.std().item() - 1) < 1e-3


def test_normalization_constants_match_the_readme():
    assert data.NORMALIZATION["mnist"] == pytest.approx((0.13066, 0.30811), abs=1e-4)
    assert data.NORMALIZATION["fashion_mnist"] == pytest.approx((0.28604, 0.35302), abs=1e-4)


def test_unnormalized_images_and_denormalize(mnist_train, mnist_arrays, shared_data):
    x, y = mnist_train
    assert torch.equal(y, torch.from_numpy(mnist_arrays["y_train"].astype(np.int64)))
    # normalize=False: the bytes scaled to [0, 1]; denormalize undoes the normalisation
    raw = torch.from_numpy(mnist_arrays["x_train"][:200]).float().div(255).unsqueeze(1)
    assert torch.allclose(data.denormalize(x[:200], "mnist"), raw, atol=1e-6)
    xt, yt = data.load_images("mnist", "test", limit=300, normalize=False, seed=3)
    keep = data.subset_indices(10000, 300, seed=3)
    assert xt.min() == 0 and xt.max() == 1
    assert torch.equal((xt[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(mnist_arrays["x_test"][keep]))
    assert torch.equal(yt, torch.from_numpy(mnist_arrays["y_test"][keep].astype(np.int64)))


def test_fashion_mnist(shared_data):
    x, y = data.load_images("fashion_mnist", "test", limit=64)
    assert x.shape == (64, 1, 28, 28) and y.dtype == torch.int64
    assert data.denormalize(x, "fashion_mnist").min().item() == pytest.approx(0, abs=1e-6)
    assert len(data.CLASS_NAMES["fashion_mnist"]) == 10 and y.max() < 10


def test_limit_takes_a_fixed_subset(shared_data):
    x1, y1 = data.load_images("mnist", "test", limit=20, seed=3)
    x2, y2 = data.load_images("mnist", "test", limit=20, seed=4)
    assert x1.shape == (20, 1, 28, 28)
    assert not torch.equal(x1, x2)  # another seed, another subset (same seed: see above)


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="mnist", split="val"), "split"),
    (dict(name="cifar10"), "mnist"),
    (dict(name="tinyshakespeare"), "image"),
    (dict(name="mnist", limit=0), "limit"),
])
def test_load_images_rejects_bad_arguments(shared_data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load_images(**kwargs)


def test_image_dataset_and_loaders(shared_data):
    ds = data.image_dataset("mnist", "test", limit=30)
    assert len(ds) == 30 and ds[0][0].shape == (1, 28, 28)
    train, test = data.image_loaders("mnist", batch_size=8, limit_train=20, limit_test=12,
                                     augment=lambda b: b * 0)
    assert len(train) == 3 and len(test) == 1
    assert train.shuffle and not test.shuffle
    xb, yb = next(iter(train))
    assert xb.shape == (8, 1, 28, 28) and torch.all(xb == 0)  # augment applied
    xt, yt = next(iter(test))
    assert xt.shape == (12, 1, 28, 28) and not torch.all(xt == 0)


# subset_indices ---------------------------------------------------------------

def test_subset_indices_deterministic_and_distinct():
    a = data.subset_indices(1000, 100, seed=0)
    assert np.array_equal(a, data.subset_indices(1000, 100, seed=0))
    assert len(np.unique(a)) == 100 and a.min() >= 0 and a.max() < 1000
    assert np.all(np.diff(a) > 0)  # sorted, so the subset keeps the original order
    assert not np.array_equal(a, data.subset_indices(1000, 100, seed=1))
    assert not np.array_equal(a, np.arange(100))


@pytest.mark.parametrize("limit", [None, 10, 11, 10**9])
def test_subset_indices_keeps_all_when_limit_is_large(limit):
    assert np.array_equal(data.subset_indices(10, limit), np.arange(10))


def test_subset_indices_accepts_numpy_integers():
    assert len(data.subset_indices(10, np.int64(3))) == 3


@pytest.mark.parametrize("limit", [0, -1, 2.5, True, False])
def test_subset_indices_rejects_bad_limits(limit):
    with pytest.raises(ValueError, match="limit"):
        data.subset_indices(10, limit)


@pytest.mark.parametrize("n, limit", [(10, "5"), (10, 20.0), (1, True)])
def test_subset_indices_validates_before_the_shortcut(n, limit):
    with pytest.raises(ValueError, match="limit"):
        data.subset_indices(n, limit)


# BatchLoader ------------------------------------------------------------------

@pytest.mark.parametrize("n, bs, drop_last, sizes", [
    (10, 4, False, [4, 4, 2]), (10, 4, True, [4, 4]), (8, 4, False, [4, 4]), (8, 4, True, [4, 4]),
    (3, 5, False, [3]), (3, 5, True, []), (1, 1, False, [1]),
])
def test_batchloader_lengths(n, bs, drop_last, sizes):
    x = torch.arange(n)
    loader = data.BatchLoader(x, batch_size=bs, drop_last=drop_last)
    assert len(loader) == len(sizes)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == sizes
    if sizes:
        assert torch.equal(torch.cat([b[0] for b in batches]), x[: sum(sizes)])  # in order


def _epoch(loader):
    return [tuple(t.clone() for t in b) for b in loader]


def test_batchloader_shuffle_is_reproducible_and_covers_every_example_once():
    x = torch.arange(50)
    y = x * 10
    loader = data.BatchLoader(x, y, batch_size=8, shuffle=True)
    torch.manual_seed(0)
    first = _epoch(loader)
    second = _epoch(loader)  # the next epoch draws a new order
    torch.manual_seed(0)
    again = _epoch(loader)
    order = torch.cat([b[0] for b in first])
    assert torch.equal(torch.sort(order).values, x)  # each example exactly once
    assert not torch.equal(order, x)  # shuffled
    assert not torch.equal(order, torch.cat([b[0] for b in second]))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert all(torch.equal(b[1], b[0] * 10) for b in first)  # pairs stay aligned


def test_batchloader_shuffle_drop_last():
    x = torch.arange(10)
    loader = data.BatchLoader(x, batch_size=4, shuffle=True, drop_last=True)
    torch.manual_seed(1)
    seen = torch.cat([b[0] for b in loader])
    assert len(seen) == 8 and len(torch.unique(seen)) == 8


def test_batchloader_transform_applies_to_inputs_only():
    x, y = torch.ones(6, 2), torch.arange(6)
    calls = []

    def transform(batch):
        calls.append(batch.shape)
        return batch * 3

    loader = data.BatchLoader(x, y, batch_size=4, transform=transform)
    batches = list(loader)
    assert calls == [(4, 2), (2, 2)]
    assert all(torch.all(b[0] == 3) for b in batches)
    assert torch.equal(torch.cat([b[1] for b in batches]), y)
    assert torch.all(x == 1)  # the stored tensor is untouched


def test_batchloader_works_with_fit_style_iteration():
    loader = data.BatchLoader(torch.zeros(5, 3), torch.zeros(5), batch_size=2)
    assert len(loader.dataset) == 5
    for xb, yb in loader:
        assert xb.shape[1:] == (3,) and len(xb) == len(yb)


@pytest.mark.parametrize("args, kwargs", [
    ((), {}),
    ((torch.zeros(3), torch.zeros(4)), {}),
    ((torch.zeros(3),), dict(batch_size=0)),
    ((torch.zeros(3),), dict(batch_size=-2)),
    ((torch.zeros(3),), dict(batch_size=2.0)),
    ((torch.zeros(3),), dict(batch_size=True)),
])
def test_batchloader_validation(args, kwargs):
    with pytest.raises(ValueError):
        data.BatchLoader(*args, **kwargs)


# random_shift -----------------------------------------------------------------

def _shift(x, dy, dx, fill):
    """x (..., H, W) moved down by dy and right by dx, the border filled."""
    H, W = x.shape[-2:]
    out = torch.full_like(x, fill)
    src = x[..., max(0, -dy):H - max(0, dy), max(0, -dx):W - max(0, dx)]
    out[..., max(0, dy):max(0, dy) + src.shape[-2], max(0, dx):max(0, dx) + src.shape[-1]] = src
    return out


def test_random_shift_is_a_shifted_copy():
    torch.manual_seed(0)
    B, C, H, W, s = 300, 3, 6, 7, 2
    x = torch.rand(B, C, H, W) + 1
    x[:, :, 0, 0] = 0.0  # every image has the same minimum, its background
    out = data.random_shift(x, max_shift=s)
    assert out.shape == x.shape and out.dtype == x.dtype
    shifts = [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)]
    match = torch.stack([(out == _shift(x, dy, dx, 0.0)).flatten(1).all(1) for dy, dx in shifts])  # (25, B)
    assert torch.all(match.sum(0) == 1), "every image is exactly one shifted copy, all channels alike"
    assert torch.all(match.any(1)), "every shift in range occurs"
    assert not torch.equal(out, x)


def test_random_shift_reproducible_under_seed():
    x = torch.randn(4, 1, 8, 8)
    torch.manual_seed(5)
    a = data.random_shift(x)
    torch.manual_seed(5)
    assert torch.equal(a, data.random_shift(x))


def test_random_shift_zero_is_identity():
    x = torch.randn(3, 2, 5, 5)
    assert torch.equal(data.random_shift(x, max_shift=0), x)


@pytest.mark.parametrize("shape", [(5, 5), (1, 5, 5), (1, 1, 1, 5, 5)])
def test_random_shift_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match="B, C, H, W"):
        data.random_shift(torch.zeros(shape))


def test_random_shift_rejects_negative_shift():
    with pytest.raises(ValueError, match="max_shift"):
        data.random_shift(torch.zeros(1, 1, 4, 4), max_shift=-1)


def test_random_shift_fills_with_each_images_own_minimum():
    torch.manual_seed(0)
    x = torch.rand(16, 1, 6, 6)
    x[:8] += 5  # images 0..7 have their minimum above 5
    out = data.random_shift(x, max_shift=2)
    for b in range(16):
        assert out[b].min() >= x[b].min()


# fetch: the cache -------------------------------------------------------------

def test_fetch_returns_the_verified_cache_file(shared_data, capsys):
    assert data.fetch("mnist") == shared_data / "mnist.npz"
    assert data.fetch("mnist") == shared_data / "mnist.npz"
    assert "Downloading" not in capsys.readouterr().out


def test_fetch_unknown_name():
    with pytest.raises(ValueError, match="cifar"):
        data.fetch("cifar")


def test_data_dir(monkeypatch, isolated_env, tmp_path):
    monkeypatch.setenv("DLBOOK_DATA", str(tmp_path / "here"))
    assert data.data_dir() == tmp_path / "here"
    monkeypatch.setenv("DLBOOK_DATA", "~/somewhere")
    assert not str(data.data_dir()).startswith("~")
    monkeypatch.delenv("DLBOOK_DATA")
    assert data.data_dir() == tmp_path / "user-cache"  # the (redirected) user cache


@pytest.mark.parametrize("content", [b"not an npz", None])
def test_cached_file_with_wrong_content(monkeypatch, tmp_path, mirror_server, capsys, content):
    cache = tmp_path / "cache"
    cache.mkdir()
    bad = content if content is not None else (
        open(SHARED_DATA / "mnist.npz", "rb").read()[:-10])  # a truncated good copy
    (cache / "mnist.npz").write_bytes(bad)
    monkeypatch.setenv("DLBOOK_DATA", str(cache))
    with pytest.raises(DataError) as err:
        data.fetch("mnist", mirrors=(mirror_server("good"),))
    message = str(err.value)
    assert "fails its checksum" in message and str(cache / "mnist.npz") in message
    assert data.SOURCES["mnist"].sha256 in message and "Delete it" in message
    assert (cache / "mnist.npz").read_bytes() == bad  # left for the reader to inspect
    assert "Downloading" not in capsys.readouterr().out  # no silent re-download
    with pytest.raises(DataError):
        data.load_images("mnist", limit=5)


def _write_stored_npz(path, arrays):
    """The same arrays, written uncompressed: other bytes, as another zlib would give."""
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for key, array in arrays.items():
            with z.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def test_cached_npz_with_other_bytes_but_the_same_arrays_is_accepted(monkeypatch, tmp_path, mnist_arrays):
    cache = tmp_path / "cache"
    cache.mkdir()
    _write_stored_npz(cache / "mnist.npz", mnist_arrays)
    assert data.sha256_file(cache / "mnist.npz") != data.SOURCES["mnist"].sha256
    monkeypatch.setenv("DLBOOK_DATA", str(cache))
    assert data.fetch("mnist") == cache / "mnist.npz"
    assert data.array_digest(mnist_arrays) == data.SOURCES["mnist"].content_sha256


def test_cached_npz_with_one_changed_pixel_is_refused(monkeypatch, tmp_path, mnist_arrays):
    cache = tmp_path / "cache"
    cache.mkdir()
    changed = {k: v.copy() for k, v in mnist_arrays.items()}
    changed["x_test"][0, 0, 0] ^= 1
    _write_stored_npz(cache / "mnist.npz", changed)
    monkeypatch.setenv("DLBOOK_DATA", str(cache))
    with pytest.raises(DataError, match="fails its checksum"):
        data.fetch("mnist")


# fetch: downloads from the local mirrors --------------------------------------

@pytest.fixture
def cache(monkeypatch, tmp_path):
    folder = tmp_path / "cache"
    monkeypatch.setenv("DLBOOK_DATA", str(folder))
    return folder


def _downloads(out: str):
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("Downloading ")]


def test_fetch_downloads_verifies_and_falls_over(cache, mirror_server, mnist_arrays, capsys):
    """404, then a truncated .gz, then a corrupted file, then a good mirror."""
    mirrors = tuple(mirror_server(k) for k in ("missing", "truncated", "corrupt", "good"))
    path = data.fetch("mnist", mirrors=mirrors)
    assert path == cache / "mnist.npz"
    assert data.sha256_file(path) == data.SOURCES["mnist"].sha256
    assert sorted(p.name for p in cache.iterdir()) == ["mnist.npz"]  # no temp files
    urls = _downloads(capsys.readouterr().out)
    first = data.IDX_FILES["x_train"] + ".gz"
    assert urls[:3] == [m + first for m in mirrors[:3]]  # each bad mirror fails on its first file
    assert urls[3:] == [mirrors[3] + s + ".gz" for s in data.IDX_FILES.values()]
    # loadable, and the same data
    arrays = data.load_arrays("mnist")
    for key in ("y_train", "x_test", "y_test"):
        assert np.array_equal(arrays[key], mnist_arrays[key])
    x, _ = data.load_images("mnist", "test", limit=10, normalize=False)
    assert x.shape == (10, 1, 28, 28)
    # a second call uses the cache
    data.fetch("mnist", mirrors=mirrors)
    assert _downloads(capsys.readouterr().out) == []


def _fetch_error(name, mirrors) -> str:
    with pytest.raises(DataError) as err:
        data.fetch(name, mirrors=mirrors)
    return str(err.value)


def test_missing_file_404(cache, mirror_server):
    url = mirror_server("missing") + data.IDX_FILES["x_train"] + ".gz"
    message = _fetch_error("mnist", (mirror_server("missing"),))
    assert "404" in message and url in message


def test_truncated_gzip(cache, mirror_server):
    url = mirror_server("truncated") + data.IDX_FILES["x_train"] + ".gz"
    message = _fetch_error("mnist", (mirror_server("truncated"),))
    assert url in message and "not a complete gzip file" in message


def test_corrupted_bytes_fail_the_checksum(cache, mirror_server):
    url = mirror_server("corrupt") + data.IDX_FILES["x_train"] + ".gz"
    message = _fetch_error("mnist", (mirror_server("corrupt"),))
    assert url in message and "SHA-256" in message
    assert PUBLISHED["mnist"]["x_train"] in message  # the expected checksum


def test_all_mirrors_bad_is_one_clear_error(cache, mirror_server, monkeypatch, tmp_path):
    scratch = tmp_path / "system-tmp"  # where the downloads are unpacked
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    mirrors = tuple(mirror_server(k) for k in ("missing", "truncated", "corrupt"))
    message = _fetch_error("mnist", mirrors)
    assert list(scratch.iterdir()) == []  # the downloads were cleaned up too
    assert "mnist.npz" in message and str(cache) in message
    assert "Sources tried" in message
    for m in mirrors:
        assert m in message
    assert "404" in message and "gzip" in message and "SHA-256" in message
    assert "DLBOOK_DATA" in message and data.SOURCES["mnist"].sha256 in message
    assert not cache.exists() or list(cache.iterdir()) == []


def test_offline_with_no_cache_tries_every_official_source(cache, monkeypatch):
    tried = []

    def offline(url, folder):
        tried.append(url)
        raise ConnectionError("Network is unreachable")

    monkeypatch.setattr(data, "_download", offline)
    message = _fetch_error("fashion_mnist", None)
    official = data.SOURCES["fashion_mnist"].mirrors
    assert tried == [m + "train-images-idx3-ubyte.gz" for m in official]
    assert all(m.startswith("http") for m in official)
    for m in official:
        assert m in message
    assert "ConnectionError: Network is unreachable" in message
    assert "fashion_mnist.npz" in message and "DLBOOK_DATA" in message


def test_no_sources_at_all(cache):
    message = _fetch_error("mnist", ())
    assert "no sources given" in message and "DLBOOK_DATA" in message


def test_failed_write_leaves_no_temp_file(cache, mirror_server, monkeypatch):
    def broken_write_npz(f, arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(data, "write_npz", broken_write_npz)
    message = _fetch_error("mnist", (mirror_server("good"),))
    assert "disk full" in message
    assert list(cache.iterdir()) == []


def test_tinyshakespeare_download(cache, mirror_server, capsys):
    path = data.fetch("tinyshakespeare", mirrors=(mirror_server("missing"), mirror_server("good")))
    assert path == cache / "tinyshakespeare.txt"
    assert data.sha256_file(path) == data.SOURCES["tinyshakespeare"].sha256
    assert _downloads(capsys.readouterr().out) == [mirror_server(k) + "input.txt" for k in ("missing", "good")]
    text = data.load_text()
    assert len(text) == TINYSHAKESPEARE_CHARS and text.startswith("First Citizen")
    assert sorted(p.name for p in cache.iterdir()) == ["tinyshakespeare.txt"]


@pytest.mark.parametrize("kind", ["corrupt", "truncated"])
def test_tinyshakespeare_bad_copy(cache, mirror_server, kind):
    message = _fetch_error("tinyshakespeare", (mirror_server(kind),))
    assert mirror_server(kind) + "input.txt" in message and "SHA-256" in message
    assert "tinyshakespeare.txt" in message and "DLBOOK_DATA" in message
    assert not cache.exists() or list(cache.iterdir()) == []


def test_load_text(shared_data):
    text = data.load_text("tinyshakespeare")
    assert len(text) == TINYSHAKESPEARE_CHARS
    with pytest.raises(ValueError, match="tinyshakespeare"):
        data.load_text("wikitext")
