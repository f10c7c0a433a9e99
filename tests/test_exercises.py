"""dlbook.exercises: every exercise passes a right answer, fails wrong ones
with a hint, and never prints its solution."""

import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlbook import exercises


def check(key, answer, capsys):
    result = exercises.check(key, answer)
    out = capsys.readouterr().out
    assert all(len(line) <= exercises.WIDTH for line in out.splitlines()), out
    # check() wraps long verdicts; compare the words, so no secret hides behind a line break
    return result, " ".join(out.split())


# The right answers, as a reader would write them ---------------------------------

def _conv1x1(x, weight):
    B, C_in, H, W = x.shape
    y = weight @ x.reshape(B, C_in, H * W)  # (B, C_out, H*W)
    return y.reshape(B, -1, H, W)


RIGHT = {
    "cnn.output_size": lambda W, F, P, S: (W - F + 2 * P) // S + 1,
    "cnn.param_count": lambda c_in, c_out, k: c_out * (c_in * k * k + 1),
    "cnn.conv1x1": _conv1x1,
    "cnn.receptive_field": 7,
}

# Typical mistakes, each with a fragment the hint must contain ------------------
WRONG = {
    "cnn.output_size": [
        (lambda W, F, P, S: math.ceil((W - F + 2 * P) / S) + 1, "hang over the edge"),
        (lambda W, F, P, S: (W - F + 2 * P) / S + 1, "hang over the edge"),
        (lambda W, F, P, S: (W - F + P) // S + 1, "positions"),
        (lambda W, F, P, S: W - F + 2 * P + 1, "positions"),
        (lambda W, F, P, S: (W - F) // S + 1, "positions"),
        (28, "function"),
    ],
    "cnn.param_count": [
        (lambda c_in, c_out, k: c_out * c_in * k * k, "bias"),
        (lambda c_in, c_out, k: c_out * (k * k + 1), "input channels"),
        (lambda c_in, c_out, k: c_in * c_out * k + c_out, "input channels"),
        ("c_out * (c_in * k * k + 1)", "function"),
    ],
    "cnn.conv1x1": [
        (lambda x, w: w @ x.flatten(2), "shape"),  # forgot to reshape back
        (lambda x, w: (w @ x.flatten(2)).reshape(x.shape[0], -1, x.shape[3], x.shape[2]), "shape"),  # H and W swapped
        (lambda x, w: (w @ x.transpose(2, 3).flatten(2)).reshape(x.shape[0], -1, *x.shape[2:]), "values"),  # pixels scrambled
        (lambda x, w: (w @ x.flatten(2)).reshape(x.shape[0], -1, *x.shape[2:]) + 1, "values"),  # a bias from nowhere
        (lambda x, w: torch.ones(3).numpy(), "tensor"),
        (None, "function"),
    ],
    "cnn.receptive_field": [
        (9, "3x3"), (6, "3x3"), (5, "3x3"), (27, "3x3"), (49, "3x3"), (3, "3x3"),
        (7.0, "whole number"), ("7", "whole number"), (True, "whole number"),
    ],
}

# What a hint must never print: the explanation, and the formula in a few spellings
SECRETS = {
    "cnn.output_size": ["floor((W - F + 2P) / S) + 1", "(W - F + 2P) / S", "(W-F+2P)/S", "// S + 1", "/ S) + 1"],
    "cnn.param_count": ["c_out * (c_in * k * k + 1)", "c_in * k * k + 1", "c_in*k*k+1"],
    "cnn.conv1x1": ["C_out x C_in matrix", "over channels"],
    "cnn.receptive_field": ["7"],
}


def test_the_registry_is_what_these_tests_cover():
    assert exercises.keys() == sorted(RIGHT) == sorted(WRONG) == sorted(SECRETS)


@pytest.mark.parametrize("key", sorted(RIGHT))
def test_right_answer_passes(key, capsys):
    result, out = check(key, RIGHT[key], capsys)
    assert result.passed and bool(result) is True
    assert out.startswith(f"PASS [{key}]")
    assert result.message == exercises.get(key).explanation
    assert repr(result).startswith(f"PASS {key}")


@pytest.mark.parametrize("key, answer, hint", [
    (key, answer, hint) for key, cases in WRONG.items() for answer, hint in cases
])
def test_wrong_answer_fails_with_a_hint_and_no_solution(key, answer, hint, capsys):
    result, out = check(key, answer, capsys)
    assert not result.passed and not bool(result)
    assert out.startswith(f"FAIL [{key}] not yet. Hint:")
    assert hint in out
    assert exercises.get(key).explanation not in out
    for secret in SECRETS[key]:
        assert secret not in out, f"the hint gives away {secret!r}"


def test_secrets_are_really_in_the_explanations():
    """The strings the hints must not print are the solutions."""
    for key, secrets in SECRETS.items():
        assert secrets[0] in exercises.get(key).explanation, key


def test_output_size_hint_uses_a_failing_case(capsys):
    result, _ = check("cnn.output_size", lambda W, F, P, S: (W - F + 2 * P) // S + 2, capsys)
    m = re.search(r"W=(\d+), F=(\d+), P=(\d+), S=(\d+) you return (\d+)", result.message)
    W, Fk, P, S, got = map(int, m.groups())
    assert got != (W - Fk + 2 * P) // S + 1


def test_conv1x1_right_answer_matches_conv2d():
    x, w = torch.randn(2, 3, 4, 5), torch.randn(6, 3)
    assert torch.allclose(_conv1x1(x, w), F.conv2d(x, w[:, :, None, None]), atol=1e-5)


@pytest.mark.parametrize("key", ["cnn.output_size", "cnn.param_count", "cnn.conv1x1"])
def test_student_stub_is_not_yet(key, capsys):
    def stub(*args):
        # YOUR CODE HERE
        raise NotImplementedError()

    result, out = check(key, stub, capsys)
    assert not result.passed
    assert "not yet" in out and "NotImplementedError" in out


def test_an_answer_that_crashes_says_what_it_raised(capsys):
    result, out = check("cnn.output_size", lambda W, F, P, S: W / 0, capsys)
    assert not result.passed and "ZeroDivisionError" in out


def test_quiet_check(capsys):
    result = exercises.check("cnn.receptive_field", 7, verbose=False)
    assert result.passed and capsys.readouterr().out == ""


def test_unknown_key():
    with pytest.raises(ValueError, match="cnn.output_size"):
        exercises.check("cnn.nope", 1)
    with pytest.raises(ValueError):
        exercises.get("nope")


def test_prompts_and_explanations_are_written():
    for key in exercises.keys():
        ex = exercises.get(key)
        assert ex.key == key and len(ex.prompt) > 20 and len(ex.explanation) > 20


def test_a_key_cannot_be_registered_twice(monkeypatch):
    monkeypatch.setattr(exercises, "_REGISTRY", dict(exercises._REGISTRY))
    exercises.exercise("test.tmp", "prompt", "why")(lambda answer: None)
    assert exercises.check("test.tmp", 0, verbose=False).passed
    with pytest.raises(ValueError, match="twice"):
        exercises.exercise("test.tmp", "prompt", "why")(lambda answer: None)


def test_result_displays_nothing_more_in_a_notebook(capsys):
    """check() prints the verdict; the returned Result must not show it a second time."""
    from IPython.core.interactiveshell import InteractiveShell

    result = exercises.check("cnn.receptive_field", 7)
    capsys.readouterr()
    data, _ = InteractiveShell.instance().display_formatter.format(result)
    assert data == {}, f"a notebook would display {data}"
    assert repr(result).startswith("PASS cnn.receptive_field")


def test_param_count_gives_the_bias_hint_only_to_a_weights_only_answer(capsys):
    _, out = check("cnn.param_count", lambda c_in, c_out, k: 1, capsys)
    assert "bias" not in out and "you return 1" in out
    _, out = check("cnn.param_count", lambda c_in, c_out, k: c_out * c_in * k * k, capsys)
    assert "every output channel has a bias too" in out


# numbers of every kind ----------------------------------------------------------------

@pytest.mark.parametrize("key, answer", [
    ("cnn.receptive_field", np.int64(7)),
    ("cnn.receptive_field", np.int32(7)),
    ("cnn.output_size", lambda W, F, P, S: np.int64((W - F + 2 * P) // S + 1)),
    ("cnn.param_count", lambda c_in, c_out, k: np.int64(c_out) * (c_in * k * k + 1)),
])
def test_numpy_integers_are_right_answers(key, answer, capsys):
    result, out = check(key, answer, capsys)
    assert result.passed, out


@pytest.mark.parametrize("key, answer, hint", [
    ("cnn.receptive_field", np.float64(7.0), "whole number"),
    ("cnn.receptive_field", np.bool_(True), "whole number"),
    ("cnn.output_size", lambda W, F, P, S: float((W - F + 2 * P) // S + 1), "not an int"),
    ("cnn.output_size", lambda W, F, P, S: np.floor((W - F + 2 * P) / S) + 1, "not an int"),
    ("cnn.param_count", lambda c_in, c_out, k: float(c_out * (c_in * k * k + 1)), "not an int"),
])
def test_right_number_of_the_wrong_type_fails(key, answer, hint, capsys):
    result, out = check(key, answer, capsys)
    assert not result.passed and hint in out
    for secret in SECRETS[key]:
        assert secret not in out


# registering and finding exercises -----------------------------------------------------

@pytest.mark.parametrize("key, prompt, explanation, match", [
    ("nodot", "prompt", "why", "topic.name"),
    ("CNN.x", "prompt", "why", "topic.name"),
    (3, "prompt", "why", "topic.name"),
    ("test.ok", "", "why", "prompt"),
    ("test.ok", "prompt", None, "explanation"),
])
def test_exercise_registration_bad_input(key, prompt, explanation, match):
    with pytest.raises(ValueError, match=match):
        exercises.exercise(key, prompt, explanation)


@pytest.mark.parametrize("key", [None, 3, ["cnn.output_size"]])
def test_check_bad_key(key):
    with pytest.raises(ValueError, match="unknown exercise"):
        exercises.check(key, 1)


def test_check_verbose_must_be_a_bool():
    with pytest.raises(TypeError, match="verbose"):
        exercises.check("cnn.receptive_field", 7, verbose="no")


def test_every_module_of_the_package_is_found():
    folder = Path(exercises.__file__).parent
    topics = {p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")}
    assert topics and topics == {key.split(".")[0] for key in exercises.keys()}


def test_a_new_exercise_module_needs_no_other_edit(tmp_path, monkeypatch):
    """Adding a chapter's exercises is one file: nothing lists the modules."""
    (tmp_path / "newtopic.py").write_text(
        "from dlbook.exercises import exercise\n\n"
        "@exercise('newtopic.answer', 'What is six times seven?', 'Six times seven is 42.')\n"
        "def _answer(answer):\n"
        "    pass\n")
    monkeypatch.setattr(exercises, "__path__", [*exercises.__path__, str(tmp_path)])
    monkeypatch.setattr(exercises, "_REGISTRY", dict(exercises._REGISTRY))
    monkeypatch.delitem(sys.modules, "dlbook.exercises.newtopic", raising=False)
    try:
        assert "newtopic.answer" in exercises.keys()
        assert exercises.check("newtopic.answer", 42, verbose=False).passed
    finally:
        sys.modules.pop("dlbook.exercises.newtopic", None)
        if hasattr(exercises, "newtopic"):
            delattr(exercises, "newtopic")
