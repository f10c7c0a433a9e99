"""dlbook.paths: one rule for every folder dlbook writes."""

import os
import stat
import sys

import pytest

from dlbook import paths


def test_cache_root_moves_every_default_folder(monkeypatch, tmp_path):
    for var in ("DLBOOK_DATA", "DLBOOK_MODELS", "DLBOOK_CHECKPOINTS"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("DLBOOK_CACHE", str(tmp_path / "root"))
    assert paths.cache_root() == tmp_path / "root"
    assert paths.data_dir() == tmp_path / "root"
    assert paths.models_dir() == tmp_path / "root" / "models"
    assert paths.checkpoints_dir() == tmp_path / "root" / "checkpoints"


def test_a_specific_variable_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("DLBOOK_MODELS", str(tmp_path / "m"))
    assert paths.models_dir() == tmp_path / "m"


def test_without_any_variable_the_user_cache_directory(monkeypatch, tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("the XDG layout is Linux-only")
    for var in ("DLBOOK_CACHE", "DLBOOK_DATA", "DLBOOK_MODELS", "DLBOOK_CHECKPOINTS"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.data_dir() == tmp_path / "xdg" / "dlbook"
    assert paths.models_dir() == tmp_path / "xdg" / "dlbook" / "models"
    assert not (tmp_path / "xdg").exists()  # reading a path creates nothing


@pytest.mark.parametrize("var, getter", [("DLBOOK_DATA", paths.data_dir), ("DLBOOK_MODELS", paths.models_dir),
                                         ("DLBOOK_CHECKPOINTS", paths.checkpoints_dir),
                                         ("DLBOOK_CACHE", paths.cache_root)])
def test_tilde_is_expanded_everywhere(monkeypatch, tmp_path, var, getter):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv(var, "~/somewhere")
    if var == "DLBOOK_CACHE":
        for other in ("DLBOOK_DATA", "DLBOOK_MODELS", "DLBOOK_CHECKPOINTS"):
            monkeypatch.delenv(other)
    assert getter() == tmp_path / "home" / "somewhere"


def test_a_relative_path_keeps_the_meaning_it_had_when_first_read(monkeypatch, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    monkeypatch.setenv("DLBOOK_DATA", "relative-data-for-this-test")
    first = paths.data_dir()
    assert first == tmp_path / "a" / "relative-data-for-this-test" and first.is_absolute()
    monkeypatch.chdir(tmp_path / "b")
    assert paths.data_dir() == first  # not b/relative-data...


def test_blank_values_count_as_unset(monkeypatch, tmp_path):
    monkeypatch.setenv("DLBOOK_CACHE", str(tmp_path / "root"))
    monkeypatch.setenv("DLBOOK_MODELS", "   ")
    assert paths.models_dir() == tmp_path / "root" / "models"


def test_writable_dir_creates_and_accepts(tmp_path):
    assert paths.writable_dir(tmp_path / "new" / "deep", "data", "DLBOOK_DATA").is_dir()


def test_writable_dir_refuses_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(PermissionError, match=r"not a folder.*DLBOOK_DATA"):
        paths.writable_dir(target, "data", "DLBOOK_DATA")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_writable_dir_refuses_a_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(PermissionError, match="may not write"):
            paths.writable_dir(ro, "data", "DLBOOK_DATA")
    finally:
        ro.chmod(stat.S_IRWXU)


def test_writable_dir_refuses_a_folder_it_cannot_create(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, so no folder can be made under it")
    with pytest.raises(PermissionError, match=r"cannot be created.*DLBOOK_MODELS"):
        paths.writable_dir(blocker / "sub", "models", "DLBOOK_MODELS")
