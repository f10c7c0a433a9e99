"""Shared checks for the exercise tests: each chapter's test module names
its right answers, typical wrong answers (with a fragment of the hint each
must get) and the secrets no hint may print, and calls these."""

from dlbook import exercises


def check(key, answer, capsys):
    result = exercises.check(key, answer)
    out = capsys.readouterr().out
    assert all(len(line) <= exercises.WIDTH for line in out.splitlines()), out
    # check() wraps long verdicts; compare the words, so no secret hides behind a line break
    return result, " ".join(out.split())


def assert_passes(key, answer, capsys):
    result, out = check(key, answer, capsys)
    assert result.passed and bool(result) is True, out
    assert out.startswith(f"PASS [{key}]")
    assert result.message == exercises.get(key).explanation
    assert repr(result).startswith(f"PASS {key}")


def assert_fails_with_hint(key, answer, hint, secrets, capsys):
    result, out = check(key, answer, capsys)
    assert not result.passed and not bool(result), out
    assert out.startswith(f"FAIL [{key}] not yet. Hint:"), out
    assert hint in out, out
    assert exercises.get(key).explanation not in out
    for secret in secrets:
        assert secret not in out, f"the hint gives away {secret!r}"


def wrong_cases(wrong: dict) -> list:
    return [(key, answer, hint) for key, cases in wrong.items() for answer, hint in cases]
