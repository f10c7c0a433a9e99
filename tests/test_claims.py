"""dlbook.claim: a measured statement is printed with its evidence, stops a
full-profile run when this run's numbers do not support it, and is never
judged on the smoke profile's tiny data."""

import numpy as np
import pytest
import torch

import dlbook
from dlbook import stats
from dlbook.claims import ClaimError, claim


def test_a_true_claim_prints_statement_and_evidence(full_profile, capsys):
    result = claim("momentum gets furthest", 3.2 > 1.5, {"momentum": 3.2, "sgd": 1.5})
    out = capsys.readouterr().out
    assert out == "CLAIM HOLDS: momentum gets furthest\n    evidence: momentum 3.2; sgd 1.5\n"
    assert result.holds and result.checked and bool(result)


def test_a_false_claim_stops_a_full_run_with_the_numbers(full_profile, capsys):
    with pytest.raises(ClaimError) as info:
        claim("the LSTM is fastest at every length", False, {"LSTM at T=32": 0.0021, "attention at T=32": 0.0017})
    message = str(info.value)
    assert "the LSTM is fastest at every length" in message
    assert "LSTM at T=32 0.0021" in message and "attention at T=32 0.0017" in message
    assert capsys.readouterr().out == "", "nothing is printed as if it held"
    assert isinstance(info.value, AssertionError)


def test_a_smoke_run_never_stops_and_says_it_did_not_check(capsys):
    for holds in (True, False):
        result = claim("within noise of the paper", holds, "0.81 against 0.815")
        out = capsys.readouterr().out
        assert out.startswith("CLAIM NOT CHECKED (smoke profile: tiny data proves nothing): within noise")
        assert "evidence: 0.81 against 0.815" in out
        assert result.checked is False and result.holds is holds


def test_a_notebook_kernel_stops_on_a_false_claim(tmp_path, monkeypatch):
    """In a full-profile notebook run a false claim is an error: the run stops at that cell."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import dlbook\ndlbook.claim('a wins', 1 > 2, {'a': 1, 'b': 2})"),
        nbformat.v4.new_code_cell("print('after the claim')"),
    ])
    monkeypatch.setenv("DLBOOK_PROFILE", "full")
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3")
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="does not support the claim 'a wins'"):
        client.execute()
    assert not nb.cells[1].get("outputs"), "the cell after a false claim must not run"


def test_evidence_from_the_stats_module_prints_its_margin(full_profile, capsys):
    comparison = stats.paired([0.82, 0.83, 0.81], [0.80, 0.80, 0.79])
    claim("GAT beats GCN on these seeds", comparison.mean_diff > 0, comparison)
    out = " ".join(capsys.readouterr().out.split())
    assert "standard errors" in out and "A ahead on 3 of 3" in out


def test_numbers_of_every_kind_are_printed_readably(full_profile, capsys):
    claim("tiny errors", True, {"err": np.float32(3.6e-7), "n": np.int64(60000), "t": torch.tensor(0.5),
                                "ratio": 3.19, "big": 2.5e6})
    out = capsys.readouterr().out
    assert "err 3.6e-07" in out and "n 60,000" in out and "t 0.5" in out and "ratio 3.19" in out
    assert "big 2.5e+06" in out


def test_long_claims_fit_the_output_area(full_profile, capsys):
    claim("word " * 40, True, {f"k{i}": i / 7 for i in range(20)})
    out = capsys.readouterr().out
    assert all(len(line) <= 78 for line in out.splitlines())


@pytest.mark.parametrize("holds", ["yes", 1, 0.0, None, torch.tensor([True, False]), torch.tensor(1.0)])
def test_holds_must_be_a_comparison(holds, full_profile):
    with pytest.raises(TypeError, match="holds must be True or False"):
        claim("something", holds)


def test_numpy_and_tensor_booleans_are_accepted(full_profile, capsys):
    assert claim("np", np.float64(2) > 1).holds
    assert claim("torch", torch.tensor(2.0) > 1).holds
    with pytest.raises(ClaimError):
        claim("torch false", torch.tensor(0.0) > 1)


@pytest.mark.parametrize("statement, error", [("", ValueError), ("   ", ValueError), (None, TypeError),
                                              (3, TypeError)])
def test_statement_must_be_text(statement, error):
    with pytest.raises(error, match="statement"):
        claim(statement, True)


def test_exported_from_the_package():
    assert dlbook.claim is claim and dlbook.ClaimError is ClaimError
