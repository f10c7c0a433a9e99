"""dlbook.io: atomic writes and safe loading."""

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from dlbook import io as dio


def _leftovers(folder: Path, name: str):
    return [p for p in folder.iterdir() if p.name != name]


def test_atomic_write_creates_parents_and_writes(tmp_path):
    path = tmp_path / "a" / "b" / "file.bin"
    assert dio.atomic_write(path, lambda f: f.write(b"hello")) == path
    assert path.read_bytes() == b"hello"
    assert _leftovers(path.parent, "file.bin") == []


def test_atomic_write_replaces(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")
    dio.atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert _leftovers(tmp_path, "file.bin") == []


class Boom(Exception):
    pass


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, exc):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old contents")

    def writer(f):
        f.write(b"half of the new")
        raise exc("writer failed")

    with pytest.raises(exc):
        dio.atomic_write(path, writer)
    assert path.read_bytes() == b"old contents"
    assert _leftovers(tmp_path, "file.bin") == []


def test_failed_write_of_a_new_file_leaves_nothing(tmp_path):
    def writer(f):
        f.write(b"x" * 100)
        raise Boom()

    with pytest.raises(Boom):
        dio.atomic_write(tmp_path / "new.bin", writer)
    assert list(tmp_path.iterdir()) == []


def test_temp_file_lives_beside_the_target(tmp_path, monkeypatch):
    """os.replace is atomic only within one file system: the temp file must be
    in the target's folder."""
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((Path(src), Path(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(dio.os, "replace", spy)
    path = tmp_path / "x.json"
    dio.atomic_write_json(path, {"a": 1})
    (src, dst), = seen
    assert src.parent == dst.parent == tmp_path and src != dst


def test_atomic_write_json(tmp_path):
    path = tmp_path / "r.json"
    obj = {"chapter": "cnn", "name": "中文", "x": [1, 2.5]}
    dio.atomic_write_json(path, obj)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and "中文" in text
    assert json.loads(text) == obj


# bad input ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", [float("nan"), float("inf"), {"a": [1.0, -float("inf")]}])
def test_json_refuses_nan_and_writes_nothing(tmp_path, value):
    path = tmp_path / "r.json"
    with pytest.raises(ValueError, match="NaN or an infinity"):
        dio.atomic_write_json(path, {"x": value})
    assert list(tmp_path.iterdir()) == []


def test_json_writes_numpy_scalars_as_numbers(tmp_path):
    import numpy as np

    path = dio.atomic_write_json(tmp_path / "r.json", {"i": np.int64(3), "f": np.float32(0.5), "b": np.bool_(True)})
    assert json.loads(path.read_text()) == {"i": 3, "f": 0.5, "b": True}


def test_json_refuses_what_it_cannot_hold(tmp_path):
    with pytest.raises(TypeError, match="Tensor"):
        dio.atomic_write_json(tmp_path / "r.json", {"t": torch.ones(2)})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path, error, match", [
    (None, TypeError, "path"), (3, TypeError, "path"), ("", ValueError, "empty"), ("  ", ValueError, "empty"),
])
def test_bad_paths(path, error, match):
    with pytest.raises(error, match=match):
        dio.atomic_write_bytes(path, b"x")


def test_a_folder_is_not_a_file(tmp_path):
    with pytest.raises(ValueError, match="folder"):
        dio.atomic_write_bytes(tmp_path, b"x")
    assert list(tmp_path.iterdir()) == []


def test_write_must_be_callable_and_data_bytes(tmp_path):
    with pytest.raises(TypeError, match="write"):
        dio.atomic_write(tmp_path / "f", b"data")
    with pytest.raises(TypeError, match="bytes"):
        dio.atomic_write_bytes(tmp_path / "f", "text")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_atomic_write_gives_the_mode_a_plain_write_would(tmp_path):
    # results and sample grids are read by whoever builds or serves the site, not only their writer
    old = os.umask(0o022)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_bytes(b"x")
        written = dio.atomic_write_bytes(tmp_path / "atomic.txt", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644
