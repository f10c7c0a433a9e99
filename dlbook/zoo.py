"""Trained models that one chapter saves and later chapters load.

The CNN chapter saves its MNIST classifier here; the chapters on
adversarial attacks and on evaluating generative models load it, or
retrain it when it is missing. Files live in ``DLBOOK_MODELS`` (default:
``models/`` in the user cache directory), one per name and profile, so a
smoke run never replaces a fully trained model.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ._checks import check_callable, check_module, describe
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .paths import models_dir
from .profiles import PROFILES, get_profile

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
RESERVED = ("name", "class", "profile", "torch", "saved")  # metadata save_model writes itself


def model_path(name: str, profile: str | None = None) -> Path:
    """Where model ``name`` of ``profile`` (default: the active one) is kept."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"model name must be lower-case letters, digits, '_' or '-'; got {name!r}")
    if profile is not None and profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)} or None; got {profile!r}")
    return models_dir() / f"{name}-{profile or get_profile()}.pt"


def _plain(value, where: str):
    """``value`` as what load_model can read back (weights_only=True): str,
    int, float, bool, None, and lists and str-keyed dicts of those. NumPy
    scalars become Python numbers, tuples become lists."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool):
        return value
    for plain in (str, int, float):
        if isinstance(value, plain):
            return plain(value)  # a subclass (torch's TorchVersion is a str) as the plain type
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise ValueError(f"{where}: metadata keys must be strings; got {key!r}")
        return {key: _plain(v, f"{where}[{key!r}]") for key, v in value.items()}
    hint = " (use .item() or .tolist())" if isinstance(value, (torch.Tensor, np.ndarray)) else ""
    raise ValueError(f"{where} must be a str, int, float, bool, None, or a list or dict of those; "
                     f"got {type(value).__name__}{hint}")


def save_model(name: str, model: nn.Module, info: dict | None = None) -> Path:
    """Save ``model``'s weights with a little metadata, atomically.

    ``info`` is extra metadata (for example the test accuracy): plain values
    that :func:`load_model` can read back, checked before anything is written.
    """
    path = model_path(name)
    check_module(model)
    if info is not None and not isinstance(info, dict):
        raise TypeError(f"info must be a dict of metadata or None; got {describe(info)}")
    extra = _plain(info or {}, "info")
    taken = sorted(set(extra) & set(RESERVED))
    if taken:
        raise ValueError(f"info may not set {', '.join(map(repr, taken))}: save_model writes those itself")
    # torch.__version__ is a TorchVersion, which weights_only=True refuses: a str.
    meta = {"name": name, "class": type(model).__name__, "profile": get_profile(),
            "torch": str(torch.__version__),
            "saved": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), **extra}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_checkpoint({"state_dict": state, "info": meta}, path)


def load_model(name: str, model: nn.Module) -> dict:
    """Load saved weights into ``model`` (built by the caller); return the metadata.

    Raises:
        FileNotFoundError: when no model of that name was saved in this profile.
        CheckpointError: when the file is corrupt, tampered with, or not a
            saved model (it names the file: delete it and run the chapter that
            trains the model again).
        ValueError: when the saved weights are for a different architecture.
    """
    path = model_path(name)
    check_module(model)
    if not path.exists():
        raise FileNotFoundError(
            f"No saved model {name!r} for the {get_profile()} profile at {path}. "
            f"Run the chapter that trains it, or use load_or_train()."
        )
    saved = load_checkpoint(path)
    if (not isinstance(saved, dict) or not isinstance(saved.get("state_dict"), dict)
            or not isinstance(saved.get("info"), dict)):
        raise CheckpointError(path, "is not a model saved by dlbook.zoo.save_model")
    # Compare names and shapes first: load_state_dict would copy the tensors
    # that fit before raising, and leave the model half loaded.
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in saved["state_dict"].items()}
    if ours != theirs:
        differ = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
        raise ValueError(f"{path} holds weights of a {saved['info'].get('class')} that do not fit "
                         f"this {type(model).__name__}: {len(differ)} tensors differ in name or shape, "
                         f"for example {differ[0]!r} (saved {theirs.get(differ[0])}, model {ours.get(differ[0])})")
    model.load_state_dict(saved["state_dict"])
    return saved["info"]


def load_or_train(name: str, model: nn.Module, train: Callable[[nn.Module], dict | None]) -> dict:
    """Load ``name`` into ``model``; if it was never saved, ``train(model)`` and save it.

    ``train`` may return a dict of metadata (for example its test accuracy).
    """
    model_path(name)
    check_module(model)
    check_callable(train, "train")
    try:
        return load_model(name, model)
    except FileNotFoundError:
        info = train(model)
        if info is not None and not isinstance(info, dict):
            raise TypeError(f"train(model) must return a dict of metadata or None; got {describe(info)}")
        save_model(name, model, info)
        return load_model(name, model)
