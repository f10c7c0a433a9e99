"""dlbook.student: the student version of a chapter notebook."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from dlbook import student

ROOT = Path(__file__).resolve().parents[1]

MARKED = '''import torch

def conv_params(c_in, c_out, k):
    """The number of parameters of nn.Conv2d(c_in, c_out, k)."""
    ### BEGIN SOLUTION
    weights = c_out * c_in * k * k
    return weights + c_out
    ### END SOLUTION

print(conv_params(1, 6, 5))'''

UNMARKED = "answer = 1 + 3 * 2\nprint(answer)"


def build_notebook():
    outputs = [new_output("stream", name="stdout", text="156\n")]
    return new_notebook(cells=[
        new_markdown_cell("# Exercises", metadata={"tags": ["solution"]}),  # not code: kept
        new_code_cell("import dlbook", execution_count=1),
        new_code_cell(MARKED, metadata={"tags": ["solution", "hide-input"]}, outputs=outputs, execution_count=2),
        new_code_cell(UNMARKED, metadata={"tags": ["solution", "hide-cell"]}, outputs=outputs, execution_count=3),
        new_code_cell("print('hi')", metadata={"tags": ["remove-output"]}, outputs=outputs, execution_count=4),
        new_code_cell('dlbook.exercises.check("cnn.receptive_field", answer)', execution_count=5),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})


def _source(cell):
    return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


def test_solution_cells_become_stubs():
    nb = build_notebook()
    original = json.loads(json.dumps(nb))
    out, count = student.student_notebook(nb)
    assert count == 2
    assert json.loads(json.dumps(nb)) == original  # the input is not modified
    cells = out["cells"]
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
        assert cell["outputs"] == [] and cell["execution_count"] is None
        assert "solution" not in cell["metadata"]["tags"] and "exercise" in cell["metadata"]["tags"]
        assert not {"hide-input", "hide-cell"} & set(cell["metadata"]["tags"])
        assert "1 + 3 * 2" not in _source(cell) and "weights" not in _source(cell)
    # everything else untouched
    for i in (0, 1, 4, 5):
        assert cells[i] == original["cells"][i]
    nbformat.validate(nbformat.from_dict(out))


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
    nb = new_notebook(cells=[new_code_cell("x = 1"), new_markdown_cell("text")])
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
    return subprocess.run([sys.executable, "-m", "dlbook.student", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


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
