"""dlbook.exercises: every exercise passes a right answer, fails wrong ones
with a hint, and never prints its solution."""

import importlib
import sys
from pathlib import Path

import pytest

from dlbook import exercises
from exercise_helpers import check

TESTS = Path(__file__).resolve().parent


def test_every_exercise_has_a_right_answer_tested():
    """Each chapter's test module (tests/test_exercises_<topic>.py) names a right
    answer for every one of its exercises: none is left untested."""
    covered = set()
    for path in sorted(TESTS.glob("test_exercises_*.py")):
        covered |= set(importlib.import_module(path.stem).RIGHT)
    assert covered == set(exercises.keys()), f"untested: {set(exercises.keys()) - covered}"


def test_an_answer_that_crashes_says_what_it_raised(capsys):
    result, out = check("cnn.block_parameters", lambda C, M: C / 0, capsys)
    assert not result.passed and "ZeroDivisionError" in out


def test_quiet_check(capsys):
    result = exercises.check("cnn.classifier_receptive_rows", (-2, 13), verbose=False)
    assert result.passed and capsys.readouterr().out == ""


def test_unknown_key():
    with pytest.raises(ValueError, match="cnn.strided_conv"):
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

    result = exercises.check("cnn.classifier_receptive_rows", (-2, 13))
    capsys.readouterr()
    data, _ = InteractiveShell.instance().display_formatter.format(result)
    assert data == {}, f"a notebook would display {data}"
    assert repr(result).startswith("PASS cnn.classifier_receptive_rows")


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


@pytest.mark.parametrize("key", [None, 3, ["cnn.strided_conv"]])
def test_check_bad_key(key):
    with pytest.raises(ValueError, match="unknown exercise"):
        exercises.check(key, 1)


def test_check_verbose_must_be_a_bool():
    with pytest.raises(TypeError, match="verbose"):
        exercises.check("cnn.classifier_receptive_rows", (-2, 13), verbose="no")


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


# the verdict is shown, the worked answer folded ---------------------------------------

class _Kernel:
    """Stands in for an IPython kernel shell (check() folds only where HTML is shown)."""
    kernel = object()


def test_in_a_notebook_the_verdict_shows_and_the_explanation_is_folded(monkeypatch, capsys):
    import IPython
    from IPython.core import display_functions

    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: _Kernel())
    monkeypatch.setattr(display_functions, "display", lambda obj, raw=False: shown.append((obj, raw)))
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append((obj, raw)))
    key = "cnn.classifier_receptive_rows"
    result = exercises.check(key, (-2, 13))
    out = capsys.readouterr().out
    explanation = exercises.get(key).explanation
    assert result.passed and out == f"PASS [{key}]\n", "only the verdict is printed"
    (data, raw), = shown
    assert raw is True
    html = data["text/html"]
    assert html.startswith('<details class="dlbook-explanation"><summary>') and html.endswith("</details>")
    assert " open" not in html.split(">")[0], "the block must start folded"
    import html as html_module
    assert html_module.escape(explanation) in html
    assert explanation[:40] not in data["text/plain"], "the plain-text form must not give the answer"


def test_html_in_an_explanation_is_escaped(monkeypatch, capsys):
    import IPython

    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: _Kernel())
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append(obj))
    monkeypatch.setattr(exercises, "_REGISTRY", dict(exercises._REGISTRY))
    exercises.exercise("test.markup", "prompt", "x < y & <b>bold</b>")(lambda answer: None)
    exercises.check("test.markup", 0)
    assert "x &lt; y &amp; &lt;b&gt;bold&lt;/b&gt;" in shown[0]["text/html"]


def test_outside_a_notebook_the_explanation_follows_the_verdict(capsys):
    key = "cnn.classifier_receptive_rows"
    exercises.check(key, (-2, 13))
    out = capsys.readouterr().out
    first, rest = out.split("\n", 1)
    assert first == f"PASS [{key}]"
    assert " ".join(rest.split()).startswith("Why: " + " ".join(exercises.get(key).explanation.split())[:30])


def test_a_failure_shows_its_hint_and_no_folded_block(monkeypatch, capsys):
    import IPython

    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: _Kernel())
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append(obj))
    result = exercises.check("cnn.classifier_receptive_rows", (0, 0))
    out = capsys.readouterr().out
    assert not result.passed and out.startswith("FAIL [cnn.classifier_receptive_rows] not yet. Hint:")
    assert shown == []
