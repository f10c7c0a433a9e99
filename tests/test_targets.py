"""book/targets.yml and the results page's machinery (book/_ext/results_table.py).

Every metric of every results file has an entry in targets.yml and every
entry a metric; numbers are written in a format that fits them; met and
missed follow the comparison; the generative comparison fills in from a
results folder of its own; a small Sphinx build shows the directives at work.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from sphinx_helpers import build_html, load_extension

ROOT = Path(__file__).resolve().parents[1]


rt = load_extension("results_table.py", "dlbook_results_table")


@pytest.fixture(scope="module")
def targets():
    return rt.load_targets(ROOT / "book" / "targets.yml")


@pytest.fixture(scope="module")
def results():
    return rt.load_results(ROOT / "results")


# ---------------------------------------------------------------- the book's own files


def test_every_metric_has_an_entry_and_every_entry_a_metric(results, targets):
    assert results, "no results/*.json"
    found = rt.problems(results, targets, rt.bib_keys(ROOT / "book" / "references.bib"))
    assert not found, "\n".join(found)


def test_every_chapter_with_entries_has_a_headline_and_a_title(targets):
    for slug, chapter in targets.chapters.items():
        assert chapter.headline in chapter.entries, slug
        assert chapter.title and chapter.title != slug, slug


def test_every_target_is_recorded_or_a_comparison_and_every_number_has_a_source(targets):
    for chapter in targets.chapters.values():
        for entry in chapter.entries.values():
            assert entry.target.recorded or entry.target.op in rt.COMPARISONS
            for ref in entry.references:
                assert ref.metric or ref.cite or ref.source, entry.key


def test_the_chapters_are_dlbooks():
    from dlbook.results import CHAPTERS

    targets = rt.load_targets(ROOT / "book" / "targets.yml")
    assert set(targets.chapters) <= set(CHAPTERS)
    assert set(targets.generative["chapters"]) <= set(CHAPTERS)
    numbers = rt.chapter_numbers(ROOT / "notebooks")
    assert all(CHAPTERS[n - 1] == slug for slug, n in numbers.items())


def test_the_errors_of_the_stored_runs_are_in_scientific_notation(results, targets):
    shown = 0
    for slug in results:
        for row in rt.chapter_rows(slug, results, targets):
            if "_err" in row.key:
                assert re.fullmatch(r"\d\.\de-\d+", row.value), (row.key, row.value)
                shown += 1
    assert shown >= 10
    attention = {row.key: row for row in rt.chapter_rows("attention", results, targets)}
    value = results["attention"]["metrics"]["attention_parity_max_abs_err"]
    assert attention["attention_parity_max_abs_err"].value == rt.sci(value)
    assert 1e-7 < value < 1e-6 and "0.0000" not in attention["attention_parity_max_abs_err"].value


def test_the_stored_spreads_are_shown_with_their_means(results, targets):
    gnn = {row.key: row for row in rt.chapter_rows("gnn", results, targets)}
    m = results["gnn"]["metrics"]
    assert gnn["cora_gcn_test_acc_mean"].value == (
        f"{m['cora_gcn_test_acc_mean']:.4f} ± {m['cora_gcn_test_acc_std']:.4f} (std, {m['num_seeds']} seeds)")
    assert "cora_gcn_test_acc_std" not in gnn  # shown with its mean, not on a row of its own
    cnn = {row.key: row for row in rt.chapter_rows("cnn", results, targets)}
    assert cnn["mnist_test_acc"].value.endswith("(s.e.)")


# ---------------------------------------------------------------- checks that can fail


def _targets(tmp_path, text: str):
    path = tmp_path / "targets.yml"
    path.write_text(text, encoding="utf-8")
    return rt.load_targets(path)


TINY = """
chapters:
  cnn:
    title: CNN
    headline: test_acc
    metrics:
      test_acc:
        name: test accuracy
        target: ">= 0.9"
        references: [{value: 0.95, what: paper, cite: lecun1998gradient}]
      parity_err: {name: parity, target: "<= 1e-5"}
"""


def _record(metrics: dict, seconds: float = 100.0) -> dict:
    return {"chapter": "x", "profile": "full", "device": "cpu", "device_name": "Test CPU", "threads": 2,
            "torch": "2", "dlbook": "0.2.0", "seed": 0, "finished": "2026-12-01T00:00:00Z",
            "seconds": seconds, "metrics": metrics}


def test_problems_finds_every_mismatch(tmp_path):
    targets = _targets(tmp_path, TINY)
    good = {"cnn": _record({"test_acc": 0.95, "test_acc_stderr": 0.002, "parity_err": 1e-7})}
    assert rt.problems(good, targets, {"lecun1998gradient"}) == []
    cases = {
        "has no entry": {"cnn": _record({"test_acc": 0.95, "parity_err": 1e-7, "new_metric": 1.0})},
        "names no metric": {"cnn": _record({"test_acc": 0.95})},
        "has no chapter": {**good, "gnn": _record({"x_acc": 0.8})},
    }
    for message, res in cases.items():
        found = rt.problems(res, targets, {"lecun1998gradient"})
        assert len(found) == 1 and message in found[0], (message, found)
    assert "is not in book/references.bib" in rt.problems(good, targets, {"other"})[0]
    with_spread_entry = _targets(tmp_path, TINY + "      test_acc_stderr: {name: spread, target: recorded}\n")
    assert "is a spread" in rt.problems(good, with_spread_entry)[0]
    no_results = rt.problems({}, targets)
    assert no_results == ["book/targets.yml: chapter 'cnn' has entries but no results/cnn.json"]


@pytest.mark.parametrize("text, match", [
    ("chapters: {cnn: {title: C, headline: a, metrics: {a: {target: recorded}}}}", "name"),
    ("chapters: {cnn: {title: C, headline: a, metrics: {a: {name: A}}}}", "target"),
    ("chapters: {cnn: {title: C, headline: a, metrics: {a: {name: A, target: 'about 0.9'}}}}", "expected 'recorded'"),
    ("chapters: {cnn: {title: C, headline: a, metrics: {a: {name: A, target: '=> 0.9'}}}}", "expected 'recorded'"),
    ("chapters: {cnn: {title: C, headline: a, metrics: {a: {name: A, target: '>= 0.9x'}}}}", "neither a number"),
    ("chapters: {cnn: {title: C, headline: a, metrics: {a: {name: A, target: recorded, format: pct}}}}", "format"),
    ("chapters: {cnn: {title: C, headline: a, metrics: {a: {name: A, target: recorded, colour: red}}}}", "unknown"),
    ("chapters: {cnn: {title: C, headline: a, metrics: {a: {name: A, target: recorded, "
     "references: [{value: 0.9, what: paper}]}}}}", "cite"),
    ("chapters: {cnn: {title: C, headline: a, metrics: {a: {name: A, target: recorded, "
     "references: [{value: 0.9, metric: b, what: x}]}}}}", "either"),
    ("metrics: {}", "chapters"),
])
def test_a_malformed_targets_file_is_refused_with_its_place(tmp_path, text, match):
    with pytest.raises(rt.TargetsError, match=match):
        _targets(tmp_path, text)


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("key, value, expected", [
    ("attention_parity_max_abs_err", 3.5762786865234375e-07, "3.6e-7"),
    ("backprop_max_abs_err", 8.326672684688674e-17, "8.3e-17"),
    ("gradcheck_max_rel_err", 6.639649331712471e-08, "6.6e-8"),
    ("some_err", 0.0, "0"),
    ("mnist_test_acc", 0.9947999894618988, "0.9948"),
    ("seq2seq_greedy_exact_match", 1.0, "1.0000"),
    ("cora_gcn_seconds_per_run", 1.444499174900011, "1.44 s"),
    ("mnist_train_seconds", 43.705, "43.7 s"),
    ("char_gpt_train_seconds", 320.948, "321 s (5.3 min)"),
    ("attention_vs_sdpa_time_ratio", 3.1888868378126305, "3.19×"),
    ("kv_cache_speedup", 1.853033974411515, "1.85×"),
    ("parameters", 127722, "127,722"),
    ("char_gpt_val_loss", 1.5813090821768743, "1.581"),
    ("softmax_peak_lr", 0.01, "0.01"),
    ("gan_class_coverage", 0.9, "0.90"),
    ("gan_confident_rate", 0.6123, "0.6123"),
])
def test_each_kind_of_number_has_its_format(key, value, expected):
    assert rt.format_metric(key, {key: value}) == expected


def test_a_format_in_the_entry_wins_over_the_key():
    entry = rt.Entry("mlp_regularized", "chosen", rt.Target(), format="yesno")
    assert rt.format_metric("mlp_regularized", {"mlp_regularized": 1.0}, entry) == "yes"
    assert rt.format_metric("mlp_regularized", {"mlp_regularized": 0.0}, entry) == "no"
    assert rt.format_metric("mlp_regularized", {"mlp_regularized": 1.0}) == "1"


def test_spreads_are_shown_with_their_mean_when_a_partner_exists():
    m = {"a_acc_mean": 0.8148000001907348, "a_acc_std": 0.007036418640060184, "num_seeds": 10,
         "b_acc": 0.9948, "b_acc_stderr": 0.00072, "c_acc": 0.5, "d_acc_std": 0.01,
         "e_acc": 1.0, "e_acc_std": 0.0}
    seeded = rt.Entry("a_acc_mean", "A", rt.Target(), seeds="num_seeds")
    assert rt.format_metric("a_acc_mean", m, seeded) == "0.8148 ± 0.0070 (std, 10 seeds)"
    assert rt.format_metric("a_acc_mean", m) == "0.8148 ± 0.0070 (std)"
    assert rt.format_metric("b_acc", m) == "0.9948 ± 0.0007 (s.e.)"
    assert rt.format_metric("c_acc", m) == "0.5000"  # no partner, no spread
    assert rt.format_metric("d_acc_std", m) == "0.0100"  # a spread without its mean is a number
    assert rt.format_metric("e_acc", m) == "1.0000 ± 0.0000 (std)"
    assert rt.spread_keys(m) == {"a_acc_std", "b_acc_stderr", "e_acc_std"}


@pytest.mark.parametrize("threshold, kind, expected", [
    (1e-5, "sci", "1e-5"), (1e-9, "sci", "1e-9"), (0.993, "accuracy", "0.993"), (0.81, "accuracy", "0.81"),
    (60.0, "seconds", "60 s"), (1.65, "number", "1.65"),
])
def test_targets_are_written_as_they_were_set(threshold, kind, expected):
    assert rt.format_threshold(threshold, kind) == expected


# ---------------------------------------------------------------- met and missed


@pytest.mark.parametrize("target, value, expected", [
    (">= 0.993", 0.9948, "met"), (">= 0.993", 0.9929, "missed"), (">= 0.993", 0.993, "met"),
    ("> 0.5", 0.5, "missed"), ("<= 1e-5", 3.6e-7, "met"), ("<= 1e-5", 1.2e-5, "missed"),
    ("< 0.2", 0.19999, "met"), ("recorded", 0.1, "recorded"),
])
def test_met_or_missed_follows_the_comparison(target, value, expected):
    assert rt.verdict(rt.parse_target(target), value, {}) == expected


def test_a_target_can_be_another_metric_of_the_run():
    target = rt.parse_target("< plain_deep_final_loss")
    assert target.metric == "plain_deep_final_loss" and target.op == "<"
    assert rt.verdict(target, 0.11, {"plain_deep_final_loss": 0.15}) == "met"
    assert rt.verdict(target, 0.16, {"plain_deep_final_loss": 0.15}) == "missed"


def test_the_verdict_uses_the_unrounded_number(tmp_path):
    targets = _targets(tmp_path, TINY)
    results = {"cnn": _record({"test_acc": 0.89996, "parity_err": 1.00001e-5})}  # shown as 0.9000 and 1.0e-5
    rows = {row.key: row for row in rt.chapter_rows("cnn", results, targets)}
    assert rows["test_acc"].value == "0.9000" and rows["test_acc"].verdict == "missed"
    assert rows["parity_err"].value == "1.0e-5" and rows["parity_err"].verdict == "missed"
    assert rows["test_acc"].target == "≥ 0.9" and rows["parity_err"].target == "≤ 1e-5"
    assert "{cite:p}`lecun1998gradient`" in rows["test_acc"].references[0]


def test_a_metric_without_an_entry_is_still_shown_by_its_key(tmp_path):
    targets = _targets(tmp_path, TINY)
    rows = rt.chapter_rows("cnn", {"cnn": _record({"test_acc": 0.95, "parity_err": 1e-7, "new_thing": 2.5})}, targets)
    assert [r.key for r in rows] == ["test_acc", "parity_err", "new_thing"]
    assert "no entry" in rows[-1].name and rows[-1].value == "2.5"


def test_the_summary_row_is_the_headline_with_its_run(tmp_path):
    targets = _targets(tmp_path, TINY)
    results = {"cnn": _record({"test_acc": 0.95, "test_acc_stderr": 0.002, "parity_err": 2e-5}, seconds=254.8)}
    (row,) = rt.summary_rows(results, targets, {"cnn": 3})
    assert (row.number, row.title, row.headline, row.verdict) == (3, "CNN", "test accuracy", "met")
    assert row.value == "0.9500 ± 0.0020 (s.e.)" and row.target == "≥ 0.9"
    assert (row.met, row.targets) == (1, 2)  # the parity error of 2e-5 missed its target
    assert row.wall_time == "255 s (4.2 min)" and row.device == "CPU (Test CPU), 2 threads"
    assert row.reference.startswith("**0.95** paper")


# ---------------------------------------------------------------- the generative comparison


def _write(folder: Path, slug: str, metrics: dict):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{slug}.json").write_text(json.dumps(_record(metrics) | {"chapter": slug}), encoding="utf-8")


GENERATIVE = {
    "vae": {"vae_test_neg_elbo": 98.7, "vae_fid_mnist": 21.5, "vae_confident_rate": 0.71, "vae_class_coverage": 1.0,
            "real_fid_mnist": 0.8, "real_confident_rate": 0.98, "real_class_coverage": 1.0},
    "gan": {"gan_fid_mnist": 12.25, "gan_confident_rate": 0.8, "gan_class_coverage": 0.9},
    "diffusion": {"ddpm_fid_mnist": 4.5, "ddpm_confident_rate": 0.85, "ddpm_class_coverage": 1.0,
                  "cfg_fid_mnist": 3.0, "cfg_label_accuracy": 0.97, "ancestral_confident_rate": 0.7},
}


def test_the_generative_comparison_fills_in_as_chapters_land(tmp_path, targets):
    folder = tmp_path / "results"
    folder.mkdir()
    rows, landed, missing = rt.generative_rows(rt.load_results(folder), targets)
    assert rows == [] and landed == [] and missing == ["vae", "gan", "diffusion"]

    _write(folder, "gan", GENERATIVE["gan"])
    rows, landed, missing = rt.generative_rows(rt.load_results(folder), targets)
    assert [r.model for r in rows] == ["GAN"] and landed == ["gan"] and missing == ["vae", "diffusion"]
    assert rows[0].values == {"fid_mnist": "12.25", "confident_rate": "0.8000", "class_coverage": "0.90"}

    for slug in ("vae", "diffusion"):
        _write(folder, slug, GENERATIVE[slug])
    order = ["vae", "gan", "diffusion"]
    rows, landed, missing = rt.generative_rows(rt.load_results(folder, order), targets)
    assert landed == order and missing == []
    assert [r.model for r in rows] == ["real digits (validation split), the floor", "VAE", "GAN",
                                       "DDPM, unconditional", "DDPM, classifier-free guidance"]
    assert [r.chapter for r in rows] == ["vae", "vae", "gan", "diffusion", "diffusion"]
    assert rows[-1].values == {"fid_mnist": "3.00", "confident_rate": "–", "class_coverage": "–"}


def test_a_sample_grid_has_a_default_place_and_can_be_named(tmp_path):
    targets = _targets(tmp_path, TINY + "generative:\n  sample_grids: {gan: book/images/gan_grid.png}\n")
    assert rt.sample_grid("vae", targets) == "book/images/vae_samples.png"
    assert rt.sample_grid("gan", targets) == "book/images/gan_grid.png"


# ---------------------------------------------------------------- runtimes (the how-to page)


def test_the_smoke_time_comes_from_the_notebooks_runtime_table(tmp_path):
    table = ("**Runtime** of the whole notebook:\n\n| profile | what it runs | time |\n|---|---|---|\n"
             "| `smoke` | tiny subsets | 14 s |\n| `full` | what this page shows | 145 s (2.4 min) |\n")
    nb = tmp_path / "01_x.ipynb"
    nb.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": table.splitlines(True)}]}))
    assert rt.smoke_time(nb) == "14 s"
    nb.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": ["# no table"]}]}))
    assert rt.smoke_time(nb) is None
    assert rt.smoke_time(tmp_path / "missing.ipynb") is None


def test_every_stored_chapter_has_its_smoke_time_and_device(results, targets):
    rows = rt.runtime_rows(results, targets, ROOT)
    assert [r.slug for r in rows] == list(results)
    for row in rows:
        assert re.fullmatch(r"\d+ s", row.smoke), (row.slug, row.smoke)
        assert row.full.startswith(f"{results[row.slug]['seconds']:.0f} s") or row.seconds < 120
        assert results[row.slug]["device_name"] in row.device


def _runtime(slug, number, seconds, threads=2):
    return rt.RuntimeRow(slug, number, slug.title(), seconds, rt.seconds(seconds), "CPU", "10 s", threads)


def test_the_gpu_advice_names_the_longest_chapters():
    rows = [_runtime("attention", 4, 76.0), _runtime("cnn", 3, 255.0), _runtime("transformer", 5, 688.0),
            _runtime("diffusion", 9, 2400.0)]
    advice = rt.gpu_advice(rows).replace("\u00a0", " ")
    assert advice.startswith("The longest full runs: 09 Diffusion (40.0 min), 05 Transformer (11.5 min), "
                             "03 Cnn (4.2 min).")
    assert "longer than 5 minutes: 09 Diffusion (40.0 min), 05 Transformer (11.5 min)." in advice
    assert "Attention" not in advice
    assert "No chapter needs one: every run in the table was made on a CPU with 2 threads" in advice
    short = rt.gpu_advice([_runtime("cnn", 3, 255.0), _runtime("attention", 4, 76.0)])
    assert "Every full run took under 5 minutes" in short and "A GPU saves the most" not in short
    on_a_gpu = rt.gpu_advice([_runtime("cnn", 3, 255.0), _runtime("attention", 4, 76.0, threads=None)])
    assert "No chapter needs one" not in on_a_gpu  # not shown by these runs
    assert rt.gpu_advice([]) == "No chapter has a stored full run yet."


# ---------------------------------------------------------------- the directives in a real Sphinx build


def _image(path: Path):
    # a 1x1 PNG
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"))


def test_the_directives_in_a_sphinx_build_with_a_results_folder_of_their_own(tmp_path):
    """A tiny book: two ordinary chapters, the three generative ones landed, one
    metric without an entry. The results page shows the summary, every chapter,
    the generative table with the sample grids side by side; a warning names the
    stray metric; the runtime table reads each notebook's smoke time."""
    import yaml
    src = tmp_path / "src"
    for folder in ("book", "notebooks", "results"):
        (src / folder).mkdir(parents=True)
    shutil.copy(ROOT / "book" / "references.bib", src / "book" / "references.bib")
    records = {slug: json.loads((ROOT / "results" / f"{slug}.json").read_text()) for slug in ("attention", "gnn")}
    records["gnn"]["metrics"]["a_new_metric"] = 0.5
    for slug, record in records.items():
        (src / "results" / f"{slug}.json").write_text(json.dumps(record))
    # targets.yml: the book's entries of these two chapters, and the generative
    # chapters' entries as each will add its own
    spec = yaml.safe_load((ROOT / "book" / "targets.yml").read_text(encoding="utf-8"))
    spec["chapters"] = {slug: spec["chapters"][slug] for slug in records}
    for slug, metrics in GENERATIVE.items():
        spec["chapters"][slug] = {"title": slug.upper(), "headline": next(iter(metrics)), "metrics": {
            key: {"name": key.replace("_", " "), "target": "recorded"} for key in metrics}}
        _write(src / "results", slug, metrics)
        _image(src / "book" / "images" / f"{slug}_samples.png")
    (src / "book" / "targets.yml").write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    names = {"attention": "04_attention", "gnn": "06_gnn", "vae": "07_vae", "gan": "08_gan",
             "diffusion": "09_diffusion"}
    for slug, name in names.items():
        (src / "notebooks" / f"{name}.md").write_text(f"# {name}\n\nA chapter.\n")
        runtime = f"**Runtime**\n\n| profile | what | time |\n|---|---|---|\n| `smoke` | tiny | {len(slug)} s |\n"
        (src / "notebooks" / f"{name}.ipynb").write_text(json.dumps({"cells": [
            {"cell_type": "markdown", "source": runtime.splitlines(True)}]}))
    (src / "index.md").write_text("# Book\n\n```{toctree}\nbook/results\nbook/how_to_use\nbook/references\n"
                                  + "".join(f"notebooks/{name}\n" for name in names.values()) + "```\n")
    (src / "book" / "results.md").write_text(
        "# Results\n\n## Summary\n\n```{results-summary}\n```\n\n## Generative\n\n```{results-generative}\n```\n\n"
        "## Chapter by chapter\n\n```{results-chapters}\n```\n")
    (src / "book" / "how_to_use.md").write_text("# How to use\n\n## Runtimes\n\n```{runtime-table}\n```\n")
    (src / "book" / "references.md").write_text("# References\n\n```{bibliography}\n```\n")
    (src / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT / 'book' / '_ext')!r})\n"
        "extensions = ['myst_parser', 'sphinxcontrib.bibtex', 'results_table']\n"
        "bibtex_bibfiles = ['book/references.bib']\nbibtex_reference_style = 'author_year'\n")
    logged = build_html(src, tmp_path)
    # values keep their spread on one line with no-break spaces
    html = (tmp_path / "html" / "book" / "results.html").read_text(encoding="utf-8").replace("\u00a0", " ")
    text = re.sub(r"<[^>]+>", "", html)

    def table(css_class: str, page: str = html) -> str:
        start = page.index(css_class)
        return page[start:page.index("</table>", start)]

    assert "metric 'a_new_metric' has no entry in book/targets.yml" in logged
    assert logged.count("WARNING") == 1, logged
    # the summary: one row per results file, each headline with its target and verdict
    summary = table("dlbook-results-summary")
    assert summary.count("<tr") == 1 + 5
    gnn = records["gnn"]["metrics"]
    entry = rt.load_targets(src / "book" / "targets.yml").chapters["gnn"].entries["cora_gcn_test_acc_mean"]
    assert rt.format_metric("cora_gcn_test_acc_mean", gnn, entry) in summary
    assert "≥ 0.99: met" in summary or "≥ 0.99: <strong>missed" in summary
    assert 'href="../notebooks/06_gnn.html"' in summary
    # the chapters: a section each, errors in scientific notation, the stray metric by its key
    for slug in names:
        assert f'id="results-{slug}"' in html
    assert rt.sci(records["attention"]["metrics"]["attention_parity_max_abs_err"]) in text
    assert "a_new_metric" in text and "Kipf" in text  # the citation resolved
    # the generative comparison: five models on the yardstick, three grids side by side
    generative = table("dlbook-results-generative")
    for cell in ("real digits (validation split), the floor", "VAE", "GAN", "DDPM, unconditional",
                 "DDPM, classifier-free guidance", "21.50", "12.25", "0.8500", "FID on the judge’s features ↓"):
        assert cell in generative, cell
    assert "ancestral" not in generative
    assert table("dlbook-results-samples").count("<img") == 3 and "Not landed yet" not in text
    for slug in GENERATIVE:
        assert (tmp_path / "html" / "_images" / f"{slug}_samples.png").exists()
    # the tables' own stylesheet is served from the site
    assert (tmp_path / "html" / "_static" / "dlbook-results.css").exists() and "dlbook-results.css" in html
    # the how-to page: full-run time and device from the results, smoke time from the notebook
    howto = (tmp_path / "html" / "book" / "how_to_use.html").read_text(encoding="utf-8")
    runtime = table("dlbook-runtime", howto)
    assert runtime.count("<tr") == 1 + 5 and "CPU (Test CPU), 2 threads" in runtime
    assert "<td><p>9\u00a0s</p></td>" in runtime  # "diffusion": its notebook's smoke row
    assert "No chapter needs one" in howto


def test_a_value_keeps_its_spread_and_unit_on_one_line():
    assert rt.keep_together("0.8148 ± 0.0070 (std, 10 seeds)") == "0.8148\u00a0±\u00a00.0070 (std, 10 seeds)"
    assert rt.keep_together("43.7 s") == "43.7\u00a0s"
    assert rt.keep_together("255 s (4.2 min)") == "255\u00a0s (4.2\u00a0min)"


def test_a_target_keeps_the_digits_it_was_written_with():
    target = rt.parse_target(">= 0.810")
    assert target.threshold == 0.81 and target.written == "0.810"
    entry = rt.Entry("cora_acc_mean", "Cora", target)
    chapter = rt.Chapter("gnn", "GNN", "cora_acc_mean", {"cora_acc_mean": entry})
    assert rt.target_text(entry, {"cora_acc_mean": 0.8148}, chapter, "accuracy") == "≥ 0.810"
