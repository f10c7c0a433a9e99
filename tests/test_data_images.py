"""dlbook.data.images and .loaders: MNIST splits, loaders, augmentation, fingerprints."""

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from dlbook import data

MNIST_TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_PIXEL_SUMS = {"train": 1_567_298_545, "test": 264_923_200}
ROOT = Path(__file__).resolve().parents[1]


# The arrays and the facts of the README ---------------------------------------

def test_load_arrays_shapes_dtypes_and_readme_facts(shared_data):
    arrays = data.load_arrays("mnist")
    assert sorted(arrays) == ["x_test", "x_train", "y_test", "y_train"]
    assert arrays["x_train"].shape == (60000, 28, 28) and arrays["y_train"].shape == (60000,)
    assert arrays["x_test"].shape == (10000, 28, 28) and arrays["y_test"].shape == (10000,)
    assert all(a.dtype == np.uint8 for a in arrays.values())
    assert np.bincount(arrays["y_train"], minlength=10).tolist() == MNIST_TRAIN_LABEL_COUNTS
    for split, total in MNIST_PIXEL_SUMS.items():
        assert int(arrays[f"x_{split}"].sum(dtype=np.int64)) == total
    counts = np.bincount(arrays["x_train"].ravel(), minlength=256)  # pixel histogram
    values = np.arange(256) / 255.0
    mean = (counts * values).sum() / counts.sum()
    std = np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    assert (mean, std) == pytest.approx((0.13066, 0.30811), abs=1e-5)


def test_normalization_constants_match_the_readme():
    assert data.NORMALIZATION["mnist"] == pytest.approx((0.13066, 0.30811), abs=1e-4)
    assert data.NORMALIZATION["fashion_mnist"] == pytest.approx((0.28604, 0.35302), abs=1e-4)


# The splits -------------------------------------------------------------------

def _raw(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] back to their bytes."""
    return (x[:, 0] * 255).round().to(torch.uint8)


@pytest.mark.parametrize("split, part, rows", [
    ("train", "train", slice(0, 55000)), ("val", "train", slice(55000, 60000)),
    ("test", "test", slice(0, 10000)), ("train_full", "train", slice(0, 60000)),
])
def test_each_split_is_its_rows_of_the_official_arrays(shared_data, mnist_arrays, split, part, rows):
    x, y = data.load_images("mnist", split, normalize=False)
    n = rows.stop - rows.start
    assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64
    assert torch.equal(_raw(x), torch.from_numpy(mnist_arrays[f"x_{part}"][rows]))
    assert torch.equal(y, torch.from_numpy(mnist_arrays[f"y_{part}"][rows].astype(np.int64)))


def test_normalized_training_images_have_mean_0_std_1(shared_data):
    x, _ = data.load_images("mnist", "train_full")
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-3
    raw, _ = data.load_images("mnist", "train_full", limit=200, normalize=False)
    x200, _ = data.load_images("mnist", "train_full", limit=200)
    assert torch.allclose(data.denormalize(x200, "mnist"), raw, atol=1e-6)


def test_fashion_mnist(shared_data):
    x, y = data.load_images("fashion_mnist", "val", limit=64)
    assert x.shape == (64, 1, 28, 28) and y.dtype == torch.int64
    assert data.denormalize(x, "fashion_mnist").min().item() == pytest.approx(0, abs=1e-6)
    assert len(data.CLASS_NAMES["fashion_mnist"]) == 10 and y.max() < 10


def test_limit_takes_a_fixed_random_subset_of_the_split(shared_data, mnist_arrays):
    x, y = data.load_images("mnist", "val", limit=300, normalize=False, seed=3)
    keep = data.subset_indices(5000, 300, seed=3)
    assert torch.equal(_raw(x), torch.from_numpy(mnist_arrays["x_train"][55000:][keep]))
    assert torch.equal(y, torch.from_numpy(mnist_arrays["y_train"][55000:][keep].astype(np.int64)))
    again, _ = data.load_images("mnist", "val", limit=300, normalize=False, seed=3)
    other, _ = data.load_images("mnist", "val", limit=300, normalize=False, seed=4)
    assert torch.equal(x, again) and not torch.equal(x, other)
    _, y_np = data.load_images("mnist", "val", limit=np.int64(300), normalize=False, seed=3)
    assert torch.equal(y_np, y)  # a numpy integer is a limit too


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="mnist", split="validation"), "split.*'val'"),
    (dict(name="mnist", split="TRAIN"), "split"),
    (dict(name="cifar10"), "mnist"),
    (dict(name="tinyshakespeare"), "image"),
    (dict(name="mnist", limit=0), "limit"),
    (dict(name="mnist", limit=-5), "limit"),
    (dict(name="mnist", limit=2.5), "limit"),
    (dict(name="mnist", limit="10"), "limit"),
    (dict(name="mnist", limit=True), "limit"),
    (dict(name="mnist", seed=-1), "seed"),
])
def test_load_images_rejects_bad_arguments(shared_data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load_images(**kwargs)


def test_load_images_wants_a_bool_for_normalize():
    with pytest.raises(TypeError, match="normalize must be True or False"):
        data.load_images("mnist", normalize="yes")


def test_denormalize_rejects_an_unknown_data_set():
    with pytest.raises(ValueError, match="fashion_mnist"):
        data.denormalize(torch.zeros(1), "cifar10")


# image_loaders ----------------------------------------------------------------

def test_image_dataset(shared_data):
    ds = data.image_dataset("mnist", "val", limit=30)
    assert len(ds) == 30 and ds[0][0].shape == (1, 28, 28)


def test_image_loaders_returns_train_val_and_test(shared_data):
    loaders = data.image_loaders("mnist", batch_size=8, limit_train=20, limit_val=12, limit_test=7,
                                 augment=lambda b: b * 0, eval_batch_size=5)
    assert isinstance(loaders, data.ImageLoaders)
    train, val, test = loaders
    assert (train, val, test) == (loaders.train, loaders.val, loaders.test)
    assert [len(loader) for loader in loaders] == [3, 3, 2]
    assert train.shuffle and not val.shuffle and not test.shuffle
    assert train.transform is not None and val.transform is None and test.transform is None
    xb, yb = next(iter(train))
    assert xb.shape == (8, 1, 28, 28) and torch.all(xb == 0)  # augment applied
    for loader, split, limit in ((val, "val", 12), (test, "test", 7)):
        x, y = data.load_images("mnist", split, limit=limit)
        assert torch.equal(torch.cat([b[0] for b in loader]), x)  # in order, not augmented
        assert torch.equal(torch.cat([b[1] for b in loader]), y)
    x, _ = data.load_images("mnist", "train", limit=20)
    assert torch.equal(train.tensors[0], x)


@pytest.mark.parametrize("kwargs, match", [
    (dict(limit_val=0), "limit_val"), (dict(limit_test=-1), "limit_test"), (dict(limit_train=1.5), "limit_train"),
    (dict(batch_size=0), "batch_size"), (dict(eval_batch_size=-3), "eval_batch_size"), (dict(seed=1.0), "seed"),
])
def test_image_loaders_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.image_loaders("mnist", **kwargs)  # no data needed: arguments are checked first


def test_image_loaders_wants_a_callable_augment():
    with pytest.raises(TypeError, match="augment must be callable"):
        data.image_loaders("mnist", augment="random_shift")


# subset_indices ---------------------------------------------------------------

def test_subset_indices_deterministic_and_distinct():
    a = data.subset_indices(1000, 100, seed=0)
    assert np.array_equal(a, data.subset_indices(1000, 100, seed=0))
    assert len(np.unique(a)) == 100 and a.min() >= 0 and a.max() < 1000
    assert np.all(np.diff(a) > 0)  # sorted, so the subset keeps the original order
    assert not np.array_equal(a, data.subset_indices(1000, 100, seed=1))
    assert not np.array_equal(a, np.arange(100))


@pytest.mark.parametrize("limit", [None, 10, 11, 10**9])
def test_subset_indices_keeps_all_when_limit_is_large(limit):
    assert np.array_equal(data.subset_indices(10, limit), np.arange(10))


def test_subset_indices_accepts_numpy_integers():
    assert len(data.subset_indices(np.int32(10), np.int64(3), seed=np.int8(2))) == 3


@pytest.mark.parametrize("n, limit", [(10, 0), (10, -1), (10, 2.5), (10, True), (10, False), (10, "5"),
                                      (10, 20.0), (1, True)])
def test_subset_indices_rejects_bad_limits(n, limit):
    with pytest.raises(ValueError, match="limit"):
        data.subset_indices(n, limit)


# BatchLoader ------------------------------------------------------------------

@pytest.mark.parametrize("n, bs, drop_last, sizes", [
    (10, 4, False, [4, 4, 2]), (10, 4, True, [4, 4]), (8, 4, False, [4, 4]), (8, 4, True, [4, 4]),
    (3, 5, False, [3]), (3, 5, True, []), (1, 1, False, [1]),
])
def test_batchloader_lengths(n, bs, drop_last, sizes):
    x = torch.arange(n)
    loader = data.BatchLoader(x, batch_size=bs, drop_last=drop_last)
    assert len(loader) == len(sizes)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == sizes
    if sizes:
        assert torch.equal(torch.cat([b[0] for b in batches]), x[: sum(sizes)])  # in order


def _epoch(loader):
    return [tuple(t.clone() for t in b) for b in loader]


def test_batchloader_shuffle_is_reproducible_and_covers_every_example_once():
    x = torch.arange(50)
    y = x * 10
    loader = data.BatchLoader(x, y, batch_size=8, shuffle=True)
    torch.manual_seed(0)
    first = _epoch(loader)
    second = _epoch(loader)  # the next epoch draws a new order
    torch.manual_seed(0)
    again = _epoch(loader)
    order = torch.cat([b[0] for b in first])
    assert torch.equal(torch.sort(order).values, x)  # each example exactly once
    assert not torch.equal(order, x)  # shuffled
    assert not torch.equal(order, torch.cat([b[0] for b in second]))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert all(torch.equal(b[1], b[0] * 10) for b in first)  # pairs stay aligned


def test_batchloader_draws_its_order_when_iteration_starts():
    loader = data.BatchLoader(torch.arange(20), batch_size=20, shuffle=True)
    torch.manual_seed(0)
    expected = next(iter(loader))[0]
    torch.manual_seed(1)
    it = iter(loader)
    torch.manual_seed(0)
    assert torch.equal(next(it)[0], expected)


def test_batchloader_shuffle_drop_last():
    x = torch.arange(10)
    loader = data.BatchLoader(x, batch_size=4, shuffle=True, drop_last=True)
    torch.manual_seed(1)
    seen = torch.cat([b[0] for b in loader])
    assert len(seen) == 8 and len(torch.unique(seen)) == 8


def test_batchloader_transform_applies_to_inputs_only():
    x, y = torch.ones(6, 2), torch.arange(6)
    calls = []

    def transform(batch):
        calls.append(batch.shape)
        return batch * 3

    loader = data.BatchLoader(x, y, batch_size=4, transform=transform)
    batches = list(loader)
    assert calls == [(4, 2), (2, 2)]
    assert all(torch.all(b[0] == 3) for b in batches)
    assert torch.equal(torch.cat([b[1] for b in batches]), y)
    assert torch.all(x == 1)  # the stored tensor is untouched


def test_batchloader_works_with_fit_style_iteration():
    loader = data.BatchLoader(torch.zeros(5, 3), torch.zeros(5), batch_size=np.int64(2))
    assert len(loader.dataset) == 5 and loader.batch_size == 2
    for xb, yb in loader:
        assert xb.shape[1:] == (3,) and len(xb) == len(yb)


@pytest.mark.parametrize("args, kwargs, match", [
    ((), {}, "tensor"),
    ((torch.zeros(3), torch.zeros(4)), {}, "first dimension"),
    ((torch.zeros(3),), dict(batch_size=0), "batch_size"),
    ((torch.zeros(3),), dict(batch_size=-2), "batch_size"),
    ((torch.zeros(3),), dict(batch_size=2.0), "batch_size"),
    ((torch.zeros(3),), dict(batch_size=True), "batch_size"),
])
def test_batchloader_validation(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.BatchLoader(*args, **kwargs)


@pytest.mark.parametrize("args, kwargs, match", [
    ((np.zeros(3),), {}, "takes tensors"), ((torch.zeros(3),), dict(transform="flip"), "transform must be callable"),
    ((torch.zeros(3),), dict(shuffle="no"), "shuffle must be True or False"),
    ((torch.zeros(3),), dict(drop_last=1), "drop_last must be True or False"),
])
def test_batchloader_wants_tensors_bools_and_a_callable_transform(args, kwargs, match):
    with pytest.raises(TypeError, match=match):
        data.BatchLoader(*args, **kwargs)


# Fingerprints -----------------------------------------------------------------

def _loader(**kwargs):
    x = torch.arange(24, dtype=torch.float32).reshape(6, 1, 2, 2)
    settings = dict(batch_size=4, shuffle=True, drop_last=False, transform=partial(data.random_shift, max_shift=2))
    settings.update(kwargs)
    return data.BatchLoader(x, torch.arange(6), **settings)


def test_batchloader_fingerprint_changes_with_what_it_yields():
    base = _loader().fingerprint()
    assert "0x" not in base and base == _loader().fingerprint()
    changed = [
        _loader(batch_size=3), _loader(shuffle=False), _loader(drop_last=True),
        _loader(transform=partial(data.random_shift, max_shift=1)), _loader(transform=None),
        data.BatchLoader(torch.zeros(6, 1, 2, 2), torch.arange(6), batch_size=4, shuffle=True,
                         transform=partial(data.random_shift, max_shift=2)),
    ]
    prints = [loader.fingerprint() for loader in changed]
    assert len(set(prints + [base])) == len(prints) + 1


FINGERPRINT_SCRIPT = """
from functools import partial
import torch
from dlbook import data
x = torch.arange(24, dtype=torch.float32).reshape(6, 1, 2, 2)
loader = data.BatchLoader(x, torch.arange(6), batch_size=4, shuffle=True, drop_last=False,
                          transform=partial(data.random_shift, max_shift=2))
print(loader.fingerprint())
"""


def test_batchloader_fingerprint_is_the_same_in_another_process():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", FINGERPRINT_SCRIPT], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert out.strip() == _loader().fingerprint()


# random_shift -----------------------------------------------------------------

def _shift(x, dy, dx, fill):
    """x (..., H, W) moved down by dy and right by dx, the border filled."""
    H, W = x.shape[-2:]
    out = torch.full_like(x, fill)
    src = x[..., max(0, -dy):H - max(0, dy), max(0, -dx):W - max(0, dx)]
    out[..., max(0, dy):max(0, dy) + src.shape[-2], max(0, dx):max(0, dx) + src.shape[-1]] = src
    return out


def test_random_shift_is_a_shifted_copy():
    torch.manual_seed(0)
    B, C, H, W, s = 300, 3, 6, 7, 2
    x = torch.rand(B, C, H, W) + 1
    x[:, :, 0, 0] = 0.0  # every image has the same minimum, its background
    out = data.random_shift(x, max_shift=s)
    assert out.shape == x.shape and out.dtype == x.dtype
    shifts = [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)]
    match = torch.stack([(out == _shift(x, dy, dx, 0.0)).flatten(1).all(1) for dy, dx in shifts])  # (25, B)
    assert torch.all(match.sum(0) == 1), "every image is exactly one shifted copy, all channels alike"
    assert torch.all(match.any(1)), "every shift in range occurs"
    assert not torch.equal(out, x)


def test_random_shift_reproducible_under_seed():
    x = torch.randn(4, 1, 8, 8)
    torch.manual_seed(5)
    a = data.random_shift(x)
    torch.manual_seed(5)
    assert torch.equal(a, data.random_shift(x))


def test_random_shift_zero_is_identity():
    x = torch.randn(3, 2, 5, 5)
    assert torch.equal(data.random_shift(x, max_shift=0), x)


@pytest.mark.parametrize("shape", [(5, 5), (1, 5, 5), (1, 1, 1, 5, 5)])
def test_random_shift_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match="B, C, H, W"):
        data.random_shift(torch.zeros(shape))


@pytest.mark.parametrize("max_shift", [-1, 1.5, True])
def test_random_shift_rejects_a_bad_shift(max_shift):
    with pytest.raises(ValueError, match="max_shift"):
        data.random_shift(torch.zeros(1, 1, 4, 4), max_shift=max_shift)


@pytest.mark.parametrize("size, max_shift, bound", [((8, 8), 100, 7), ((8, 8), 8, 7), ((6, 7), 6, 5),
                                                    ((28, 28), 28, 27), ((1, 5), 1, 0)])
def test_random_shift_refuses_a_shift_that_moves_the_image_out(size, max_shift, bound):
    H, W = size
    with pytest.raises(ValueError) as err:
        data.random_shift(torch.rand(2, 1, H, W), max_shift)
    assert str(err.value) == (f"max_shift must be at most {bound} for {H}x{W} images (the side minus 1: a shift "
                              f"of {bound + 1} moves the whole image out of the frame); got {max_shift}")


def test_random_shift_up_to_the_side_minus_one_keeps_part_of_the_image():
    torch.manual_seed(0)
    x = torch.rand(200, 1, 6, 7) + 1
    x[:, :, 0, 0] = 0  # each image's background (its minimum), which fills the border
    out = data.random_shift(x, max_shift=5)
    assert out.shape == x.shape
    assert (out.flatten(1) > 0).any(1).all(), "every image keeps at least one pixel of itself"
    assert ((out.flatten(1) > 0).sum(1) <= 2).any(), "a shift of 5 and 5 leaves a corner of 1 by 2 pixels"
    flat = torch.rand(3, 1, 1, 5)
    assert data.random_shift(flat, 0) is flat  # a zero shift needs no room


def test_random_shift_fills_with_each_images_own_minimum():
    torch.manual_seed(0)
    x = torch.rand(16, 1, 6, 6)
    x[:8] += 5  # images 0..7 have their minimum above 5
    out = data.random_shift(x, max_shift=2)
    for b in range(16):
        assert out[b].min() >= x[b].min()
