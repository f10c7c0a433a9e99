"""tools/run_tests.py and tools/execute.py: the test command and the command
that regenerates a chapter's stored outputs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from tools import badges, execute, run_tests

ROOT = Path(__file__).resolve().parents[1]


# run_tests: arguments --------------------------------------------------------------------

@pytest.mark.parametrize("argv, options, paths", [
    (["-n", "2"], ["-n", "2"], []),  # make test: the 2 is -n's value, not a test path
    (["-n", "2", "notebooks"], ["-n", "2"], ["notebooks"]),
    (["-n2", "tests/test_cnn.py"], ["-n2"], ["tests/test_cnn.py"]),
    (["--numprocesses=2", "-x", "tests"], ["--numprocesses=2", "-x"], ["tests"]),
    (["tests", "--ignore=tests/test_site.py"], ["--ignore=tests/test_site.py"], ["tests"]),
    (["-k", "tests", "tests/test_io.py"], ["-k", "tests"], ["tests/test_io.py"]),
    (["--ignore", "tests/test_site.py", "-p", "no:randomly"], ["--ignore", "tests/test_site.py", "-p", "no:randomly"], []),
    (["tests/test_io.py::test_x", "-q"], ["-q"], ["tests/test_io.py::test_x"]),
])
def test_split_args(argv, options, paths):
    assert run_tests.split_args(argv) == (options, paths)


@pytest.mark.parametrize("argv, selected", [
    ([], True),  # tests and notebooks
    (["-n", "2"], True),
    (["tests"], True),
    (["."], True),
    (["tests/test_site.py"], True),
    (["tests/test_site.py::test_site_was_built"], True),
    (["tests/test_cnn.py"], False),
    (["notebooks"], False),
    (["-n", "2", "notebooks"], False),
    (["tests", "--ignore=tests/test_site.py"], False),
    (["--ignore", "tests/test_site.py"], False),
    (["--ignore=tests"], False),
])
def test_selects_site_tests(argv, selected):
    assert run_tests.selects_site_tests(*run_tests.split_args(argv)) is selected


# run_tests: what it runs -------------------------------------------------------------------

@pytest.fixture
def fake_pytest(monkeypatch):
    """pytest.main replaced by a recorder; the variables run_tests sets are restored afterwards."""
    import pytest as real_pytest

    calls = []

    def main(args):
        calls.append((list(args), {v: os.environ.get(v) for v in ("DLBOOK_PROFILE", "DLBOOK_MODELS")}))
        return 0

    monkeypatch.setattr(real_pytest, "main", main)
    monkeypatch.chdir(os.getcwd())
    for var in ("DLBOOK_MODELS", "DLBOOK_CHECKPOINTS", "DLBOOK_RESULTS", "MPLBACKEND"):
        monkeypatch.setenv(var, "restored afterwards")
    return calls


@pytest.fixture
def browser_ready(monkeypatch):
    """As on a machine with Chromium and a CJK font, whatever this one has."""
    monkeypatch.setattr(run_tests, "chromium", lambda: "/usr/bin/chromium")
    monkeypatch.setattr(run_tests, "has_cjk_font", lambda: True)


def test_make_test_runs_every_test_with_two_workers(fake_pytest, browser_ready):
    assert run_tests.main(["-n", "2"]) == 0
    (args, env), = fake_pytest
    assert args[-4:] == ["-n", "2", "tests", "notebooks"]
    assert "--dist" in args and args[args.index("--dist") + 1] == "loadfile"
    assert "--nbval-lax" in args
    assert env["DLBOOK_PROFILE"] == "smoke"
    assert Path(env["DLBOOK_MODELS"]).name == "dlbook_models"  # a temporary folder, not the user's cache
    assert not Path(env["DLBOOK_MODELS"]).exists()  # removed afterwards


def test_given_paths_replace_the_defaults(fake_pytest, monkeypatch):
    monkeypatch.setattr(run_tests, "chromium", lambda: None)  # not needed: no site tests
    monkeypatch.setattr(run_tests, "has_cjk_font", lambda: False)
    assert run_tests.main(["tests/test_io.py", "-q"]) == 0
    (args, _), = fake_pytest
    assert args[-2:] == ["-q", "tests/test_io.py"] and "--dist" not in args


@pytest.fixture
def no_chromium(monkeypatch, tmp_path):
    """A machine with no Chromium anywhere the lookup goes."""
    monkeypatch.delenv(run_tests.CHROMIUM_VAR, raising=False)
    monkeypatch.setattr(run_tests, "CHROMIUM", tmp_path / "no" / "chromium")
    monkeypatch.setattr(run_tests.shutil, "which", lambda name: None)
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path / "no-playwright-browsers"))


@pytest.mark.parametrize("argv", [[], ["-n", "2"], ["tests/test_site.py"]])
def test_missing_chromium_stops_before_pytest_with_one_line(fake_pytest, no_chromium, capsys, argv):
    assert run_tests.main(argv) == 2
    assert fake_pytest == []
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert "apt-get install chromium" in err and "make test SITE=no" in err  # an option `make test` takes


def test_without_the_site_tests_chromium_is_not_needed(fake_pytest, no_chromium, monkeypatch):
    monkeypatch.setattr(run_tests, "has_cjk_font", lambda: False)
    assert run_tests.main(["-n", "2", "--ignore=tests/test_site.py"]) == 0
    (args, _), = fake_pytest
    assert args[-5:] == ["-n", "2", "--ignore=tests/test_site.py", "tests", "notebooks"]


@pytest.mark.parametrize("found, code", [(None, 2), ("/usr/bin/chromium", 0)])
def test_preflight_only_checks(fake_pytest, monkeypatch, capsys, found, code):
    monkeypatch.setattr(run_tests, "chromium", lambda: found)
    monkeypatch.setattr(run_tests, "has_cjk_font", lambda: True)
    monkeypatch.delenv(run_tests.CHROMIUM_VAR, raising=False)
    monkeypatch.setattr(run_tests.shutil, "which", lambda name: None)
    assert run_tests.main(["--preflight"]) == code
    assert fake_pytest == []
    assert capsys.readouterr().err.count("apt-get install chromium") == (1 if found is None else 0)


@pytest.mark.parametrize("font, code", [(False, 2), (None, 0), (True, 0)])  # None: no fc-list to ask
def test_a_missing_cjk_font_stops_before_pytest_with_one_line(fake_pytest, monkeypatch, capsys, font, code):
    monkeypatch.setattr(run_tests, "chromium", lambda: "/usr/bin/chromium")
    monkeypatch.setattr(run_tests, "has_cjk_font", lambda: font)
    assert run_tests.main(["--preflight"]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == (1 if code else 0)
    assert ("apt-get install fonts-noto-cjk" in err and "make test SITE=no" in err) == bool(code)


def _fake_fc_list(folder, families: str) -> None:
    """An fc-list on the PATH that answers ``families`` for :lang=zh and nothing else."""
    folder.mkdir(exist_ok=True)
    script = folder / "fc-list"
    script.write_text(f'#!/bin/sh\n[ "$1" = ":lang=zh" ] && printf "%s" "{families}"\nexit 0\n')
    script.chmod(0o755)


@pytest.mark.parametrize("families, found", [("Noto Sans CJK SC,Noto Sans CJK SC Regular\\n", True), ("", False)])
def test_has_cjk_font_asks_fontconfig(monkeypatch, tmp_path, families, found):
    _fake_fc_list(tmp_path / "bin", families)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert run_tests.has_cjk_font() is found
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert run_tests.has_cjk_font() is None


def test_make_test_checks_before_it_builds():
    """`make test` runs the preflight before the data and the book, with the system Python (no venv needed)."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "\ntest: preflight data book\n" in makefile and "\ntest-site: preflight book\n" in makefile
    assert "\t@$(PYTHON) tools/run_tests.py --preflight $(SITE_ARGS)\n" in makefile


def test_preflight_needs_only_the_standard_library(tmp_path):
    """The check runs before the venv exists: run_tests must not import anything else first."""
    script = str(ROOT / "tools" / "run_tests.py")
    code = (f"import runpy, sys; sys.argv = [{script!r}, '--preflight', 'tests/test_io.py']; "
            f"runpy.run_path({script!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_chromium_lookup(monkeypatch, tmp_path):
    monkeypatch.delenv(run_tests.CHROMIUM_VAR, raising=False)
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path / "no-playwright-browsers"))
    monkeypatch.setattr(run_tests, "CHROMIUM", tmp_path / "chromium")
    monkeypatch.setattr(run_tests.shutil, "which", lambda name: f"/opt/bin/{name}")
    assert run_tests.chromium() == "/opt/bin/chromium"  # on the PATH
    (tmp_path / "chromium").touch()
    assert run_tests.chromium() == str(tmp_path / "chromium")  # Debian's own first
    monkeypatch.setattr(run_tests, "CHROMIUM", tmp_path / "nothing")
    monkeypatch.setattr(run_tests.shutil, "which", lambda name: None)
    assert run_tests.chromium() is None


def _executable_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_the_variable_names_the_chromium_first(monkeypatch, tmp_path, capsys):
    chrome = _executable_file(tmp_path / "google-chrome")
    monkeypatch.setenv(run_tests.CHROMIUM_VAR, str(chrome))
    assert run_tests.chromium() == str(chrome)  # before Debian's, whatever this machine has
    monkeypatch.setenv(run_tests.CHROMIUM_VAR, str(tmp_path / "not-there"))
    assert run_tests.chromium() is None  # a wrong setting is not silently replaced by another browser
    assert run_tests.main(["--preflight"]) == 2
    err = capsys.readouterr().err
    assert f"DLBOOK_CHROMIUM={tmp_path / 'not-there'} is not an executable file" in err and err.count("\n") == 1


def test_a_snap_chromium_is_passed_over_with_its_own_advice(monkeypatch, tmp_path, capsys, no_chromium):
    snap = tmp_path / "usr" / "bin" / "snap"
    _executable_file(snap)
    link = tmp_path / "snap" / "bin" / "chromium"  # Ubuntu's: /snap/bin/chromium -> /usr/bin/snap
    link.parent.mkdir(parents=True)
    link.symlink_to(snap)
    monkeypatch.setattr(run_tests.shutil, "which", lambda name: str(link))
    assert run_tests.chromium() is None
    assert run_tests.main(["--preflight"]) == 2
    err = capsys.readouterr().err
    assert f"cannot drive {link}, a snap" in err and "playwright install --with-deps chromium" in err
    assert err.count("\n") == 1
    assert run_tests._is_snap("/snap/bin/chromium") and not run_tests._is_snap("/usr/bin/chromium")


def test_playwrights_own_chromium_is_found_the_newest_first(monkeypatch, tmp_path, no_chromium):
    browsers = tmp_path / "ms-playwright"
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(browsers))
    assert run_tests.chromium() is None
    old = _executable_file(browsers / "chromium-999" / "chrome-linux" / "chrome")
    assert run_tests.chromium() == str(old)
    new = _executable_file(browsers / "chromium-1187" / "chrome-linux64" / "chrome")
    _executable_file(browsers / "chromium_headless_shell-2000" / "chrome-linux" / "headless_shell")
    assert run_tests.chromium() == str(new)  # 1187 > 999, as numbers


def test_readme_lists_chromium_and_the_font_among_the_prerequisites():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    prerequisites = " ".join(readme.split("## The two commands", 1)[1].split("```", 1)[0].split())
    assert "apt-get install chromium fonts-noto-cjk" in prerequisites


# The Makefile, through `make -n` (prints the commands, runs none) -------------------------------

def _make_n(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-n", "-B", "-C", str(ROOT), *args], capture_output=True, text=True)


def _readme_make_commands() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    return [line.split("#")[0].split()[1:] for block in blocks for line in block.splitlines()
            if line.startswith("make ")]


def test_every_make_command_of_the_readme_is_one_the_makefile_takes():
    commands = _readme_make_commands()
    targets = {c[0] for c in commands}
    assert {"book", "test", "data", "test-unit", "test-notebooks", "test-site", "execute", "student",
            "venv"} <= targets
    assert ["test", "SITE=no"] in commands and ["venv", "TORCH=cpu"] in commands
    for command in commands:
        done = _make_n(*command)
        assert done.returncode == 0, f"make {' '.join(command)}: {done.stderr}"


def test_make_test_site_no_runs_everything_but_the_site_tests():
    everything = _make_n("test").stdout
    assert "--ignore=tests/test_site.py" not in everything
    lines = _make_n("test", "SITE=no").stdout.splitlines()
    preflight = next(line for line in lines if "--preflight" in line)
    pytest_line = next(line for line in lines if "run_tests.py -n" in line)
    data_line = next(line for line in lines if "-m dlbook.data fetch --all" in line)
    assert preflight.endswith("--ignore=tests/test_site.py") and pytest_line.endswith("--ignore=tests/test_site.py")
    assert lines.index(preflight) < lines.index(data_line) < lines.index(pytest_line)  # the data before the tests
    assert "jupyter-book build" in "\n".join(lines)  # the book is still built, with warnings as errors
    for target in ("test-unit", "test-notebooks"):
        assert ".venv/bin/python -m dlbook.data fetch --all" in _make_n(target).stdout


@pytest.mark.parametrize("setting", ["SITE=maybe", "TORCH=cuda"])
def test_make_refuses_a_setting_it_does_not_know(setting):
    done = _make_n("test", setting)
    assert done.returncode != 0 and "must be" in done.stderr and setting.split("=")[1] in done.stderr


def test_make_venv_torch_cpu_takes_the_cpu_build_before_the_rest():
    lines = _make_n("venv", "TORCH=cpu").stdout.splitlines()
    cpu = next(i for i, line in enumerate(lines) if "--index-url https://download.pytorch.org/whl/cpu" in line)
    rest = next(i for i, line in enumerate(lines) if "-r requirements.txt" in line)
    assert cpu < rest and "grep -E '^torch==' requirements.txt" in lines[cpu]
    assert not any("download.pytorch.org" in line for line in _make_n("venv").stdout.splitlines())


# execute ---------------------------------------------------------------------------------------

def _notebook(cells):
    return new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                              "language": "python"}})


def test_execute_stores_one_clean_run(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBOOK_CHECKPOINTS", "the caller's")
    before = dict(os.environ)
    path = tmp_path / "01_x.ipynb"
    nbformat.write(_notebook([
        new_markdown_cell("# Title"),
        new_code_cell("import os, sys, pathlib\n"
                      "print(os.environ['DLBOOK_PROFILE'])\n"
                      "ckpt = pathlib.Path(os.environ['DLBOOK_CHECKPOINTS'])\n"
                      "print(ckpt.is_dir() and not any(ckpt.iterdir()))\n"
                      "print(ckpt)"),
        new_code_cell("for i in range(3):\n    sys.stdout.write(f'\\rprogress {i}')\n"
                      "    sys.stdout.flush()\nprint()\nprint('done')"),
    ]), path)
    seconds = execute.execute(path, profile="smoke")
    assert seconds > 0
    assert dict(os.environ) == before  # the kernel had its own environment
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == [1, 2]
    profile, fresh, folder = code[0].outputs[0].text.split()
    assert (profile, fresh) == ("smoke", "True")  # a fresh checkpoint folder...
    assert not Path(folder).exists()  # ...removed afterwards
    streams = [o for o in code[1].outputs if o.output_type == "stream"]
    assert len(streams) == 1 and streams[0].text == "progress 2\ndone\n"  # a progress bar keeps its last line


def test_execute_leaves_the_notebook_alone_when_a_cell_fails(tmp_path):
    from nbclient.exceptions import CellExecutionError

    path = tmp_path / "01_x.ipynb"
    nbformat.write(_notebook([new_code_cell("print(1)"), new_code_cell("1 / 0")]), path)
    before = path.read_bytes()
    with pytest.raises(CellExecutionError, match="ZeroDivisionError"):
        execute.execute(path, profile="smoke")
    assert path.read_bytes() == before


@pytest.mark.parametrize("name", ["missing.ipynb", "notes.txt"])
def test_execute_command_refuses_what_is_not_a_notebook(tmp_path, capsys, name):
    if name.endswith(".txt"):
        (tmp_path / name).write_text("x")
    with pytest.raises(SystemExit) as exit_:
        execute.main([str(tmp_path / name)])
    assert exit_.value.code == 2 and "is not a notebook" in capsys.readouterr().err


def test_execute_command_runs_the_smoke_profile(tmp_path, capsys):
    path = tmp_path / "01_x.ipynb"
    nbformat.write(_notebook([new_code_cell("import os; print(os.environ['DLBOOK_PROFILE'])")]), path)
    assert execute.main([str(path), "--profile", "smoke"]) == 0
    assert "smoke profile" in capsys.readouterr().out
    assert nbformat.read(path, as_version=4).cells[0].outputs[0].text == "smoke\n"


def test_execute_command_defaults_to_the_full_profile_and_times_smoke_first(tmp_path, monkeypatch, capsys):
    path = tmp_path / "01_x.ipynb"
    table = ("**Runtime** of the whole notebook:\n\n| profile | what | time |\n|---|---|---|\n"
             "| `smoke` | tiny | SMOKE |\n| `full` | all | FULL |\n\nAfter the table.")
    nbformat.write(_notebook([new_markdown_cell(table)]), path)
    results = tmp_path / "results"
    results.mkdir()
    (results / "x.json").write_text(json.dumps({"seconds": 432.4, "dlbook": badges.version()}))
    monkeypatch.setenv("DLBOOK_RESULTS", str(results))
    runs = []
    monkeypatch.setattr(execute, "execute",
                        lambda p, profile, workdir=None: runs.append((p, profile, workdir)) or 18.6)
    assert execute.main([str(path)]) == 0
    assert [r[1] for r in runs] == ["smoke", "full"]
    assert runs[0][0] != path.resolve() and runs[0][2] == path.resolve().parent  # a scratch copy, same folder
    assert runs[1][:2] == (path.resolve(), "full")
    text = nbformat.read(path, as_version=4).cells[0].source
    assert "| `smoke` | tiny | 19 s |" in text and "| `full` | all | 432 s (7.2 min) |" in text
    assert text.endswith("After the table.")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "$(PY) tools/execute.py $(NB)" in makefile  # make execute: no --profile, so full


def _install_cell(nb) -> str:
    return next(c for c in nb.cells if c.cell_type == "code").source


def test_after_execute_the_install_cell_names_the_version_the_run_recorded(tmp_path, monkeypatch):
    """make execute, end to end on a tiny chapter whose stored run (and install cell) said 0.1.0."""
    config = badges.load_config()
    path = tmp_path / "notebooks" / "01_foundations.ipynb"
    path.parent.mkdir()
    results = tmp_path / "results"
    results.mkdir()
    (results / "foundations.json").write_text(json.dumps({"dlbook": "0.1.0", "seconds": 1.0}))
    monkeypatch.setenv("DLBOOK_RESULTS", str(results))
    nbformat.write(_notebook([
        new_markdown_cell("# Foundations\n\n" + badges.badge_line("notebooks/01_foundations.ipynb", config)),
        new_code_cell(badges.install_source(config, "0.1.0")),
        new_code_cell("import dlbook\ndlbook.results.save('foundations', {'one': 1.0})"),
    ]), path)
    assert badges.named_version(_install_cell(nbformat.read(path, as_version=4))) == "0.1.0"
    assert execute.main([str(path)]) == 0
    record = json.loads((results / "foundations.json").read_text())
    assert record["profile"] == "full" and record["dlbook"] == badges.version()
    nb = nbformat.read(path, as_version=4)
    assert badges.named_version(_install_cell(nb)) == record["dlbook"]
    assert _install_cell(nb) == badges.install_source(config, record["dlbook"])
    assert badges.update(path, config, write=False, root=tmp_path) == []  # what badges.py --check says


def test_a_failed_run_leaves_the_install_cell_as_it_was(tmp_path):
    from nbclient.exceptions import CellExecutionError

    config = badges.load_config()
    path = tmp_path / "01_x.ipynb"
    nbformat.write(_notebook([new_code_cell(badges.install_source(config, "0.1.0")), new_code_cell("1 / 0")]), path)
    before = path.read_bytes()
    with pytest.raises(CellExecutionError):
        execute.execute(path, profile="smoke")
    assert path.read_bytes() == before


def test_execute_says_when_the_kernel_ran_another_dlbook(tmp_path, monkeypatch, capsys):
    path = tmp_path / "01_x.ipynb"
    nbformat.write(_notebook([new_code_cell(badges.install_source(badges.load_config(), badges.version()))]), path)
    results = tmp_path / "results"
    results.mkdir()
    (results / "x.json").write_text(json.dumps({"seconds": 3.0, "dlbook": "0.0.1"}))
    monkeypatch.setenv("DLBOOK_RESULTS", str(results))
    monkeypatch.setattr(execute, "execute", lambda p, profile, workdir=None: 1.0)
    assert execute.main([str(path)]) == 1
    err = capsys.readouterr().err
    assert "recorded dlbook 0.0.1" in err and f"names {badges.version()}" in err and "make venv" in err


@pytest.mark.parametrize("seconds, text", [(0.4, "0 s"), (19.2, "19 s"), (59.4, "59 s"), (60, "60 s (1.0 min)"),
                                           (423.6, "424 s (7.1 min)")])
def test_format_seconds(seconds, text):
    assert execute.format_seconds(seconds) == text


def test_fill_runtime_table_touches_only_the_runtime_rows():
    nb = _notebook([new_markdown_cell("| `full` | other table | 1 s |"),
                    new_markdown_cell("**Runtime**\n\n| `smoke` | a | x |\n| `full` | b | y |\n| `gpu` | c | z |")])
    assert execute.fill_runtime_table(nb, {"smoke": 5.0, "full": 100.0}) == 2
    assert nb.cells[0].source == "| `full` | other table | 1 s |"
    assert nb.cells[1].source == "**Runtime**\n\n| `smoke` | a | 5 s |\n| `full` | b | 100 s (1.7 min) |\n| `gpu` | c | z |"
