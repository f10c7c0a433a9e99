"""dlbook.results: results/<slug>.json in the full profile, nothing in smoke."""

import json
import math
import os
import re
import sys
from pathlib import Path

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


def test_default_seconds_is_the_process_age(full_profile, out_dir, monkeypatch):
    monkeypatch.setattr(results, "process_start_time", lambda: 1_000.0)
    monkeypatch.setattr(results.time, "time", lambda: 1_412.345)
    record = results.save("gnn", {"acc": 0.8})
    assert record["seconds"] == 412.3
    assert json.loads((out_dir / "gnn.json").read_text())["seconds"] == 412.3


def test_process_start_time_is_when_this_process_started():
    psutil = pytest.importorskip("psutil")
    started = results.process_start_time()
    assert started == psutil.Process().create_time()
    assert started <= results._IMPORT_TIME  # before dlbook was imported
    # an independent clock: the process's start in clock ticks since boot, from /proc
    stat = Path("/proc/self/stat")
    if stat.exists():
        ticks = int(stat.read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        assert abs(started - (boot + ticks / os.sysconf("SC_CLK_TCK"))) < 2.0


def test_process_start_time_without_psutil_is_when_dlbook_was_imported(monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)  # `import psutil` raises ImportError
    assert results.process_start_time() == results._IMPORT_TIME


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


def test_the_chapters_are_the_books_eleven_in_order():
    assert results.CHAPTERS == ("foundations", "optimizers", "cnn", "attention", "transformer", "gnn", "vae",
                                "gan", "diffusion", "adversarial", "scale")


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(seconds=math.nan), ValueError, "seconds"),
    (dict(seconds=math.inf), ValueError, "seconds"),
    (dict(seconds=-1.0), ValueError, "seconds"),
    (dict(seconds="412"), ValueError, "seconds"),
    (dict(seconds=True), ValueError, "seconds"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=1.5), ValueError, "seed"),
    (dict(seed=None), ValueError, "seed"),
    (dict(metrics={1: 0.5}), ValueError, "metric names"),
    (dict(metrics={"": 0.5}), ValueError, "metric names"),
    (dict(slug=["cnn"]), ValueError, "slug"),
    (dict(slug=None), ValueError, "slug"),
])
def test_save_bad_input_writes_nothing(full_profile, out_dir, kwargs, error, match):
    args = dict(slug="cnn", metrics={"acc": 0.5}, seconds=1.0) | kwargs
    with pytest.raises(error, match=match):
        results.save(**args)
    assert not out_dir.exists()


def test_save_numpy_seed_and_seconds(full_profile, out_dir):
    record = results.save("cnn", {"acc": 0.5}, seed=np.int64(2), seconds=np.float32(12.25))
    on_disk = json.loads((out_dir / "cnn.json").read_text())
    assert on_disk["seed"] == 2 and type(on_disk["seed"]) is int
    assert on_disk["seconds"] == record["seconds"] == 12.2


@pytest.mark.parametrize("rows, match", [
    ([("a", 1, 2)], "row 0"),
    (["abcd"], "row 0"),
    ([("a", 1, 2, "s"), None], "row 1"),
])
def test_comparison_table_bad_rows(rows, match):
    with pytest.raises(ValueError, match=match):
        results.comparison_table(rows)


@pytest.mark.parametrize("rows", [None, 3, "rows", {"a": 1}])
def test_comparison_table_needs_a_list_of_rows(rows):
    with pytest.raises(TypeError, match="rows must be a list"):
        results.comparison_table(rows)


def test_comparison_table_escapes_bars_and_formats_numpy_floats():
    table = results.comparison_table([("a | b", np.float32(0.5), 0.25, "x|y")])
    assert table.splitlines()[-1] == "| a \\| b | 0.5000 | 0.2500 | x\\|y |"
