"""dlbook.data.cache, .sources and .formats: the verified cache and its file formats.

Facts come from ../shared/data/README.md. Downloads are tested against a
local HTTP server (conftest.mirror_server) that serves the official gzip'ed
IDX files rebuilt from mnist.npz; nothing leaves 127.0.0.1.
"""

import dataclasses
import functools
import hashlib
import http.server
import io
import os
import shutil
import tempfile
import threading
import time
import zipfile

import numpy as np
import pytest

import dlbook.data.cache
from conftest import SHARED_DATA, _QuietHandler
from dlbook import data
from dlbook.data import DataError
from dlbook.data.__main__ import main as data_command

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
TINYSHAKESPEARE_CHARS = 1_115_394


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _sums(path) -> dict[str, str]:
    return dict(reversed(line.split()) for line in path.read_text().splitlines())


# Sources ----------------------------------------------------------------------

def test_sources_agree_with_the_shared_sha256sums(shared_data):
    sums = _sums(shared_data / "SHA256SUMS")
    assert sorted(s.filename for s in data.SOURCES.values()) == sorted(sums)
    for name, source in data.SOURCES.items():
        assert sums[source.filename] == source.sha256, name
        assert data.sha256_file(shared_data / source.filename) == source.sha256


def test_image_sources_list_the_gzipped_idx_files_with_the_published_checksums():
    for name, published in PUBLISHED.items():
        files = data.SOURCES[name].files
        assert [f.name for f in files] == [data.IDX_FILES[k] + ".gz" for k in published]
        assert [f.sha256 for f in files] == list(published.values())
        assert all(f.gunzip for f in files)


def test_planetoid_sources_list_the_eight_official_files(shared_data):
    sums = _sums(shared_data / "planetoid" / "SHA256SUMS")
    for name in ("cora", "citeseer"):
        files = data.SOURCES[name].files
        assert {f.name: f.sha256 for f in files} == {k: v for k, v in sums.items() if k.startswith(f"ind.{name}.")}
        assert len(files) == 8 and not any(f.gunzip for f in files)
        assert all(m.startswith("https://") for m in data.SOURCES[name].mirrors)


def test_the_text_source_is_one_file_cached_as_it_is():
    (remote,) = data.SOURCES["tinyshakespeare"].files
    assert remote.name == "input.txt" and remote.sha256 == data.SOURCES["tinyshakespeare"].sha256


def test_content_digests_match_the_shared_npz_files(shared_data):
    for name, source in data.SOURCES.items():
        if source.filename.endswith(".npz"):
            with np.load(shared_data / source.filename) as npz:
                assert data.array_digest({k: npz[k] for k in npz.files}) == source.content_sha256, name


# File formats -----------------------------------------------------------------

def test_rebuilt_idx_files_have_the_published_checksums(mnist_arrays):
    for key, expected in PUBLISHED["mnist"].items():
        assert sha256(data.write_idx(mnist_arrays[key])) == expected, key


@pytest.mark.parametrize("name", ["mnist", "cora"])
def test_write_npz_reproduces_the_cache_file_byte_for_byte(shared_data, name):
    with np.load(shared_data / f"{name}.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    buf = io.BytesIO()
    data.write_npz(buf, arrays)
    assert sha256(buf.getvalue()) == data.SOURCES[name].sha256


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


def test_array_digest_sees_names_dtypes_shapes_and_values():
    a = {"x": np.arange(6, dtype=np.uint8).reshape(2, 3), "y": np.zeros(2, np.int64)}
    base = data.array_digest(a)
    assert data.array_digest(dict(reversed(a.items()))) == base  # the order of the keys does not matter
    assert data.array_digest({"x": a["x"], "z": a["y"]}) != base
    assert data.array_digest({"x": a["x"].astype(np.int16), "y": a["y"]}) != base
    assert data.array_digest({"x": a["x"].reshape(3, 2), "y": a["y"]}) != base
    assert data.array_digest({"x": a["x"] + 1, "y": a["y"]}) != base
    assert data.array_digest({"x": a["x"]}) != base


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


# fetch: a file in the cache ---------------------------------------------------

def test_fetch_returns_the_verified_cache_file(shared_data, capsys):
    assert data.fetch("mnist") == shared_data / "mnist.npz"
    assert data.fetch("mnist") == shared_data / "mnist.npz"
    assert "Downloading" not in capsys.readouterr().out


@pytest.mark.parametrize("name", ["cifar", "MNIST", None, 3])
def test_fetch_unknown_name(name):
    with pytest.raises(ValueError, match="mnist.*tinyshakespeare"):
        data.fetch(name)


@pytest.mark.parametrize("mirrors", ["http://127.0.0.1:1/", [b"http://x/"], 5])
def test_fetch_rejects_malformed_mirrors(mirrors):
    with pytest.raises(ValueError, match="mirrors"):
        data.fetch("mnist", mirrors=mirrors)


def test_the_suite_guards_the_function_that_downloads():
    """conftest patches the name the download code calls; a stale name would let a test go online."""
    assert dlbook.data.cache._download.__name__ == "guarded_download"


def test_data_dir(monkeypatch, isolated_env, tmp_path):
    monkeypatch.setenv("DLBOOK_DATA", str(tmp_path / "here"))
    assert data.data_dir() == tmp_path / "here"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DLBOOK_DATA", "~/data-of-test-data-dir")  # a value no other test uses: paths
    assert data.data_dir() == tmp_path / "home" / "data-of-test-data-dir"  # keeps a value's first meaning
    monkeypatch.delenv("DLBOOK_DATA")
    assert data.data_dir() == tmp_path / "user-cache"  # the (redirected) user cache


@pytest.fixture
def cache(monkeypatch, tmp_path):
    folder = tmp_path / "cache"
    monkeypatch.setenv("DLBOOK_DATA", str(folder))
    return folder


@pytest.mark.parametrize("content", [b"not an npz", None])
def test_cached_file_with_wrong_content(cache, mirror_server, capsys, content):
    cache.mkdir()
    bad = content if content is not None else (SHARED_DATA / "mnist.npz").read_bytes()[:-10]  # truncated
    (cache / "mnist.npz").write_bytes(bad)
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
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for key, array in arrays.items():
            with z.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


@pytest.mark.parametrize("name", ["mnist", "cora"])
def test_cached_npz_with_other_bytes_but_the_same_arrays_is_accepted(cache, name):
    cache.mkdir()
    with np.load(SHARED_DATA / f"{name}.npz") as npz:
        _write_stored_npz(cache / f"{name}.npz", {k: npz[k] for k in npz.files})
    assert data.sha256_file(cache / f"{name}.npz") != data.SOURCES[name].sha256
    assert data.fetch(name) == cache / f"{name}.npz"


@pytest.mark.parametrize("change", ["pixel", "extra array", "missing array"])
def test_cached_npz_with_other_arrays_is_refused(cache, mnist_arrays, change):
    cache.mkdir()
    changed = {k: v.copy() for k, v in mnist_arrays.items()}
    if change == "pixel":
        changed["x_test"][0, 0, 0] ^= 1
    elif change == "extra array":
        changed["extra"] = np.zeros(1)
    else:
        del changed["y_test"]
    _write_stored_npz(cache / "mnist.npz", changed)
    with pytest.raises(DataError, match="fails its checksum"):
        data.fetch("mnist")


# fetch: downloads from the local mirrors --------------------------------------

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
    arrays = data.load_arrays("mnist")
    for key in data.IDX_FILES:
        assert np.array_equal(arrays[key], mnist_arrays[key])
    data.fetch("mnist", mirrors=mirrors)  # a second call uses the cache
    assert _downloads(capsys.readouterr().out) == []


def test_a_mirror_without_its_trailing_slash_works(cache, mirror_server, capsys):
    data.fetch("tinyshakespeare", mirrors=[mirror_server("good").rstrip("/")])
    assert _downloads(capsys.readouterr().out) == [mirror_server("good") + "input.txt"]


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
    scratch = tmp_path / "system-tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    mirrors = tuple(mirror_server(k) for k in ("missing", "truncated", "corrupt"))
    message = _fetch_error("mnist", mirrors)
    assert list(scratch.iterdir()) == []  # nothing went to the system's temporary folder
    assert "mnist.npz" in message and str(cache) in message
    assert "Sources tried" in message
    for m in mirrors:
        assert m in message
    assert "404" in message and "gzip" in message and "SHA-256" in message
    assert "DLBOOK_DATA" in message and data.SOURCES["mnist"].sha256 in message
    assert list(cache.iterdir()) == []  # the downloads were cleaned up


def test_offline_with_no_cache_tries_every_official_source(cache, monkeypatch):
    tried = []

    def offline(url, folder):
        tried.append(url)
        raise ConnectionError("Network is unreachable")

    monkeypatch.setattr(dlbook.data.cache, "_download", offline)
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


def test_failed_conversion_leaves_nothing(cache, mirror_server, monkeypatch):
    def broken_write_npz(f, arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(dlbook.data.sources, "write_npz", broken_write_npz)
    message = _fetch_error("mnist", (mirror_server("good"),))
    assert "disk full" in message
    assert list(cache.iterdir()) == []


def test_a_converter_that_writes_the_wrong_bytes_is_caught_before_the_cache(cache, mirror_server, monkeypatch):
    source = data.SOURCES["tinyshakespeare"]
    wrong = dataclasses.replace(source, convert=lambda files, f: f.write(b"not the text"))
    monkeypatch.setitem(data.SOURCES, "tinyshakespeare", wrong)
    message = _fetch_error("tinyshakespeare", (mirror_server("good"),))
    assert "converted tinyshakespeare.txt" in message and source.sha256 in message
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
    assert list(cache.iterdir()) == []


# Faults the cache survives ----------------------------------------------------

def _no_download(monkeypatch) -> list:
    tried = []
    monkeypatch.setattr(dlbook.data.cache, "_download", lambda url, folder: tried.append(url))
    return tried


def test_a_data_folder_under_a_file_is_refused_before_any_download(monkeypatch, tmp_path):
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setenv("DLBOOK_DATA", str(tmp_path / "a-file" / "data"))
    tried = _no_download(monkeypatch)
    message = _fetch_error("mnist", None)
    assert tried == []
    assert str(tmp_path / "a-file" / "data") in message and "mnist.npz" in message
    assert "cannot be created" in message and "DLBOOK_DATA" in message


def test_a_read_only_data_folder_is_refused_before_any_download(cache, monkeypatch):
    cache.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if str(path) == str(cache)
                        else real_access(path, mode, **kw))
    tried = _no_download(monkeypatch)
    message = _fetch_error("cora", None)
    assert tried == []
    assert str(cache) in message and "may not write" in message and "DLBOOK_DATA" in message
    assert list(cache.iterdir()) == []


def test_a_read_only_folder_still_serves_the_files_it_has(shared_data):
    assert data.fetch("tinyshakespeare") == shared_data / "tinyshakespeare.txt"  # ../shared/data is read-only


def test_a_relative_data_folder_keeps_its_meaning_after_chdir(monkeypatch, tmp_path, mirror_server, capsys):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    monkeypatch.chdir(tmp_path / "a")
    monkeypatch.setenv("DLBOOK_DATA", "relative-cache-of-test-data-cache")
    path = data.fetch("tinyshakespeare", mirrors=(mirror_server("good"),))
    assert path == tmp_path / "a" / "relative-cache-of-test-data-cache" / "tinyshakespeare.txt"
    assert len(_downloads(capsys.readouterr().out)) == 1
    monkeypatch.chdir(tmp_path / "b")
    assert len(data.load_text()) == TINYSHAKESPEARE_CHARS  # the official sources are blocked: from the cache
    assert data.fetch("tinyshakespeare") == path
    assert _downloads(capsys.readouterr().out) == []
    assert not (tmp_path / "b" / "relative-cache-of-test-data-cache").exists()


def test_a_folder_where_the_cache_file_should_be(cache):
    (cache / "mnist.npz").mkdir(parents=True)
    message = _fetch_error("mnist", None)
    assert str(cache / "mnist.npz") in message and "is a folder" in message
    assert "Move or delete that folder" in message and "DLBOOK_DATA" in message


def test_downloads_go_to_a_recognizable_scratch_folder_inside_the_cache(cache, monkeypatch):
    folders = []

    def killed(url, folder):
        folders.append(folder)
        assert folder.is_dir()
        raise ConnectionError("connection reset")

    monkeypatch.setattr(dlbook.data.cache, "_download", killed)
    _fetch_error("mnist", ("http://127.0.0.1:1/",))
    (folder,) = folders
    assert folder.parent == cache and folder.name.startswith(".mnist.npz.download-")
    assert not folder.exists()  # an ordinary failure cleans up at once; only a killed process leaves it


def _age(path, seconds):
    old = time.time() - seconds
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(p, (old, old))


def test_stale_leftovers_of_killed_downloads_are_removed_by_the_next_fetch(cache, mirror_server):
    cache.mkdir()
    stale = data.STALE_AFTER + 60
    killed = cache / ".mnist.npz.download-k1ll3d"  # a scratch folder a killed download left
    (killed / "sub").mkdir(parents=True)
    (killed / "sub" / "train-images-idx3-ubyte").write_bytes(b"\0" * 1000)
    half_written = cache / ".cora.npz.a8f3k2.tmp"  # dlbook.io.atomic_write's temporary file
    half_written.write_bytes(b"PK")
    running = cache / ".fashion_mnist.npz.download-running"  # another process, still downloading
    running.mkdir()
    (running / "part").write_bytes(b"x")
    not_ours = [cache / ".other.npz.download-x", cache / "notes.tmp", cache / ".mnist.npz.backup"]
    not_ours[0].mkdir()
    for path in not_ours[1:]:
        path.write_text("keep me")
    for path in [killed, half_written, *not_ours]:
        _age(path, stale)
    _age(running, stale)
    os.utime(running / "part")  # written to a moment ago

    data.fetch("tinyshakespeare", mirrors=(mirror_server("good"),))
    left = sorted(p.name for p in cache.iterdir())
    assert left == sorted([running.name, "tinyshakespeare.txt", *(p.name for p in not_ours)])


def test_remove_stale_downloads_reports_what_it_removed(tmp_path):
    old, young = tmp_path / ".mnist.npz.x1.tmp", tmp_path / ".mnist.npz.x2.tmp"
    old.write_bytes(b"1")
    young.write_bytes(b"2")
    _age(old, 120)
    _age(young, 30)
    assert data.remove_stale_downloads(tmp_path, max_age=60) == [old]
    assert not old.exists() and young.exists()


def test_a_cache_hit_also_removes_stale_leftovers(cache, mirror_server):
    data.fetch("tinyshakespeare", mirrors=(mirror_server("good"),))  # every data set the reader needs is cached
    leftover = cache / ".mnist.npz.download-old"  # from a download killed long ago
    leftover.mkdir()
    _age(leftover, data.STALE_AFTER + 60)
    data.fetch("tinyshakespeare")
    assert sorted(p.name for p in cache.iterdir()) == ["tinyshakespeare.txt"]


# DLBOOK_MIRRORS: mirrors of every data set, tried before the official sources ------------------

def _mirror_tree(root, names=("tinyshakespeare",)):
    """A mirror laid out as DLBOOK_MIRRORS expects: root/<data set>/<official file names>."""
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
        if name == "tinyshakespeare":
            shutil.copyfile(SHARED_DATA / "tinyshakespeare.txt", root / name / "input.txt")
        else:
            for remote in data.SOURCES[name].files:
                shutil.copyfile(SHARED_DATA / "planetoid" / remote.name, root / name / remote.name)
    return root


@pytest.fixture
def http_mirror(tmp_path):
    """A local HTTP server of tmp_path/served; yields its base URL."""
    root = _mirror_tree(tmp_path / "served" / "mirror")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(tmp_path / "served")))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("value, bases", [
    (None, ()), ("", ()), ("  , ", ()),
    ("https://mirror.example/data", ("https://mirror.example/data/mnist/",)),
    ("https://a.example/d/, http://b.example:8080/x\n file:///srv/mirror",
     ("https://a.example/d/mnist/", "http://b.example:8080/x/mnist/", "file:///srv/mirror/mnist/")),
    ("file://localhost/srv/m", ("file://localhost/srv/m/mnist/",)),
])
def test_env_mirrors_are_base_urls_with_a_folder_per_data_set(monkeypatch, value, bases):
    if value is not None:
        monkeypatch.setenv("DLBOOK_MIRRORS", value)
    assert dlbook.data.cache.env_mirrors("mnist") == bases


@pytest.mark.parametrize("bad", ["/srv/mirror", "mirror.example/data", "ftp://mirror.example/data",
                                 "https://", "file://server/share", "file:relative/path",
                                 "https://mirror.example/?token=1", "C:\\mirror"])
def test_a_bad_mirror_setting_is_one_clear_error_before_any_download(cache, monkeypatch, bad):
    monkeypatch.setenv("DLBOOK_MIRRORS", f"https://good.example/data {bad}")
    tried = _no_download(monkeypatch)
    with pytest.raises(ValueError) as err:
        data.fetch("tinyshakespeare")
    message = str(err.value)
    assert "DLBOOK_MIRRORS" in message and repr(bad) in message
    assert "http://" in message and "https://" in message and "file:///" in message
    assert tried == []


def test_env_mirrors_come_before_the_official_sources(cache, monkeypatch):
    monkeypatch.setenv("DLBOOK_MIRRORS", "http://127.0.0.1:1/m1,http://127.0.0.1:1/m2/")
    tried = []

    def offline(url, folder):
        tried.append(url)
        raise ConnectionError("Network is unreachable")

    monkeypatch.setattr(dlbook.data.cache, "_download", offline)
    message = _fetch_error("fashion_mnist", None)
    official = data.SOURCES["fashion_mnist"].mirrors
    first = "train-images-idx3-ubyte.gz"
    assert tried == [f"http://127.0.0.1:1/{m}/fashion_mnist/{first}" for m in ("m1", "m2")] + [
        m + first for m in official]
    assert "http://127.0.0.1:1/m1/fashion_mnist/" in message and "DLBOOK_MIRRORS" in message


def test_an_http_mirror_from_the_variable_serves_the_download(cache, http_mirror, monkeypatch, capsys):
    base, _ = http_mirror
    monkeypatch.setenv("DLBOOK_MIRRORS", f"{base}/nothing-here {base}/mirror")
    assert data.fetch("tinyshakespeare") == cache / "tinyshakespeare.txt"
    assert _downloads(capsys.readouterr().out) == [f"{base}/nothing-here/tinyshakespeare/input.txt",
                                                   f"{base}/mirror/tinyshakespeare/input.txt"]
    assert data.sha256_file(cache / "tinyshakespeare.txt") == data.SOURCES["tinyshakespeare"].sha256


def test_a_file_mirror_on_a_local_disk(cache, shared_data, monkeypatch, tmp_path, capsys):
    root = _mirror_tree(tmp_path / "disk mirror", names=("cora", "tinyshakespeare"))
    monkeypatch.setenv("DLBOOK_DATA", str(cache))  # not the shared copies (shared_data only skips): make them
    monkeypatch.setenv("DLBOOK_MIRRORS", (tmp_path / "empty").as_uri() + "," + root.as_uri())
    assert data.fetch("cora") == cache / "cora.npz"
    assert data.sha256_file(cache / "cora.npz") == data.SOURCES["cora"].sha256
    out = capsys.readouterr().out
    copied = [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("Copying ")]
    assert copied[0] == (tmp_path / "empty").as_uri() + "/cora/ind.cora.x"  # missing: on to the next
    assert copied[1:] == [root.as_uri() + "/cora/" + f.name for f in data.SOURCES["cora"].files]
    assert "Downloading" not in out  # no network
    (root / "tinyshakespeare" / "input.txt").write_bytes(b"tampered")
    tried = _no_download(monkeypatch)  # the official sources come after the mirrors
    message = _fetch_error("tinyshakespeare", None)
    assert tried == [m + "input.txt" for m in data.SOURCES["tinyshakespeare"].mirrors]
    assert "SHA-256" in message and root.as_uri() + "/tinyshakespeare/" in message
    assert not (cache / "tinyshakespeare.txt").exists()


def test_mirrors_given_to_fetch_replace_the_variable(cache, http_mirror, monkeypatch, capsys):
    base, _ = http_mirror
    monkeypatch.setenv("DLBOOK_MIRRORS", "http://127.0.0.1:1/never-tried")
    data.fetch("tinyshakespeare", mirrors=[f"{base}/mirror/tinyshakespeare"])
    assert _downloads(capsys.readouterr().out) == [f"{base}/mirror/tinyshakespeare/input.txt"]


def test_the_mirror_variable_is_documented():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for page in ("README.md", os.path.join("book", "how_to_use.md")):
        with open(os.path.join(root, page), encoding="utf-8") as f:
            text = f.read()
        assert "| `DLBOOK_MIRRORS` |" in text, f"{page}: DLBOOK_MIRRORS is not in the variables table"
    assert 'fetch("mnist", mirrors=[' in text and "DLBOOK_MIRRORS=" in text  # the how-to page shows both


# fetch_files: a data set's official files themselves -------------------------------------------

def test_fetch_files_keeps_what_a_mirror_delivered_and_takes_the_rest_from_the_next(tmp_path, mirror_server, capsys):
    partial = tmp_path / "partial mirror"
    partial.mkdir()
    cora = data.SOURCES["cora"].files
    for remote in cora[:3]:
        shutil.copyfile(SHARED_DATA / "planetoid" / remote.name, partial / remote.name)
    folder = tmp_path / "kept"
    paths = data.fetch_files("cora", folder, mirrors=(partial.as_uri(), mirror_server("good")))
    assert paths == [folder / f.name for f in cora]
    for remote in cora:
        assert (folder / remote.name).read_bytes() == (SHARED_DATA / "planetoid" / remote.name).read_bytes()
    out = capsys.readouterr().out
    copied = [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("Copying ")]
    assert copied == [partial.as_uri() + "/" + f.name for f in cora[:4]]  # the 4th is missing there
    assert _downloads(out) == [mirror_server("good") + f.name for f in cora[3:]]  # only the rest
    assert sorted(p.name for p in folder.iterdir()) == sorted(f.name for f in cora)  # no scratch folder left


def test_fetch_files_refuses_a_bad_copy_without_downloading(tmp_path, monkeypatch):
    folder = tmp_path / "kept"
    folder.mkdir()
    (folder / "ind.citeseer.y").write_bytes(b"tampered")
    tried = _no_download(monkeypatch)
    with pytest.raises(DataError) as err:
        data.fetch_files("citeseer", folder)
    message = str(err.value)
    assert str(folder / "ind.citeseer.y") in message and "fails its checksum" in message and "Delete it" in message
    assert data.SOURCES["citeseer"].files[1].sha256 in message  # the published one of ind.citeseer.y
    assert tried == [] and (folder / "ind.citeseer.y").read_bytes() == b"tampered"


# fetch_all and `python -m dlbook.data`: the whole data folder ----------------------------------

def _files_in(folder):
    """Every file under ``folder``, relative and /-separated, with its size and modification time."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_folder_holds_the_five_data_sets_the_planetoid_files_and_two_checksum_files():
    files = data.folder_files()
    assert len(files) == len(set(files)) == 23
    assert files[:6] == ["citeseer.npz", "cora.npz", "fashion_mnist.npz", "mnist.npz", "tinyshakespeare.txt",
                         "SHA256SUMS"]
    assert files[-1] == "planetoid/SHA256SUMS"
    assert files[6:-1] == sorted(f"planetoid/{f.name}" for n in ("cora", "citeseer") for f in data.SOURCES[n].files)


def test_fetch_all_on_a_complete_folder_only_verifies(shared_data, monkeypatch, capsys):
    """What CI does before the tests: ../shared/data is complete and read-only."""
    before = _files_in(shared_data)
    assert set(data.folder_files()) <= set(before), "the shared data folder is not complete"
    tried = _no_download(monkeypatch)
    assert data_command(["fetch", "--all"]) == 0
    assert tried == [] and _files_in(shared_data) == before
    out = capsys.readouterr().out
    for source in data.SOURCES.values():
        assert f"{source.filename}: present, SHA-256 verified" in out
    assert "planetoid/ind.cora.*: 8 official files, present, SHA-256 verified" in out
    assert "\nSHA256SUMS: present, matches the files" in out
    assert "\nplanetoid/SHA256SUMS: present, matches the files" in out
    assert f"{shared_data} is complete: 23 files" in out


@pytest.fixture
def planetoid_mirror(tmp_path):
    """A DLBOOK_MIRRORS base on a local HTTP server, with Cora, CiteSeer and Tiny Shakespeare."""
    root = _mirror_tree(tmp_path / "served" / "mirror", names=("cora", "citeseer", "tinyshakespeare"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_fetch_all_fills_the_folder_with_progress_bars_and_then_works_offline(cache, planetoid_mirror, monkeypatch,
                                                                             capsys):
    cache.mkdir()
    for name in ("mnist.npz", "fashion_mnist.npz"):  # already there: verified, not downloaded
        (cache / name).symlink_to(SHARED_DATA / name)
    monkeypatch.setenv("DLBOOK_MIRRORS", planetoid_mirror)
    done = data.fetch_all()
    assert done == {"mnist.npz": "verified", "fashion_mnist.npz": "verified",
                    "planetoid/ind.cora.*": "downloaded", "cora.npz": "converted",
                    "planetoid/ind.citeseer.*": "downloaded", "citeseer.npz": "converted",
                    "tinyshakespeare.txt": "downloaded", "SHA256SUMS": "written", "planetoid/SHA256SUMS": "written"}
    out, err = capsys.readouterr()
    raw = [(n, f.name) for n in ("cora", "citeseer") for f in data.SOURCES[n].files]
    assert _downloads(out) == [f"{planetoid_mirror}/{n}/{f}" for n, f in raw] + [
        f"{planetoid_mirror}/tinyshakespeare/input.txt"]  # each file once: the .npz are made from the kept files
    bars = [part.rsplit("\r", 1)[-1] for part in err.split("\n") if "%|" in part]  # the final state of each
    assert len(bars) == 17 and all(bar.lstrip().startswith("100%|") for bar in bars), err
    assert "1.12M/1.12M" in bars[-1]  # Tiny Shakespeare's 1,115,394 bytes
    assert sorted(_files_in(cache)) == sorted(data.folder_files())  # nothing else, no leftovers
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == ["planetoid"]
    for name in data.folder_files():  # the same folder as ../shared/data, byte for byte
        assert (cache / name).read_bytes() == (SHARED_DATA / name).read_bytes(), name

    tried = _no_download(monkeypatch)  # offline now
    assert set(data.fetch_all().values()) == {"verified"}
    assert tried == []


def test_fetch_all_offline_names_every_missing_file_and_writes_nothing(cache, monkeypatch, capsys):
    tried = []

    def offline(url, folder):
        tried.append(url)
        raise ConnectionError("Network is unreachable")

    monkeypatch.setattr(dlbook.data.cache, "_download", offline)
    assert data_command(["fetch", "--all"]) == 1
    out, err = capsys.readouterr()
    assert err.startswith(f"error: The data folder {cache} is not complete: 7 item(s) missing or bad: mnist.npz, "
                          "fashion_mnist.npz, planetoid/ind.cora.*, cora.npz, planetoid/ind.citeseer.*, citeseer.npz, "
                          "tinyshakespeare.txt")
    assert "DLBOOK_MIRRORS" in err and "make data" in err and "connect to the internet" in err
    assert out.count("FAILED") == 7
    assert len(tried) == sum(len(s.mirrors) for s in data.SOURCES.values())  # each official source once
    assert out.count("ConnectionError: Network is unreachable") == len(tried)
    official = {m for s in data.SOURCES.values() for m in s.mirrors}
    assert tried and all(url.rsplit("/", 1)[0] + "/" in official for url in tried)  # only the official sources
    assert _files_in(cache) == {}  # nothing written, no SHA256SUMS for an incomplete folder


def _complete_copy(folder):
    """A complete data folder of links to the shared files."""
    for name in data.folder_files():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).symlink_to(SHARED_DATA / name)


@pytest.mark.parametrize("bad, said", [("planetoid/ind.cora.y", "fails its checksum"),
                                       ("tinyshakespeare.txt", "fails its checksum"),
                                       ("SHA256SUMS", "does not match the files beside it")])
def test_fetch_all_names_a_bad_file_and_leaves_it_alone(cache, monkeypatch, capsys, bad, said):
    _complete_copy(cache)
    (cache / bad).unlink()
    tampered = (SHARED_DATA / bad).read_bytes() + b"x"
    (cache / bad).write_bytes(tampered)
    tried = _no_download(monkeypatch)
    assert data_command(["fetch", "--all"]) == 1
    out, err = capsys.readouterr()
    assert said in out and str(cache / bad) in out
    item = "planetoid/ind.cora.*" if bad.startswith("planetoid/ind.") else bad
    assert f"missing or bad: {item}" in err and "delete it first" in err
    assert tried == [] and (cache / bad).read_bytes() == tampered


@pytest.mark.parametrize("argv, said", [([], "COMMAND"), (["fetch"], "give --all or data set names"),
                                        (["fetch", "--all", "mnist"], "give --all or data set names"),
                                        (["fetch", "cifar"], "unknown data set 'cifar'")])
def test_the_command_refuses_a_bad_command_line(argv, said, capsys):
    with pytest.raises(SystemExit) as exit_:
        data_command(argv)
    assert exit_.value.code == 2 and said in capsys.readouterr().err


def test_the_command_fetches_named_data_sets(shared_data, monkeypatch, capsys):
    tried = _no_download(monkeypatch)
    assert data_command(["fetch", "tinyshakespeare", "cora"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{shared_data / 'tinyshakespeare.txt'}: SHA-256 verified",
                                                    f"{shared_data / 'cora.npz'}: SHA-256 verified"]
    assert tried == []


def test_a_bad_mirror_setting_stops_the_command_before_anything(cache, monkeypatch, capsys):
    monkeypatch.setenv("DLBOOK_MIRRORS", "mirror.example/data")
    tried = _no_download(monkeypatch)
    assert data_command(["fetch", "--all"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "DLBOOK_MIRRORS" in err and "'mirror.example/data'" in err
    assert tried == [] and not cache.exists()


def test_the_readme_lists_every_file_of_the_data_folder():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
        section = f.read().split("\n## Data\n", 1)[1].split("\n## ", 1)[0]
    parts = ",".join(p for p in dlbook.data.planetoid.PLANETOID_PARTS)
    listed = [f"`{name}`" for name in data.folder_files() if not name.startswith("planetoid/ind.")]
    listed.append(f"`planetoid/ind.{{cora,citeseer}}.{{{parts}}}`")
    assert [name for name in listed if name not in section] == []
    assert f"holds {len(data.folder_files())} files" in section and "make data" in section
