"""dlbook.profiles: the smoke/full switch and budget()."""

import pytest

from dlbook import profiles


def test_default_profile_is_full(monkeypatch):
    monkeypatch.delenv("DLBOOK_PROFILE", raising=False)
    assert profiles.get_profile() == "full"
    assert not profiles.is_smoke()


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_value_means_default(monkeypatch, value):
    monkeypatch.setenv("DLBOOK_PROFILE", value)
    assert profiles.get_profile() == "full"


@pytest.mark.parametrize("value", ["smoke", "full", " smoke\n"])
def test_valid_profiles(monkeypatch, value):
    monkeypatch.setenv("DLBOOK_PROFILE", value)
    assert profiles.get_profile() == value.strip()
    assert profiles.is_smoke() == (value.strip() == "smoke")


@pytest.mark.parametrize("value", ["fast", "Smoke", "FULL", "smoke,full", "sm oke", "0", "none"])
def test_invalid_profile_lists_both(monkeypatch, value):
    monkeypatch.setenv("DLBOOK_PROFILE", value)
    with pytest.raises(ValueError) as err:
        profiles.get_profile()
    message = str(err.value)
    assert "smoke" in message and "full" in message and repr(value) in message
    with pytest.raises(ValueError):
        profiles.budget(smoke=1, full=2)


def test_budget_picks_the_active_profile(monkeypatch):
    monkeypatch.setenv("DLBOOK_PROFILE", "smoke")
    assert profiles.budget(smoke=1, full=20) == 1
    monkeypatch.setenv("DLBOOK_PROFILE", "full")
    assert profiles.budget(smoke=1, full=20) == 20
    sentinel = object()
    assert profiles.budget(smoke=None, full=sentinel) is sentinel


def test_budget_takes_keywords_only():
    with pytest.raises(TypeError):
        profiles.budget(1, 20)
    with pytest.raises(TypeError):
        profiles.budget(smoke=1)


def test_budget_is_exported():
    import dlbook

    assert dlbook.budget is profiles.budget
    assert dlbook.get_profile is profiles.get_profile
