"""dlbook.io: atomic writes and safe loading."""

import json
import os
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


def test_atomic_torch_save_failure_keeps_the_old_checkpoint(tmp_path):
    path = tmp_path / "ck.pt"
    dio.atomic_torch_save({"step": 1}, path)
    with pytest.raises(Exception):
        dio.atomic_torch_save({"step": 2, "bad": lambda: None}, path)  # lambdas do not pickle
    assert dio.safe_torch_load(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


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


def test_torch_save_load_roundtrip(tmp_path):
    state = {"w": torch.randn(3, 4), "step": 7, "name": "x", "list": [1.0, torch.ones(2)]}
    path = dio.atomic_torch_save(state, tmp_path / "s.pt")
    loaded = dio.safe_torch_load(path)
    assert torch.equal(loaded["w"], state["w"])
    assert loaded["step"] == 7 and loaded["name"] == "x"
    assert torch.equal(loaded["list"][1], torch.ones(2))


class Payload:
    """An object whose unpickling would run code: it creates a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_safe_torch_load_refuses_arbitrary_objects(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"x": Payload(str(marker))}, path)
    with pytest.raises(Exception) as err:
        dio.safe_torch_load(path)
    assert "weights_only" in str(err.value) or "Unsupported" in str(err.value)
    assert not marker.exists()
    # the same file does run code with a plain unpickler: the test is meaningful
    torch.load(path, weights_only=False)
    assert marker.exists()
