"""dlbook.yardstick: the Fréchet distance, the confident rate and class
coverage, the shipped judge and its checksum, the yardstick of real and of
broken samples, the checks of every input, and the sample grid."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import torch

from dlbook import data, yardstick


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _with_exact_moments(n: int, mean: torch.Tensor, std: torch.Tensor, seed: int) -> torch.Tensor:
    """n rows whose sample mean is exactly ``mean`` and whose sample covariance
    (n - 1) is exactly diag(std**2), up to rounding: whitened Gaussian draws."""
    z = _randn(n, len(mean), gen=_gen(seed))  # (n, D)
    z = z - z.mean(0)
    chol = torch.linalg.cholesky(z.T @ z / (n - 1))  # (D, D)
    z = torch.linalg.solve_triangular(chol, z.T, upper=False).T  # sample covariance I
    return mean + z * std  # (n, D)


def _randn(*shape: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def _correlated(n: int, d: int, seed: int) -> torch.Tensor:
    """n draws of a Gaussian with a random mean and a random full covariance."""
    gen = _gen(seed)
    mix, shift = _randn(d, d, gen=gen), _randn(d, gen=gen)
    return _randn(n, d, gen=gen) @ mix + shift  # (n, d)


def _scale(x: torch.Tensor) -> float:
    return float(torch.trace(torch.cov(x.T)))


# the Fréchet distance --------------------------------------------------------------------------

def test_identical_sets_are_at_distance_zero():
    x = _correlated(400, 12, seed=0)
    assert yardstick.frechet_distance(x, x) <= 1e-9 * _scale(x)
    assert yardstick.frechet_distance(x.numpy(), x.numpy()) <= 1e-9 * _scale(x)


def test_two_gaussians_give_the_closed_form_of_their_sample_statistics():
    """With diagonal covariances, d^2 = |mu_a - mu_b|^2 + sum_i (sigma_a,i - sigma_b,i)^2."""
    gen = _gen(1)
    mu_a, mu_b = _randn(8, gen=gen), _randn(8, gen=gen)
    std_a = torch.rand(8, generator=gen, dtype=torch.float64) + 0.5
    std_b = torch.rand(8, generator=gen, dtype=torch.float64) * 2 + 0.1
    a = _with_exact_moments(300, mu_a, std_a, seed=2)
    b = _with_exact_moments(500, mu_b, std_b, seed=3)
    assert torch.allclose(torch.cov(a.T), torch.diag(std_a ** 2), atol=1e-12)  # the set-up holds
    closed = float((mu_a - mu_b).square().sum() + (std_a - std_b).square().sum())
    assert yardstick.frechet_distance(a, b) == pytest.approx(closed, rel=1e-10)


def test_agrees_with_scipys_matrix_square_root_for_correlated_features():
    linalg = pytest.importorskip("scipy.linalg")
    a, b = _correlated(600, 10, seed=4), _correlated(400, 10, seed=5)
    ca, cb = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    root = linalg.sqrtm(ca @ cb).real
    expected = float(np.sum((a.numpy().mean(0) - b.numpy().mean(0)) ** 2)
                     + np.trace(ca + cb - 2 * root))
    assert yardstick.frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_is_symmetric():
    a, b = _correlated(300, 6, seed=6), _correlated(200, 6, seed=7)
    d_ab, d_ba = yardstick.frechet_distance(a, b), yardstick.frechet_distance(b, a)
    assert d_ab > 0 and d_ab == pytest.approx(d_ba, rel=1e-10)


def test_a_translation_of_one_set_adds_its_squared_length():
    a = _correlated(300, 6, seed=8)
    b = _correlated(250, 6, seed=9)
    v = torch.tensor([3.0, -1.0, 0.5, 2.0, 0.0, -4.0], dtype=torch.float64)
    shift = float(2 * (a.mean(0) - b.mean(0)) @ v + v @ v)  # |m_a + v - m_b|^2 - |m_a - m_b|^2
    assert yardstick.frechet_distance(a, a + v) == pytest.approx(float(v @ v), rel=1e-9)
    assert yardstick.frechet_distance(a + v, b) == pytest.approx(
        yardstick.frechet_distance(a, b) + shift, rel=1e-9)


def test_a_rotation_of_both_sets_leaves_it_unchanged():
    a, b = _correlated(300, 7, seed=10), _correlated(300, 7, seed=11)
    q, _ = torch.linalg.qr(torch.randn(7, 7, generator=_gen(12), dtype=torch.float64))  # orthogonal
    rotated = yardstick.frechet_distance(a @ q, b @ q)
    assert rotated == pytest.approx(yardstick.frechet_distance(a, b), rel=1e-9)


@pytest.mark.parametrize("a, b, message", [
    (torch.zeros(10, 4), torch.zeros(10, 5), "same number of features"),
    (torch.zeros(1, 4), torch.zeros(10, 4), "at least 2 rows"),
    (torch.zeros(10), torch.zeros(10, 1), "2-D table of features"),
    (torch.full((10, 3), float("nan")), torch.zeros(10, 3), "finite"),
])
def test_bad_features_are_refused(a, b, message):
    with pytest.raises(ValueError, match=message):
        yardstick.frechet_distance(a, b)


def test_features_that_are_not_a_table_are_refused():
    with pytest.raises(TypeError, match="tensor or an array"):
        yardstick.frechet_distance([[1.0, 2.0], [3.0, 4.0]], torch.zeros(2, 2))


# the confident rate and class coverage ---------------------------------------------------------

def _table(labels: list[int], top: list[float]) -> torch.Tensor:
    """Probabilities: ``top[i]`` on class ``labels[i]``, the rest spread evenly."""
    p = torch.tensor(top, dtype=torch.float64)[:, None]  # (n, 1)
    probs = ((1 - p) / 9).repeat(1, 10)  # (n, K)
    probs[torch.arange(len(labels)), torch.tensor(labels)] = p[:, 0]
    return probs


def test_no_confident_image_gives_rate_and_coverage_zero():
    probs = _table(list(range(10)) * 3, [0.5] * 30)
    assert yardstick.confident_rate(probs) == 0.0
    assert yardstick.class_coverage(probs) == 0.0
    assert yardstick.class_counts(probs).tolist() == [0] * 10


def test_one_class_only_covers_one_tenth():
    probs = _table([3] * 40, [0.99] * 40)
    assert yardstick.confident_rate(probs) == 1.0
    assert yardstick.class_coverage(probs) == pytest.approx(0.1)
    assert yardstick.class_counts(probs).tolist() == [0, 0, 0, 40, 0, 0, 0, 0, 0, 0]


def test_exactly_five_percent_covers_a_class_and_a_little_less_does_not():
    # 60 confident images: class 0 gets 3 (exactly 5%), class 1 gets 2 (3.3%), class 2 gets 55;
    # in floating point 0.05 * 60 = 3.0000000000000004, so a float threshold would miss class 0
    labels = [0] * 3 + [1] * 2 + [2] * 55 + [5] * 40
    top = [0.95] * 60 + [0.6] * 40  # class 5 is never confident
    probs = _table(labels, top)
    assert yardstick.confident_rate(probs) == pytest.approx(0.6)
    assert yardstick.class_coverage(probs) == pytest.approx(0.2)  # classes 0 and 2


def test_confident_means_a_probability_of_at_least_0_9():
    probs = _table([1, 2, 3, 4], [0.9, 0.8999, 1.0, 0.91])
    assert yardstick.confident_rate(probs) == pytest.approx(0.75)
    assert yardstick.class_counts(probs).tolist() == [0, 1, 0, 1, 1, 0, 0, 0, 0, 0]


@pytest.mark.parametrize("probs, message", [
    (torch.randn(5, 10, generator=_gen(0)), "softmax"),  # logits, not probabilities
    (torch.full((5, 9), 1 / 9), r"shape \(n, 10\)"),
    (torch.full((5, 10), float("nan")), "finite"),
    (torch.zeros(0, 10), r"shape \(n, 10\) with n >= 1"),
])
def test_bad_probabilities_are_refused(probs, message):
    for fn in (yardstick.confident_rate, yardstick.class_coverage, yardstick.class_counts):
        with pytest.raises(ValueError, match=message):
            fn(probs)


# the judge -------------------------------------------------------------------------------------

def test_the_shipped_judge_matches_its_hash_loads_and_is_in_eval_mode():
    blob = yardstick.JUDGE_PATH.read_bytes()
    assert hashlib.sha256(blob).hexdigest() == yardstick.JUDGE_SHA256
    assert len(blob) < 1_000_000
    judge = yardstick.load_judge("cpu")
    assert isinstance(judge, yardstick.Judge)
    assert not any(m.training for m in judge.modules())
    judge.train()  # a caller's change of mode does not stick to the shared judge
    assert not yardstick.load_judge("cpu").training


def test_the_judge_classifies_mnist_test_digits_as_its_constant_says(shared_data):
    # the judge's outputs on the test reference, computed once per process as measure uses them
    _, probs, y = yardstick._reference_outputs("test", torch.device("cpu"))
    assert probs.shape == (10_000, 10) and probs.dtype == torch.float64
    x, _ = data.load_images("mnist", "test", limit=50, normalize=False)  # the public way agrees
    rows = torch.from_numpy(data.subset_indices(10_000, 50))
    assert torch.allclose(yardstick.probabilities(x, device="cpu"), probs[rows], atol=1e-6)
    acc = (probs.argmax(1) == y).double().mean().item()
    assert acc >= 0.99
    # a few borderline images may flip on another CPU's arithmetic: 5 in 10,000
    assert acc == pytest.approx(yardstick.JUDGE_TEST_ACC, abs=5e-4)


def test_features_are_the_penultimate_layer(shared_data):
    x, _ = data.load_images("mnist", "val", limit=7, normalize=False)
    h = yardstick.features(x, device="cpu", batch_size=3)
    assert h.shape == (7, yardstick.FEATURES) and h.dtype == torch.float64
    judge = yardstick.load_judge("cpu")
    with torch.no_grad():
        logits = judge(x)
        assert torch.allclose(judge.head(h.float()), logits, atol=1e-5)
    assert (h >= 0).all()  # after the ReLU


def test_tampered_weights_are_refused_before_loading(tmp_path, monkeypatch):
    copy = tmp_path / "judge_mnist.pt"
    shutil.copyfile(yardstick.JUDGE_PATH, copy)
    blob = bytearray(copy.read_bytes())
    blob[len(blob) // 2] ^= 0x01  # one bit of one weight
    copy.write_bytes(bytes(blob))
    monkeypatch.setattr(yardstick, "JUDGE_PATH", copy)
    loaded = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loaded.append(a))
    with pytest.raises(yardstick.JudgeError) as err:
        yardstick.load_judge("cpu")
    text = str(err.value)
    assert str(copy) in text and yardstick.JUDGE_SHA256 in text
    assert hashlib.sha256(bytes(blob)).hexdigest() in text
    assert "python tools/train_judge.py" in text
    assert not loaded, "torch.load ran on unverified weights"


def test_missing_weights_say_how_to_regenerate(tmp_path, monkeypatch):
    monkeypatch.setattr(yardstick, "JUDGE_PATH", tmp_path / "nowhere.pt")
    with pytest.raises(yardstick.JudgeError, match=r"nowhere\.pt.*python tools/train_judge\.py"):
        yardstick.load_judge("cpu")


# the yardstick ---------------------------------------------------------------------------------

@pytest.fixture
def test_digits(shared_data) -> tuple[torch.Tensor, torch.Tensor]:
    return data.load_images("mnist", "test", limit=yardstick.SAMPLES, normalize=False)


def test_real_digits_are_close_confident_and_cover_every_class_unlike_one_or_noise(test_digits):
    x, y = test_digits
    real = yardstick.measure(x, "test", device="cpu")
    assert real.n == yardstick.SAMPLES and real.reference == "test"
    assert real.confident_rate > 0.9 and real.class_coverage == 1.0
    assert sum(real.class_counts) == round(real.confident_rate * yardstick.SAMPLES)

    one_digit = x[y == 7][:1].repeat(yardstick.SAMPLES, 1, 1, 1)  # (SAMPLES, 1, 28, 28)
    noise = torch.rand(yardstick.SAMPLES, 1, 28, 28, generator=_gen(0))
    for fake in (yardstick.measure(one_digit, "test", device="cpu"),
                 yardstick.measure(noise, "test", device="cpu")):
        assert fake.fid_mnist > 20 * real.fid_mnist
        assert fake.class_coverage <= 0.1


def test_the_real_floor_is_validation_digits_close_to_the_test_set(shared_data):
    floor_images = yardstick.real_floor_images()
    val, _ = data.load_images("mnist", "val", normalize=False)
    assert floor_images.shape == (yardstick.SAMPLES, 1, 28, 28)
    val_digits = {image.numpy().tobytes() for image in val}
    assert all(image.numpy().tobytes() in val_digits for image in floor_images)
    assert len({image.numpy().tobytes() for image in floor_images}) == yardstick.SAMPLES
    floor = yardstick.real_floor("test", device="cpu")
    assert floor.confident_rate > 0.9 and floor.class_coverage == 1.0
    noise = yardstick.measure(torch.rand(yardstick.SAMPLES, 1, 28, 28, generator=_gen(1)), "test",
                              device="cpu")
    assert noise.fid_mnist > 20 * floor.fid_mnist
    assert floor.metrics("real") == {"real_fid_mnist": floor.fid_mnist,
                                     "real_confident_rate": floor.confident_rate,
                                     "real_class_coverage": floor.class_coverage}


_GOOD = torch.full((yardstick.SAMPLES, 1, 28, 28), 0.5)


@pytest.mark.parametrize("images, message", [
    (_GOOD[:1999], r"exactly 2,000 images, because every row .* biased by the sample size"),
    (_GOOD[:, 0], r"shape \(n, 1, 28, 28\).*unsqueeze\(1\)"),
    (torch.full((yardstick.SAMPLES, 3, 28, 28), 0.5), r"shape \(n, 1, 28, 28\)"),
    ((_GOOD - 0.1307) / 0.3081, r"must lie in \[0, 1\].*denormalize.*sigmoid"),
    (torch.where(torch.arange(28) == 3, float("nan"), _GOOD), "NaN or infinite"),
    ((_GOOD * 255).to(torch.uint8), r"floating-point images in \[0, 1\].*/ 255"),
])
def test_bad_images_are_refused_with_what_was_expected(images, message):
    with pytest.raises(ValueError, match=message):
        yardstick.measure(images)


def test_an_unknown_reference_is_refused():
    with pytest.raises(ValueError, match=r"reference .* one of 'test', 'val'; got 'train'"):
        yardstick.measure(_GOOD, reference="train")


def test_images_that_are_not_a_tensor_are_refused():
    with pytest.raises(TypeError, match="images must be a torch.Tensor"):
        yardstick.measure(_GOOD.numpy())


# the grid --------------------------------------------------------------------------------------

def test_save_grid_writes_a_10x10_png_of_the_right_size(tmp_path):
    from PIL import Image

    images = torch.rand(100, 1, 28, 28, generator=_gen(2))
    path = yardstick.save_grid(images, tmp_path / "images" / "samples.png")
    with Image.open(path) as png:
        assert png.format == "PNG" and png.mode == "L"
        assert png.size == (10 * 28 + 11 * 2,) * 2
        pixels = np.asarray(png)
    assert pixels[0, 0] == 128  # the mid-grey gap
    assert pixels[2, 2] == round(float(images[0, 0, 0, 0]) * 255)  # the first image's first pixel
    assert pixels[-3, -3] == round(float(images[99, 0, 27, 27]) * 255)  # the last one's last


def test_save_grid_refuses_99_images_and_other_formats(tmp_path):
    with pytest.raises(ValueError, match=r"exactly 100 images, because .* 10x10 grid; got 99"):
        yardstick.save_grid(torch.rand(99, 1, 28, 28), tmp_path / "g.png")
    with pytest.raises(ValueError, match=r"ending in \.png"):
        yardstick.save_grid(torch.rand(100, 1, 28, 28), tmp_path / "g.jpg")
    assert not list(tmp_path.iterdir())
