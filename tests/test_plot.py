"""dlbook.plot: figures with titles and labels; the confusion matrix counts."""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from dlbook import plot
from dlbook.train import History


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_figures_render_off_screen():
    """The tests draw without a display: a figure renders to pixels in memory
    (the Agg backend), and showing it neither blocks nor fails."""
    assert matplotlib.get_backend().lower() == "agg" and not plt.isinteractive()
    fig = plot.learning_curves({"run": _history()}, title="Loss")
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())
    width, height = fig.get_size_inches() * fig.dpi
    assert pixels.shape == (round(height), round(width), 4)
    assert len(np.unique(pixels.reshape(-1, 4), axis=0)) > 10  # lines and text, not a blank canvas
    plt.show()  # a no-op without a display


# image_grid -------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 8, 8), (5, 1, 8, 8), (5, 3, 8, 8)])
def test_image_grid_shapes(shape):
    images = torch.rand(shape)
    fig = plot.image_grid(images, labels=list("abcde"), ncols=3, title="Samples")
    assert isinstance(fig, Figure)
    assert fig._suptitle is not None and fig._suptitle.get_text() == "Samples"
    axes = fig.axes
    assert len(axes) == 6  # 2 rows of 3
    assert [ax.get_title() for ax in axes[:5]] == list("abcde")
    assert not axes[5].axison  # the empty cell is hidden
    shown = axes[0].images[0].get_array()
    assert shown.shape[:2] == (8, 8)
    assert shown.min() == pytest.approx(0) and shown.max() == pytest.approx(1)  # stretched


def test_image_grid_accepts_numpy_and_keeps_values_without_normalize():
    images = np.full((2, 4, 4), 0.25)
    fig = plot.image_grid(images, normalize=False)
    assert len(fig.axes) == 2
    assert np.allclose(fig.axes[0].images[0].get_array(), 0.25)
    assert fig._suptitle is None  # no title asked for


def test_image_grid_constant_image_is_black():
    fig = plot.image_grid(torch.ones(1, 3, 3))
    assert np.all(fig.axes[0].images[0].get_array() == 0)


@pytest.mark.parametrize("images, kwargs, match", [
    (torch.rand(2, 2, 5, 5), {}, "channels"),
    (torch.rand(5, 5), {}, "B, H, W"),
    (torch.rand(1, 2, 1, 5, 5), {}, "B, H, W"),
    (torch.rand(0, 5, 5), {}, "no images"),
    (torch.rand(3, 5, 5), dict(labels=["a", "b"]), "labels"),
])
def test_image_grid_rejects_bad_input(images, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot.image_grid(images, **kwargs)


# learning_curves --------------------------------------------------------------

def _history(offset=0.0):
    return History([{"epoch": e, "seconds": 2.0 * e, "train_loss": 1 / e + offset, "val_loss": 1.2 / e}
                    for e in (1, 2, 3)])


def test_learning_curves():
    fig = plot.learning_curves({"sgd": _history(), "adam": _history(0.1)}, title="Loss")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_title() == "Loss" and ax.get_xlabel() == "epoch"
    assert ax.get_ylabel() == "training loss, validation loss"
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["sgd: training loss", "sgd: validation loss", "adam: training loss", "adam: validation loss"]
    x, y = ax.get_lines()[2].get_data()
    assert list(x) == [1, 2, 3] and np.allclose(y, [1.1, 0.6, 1 / 3 + 0.1])
    assert ax.get_lines()[0].get_linestyle() == "--" and ax.get_lines()[1].get_linestyle() == "-"
    assert ax.get_legend() is not None


def test_learning_curves_options():
    h = _history()
    fig = plot.learning_curves({"run": h}, keys=("val_loss", "val_acc"), x="seconds",
                               ylabel="loss", logy=True)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "training time (s)" and ax.get_ylabel() == "loss"
    assert ax.get_yscale() == "log"
    assert [line.get_label() for line in ax.get_lines()] == ["run: validation loss"]  # missing keys skipped
    assert list(ax.get_lines()[0].get_xdata()) == [2.0, 4.0, 6.0]


def test_learning_curves_plain_record_lists():
    fig = plot.learning_curves({"run": [{"epoch": 1, "train_loss": 0.5}]}, keys=("train_loss",))
    assert len(fig.axes[0].get_lines()) == 1


def test_learning_curves_needs_a_history():
    with pytest.raises(ValueError, match="at least one"):
        plot.learning_curves({})


# confusion matrix -------------------------------------------------------------

def test_confusion_matrix_hand_computed():
    y_true = [0, 0, 1, 1, 1, 2, 2, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 2, 2, 0, 2]
    expected = np.array([
        [1, 1, 0],
        [0, 2, 1],
        [1, 0, 3],
    ])
    cm = plot.confusion_matrix(y_true, y_pred)
    assert np.array_equal(cm, expected)
    assert cm.sum() == len(y_true) and np.trace(cm) == 6
    assert np.array_equal(plot.confusion_matrix(torch.tensor(y_true), torch.tensor(y_pred)), expected)


def test_confusion_matrix_num_classes_pads():
    cm = plot.confusion_matrix(np.array([0, 1]), np.array([1, 1]), num_classes=4)
    assert cm.shape == (4, 4) and cm[0, 1] == 1 and cm[1, 1] == 1 and cm.sum() == 2


def test_confusion_matrix_empty():
    assert plot.confusion_matrix([], [], num_classes=3).tolist() == [[0] * 3] * 3


@pytest.mark.parametrize("y_true, y_pred, k", [
    ([0, 1], [0], None),
    ([[0, 1]], [[0, 1]], None),
    ([0, -1], [0, 0], None),
    ([0, 3], [0, 0], 3),
    ([0, 1], [0, 5], 3),
])
def test_confusion_matrix_rejects_bad_input(y_true, y_pred, k):
    with pytest.raises(ValueError):
        plot.confusion_matrix(y_true, y_pred, k)


def test_plot_confusion_matrix():
    names = ["cat", "dog", "emu"]
    fig = plot.plot_confusion_matrix([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], names, title="CM")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_title() == "CM"
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    cells = sorted((t.get_position(), t.get_text()) for t in ax.texts)
    # (x=predicted, y=true): counts of the non-empty cells
    assert cells == [((0, 0), "1"), ((0, 2), "1"), ((1, 0), "1"), ((1, 1), "1"), ((2, 2), "1")]


def test_plot_confusion_matrix_rejects_labels_beyond_the_names():
    with pytest.raises(ValueError):
        plot.plot_confusion_matrix([0, 3], [0, 1], ["a", "b"])


def test_learning_curves_say_what_each_key_is():
    fig = plot.learning_curves({"MNIST": _history()}, keys=("train_loss", "val_loss"))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["MNIST: training loss", "MNIST: validation loss"]
    assert fig.axes[0].get_ylabel() == "training loss, validation loss"


@pytest.mark.parametrize("key, words", [("train_acc", "training accuracy"), ("test_acc", "test accuracy"),
                                        ("val_loss", "validation loss"), ("train_loss_d", "training loss d"),
                                        ("sample_fid", "sample fid"), ("step", "step")])
def test_key_label(key, words):
    assert plot.key_label(key) == words


# bad input: a clear error, or the right result ----------------------------------------

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(images=torch.rand(3, 5, 5), ncols=0), ValueError, "ncols"),
    (dict(images=torch.rand(3, 5, 5), ncols=2.5), ValueError, "ncols"),
    (dict(images=torch.rand(3, 5, 5), ncols=True), ValueError, "ncols"),
    (dict(images=torch.rand(3, 5, 5), scale=0), ValueError, "scale"),
    (dict(images=torch.rand(3, 5, 5), scale=float("nan")), ValueError, "scale"),
    (dict(images=torch.full((2, 5, 5), float("nan"))), ValueError, "NaN"),
    (dict(images=torch.tensor([[[0.0, float("inf")]], [[0.0, 1.0]]])), ValueError, "image 0"),
    (dict(images=np.array([["a", "b"]])), TypeError, "numbers"),
    (dict(images=torch.rand(3, 5, 5, dtype=torch.complex64)), TypeError, "numbers"),
    (dict(images=torch.rand(2, 0, 5)), ValueError, "size 0"),
    (dict(images=torch.rand(3, 5, 5), labels="abc"), ValueError, "labels"),
    (dict(images="images"), TypeError, "numbers"),
    (dict(images=torch.rand(5)), ValueError, "images of shape"),
    (dict(images=torch.rand(3, 5, 5), title=torch.ones(2)), TypeError, "title"),
    (dict(images=torch.rand(3, 5, 5), normalize=torch.ones(2)), TypeError, "normalize"),
    (dict(images=torch.rand(3, 5, 5), normalize="no"), TypeError, "normalize"),
])
def test_image_grid_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        plot.image_grid(**kwargs)


def test_image_grid_numbers_of_every_kind():
    for images in (torch.ones(2, 3, 3, dtype=torch.bool), torch.randint(0, 255, (2, 3, 3), dtype=torch.uint8),
                   torch.rand(2, 3, 3, dtype=torch.bfloat16), np.random.rand(2, 3, 3).tolist()):
        assert len(plot.image_grid(images, ncols=np.int64(2)).axes) == 2


@pytest.mark.parametrize("args, kwargs, error, match", [
    (([],), {}, TypeError, "dict"),
    (({"run": 3},), {}, TypeError, "record dicts"),
    (({"run": [1, 2]},), {}, TypeError, "record dicts"),
    (({"run": {"train_loss": [1.0]}},), {}, TypeError, "record dicts"),
    (({"run": [{"epoch": 1, "train_loss": 1.0}]},), dict(keys=("acc",)), ValueError, "no history has any"),
    (({"run": [{"step": 1, "train_loss": 1.0}]},), dict(keys=("train_loss",)), ValueError, "'epoch'"),
    (({"run": [{"epoch": 1, "train_loss": 1.0}]},), dict(keys=None), ValueError, "keys"),
    (({"run": [{"epoch": 1, "train_loss": 1.0}]},), dict(keys=3), ValueError, "keys"),
    (({"run": [{"epoch": 1, "train_loss": 1.0}]},), dict(keys=()), ValueError, "keys"),
    (({"run": [{"epoch": 1, "train_loss": 1.0}]},), dict(logy="yes"), TypeError, "logy"),
    (({"run": [{"epoch": 1, "train_loss": 1.0}]},), dict(x=["epoch"]), TypeError, "x must be"),
    (({"run": [{"epoch": 1, "train_loss": 1.0}]},), dict(ylabel=torch.ones(2)), TypeError, "ylabel"),
])
def test_learning_curves_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        plot.learning_curves(*args, **kwargs)
    assert not plt.get_fignums(), "a failed call left a figure open"


def test_learning_curves_one_key_as_a_string():
    fig = plot.learning_curves({"run": _history()}, keys="val_loss")
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["run: validation loss"]


@pytest.mark.parametrize("y_true, y_pred, k, error, match", [
    ([0.5, 1.0], [0, 1], None, ValueError, "integer class labels"),
    ([0, float("nan")], [0, 1], None, ValueError, "integer class labels"),
    ([True, False], [0, 1], None, ValueError, "booleans"),
    (["a", "b"], [0, 1], None, TypeError, "numbers"),
    ([0, 1], [0, 1], 0, ValueError, "num_classes"),
    ([0, 1], [0, 1], 2.0, ValueError, "num_classes"),
    ([0, 1], [0, 1], True, ValueError, "num_classes"),
])
def test_confusion_matrix_bad_input(y_true, y_pred, k, error, match):
    with pytest.raises(error, match=match):
        plot.confusion_matrix(y_true, y_pred, k)


def test_confusion_matrix_whole_floats_and_numpy_integers():
    expected = [[1, 0], [1, 1]]
    assert plot.confusion_matrix(torch.tensor([0.0, 1.0, 1.0]), [0, 0, 1]).tolist() == expected
    assert plot.confusion_matrix(np.array([0, 1, 1], dtype=np.int8), [0, 0, 1], np.int64(2)).tolist() == expected


@pytest.mark.parametrize("names, match", [("ab", "class_names"), ([], "class_names"), (None, "class_names")])
def test_plot_confusion_matrix_needs_a_list_of_names(names, match):
    with pytest.raises(ValueError, match=match):
        plot.plot_confusion_matrix([0, 1], [0, 1], names)


def test_image_grid_signed_keeps_the_sign_and_zero_white():
    weights = torch.tensor([[[-2.0, 0.0], [1.0, 2.0]], [[0.5, -0.25], [0.0, 0.0]]])
    fig = plot.image_grid(weights, signed=True, title="kernels")
    images = [ax.get_images()[0] for ax in fig.axes if ax.get_images()]
    assert [im.get_clim() for im in images] == [(-1, 1), (-1, 1)]
    assert np.allclose(images[0].get_array(), [[-1.0, 0.0], [0.5, 1.0]])  # divided by max |w| = 2
    assert np.allclose(images[1].get_array(), [[1.0, -0.5], [0.0, 0.0]])
    assert images[0].get_cmap().name == plot.SIGNED_CMAP
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    plt.close(fig)


def test_confusion_matrix_has_a_colour_bar():
    fig = plot.plot_confusion_matrix([0, 1, 1], [0, 1, 0], ["a", "b"])
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    plt.close(fig)


def test_the_book_style_makes_fonts_readable():
    assert plt.rcParams["font.size"] >= 11 and plt.rcParams["legend.fontsize"] >= 10


def test_pca_2d_matches_the_top_two_singular_directions():
    g = torch.Generator().manual_seed(0)
    # three directions of very different variance, and noise
    basis = torch.linalg.qr(torch.randn(20, 3, generator=g, dtype=torch.float64))[0]  # (C, 3)
    coords = torch.randn(200, 3, generator=g, dtype=torch.float64) * torch.tensor([10.0, 4.0, 1.0])
    h = coords @ basis.T + 5.0 + 0.01 * torch.randn(200, 20, generator=g, dtype=torch.float64)
    z = plot.pca_2d(h)
    centred = h - h.mean(0)
    _, _, Vt = torch.linalg.svd(centred, full_matrices=False)
    exact = centred @ Vt[:2].T  # (N, 2), up to the sign of each column
    assert z.shape == (200, 2)
    for k in range(2):
        assert torch.allclose(z[:, k].abs(), exact[:, k].abs(), rtol=1e-6, atol=1e-6)
    state = torch.random.get_rng_state()
    assert torch.equal(plot.pca_2d(h), z)  # the same on every call
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator untouched
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        plot.pca_2d(torch.randn(5))
