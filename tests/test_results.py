"""dlbook.results: results/<slug>.json in the full profile, nothing in smoke."""

import json
import math
import re

import numpy as np
import pytest
import torch

import dlbook
from dlbook import results

SCHEMA = {"chapter", "profile", "device", "device_name", "threads", "torch", "dlbook", "seed",
          "finished", "seconds", "metrics"}


@pytest.fixture
def out_dir(monkeypatch, tmp_path):
    folder = tmp_path / "res"
    monkeypatch.setenv("DLBOOK_RESULTS", str(folder))
    return folder


def test_full_profile_writes_the_schema(full_profile, out_dir, capsys):
    record = results.save("cnn", {"mnist_test_acc": 0.9931, "params": 61706,
                                  "t": torch.tensor(0.5)}, seed=3, seconds=412.345)
    path = out_dir / "cnn.json"
    assert [p.name for p in out_dir.iterdir()] == ["cnn.json"]
    on_disk = json.loads(path.read_text(encoding="utf-8"))
    assert on_disk == record
    assert set(on_disk) == SCHEMA
    assert on_disk["chapter"] == "cnn" and on_disk["profile"] == "full"
    assert on_disk["device"] == "cpu" and isinstance(on_disk["device_name"], str)
    assert on_disk["threads"] == torch.get_num_threads()
    assert on_disk["torch"] == torch.__version__ and on_disk["dlbook"] == dlbook.__version__
    assert on_disk["seed"] == 3 and on_disk["seconds"] == 412.3
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", on_disk["finished"])
    assert on_disk["metrics"] == {"mnist_test_acc": 0.9931, "params": 61706, "t": 0.5}
    assert "Wrote cnn.json" in capsys.readouterr().out


def test_default_seconds_is_the_process_age(full_profile, out_dir):
    record = results.save("gnn", {"acc": 0.8})
    assert isinstance(record["seconds"], float) and 0 <= record["seconds"] < 24 * 3600


def test_smoke_writes_nothing(out_dir, capsys):
    record = results.save("cnn", {"acc": 0.5})
    assert record["profile"] == "smoke" and set(record) == SCHEMA
    assert not out_dir.exists()
    assert "nothing written" in capsys.readouterr().out


def test_overwrites_atomically(full_profile, out_dir):
    results.save("vae", {"elbo": -100.0}, seconds=1)
    results.save("vae", {"elbo": -90.0}, seconds=1)
    assert json.loads((out_dir / "vae.json").read_text())["metrics"] == {"elbo": -90.0}
    assert [p.name for p in out_dir.iterdir()] == ["vae.json"]


def test_results_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DLBOOK_RESULTS", str(tmp_path / "x"))
    assert results.results_dir() == tmp_path / "x"
    monkeypatch.delenv("DLBOOK_RESULTS")
    book = tmp_path / "book"
    (book / "dlbook").mkdir(parents=True)
    (book / "_toc.yml").write_text("")
    (book / "notebooks").mkdir()
    monkeypatch.chdir(book / "notebooks")
    assert results.results_dir() == book / "results"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert results.results_dir() == elsewhere / "results"


@pytest.mark.parametrize("slug", ["CNN", "03_cnn", "resnet", ""])
def test_unknown_slug(full_profile, out_dir, slug):
    with pytest.raises(ValueError, match="slug"):
        results.save(slug, {"acc": 1.0})
    assert not out_dir.exists()


@pytest.mark.parametrize("metrics", [{}, None, [("acc", 1.0)]])
def test_empty_or_not_a_dict(full_profile, out_dir, metrics):
    with pytest.raises(ValueError, match="metrics"):
        results.save("cnn", metrics)
    assert not out_dir.exists()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "0.99", None, True,
                                   torch.tensor(float("nan")), [0.9], torch.tensor([0.1, 0.2])])
def test_bad_metric_values(full_profile, out_dir, value):
    with pytest.raises(ValueError, match="acc"):
        results.save("cnn", {"ok": 1.0, "acc": value})
    assert not out_dir.exists()


@pytest.mark.parametrize("value, expected", [
    (np.float64(0.5), 0.5), (np.float32(0.25), 0.25), (np.int64(7), 7), (torch.tensor(3), 3),
])
def test_numpy_and_tensor_scalars_are_numbers(full_profile, out_dir, value, expected):
    record = results.save("cnn", {"m": value}, seconds=1)
    stored = json.loads((out_dir / "cnn.json").read_text())["metrics"]["m"]
    assert stored == expected == record["metrics"]["m"]
    assert type(stored) is type(expected)


def test_comparison_table():
    table = results.comparison_table([
        ("MNIST test accuracy", 0.99314, 0.9905, "LeCun et al. 1998"),
        ("parameters", 61706, "60k", "paper"),
    ])
    assert table.splitlines() == [
        "| what | this run | reference | source |",
        "|---|---|---|---|",
        "| MNIST test accuracy | 0.9931 | 0.9905 | LeCun et al. 1998 |",
        "| parameters | 61706 | 60k | paper |",
    ]
    assert results.comparison_table([]).count("\n") == 1
