"""tools/student.py: the student version of a chapter notebook leaks no answer."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from dlbook import exercises
from tools import student

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

MARKED = '''import torch

def conv_params(c_in, c_out, k):
    """The number of parameters of nn.Conv2d(c_in, c_out, k)."""
    ### BEGIN SOLUTION
    weights = c_out * c_in * k * k
    return weights + c_out
    ### END SOLUTION

print(conv_params(1, 6, 5))'''

UNMARKED = "answer = 1 + 3 * 2\nprint(answer)"


PASS = ("PASS [cnn.receptive_field] Each 3x3 layer adds 2 pixels: 1 + 3 * 2 = 7. Three 3x3 layers see as\n"
        "    far as one 7x7 layer\n")
WRITTEN_ANSWER = "The answer is 7: each layer adds 2 pixels."


def build_notebook():
    outputs = [new_output("stream", name="stdout", text="156\n")]
    return new_notebook(cells=[
        new_markdown_cell("# Exercises"),
        new_code_cell("import dlbook", execution_count=1),
        new_code_cell(MARKED, metadata={"tags": ["solution", "hide-input"]}, outputs=outputs, execution_count=2),
        new_code_cell(UNMARKED, metadata={"tags": ["Solution", "hide-cell"]}, outputs=outputs, execution_count=3),
        new_code_cell("print('hi')", metadata={"tags": ["remove-output"], "execution": {"took": "1 s"}},
                      outputs=outputs, execution_count=4),
        new_code_cell('dlbook.exercises.check("cnn.receptive_field", answer)', execution_count=5,
                      outputs=[new_output("stream", name="stdout", text=PASS)]),
        new_markdown_cell(WRITTEN_ANSWER, metadata={"tags": ["SOLUTION"]}),
        new_code_cell("widget", execution_count=6, outputs=[new_output(
            "display_data", data={"text/plain": "7", "application/vnd.jupyter.widget-view+json": {"model_id": "m"}})]),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                 "language_info": {"name": "python"},
                 "widgets": {"application/vnd.jupyter.widget-state+json": {"state": {"m": {"value": PASS}}}}})


def strings(obj) -> str:
    """Every string anywhere in a JSON value (sources, outputs, metadata), whitespace normalised."""
    if isinstance(obj, str):
        return " ".join(obj.split())
    if isinstance(obj, dict):
        return " ".join(strings(k) + " " + strings(v) for k, v in obj.items())
    if isinstance(obj, list):
        return " ".join(strings(v) for v in obj)
    return ""


def _source(cell):
    return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


def test_solution_cells_become_stubs():
    nb = build_notebook()
    original = json.loads(json.dumps(nb))
    out, count = student.student_notebook(nb)
    assert count == 2
    assert json.loads(json.dumps(nb)) == original  # the input is not modified
    cells = out["cells"]
    assert len(cells) == len(original["cells"]) - 1  # the written-out answer is gone
    marked, unmarked = cells[2], cells[3]
    assert _source(marked) == (
        "import torch\n\n"
        "def conv_params(c_in, c_out, k):\n"
        '    """The number of parameters of nn.Conv2d(c_in, c_out, k)."""\n'
        "    # YOUR CODE HERE\n"
        "    raise NotImplementedError()\n\n"
        "print(conv_params(1, 6, 5))"
    )
    assert _source(unmarked) == "# YOUR CODE HERE\nraise NotImplementedError()"
    for cell in (marked, unmarked):
        assert [t.lower() for t in cell["metadata"]["tags"]] == ["exercise"]
        assert "1 + 3 * 2" not in _source(cell) and "weights" not in _source(cell)
    # every other cell keeps its source and tags
    kept = [c for c in original["cells"] if "SOLUTION" not in c["metadata"].get("tags", [])]
    for i in (0, 1, 4, 5, 6):
        assert cells[i]["source"] == kept[i]["source"]
        assert cells[i]["metadata"].get("tags") == kept[i]["metadata"].get("tags")
    nbformat.validate(nbformat.from_dict(out))


def test_every_output_and_the_widget_state_are_cleared():
    out, _ = student.student_notebook(build_notebook())
    for cell in out["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
        assert "execution" not in cell["metadata"]
    assert set(out["metadata"]) == {"kernelspec", "language_info"}


def test_no_answer_survives_anywhere_in_the_file(tmp_path):
    src = _write(build_notebook(), tmp_path / "03_cnn.ipynb")
    assert student.write_student_version(src, tmp_path / "out.ipynb") == 2
    text = strings(json.loads((tmp_path / "out.ipynb").read_text(encoding="utf-8")))
    answers = ["weights + c_out", "1 + 3 * 2", "156", strings(WRITTEN_ANSWER), "PASS", "Each 3x3 layer adds 2 pixels"]
    leaked = [a for a in answers if a in text]
    assert not leaked, f"the student version still holds {leaked}"
    assert "PASS" in strings(json.loads(src.read_text(encoding="utf-8")))  # the test notebook did hold them


def test_the_stub_runs_and_raises_not_implemented():
    out, _ = student.student_notebook(build_notebook())
    namespace = {}
    source = _source(out["cells"][2]).replace("print(conv_params(1, 6, 5))", "")
    exec(compile(source, "cell", "exec"), namespace)
    with pytest.raises(NotImplementedError):
        namespace["conv_params"](1, 6, 5)


def test_several_blocks_and_list_sources():
    source = ["a = 1\n", "### BEGIN SOLUTION\n", "b = 2\n", "### END SOLUTION\n", "c = 3\n",
              "  ### BEGIN SOLUTION\n", "  d = 4\n", "  ### END SOLUTION\n"]
    nb = new_notebook(cells=[new_code_cell("", metadata={"tags": ["solution"]})])
    nb["cells"][0]["source"] = source
    out, count = student.student_notebook(nb)
    assert count == 1
    assert _source(out["cells"][0]).splitlines() == [
        "a = 1", "# YOUR CODE HERE", "raise NotImplementedError()", "c = 3",
        "  # YOUR CODE HERE", "  raise NotImplementedError()",
    ]


def test_a_notebook_without_solutions_is_unchanged():
    nb = new_notebook(cells=[new_code_cell("x = 1"), new_markdown_cell("text")],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
    out, count = student.student_notebook(nb)
    assert count == 0 and out == json.loads(json.dumps(nb))


@pytest.mark.parametrize("source, match", [
    ("### BEGIN SOLUTION\nx = 1", "without ### END"),
    ("x = 1\n### END SOLUTION", "without ### BEGIN"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\nx\n### END SOLUTION\n### END SOLUTION", "inside another"),
    ("### BEGIN SOLUTION\nx\n### END SOLUTION\n### END SOLUTION", "without ### BEGIN"),
])
def test_malformed_markers_are_an_error(source, match):
    nb = new_notebook(cells=[new_code_cell(source, metadata={"tags": ["solution"]})])
    with pytest.raises(ValueError, match=match):
        student.student_notebook(nb)


def _write(nb, path):
    path.write_text(nbformat.writes(nb), encoding="utf-8")
    return path


def _cli(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "student.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_cli(tmp_path):
    """The real command, in a subprocess."""
    src = _write(build_notebook(), tmp_path / "03_cnn.ipynb")
    out = tmp_path / "student" / "nested" / "03_cnn.ipynb"
    done = _cli(src, "-o", out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 solution cells replaced by stubs" in done.stdout
    nb = nbformat.read(out, as_version=4)
    nbformat.validate(nb)
    assert _source(nb.cells[3]) == student.STUB
    assert "weights" not in out.read_text(encoding="utf-8")


def test_main_default_output(tmp_path, monkeypatch, capsys):
    src = _write(build_notebook(), tmp_path / "03_cnn.ipynb")
    monkeypatch.chdir(tmp_path)
    assert student.main([str(src)]) == 0
    assert (tmp_path / "student" / "03_cnn.ipynb").exists()
    assert "2 solution cells" in capsys.readouterr().out


def _main_error(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        student.main([str(a) for a in args])
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_main_errors(tmp_path, capsys):
    assert "does not exist" in _main_error([tmp_path / "nope.ipynb"], capsys)
    bad_json = tmp_path / "bad.ipynb"
    bad_json.write_text("{not json")
    assert "not a notebook" in _main_error([bad_json, "-o", tmp_path / "x.ipynb"], capsys)
    nb = new_notebook(cells=[new_code_cell("### BEGIN SOLUTION\nx", metadata={"tags": ["solution"]})])
    err = _main_error([_write(nb, tmp_path / "m.ipynb"), "-o", tmp_path / "x.ipynb"], capsys)
    assert "m.ipynb" in err and "END SOLUTION" in err
    assert not (tmp_path / "x.ipynb").exists()
    two = [_write(build_notebook(), tmp_path / f"{i}.ipynb") for i in (1, 2)]
    assert "output folder" in _main_error([*two, "-o", tmp_path / "x.ipynb"], capsys)
    (tmp_path / "a").mkdir()
    same_name = [two[0], _write(build_notebook(), tmp_path / "a" / "1.ipynb")]
    assert "same name" in _main_error([*same_name, "-o", tmp_path / "out"], capsys)
    assert not (tmp_path / "out").exists()


def _spellings(src: Path):
    """Ways to name the source notebook other than its own path."""
    link = src.parent / "link.ipynb"
    link.symlink_to(src)
    hard = src.parent / "hard.ipynb"
    os.link(src, hard)
    return [src, src.parent / "." / src.name, src.parent / ".." / src.parent.name / src.name, link, hard]


def test_never_overwrites_the_source(tmp_path, capsys):
    src = _write(build_notebook(), tmp_path / "03_cnn.ipynb")
    before = src.read_bytes()
    for spelling in _spellings(src):
        with pytest.raises(ValueError, match="refusing to overwrite"):
            student.write_student_version(src, spelling)
        assert "refusing to overwrite" in _main_error([src, "-o", spelling], capsys)
        assert src.read_bytes() == before, spelling
    # the folder of the source as the output folder: student/<name> would be the source
    assert "refusing to overwrite" in _main_error([src, "-o", tmp_path], capsys)
    assert src.read_bytes() == before


def test_every_chapter_into_one_folder(tmp_path):
    """What `make student` runs: all chapters, one folder."""
    done = _cli(*NOTEBOOKS, "-o", tmp_path / "student", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    written = sorted(p.name for p in (tmp_path / "student").iterdir())
    assert written == [p.name for p in NOTEBOOKS]
    assert len(done.stdout.splitlines()) == len(NOTEBOOKS)


def test_make_student_writes_every_chapter():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\nstudent:", 1)[1].split("\n\n", 1)[0]
    assert "tools/student.py $(or $(NB),notebooks/[0-9][0-9]_*.ipynb) -o student/" in recipe


# the real chapters ---------------------------------------------------------------------

def _solutions(nb):
    """(code) bodies between the markers, or the whole cell, of every solution cell; markdown answers."""
    found = []
    for cell in nb["cells"]:
        if student.is_solution(cell):
            body = _source(cell)
            if cell["cell_type"] == "code" and student.BEGIN in body:
                found += [part.split(student.END)[0] for part in body.split(student.BEGIN)[1:]]
            else:
                found.append(body)
    return [" ".join(b.split()) for b in found if b.strip()]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_answer_survives_in_a_chapter(path, tmp_path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    keys = set(re.findall(r'exercises\.check\("([\w.]+)"', strings(nb)))
    answers = _solutions(nb) + [strings(exercises.get(k).explanation) for k in keys]
    assert len(answers) >= 3
    student.write_student_version(path, tmp_path / path.name)
    out = json.loads((tmp_path / path.name).read_text(encoding="utf-8"))
    text = strings(out)
    leaked = [a[:60] for a in answers if a in text]
    assert not leaked, f"answers left in the student version of {path.name}: {leaked}"
    assert "PASS [" not in text
    assert all(not c.get("outputs") for c in out["cells"] if c["cell_type"] == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_version_runs_up_to_the_first_exercise(path, tmp_path, shared_data, monkeypatch):
    """A student starts from the top: everything before the first stub must run (smoke profile)."""
    from nbclient import NotebookClient

    student.write_student_version(path, tmp_path / path.name)
    nb = nbformat.read(tmp_path / path.name, as_version=4)
    first = next(i for i, c in enumerate(nb.cells) if "exercise" in c.metadata.get("tags", []))
    nb.cells = nb.cells[:first]
    monkeypatch.setenv("DLBOOK_PROFILE", "smoke")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on an error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
