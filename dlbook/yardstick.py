r"""One yardstick for every generative model of the book: VAE, GAN, diffusion.

Every row of every comparison table is three numbers, computed the same way
from exactly :data:`SAMPLES` (2,000) generated images:

- ``fid_mnist`` (:func:`frechet_distance`): the Fréchet distance between
  the statistics of the *judge*'s features of the generated images and of
  the reference images (the 10,000 MNIST test images for reported numbers,
  the 5,000 validation images for choosing between models);
- ``confident_rate`` (:func:`confident_rate`): the share of generated
  images the judge labels with probability at least 0.9 (are they digits?);
- ``class_coverage`` (:func:`class_coverage`): the share of the 10 classes
  that get at least 5% of the confidently labelled images (are they all the
  digits, or a few over and over: mode collapse?).

:func:`real_floor` gives the same numbers for 2,000 real digits the judge
never saw (from the validation split): the best a generator can hope for.

The judge (:class:`Judge`) is a small MNIST classifier, trained once on the
55,000 training images (``tools/train_judge.py``; never on the validation
split) and shipped inside the package with its SHA-256 checked at load, so
every machine measures with the same judge. No generator may train against
it, and models are chosen against ``"val"``, never ``"test"``.

How this differs from the FID of the literature (Heusel et al., 2017):
that FID takes the 2,048-dimensional pool features of an Inception-v3
network trained on ImageNet, computed from 10,000 to 50,000 samples of
natural-image data sets. Ours takes the 128 penultimate features of a small
MNIST classifier, from 2,000 samples. The formula is the same, the numbers
are not: compare ``fid_mnist`` values with each other (same judge, same
sample size), never with published FIDs. The Fréchet distance of finite
samples is biased upwards, the more so the fewer the samples, which is why
the sample size is fixed.

Shapes use the book's legend: B batch, K classes (10), D the judge's
feature width (128); ``n`` and ``m`` are numbers of images or feature rows.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_int, check_tensor, describe
from .data._checks import check_choice
from .data.images import NORMALIZATION, load_images
from .device import get_device
from .io import atomic_write

__all__ = [
    "CONFIDENCE", "COVERAGE_PERCENT", "FEATURES", "GRID_SIDE", "JUDGE_PATH", "JUDGE_SHA256",
    "JUDGE_TEST_ACC", "JUDGE_VAL_ACC", "NUM_CLASSES", "REFERENCES", "SAMPLES", "Judge",
    "JudgeError", "Yardstick", "class_counts", "class_coverage", "confident_rate", "features",
    "frechet_distance", "load_judge", "measure", "probabilities", "real_floor", "real_floor_images",
    "save_grid",
]

#: Images per row of every table: the Fréchet distance depends on the sample size.
SAMPLES = 2000
#: A judge's label is confident when its probability is at least this.
CONFIDENCE = 0.9
#: A class is covered when it gets at least this percentage of the confident images.
COVERAGE_PERCENT = 5
NUM_CLASSES = 10
FEATURES = 128  # D, the width of the judge's penultimate layer
REFERENCES = ("test", "val")
GRID_SIDE = 10  # save_grid draws GRID_SIDE x GRID_SIDE images
IMAGE_SHAPE = (1, 28, 28)

#: The judge's weights, package data written by ``tools/train_judge.py``.
JUDGE_PATH = Path(__file__).with_name("judge_mnist.pt")
JUDGE_SHA256 = "60073e103ec73af0472793159fb750e2e35f95ba21c16bdba01f21f434f30c30"
#: Accuracies ``tools/train_judge.py`` measured for the shipped weights (float32, CPU).
JUDGE_VAL_ACC = 0.9934
JUDGE_TEST_ACC = 0.9931

_SAMPLES_WHY = (f"every row of every table uses {SAMPLES:,} samples (yardstick.SAMPLES), because "
                f"the Fréchet distance is biased by the sample size: fewer samples give a larger "
                f"distance, so numbers from different sample sizes do not compare")
_GRID_WHY = f"the book's side-by-side figure is a {GRID_SIDE}x{GRID_SIDE} grid"


class JudgeError(RuntimeError):
    """The judge's weights are missing or are not the ones the package was made with."""


class Judge(nn.Module):
    r"""The yardstick's judge: a small MNIST classifier whose penultimate
    layer gives the features of ``fid_mnist``.

    Three blocks of 3x3 convolution, ReLU and 2x2 max-pooling (32, 64, 64
    channels), then a hidden layer of :data:`FEATURES` units (the features)
    and a linear layer to the 10 classes, with dropout between them while
    training. It takes images in [0, 1] and normalises them itself,
    $(x - 0.1307) / 0.3081$, with the training pixels' mean and standard
    deviation. Load the trained judge with :func:`load_judge`.

    Shapes:
        x: (B, 1, 28, 28) in [0, 1] -> logits (B, K); ``features``: (B, D)
    """

    def __init__(self, dropout: float = 0.25):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 14, 14)
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 64, 7, 7)
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 64, 3, 3)
        )
        self.hidden = nn.Linear(64 * 3 * 3, FEATURES)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(FEATURES, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer: ReLU of the hidden layer, (B, 1, 28, 28) -> (B, D)."""
        mean, std = NORMALIZATION["mnist"]
        x = (x - mean) / std  # (B, 1, 28, 28), as the judge was trained
        h = self.body(x).flatten(1)  # (B, 64 * 3 * 3)
        return F.relu(self.hidden(h))  # (B, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the 10 digits, (B, 1, 28, 28) -> (B, K)."""
        return self.head(self.dropout(self.features(x)))  # (B, K)


# the judge's weights ---------------------------------------------------------------------------

_REGENERATE = ("reinstall dlbook; in a checkout of the book, regenerate the file with "
               "`python tools/train_judge.py` and paste the SHA-256 it prints into "
               "JUDGE_SHA256 in dlbook/yardstick.py")


@functools.cache
def _verified_state(path: Path, expected: str) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, after its bytes are checked against ``expected``.

    The bytes that are hashed are the bytes that are loaded (no second read).
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise JudgeError(f"the judge's weights {path} cannot be read ({err.strerror or err}); "
                         f"{_REGENERATE}") from None
    found = hashlib.sha256(data).hexdigest()
    if found != expected:
        raise JudgeError(f"the judge's weights {path} are not the ones dlbook was made with: "
                         f"expected SHA-256 {expected}, found {found}. The file is damaged or "
                         f"was replaced; {_REGENERATE}")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


@functools.cache
def _judge_on(path: Path, expected: str, device: torch.device) -> Judge:
    judge = Judge()
    judge.load_state_dict(_verified_state(path, expected))
    return judge.requires_grad_(False).to(device)


def load_judge(device: torch.device | str | None = None) -> Judge:
    """The trained judge, in evaluation mode, with gradients off for its weights.

    Its weights are package data (:data:`JUDGE_PATH`); their SHA-256 is
    checked against :data:`JUDGE_SHA256` before ``torch.load`` (with
    ``weights_only=True``) reads them. Loaded once per process and device.

    Args:
        device: default :func:`dlbook.get_device`.

    Raises:
        JudgeError: when the file is missing or its SHA-256 differs; the
            message names the file, both hashes and how to regenerate it.
    """
    judge = _judge_on(JUDGE_PATH, JUDGE_SHA256, get_device(device))
    return judge.eval()


# inputs ----------------------------------------------------------------------------------------

def _check_images(images, name: str = "images", count: int | None = None,
                  why: str = "") -> torch.Tensor:
    """``images`` when they are a floating (n, 1, 28, 28) tensor of finite values in [0, 1]."""
    check_tensor(images, name)
    shape = tuple(images.shape)
    if images.dim() != 4 or shape[1:] != IMAGE_SHAPE:
        hint = (f" (add the channel dimension: {name}.unsqueeze(1))"
                if images.dim() == 3 and shape[1:] == IMAGE_SHAPE[1:] else "")
        raise ValueError(f"{name} must have shape (n, 1, 28, 28), grey-level MNIST-sized images; "
                         f"got {shape}{hint}")
    if count is not None and shape[0] != count:
        raise ValueError(f"{name} must hold exactly {count:,} images, because {why}; "
                         f"got {shape[0]:,}")
    if shape[0] == 0:
        raise ValueError(f"{name} holds no images; expected shape (n, 1, 28, 28) with n >= 1")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be floating-point images in [0, 1]; got {images.dtype} "
                         f"(for uint8 pixels, use {name}.float() / 255)")
    bad = int((~torch.isfinite(images)).sum())
    if bad:
        raise ValueError(f"{name} hold {bad:,} NaN or infinite values; expected finite values in "
                         f"[0, 1] (a generator that produces them has diverged)")
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 1:
        raise ValueError(f"{name} must lie in [0, 1], as the judge takes them (it normalises them "
                         f"itself); got values in [{low:.4g}, {high:.4g}]. Undo any normalisation "
                         f"first (dlbook.data.denormalize(x, 'mnist')), or apply a sigmoid to "
                         f"logits (torch.sigmoid)")
    return images


def _check_reference(reference) -> str:
    return check_choice(reference, "reference (the images to compare with)", REFERENCES)


def _as_float64(x, name: str, what: str) -> torch.Tensor:
    """A 2-D float64 CPU tensor of finite values, from a tensor or an array."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or an array of {what}; got {describe(x)}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be a 2-D table of {what}; got shape {tuple(x.shape)}")
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{name} must hold real numbers; got {x.dtype}")
    x = x.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} must be finite; it holds NaN or infinite values")
    return x


def _check_features(x, name: str) -> torch.Tensor:
    x = _as_float64(x, name, "features, shape (n, D)")
    if x.shape[0] < 2:
        raise ValueError(f"{name} must have at least 2 rows (feature vectors) to estimate a "
                         f"covariance; got shape {tuple(x.shape)}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} must have at least one feature column; "
                         f"got shape {tuple(x.shape)}")
    return x


def _check_probs(probs) -> torch.Tensor:
    p = _as_float64(probs, "probs", f"class probabilities, shape (n, {NUM_CLASSES})")
    if p.shape[1] != NUM_CLASSES or p.shape[0] == 0:
        raise ValueError(f"probs must have shape (n, {NUM_CLASSES}) with n >= 1: the judge's "
                         f"probabilities of the {NUM_CLASSES} digits; got {tuple(p.shape)}")
    if (p < 0).any() or ((p.sum(1) - 1).abs() > 1e-3).any():
        raise ValueError("probs must be probabilities (non-negative, each row summing to 1): "
                         "pass the judge's softmax outputs, logits.softmax(1), not its logits")
    return p


# the judge on images ---------------------------------------------------------------------------

def _judge_outputs(images: torch.Tensor, device,
                   batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The judge's features (n, D) and probabilities (n, K) of checked images,
    float64 on the CPU."""
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    judge = load_judge(device)
    on = next(judge.parameters()).device
    feats, probs = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(on, torch.float32)  # (B, 1, 28, 28)
            h = judge.features(x)  # (B, D)
            logits = judge.head(h)  # (B, K); dropout is the identity in evaluation mode
            feats.append(h.double().cpu())
            probs.append(logits.double().softmax(1).cpu())
    return torch.cat(feats), torch.cat(probs)


def features(images: torch.Tensor, device: torch.device | str | None = None,
             batch_size: int = 500) -> torch.Tensor:
    """The judge's penultimate features of ``images``, without gradients.

    Args:
        images: any number of images in [0, 1].
        device: where the judge runs; default :func:`dlbook.get_device`.
        batch_size: images per forward pass.

    Shapes:
        images: (n, 1, 28, 28) -> (n, D) float64 on the CPU
    """
    return _judge_outputs(_check_images(images), device, batch_size)[0]


def probabilities(images: torch.Tensor, device: torch.device | str | None = None,
                  batch_size: int = 500) -> torch.Tensor:
    """The judge's class probabilities (softmax) for ``images``, without gradients.

    Shapes:
        images: (n, 1, 28, 28) -> (n, K) float64 on the CPU
    """
    return _judge_outputs(_check_images(images), device, batch_size)[1]


# the numbers -----------------------------------------------------------------------------------

def _mean_cov(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""$\mu = \frac1n \sum_i x_i$ and $\Sigma = \frac{1}{n-1} \sum_i (x_i - \mu)(x_i - \mu)^\top$.

    Shapes:
        x: (n, D) -> mu (D,), cov (D, D)
    """
    mu = x.mean(0)  # (D,)
    xc = x - mu  # (n, D)
    return mu, xc.T @ xc / (len(x) - 1)  # (D, D)


def _sqrtm_psd(s: torch.Tensor) -> torch.Tensor:
    r"""$\Sigma^{1/2} = V \operatorname{diag}(\sqrt{\lambda}) V^\top$ for a symmetric PSD
    $\Sigma = V \operatorname{diag}(\lambda) V^\top$; rounding's tiny negative $\lambda$
    count as 0."""
    lam, v = torch.linalg.eigh(s)  # (D,), (D, D)
    return (v * lam.clamp(min=0).sqrt()) @ v.T  # (D, D)


def _frechet(mu_a: torch.Tensor, cov_a: torch.Tensor, mu_b: torch.Tensor,
             cov_b: torch.Tensor) -> float:
    r"""$\lVert\mu_a - \mu_b\rVert^2 + \operatorname{tr}\big(\Sigma_a + \Sigma_b
    - 2 (\Sigma_a^{1/2} \Sigma_b \Sigma_a^{1/2})^{1/2}\big)$, in float64."""
    root_a = _sqrtm_psd(cov_a)  # (D, D)
    inner = root_a @ cov_b @ root_a  # (D, D), symmetric PSD
    inner = (inner + inner.T) / 2  # exactly symmetric, for eigh
    # tr(M^{1/2}) is the sum of the square roots of M's eigenvalues
    tr_root = torch.linalg.eigvalsh(inner).clamp(min=0).sqrt().sum()
    d = (mu_a - mu_b).square().sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * tr_root
    return max(float(d), 0.0)  # a distance: rounding may leave -1e-13 for identical sets


def frechet_distance(a, b) -> float:
    r"""The Fréchet distance between Gaussians fitted to two sets of feature vectors.

    $d^2 = \lVert\mu_a - \mu_b\rVert^2 + \operatorname{tr}\big(\Sigma_a + \Sigma_b
    - 2 (\Sigma_a^{1/2} \Sigma_b \Sigma_a^{1/2})^{1/2}\big)$

    with the means $\mu$ and covariances $\Sigma$ (n - 1 in the denominator)
    of the rows, in float64; the matrix square roots come from the
    eigendecompositions of symmetric positive semi-definite matrices
    (``torch.linalg.eigh``), with rounding's tiny negative eigenvalues set to
    0. What the literature calls FID is this distance, squared as written
    (no square root is taken). It is 0 for identical sets, symmetric, and
    unchanged by a rotation or a translation applied to both sets.

    Args:
        a, b: feature vectors, one per row, of the same width (tensors or
            NumPy arrays), at least 2 rows each.

    Shapes:
        a: (n, D), b: (m, D) -> a float
    """
    a, b = _check_features(a, "a"), _check_features(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same number of features (columns); got "
                         f"{a.shape[1]} and {b.shape[1]}")
    return _frechet(*_mean_cov(a), *_mean_cov(b))


def class_counts(probs) -> torch.Tensor:
    """How many confidently labelled images (probability >= :data:`CONFIDENCE`)
    each class gets.

    Shapes:
        probs: (n, K) -> (K,) int64
    """
    p = _check_probs(probs)
    top, label = p.max(1)  # (n,), (n,)
    return torch.bincount(label[top >= CONFIDENCE], minlength=NUM_CLASSES)


def confident_rate(probs) -> float:
    """The share of images whose most likely class has probability >= :data:`CONFIDENCE` (0.9).

    Args:
        probs: the judge's softmax probabilities, e.g. from :func:`probabilities`.

    Shapes:
        probs: (n, K) -> a float in [0, 1]
    """
    p = _check_probs(probs)
    return float((p.max(1).values >= CONFIDENCE).double().mean())


def _coverage(counts: torch.Tensor) -> float:
    total = int(counts.sum())
    if total == 0:
        return 0.0
    covered = (100 * counts >= COVERAGE_PERCENT * total).sum()  # whole numbers: exactly 5% counts
    return int(covered) / NUM_CLASSES


def class_coverage(probs) -> float:
    """The share of the 10 classes that get at least :data:`COVERAGE_PERCENT`
    (5%) of the confidently labelled images; 0 when no image is confident.

    1.0 means every digit is generated, and recognisably; a model that
    draws only a few digits (mode collapse) covers few classes.

    Shapes:
        probs: (n, K) -> a float in {0, 0.1, ..., 1}
    """
    return _coverage(class_counts(probs))


# the yardstick ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Yardstick:
    """The three numbers of a row of the book's generative comparison.

    ``class_counts`` are the confident images per class (0-9), the
    histogram behind ``class_coverage``.
    """

    fid_mnist: float
    confident_rate: float
    class_coverage: float
    n: int
    reference: str
    class_counts: tuple[int, ...]

    def metrics(self, prefix: str) -> dict[str, float]:
        """``{prefix}_fid_mnist``, ``{prefix}_confident_rate`` and
        ``{prefix}_class_coverage``, for :func:`dlbook.results.save`."""
        if not isinstance(prefix, str) or not prefix.isidentifier():
            raise ValueError(f"prefix must be a name such as 'vae' or 'real'; "
                             f"got {describe(prefix)}")
        return {f"{prefix}_fid_mnist": self.fid_mnist,
                f"{prefix}_confident_rate": self.confident_rate,
                f"{prefix}_class_coverage": self.class_coverage}

    def __str__(self) -> str:
        return (f"fid_mnist {self.fid_mnist:.3f} (against the {self.reference} images) | "
                f"confident {self.confident_rate:.3f} | class coverage {self.class_coverage:.1f} "
                f"| {self.n:,} samples")


@functools.cache
def _reference_outputs(reference: str,
                       device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The judge's features (N, D) and probabilities (N, K) of the reference
    images, with their labels (N,); computed once per process and device."""
    x, y = load_images("mnist", reference, normalize=False)  # (N, 1, 28, 28) in [0, 1], (N,)
    return (*_judge_outputs(x, device, 1000), y)


@functools.cache
def _reference_stats(reference: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and covariance (D, D) of the judge's features of the reference images."""
    return _mean_cov(_reference_outputs(reference, device)[0])


def measure(images: torch.Tensor, reference: str = "test", *,
            device: torch.device | str | None = None, batch_size: int = 500) -> Yardstick:
    """The yardstick of :data:`SAMPLES` generated images.

    Args:
        images: exactly 2,000 images in [0, 1] (see :data:`SAMPLES`).
        reference: ``"test"``, the 10,000 MNIST test images, for the numbers
            a table reports; ``"val"``, the 5,000 validation images, for
            choosing between models and monitoring them while they train.
            Their feature statistics are computed once per process.
        device: where the judge runs; default :func:`dlbook.get_device`.
        batch_size: images per forward pass of the judge.

    Raises:
        ValueError: for a wrong shape or count, values outside [0, 1], NaN,
            or an unknown reference; the message says what was expected.

    Shapes:
        images: (SAMPLES, 1, 28, 28) -> a :class:`Yardstick`
    """
    reference = _check_reference(reference)
    images = _check_images(images, count=SAMPLES, why=_SAMPLES_WHY)
    dev = get_device(device)
    feats, probs = _judge_outputs(images, dev, batch_size)
    counts = class_counts(probs)
    return Yardstick(
        fid_mnist=_frechet(*_mean_cov(feats), *_reference_stats(reference, dev)),
        confident_rate=confident_rate(probs),
        class_coverage=_coverage(counts),
        n=len(images),
        reference=reference,
        class_counts=tuple(int(c) for c in counts),
    )


def real_floor_images() -> torch.Tensor:
    """The 2,000 real digits of the floor: a fixed random subset (seed 0) of
    the validation images, which the judge did not train on.

    Shapes:
        (SAMPLES, 1, 28, 28) float32 in [0, 1]
    """
    return load_images("mnist", "val", limit=SAMPLES, normalize=False, seed=0)[0]


def real_floor(reference: str = "test", *, device: torch.device | str | None = None) -> Yardstick:
    """The yardstick of 2,000 real digits (:func:`real_floor_images`): the floor of every table.

    Against ``"test"`` this is how far one real sample of 2,000 lies from the
    test set. Against ``"val"`` the 2,000 are part of the 5,000 reference
    images, so that floor is lower than an independent sample's: use it to
    draw the line on a training curve, and quote the floor against ``"test"``.
    """
    return measure(real_floor_images(), reference, device=device)


def save_grid(images: torch.Tensor, path: str | os.PathLike, *, gap: int = 2) -> Path:
    """Write 100 images as a 10x10 grid, a grey-level PNG, for the book's figures.

    Each generative chapter's full run saves its best model's samples under
    ``book/images/`` for the side-by-side figure. Images are drawn as they
    are (0 black, 1 white, no rescaling), separated by ``gap`` mid-grey
    pixels, also around the border. The file is written atomically.

    Shapes:
        images: (100, 1, 28, 28) in [0, 1] -> a PNG of
        (10 * 28 + 11 * gap) x (10 * 28 + 11 * gap) pixels
    """
    images = _check_images(images, count=GRID_SIDE ** 2, why=_GRID_WHY)
    gap = check_int(gap, "gap", minimum=0)
    if not isinstance(path, (str, os.PathLike)) or Path(path).suffix.lower() != ".png":
        raise ValueError(f"path must be a file name ending in .png; got {describe(path)}")
    x = images.detach().cpu().double().numpy().reshape(GRID_SIDE, GRID_SIDE, 28, 28)
    x = np.pad(x, ((0, 0), (0, 0), (0, gap), (0, gap)), constant_values=0.5)  # a gap below, right
    side = GRID_SIDE * (28 + gap)
    grid = x.transpose(0, 2, 1, 3).reshape(side, side)  # rows of images side by side
    grid = np.pad(grid, ((gap, 0), (gap, 0)), constant_values=0.5)  # the gap above, left
    pixels = np.round(grid * 255).astype(np.uint8)

    from PIL import Image  # matplotlib's own dependency

    return atomic_write(path, lambda f: Image.fromarray(pixels).save(f, format="PNG"))
