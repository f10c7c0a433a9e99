"""dlbook.zoo: trained models that one chapter saves and another loads."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dlbook import zoo
from dlbook.checkpoint import CheckpointError, load_checkpoint


def small(hidden=4):
    return nn.Sequential(nn.Linear(3, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, 2))


@pytest.fixture
def models(monkeypatch, tmp_path):
    folder = tmp_path / "zoo"
    monkeypatch.setenv("DLBOOK_MODELS", str(folder))
    return folder


def test_save_load_roundtrip(models):
    torch.manual_seed(0)
    model = small()
    model(torch.randn(8, 3))  # moves the BatchNorm running statistics
    path = zoo.save_model("mnist-cnn", model, {"test_acc": 0.99})
    assert path == models / "mnist-cnn-smoke.pt"
    assert [p.name for p in models.iterdir()] == ["mnist-cnn-smoke.pt"]
    torch.manual_seed(1)
    other = small()
    info = zoo.load_model("mnist-cnn", other)
    for key, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value), key
    assert info["test_acc"] == 0.99 and info["name"] == "mnist-cnn"
    assert info["class"] == "Sequential" and info["profile"] == "smoke"
    assert info["torch"] == torch.__version__ and info["saved"].endswith("Z")
    assert all(t.device.type == "cpu" for t in load_checkpoint(path)["state_dict"].values())


def test_metadata_with_numpy_numbers_loads_back(models):
    import numpy as np

    zoo.save_model("net", small(), {"acc": np.float32(0.5), "n": np.int64(3), "note": "x"})
    info = zoo.load_model("net", small())
    assert info["acc"] == 0.5 and info["n"] == 3 and info["note"] == "x"
    assert type(info["torch"]) is str


def test_profile_in_the_file_name(models, monkeypatch):
    zoo.save_model("net", small())
    monkeypatch.setenv("DLBOOK_PROFILE", "full")
    with pytest.raises(FileNotFoundError):  # a smoke model never stands in for a full one
        zoo.load_model("net", small())
    zoo.save_model("net", small())
    assert sorted(p.name for p in models.iterdir()) == ["net-full.pt", "net-smoke.pt"]
    assert zoo.model_path("net") == models / "net-full.pt"
    assert zoo.model_path("net", profile="smoke") == models / "net-smoke.pt"


def test_models_dir_default(monkeypatch, isolated_env, tmp_path):
    monkeypatch.delenv("DLBOOK_MODELS")
    assert zoo.models_dir() == tmp_path / "user-cache" / "models"


def test_missing_model_is_a_clear_error(models):
    with pytest.raises(FileNotFoundError) as err:
        zoo.load_model("resnet", small())
    message = str(err.value)
    assert "'resnet'" in message and "smoke" in message and str(models / "resnet-smoke.pt") in message
    assert "load_or_train" in message


@pytest.mark.parametrize("other", [lambda: small(hidden=5), lambda: nn.Linear(3, 2)])
def test_wrong_architecture(models, other):
    zoo.save_model("net", small())
    model = other()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as err:
        zoo.load_model("net", model)
    assert "Sequential" in str(err.value) and "net-smoke.pt" in str(err.value)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a failed load changed the model"


@pytest.mark.parametrize("name", ["", "Net", "a/b", "../x", "-x", "a b", "ünï", None, 3])
def test_bad_names(models, name):
    with pytest.raises(ValueError, match="model name"):
        zoo.model_path(name)
    with pytest.raises(ValueError, match="model name"):
        zoo.save_model(name, small())
    assert not models.exists()


def test_load_or_train_trains_only_once(models):
    calls = []

    def train(model):
        calls.append(model)
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(0.5)
        return {"test_acc": 0.75}

    torch.manual_seed(0)
    first = small()
    info = zoo.load_or_train("clf", first, train)
    assert len(calls) == 1 and calls[0] is first and info["test_acc"] == 0.75
    assert all(torch.all(p == 0.5) for p in first.parameters())
    second = small()
    info2 = zoo.load_or_train("clf", second, train)
    assert len(calls) == 1  # loaded, not trained again
    assert info2 == info
    assert all(torch.all(p == 0.5) for p in second.parameters())


def test_load_or_train_accepts_a_train_returning_none(models):
    info = zoo.load_or_train("clf", small(), lambda model: None)
    assert info["name"] == "clf" and (models / "clf-smoke.pt").exists()


def test_load_or_train_does_not_hide_an_architecture_change(models):
    zoo.save_model("clf", small())
    with pytest.raises(ValueError):
        zoo.load_or_train("clf", small(hidden=6), lambda model: pytest.fail("must not retrain"))


# metadata: what save_model accepts, load_model reads back -----------------------------

@pytest.mark.parametrize("info, expected", [
    ({"acc": 0.5, "n": 3, "ok": True, "none": None, "note": "x"}, None),
    ({"list": [1, 2.5, "a", None], "nested": {"a": {"b": [True]}}}, None),
    ({"tuple": (1, 2)}, {"tuple": [1, 2]}),
    ({"np": [np.float64(0.25), np.int32(4), np.bool_(False), np.str_("s")]}, {"np": [0.25, 4, False, "s"]}),
    ({"nan": float("nan")}, None),
    ({"versions": [torch.__version__]}, {"versions": [str(torch.__version__)]}),  # a TorchVersion: a str subclass
])
def test_accepted_metadata_loads_back(models, info, expected):
    zoo.save_model("net", small(), info)
    loaded = zoo.load_model("net", small())
    got = {k: loaded[k] for k in info}
    if "nan" in info:
        assert math.isnan(got["nan"])
    else:
        assert got == (expected or info)


@pytest.mark.parametrize("info, match", [
    ({"t": torch.tensor(0.5)}, r"\.item\(\)"),
    ({"a": np.zeros(3)}, r"\.tolist\(\)"),
    ({"f": lambda: 1}, "function"),
    ({"p": Path("x")}, "Path"),
    ({"d": {1: "a"}}, "keys must be strings"),
    ({"l": [object()]}, r"info\['l'\]\[0\]"),
    ({"name": "other"}, "may not set 'name'"),
    ({"saved": "yesterday", "class": "X"}, "'class', 'saved'"),
])
def test_refused_metadata_writes_no_file(models, info, match):
    with pytest.raises(ValueError, match=match):
        zoo.save_model("net", small(), info)
    assert not models.exists() or not list(models.iterdir())


@pytest.mark.parametrize("call, error, match", [
    (lambda: zoo.save_model("net", small(), ["acc", 0.5]), TypeError, "info"),
    (lambda: zoo.save_model("net", "model"), TypeError, "nn.Module"),
    (lambda: zoo.save_model("net", small().state_dict()), TypeError, "nn.Module"),
    (lambda: zoo.load_model("net", None), TypeError, "nn.Module"),
    (lambda: zoo.load_or_train("net", small(), "train"), TypeError, "train"),
    (lambda: zoo.load_or_train("net", small(), lambda model: 0.99), TypeError, "dict"),
    (lambda: zoo.model_path("net", profile="medium"), ValueError, "profile"),
])
def test_bad_arguments(models, call, error, match):
    with pytest.raises(error, match=match):
        call()
    assert not models.exists() or not list(models.iterdir())


@pytest.mark.parametrize("damage", ["truncated", "flipped", "not a model"])
def test_a_damaged_model_file_gives_one_clear_error(models, damage):
    model = small()
    path = zoo.save_model("damaged", model)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "flipped":
        data = bytearray(path.read_bytes())
        data[-20] ^= 1
        path.write_bytes(bytes(data))
    else:
        from dlbook.checkpoint import save_checkpoint
        save_checkpoint({"weights": [1, 2]}, path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        zoo.load_model("damaged", model)
    assert str(path) in str(err.value) and "Delete it" in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_gpt_with_tied_weights_survives_the_zoo(models):
    # chapter 05 saves its char-GPT; later chapters build a GPT from the saved config and load it
    from dlbook import transformer as tr

    torch.manual_seed(0)
    config = tr.GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, d_model=16)
    gpt = tr.GPT(config)
    zoo.save_model("char-gpt", gpt, info={"config": dict(vars(config)), "vocab": "abc"})
    again = tr.GPT(tr.GPTConfig(**{**vars(config)}))
    info = zoo.load_model("char-gpt", again)
    rebuilt = tr.GPT(tr.GPTConfig(**info["config"]))
    zoo.load_model("char-gpt", rebuilt)
    x = torch.randint(11, (2, 8))
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), gpt.eval()(x))
    assert rebuilt.lm_head.weight is rebuilt.tok_embed.weight  # still tied after loading
    assert info["vocab"] == "abc" and info["class"] == "GPT"
