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

from .io import atomic_torch_save, safe_torch_load
from .paths import models_dir
from .profiles import get_profile

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


def model_path(name: str, profile: str | None = None) -> Path:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"model name must be lower-case letters, digits, '_' or '-'; got {name!r}")
    return models_dir() / f"{name}-{profile or get_profile()}.pt"


def save_model(name: str, model: nn.Module, info: dict | None = None) -> Path:
    """Save ``model``'s weights with a little metadata, atomically."""
    path = model_path(name)
    # Plain Python values only: load_model reads with weights_only=True, which
    # refuses torch.__version__ (a TorchVersion) and NumPy scalars.
    meta = {"name": name, "class": type(model).__name__, "profile": get_profile(),
            "torch": str(torch.__version__),
            "saved": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **{k: v.item() if isinstance(v, np.generic) else v for k, v in (info or {}).items()}}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save({"state_dict": state, "info": meta}, path)
    return path


def load_model(name: str, model: nn.Module) -> dict:
    """Load saved weights into ``model`` (built by the caller); return the metadata.

    Raises:
        FileNotFoundError: when no model of that name was saved in this profile.
        ValueError: when the saved weights are for a different architecture.
    """
    path = model_path(name)
    if not path.exists():
        raise FileNotFoundError(
            f"No saved model {name!r} for the {get_profile()} profile at {path}. "
            f"Run the chapter that trains it, or use load_or_train()."
        )
    saved = safe_torch_load(path)
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
    try:
        return load_model(name, model)
    except FileNotFoundError:
        info = train(model) or {}
        save_model(name, model, info)
        return load_model(name, model)
