"""dlbook.checkpoint: verified, atomic, safely loaded checkpoint files."""

import hashlib
import os
import pickle

import pytest
import torch

from dlbook.checkpoint import MAGIC, CheckpointError, load_checkpoint, save_checkpoint


def test_round_trip(tmp_path):
    obj = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "step": 3, "history": [{"loss": 0.5}],
           "rng": (3, [1, 2], None), "name": "run"}
    path = save_checkpoint(obj, tmp_path / "deep" / "run.pt")
    assert path == tmp_path / "deep" / "run.pt"
    back = load_checkpoint(path)
    assert torch.equal(back["model"]["w"], obj["model"]["w"])
    assert {k: v for k, v in back.items() if k != "model"} == {k: v for k, v in obj.items() if k != "model"}
    assert path.read_bytes().startswith(MAGIC)
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.pt"]  # no temporary file left


def test_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    save_checkpoint({"a": 1}, "~/x.pt")
    assert load_checkpoint("~/x.pt") == {"a": 1}


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = save_checkpoint({"version": 1}, tmp_path / "run.pt")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint({"version": 2, "bad": Unpicklable()}, path)
    assert load_checkpoint(path) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "none.pt")


def _corrupt(kind, good: bytes, marker) -> bytes:
    payload = good[len(MAGIC) + 32:]
    if kind == "empty":
        return b""
    if kind == "header cut":
        return good[: len(MAGIC) + 10]
    if kind == "payload cut":
        return good[:-7]
    if kind == "one flipped bit":
        return good[:-50] + bytes([good[-50] ^ 0x10]) + good[-49:]
    if kind == "checksum flipped":
        return good[: len(MAGIC)] + bytes([good[len(MAGIC)] ^ 1]) + good[len(MAGIC) + 1:]
    if kind == "random bytes":
        return os.urandom(1000)
    if kind == "plain torch.save":
        return payload

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = pickle.dumps({"model": Evil()}, protocol=2)
    return MAGIC + hashlib.sha256(evil).digest() + evil


@pytest.mark.parametrize("kind", ["empty", "header cut", "payload cut", "one flipped bit", "checksum flipped",
                                  "random bytes", "plain torch.save", "malicious pickle"])
def test_every_broken_file_gives_one_error_naming_it(tmp_path, kind):
    path = save_checkpoint({"model": {"w": torch.randn(100)}}, tmp_path / "run.pt")
    marker = tmp_path / "pwned"
    path.write_bytes(_corrupt(kind, path.read_bytes(), marker))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "Delete it to start afresh" in message and "os.remove" in message
    assert "weights_only" not in message
    assert err.value.path == path
    assert not marker.exists()
    # the malicious file really would run code if loaded carelessly: the test means something
    if kind == "malicious pickle":
        with open(path, "rb") as f:
            f.read(len(MAGIC) + 32)
            pickle.load(f)
        assert marker.exists()


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("map_location, error", [("x", ValueError), (0, TypeError), ([0], TypeError)])
def test_map_location_is_checked(tmp_path, map_location, error):
    path = save_checkpoint({"w": torch.ones(2)}, tmp_path / "s.pt")
    with pytest.raises(error, match="map_location"):
        load_checkpoint(path, map_location=map_location)
    for good in ("cpu", torch.device("cpu"), None, {"cpu": "cpu"}, lambda storage, location: storage):
        assert torch.equal(load_checkpoint(path, map_location=good)["w"], torch.ones(2))
