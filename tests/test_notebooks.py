"""Every chapter notebook follows the anatomy in CONVENTIONS, and its stored
outputs are one clean full-profile run that matches results/slug.json."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dlbook import exercises
from dlbook.results import CHAPTERS
from tools.student import is_solution, student_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
RESULT_KEYS = {"chapter", "profile", "device", "device_name", "threads", "torch", "dlbook", "seed",
               "finished", "seconds", "metrics"}
# Metric keys (and targets) that the chapters' issues name.
TARGETS = {
    "foundations": {"softmax_fashion_mnist_test_acc": (">=", 0.84), "mlp_fashion_mnist_test_acc": (">=", 0.89),
                    "backprop_max_abs_err": ("<=", 1e-6)},
    "cnn": {"mnist_test_acc": (">=", 0.993), "fashion_mnist_test_acc": (">=", 0.915),
            "mnist_seconds_to_99": ("<=", 60.0)},
    "optimizers": {"optimizer_parity_max_abs_err": ("<=", 1e-6), "scheduler_parity_max_abs_err": ("<=", 1e-9),
                   "adam_mnist_test_acc_mean": (">=", 0.978)},
    "transformer": {"seq2seq_greedy_exact_match": (">=", 0.99), "char_gpt_val_loss": ("<=", 1.65),
                    "vit_mnist_test_acc": (">=", 0.975), "encoder_parity_max_abs_err": ("<=", 1e-5),
                    "decoder_parity_max_abs_err": ("<=", 1e-5)},
    "gnn": {"cora_gcn_test_acc_mean": (">=", 0.810), "cora_gat_test_acc_mean": (">=", 0.820),
            "citeseer_gcn_test_acc_mean": (">=", 0.700), "gin_sum_test_acc": (">=", 0.95),
            "gin_mean_test_acc": ("<=", 0.6), "gin_max_test_acc": ("<=", 0.6),
            "gcn_sparse_dense_max_abs_err": ("<=", 1e-5)},
    "attention": {"attention_parity_max_abs_err": ("<=", 1e-5), "lstm_parity_max_abs_err": ("<=", 1e-5),
                  "gru_parity_max_abs_err": ("<=", 1e-5), "attention_task_test_acc": (">=", 0.99)},
    "vae": {"vae_test_neg_elbo": ("<=", 99.5)},
}
# Metric keys the issues name without a number to reach, and orderings they ask for.
REQUIRED = {
    "foundations": ["gradcheck_max_rel_err", "softmax_fashion_mnist_test_acc_stderr",
                    "mlp_fashion_mnist_test_acc_stderr", "softmax_fashion_mnist_val_acc", "mlp_fashion_mnist_val_acc"],
    "cnn": ["rotation_acc_at_45", "plain_deep_final_loss", "residual_deep_final_loss", "mnist_test_acc_stderr"],
    "optimizers": ["ours_vs_torch_step_time_ratio"]
                  + [f"{name}_mnist_test_acc_{stat}"
                     for name in ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "amsgrad",
                                  "radam", "lookahead", "adam_constant")
                     for stat in ("mean", "std")],
    "transformer": ["seq2seq_beam_exact_match", "char_gpt_train_seconds", "bert_masked_char_acc", "kv_cache_speedup"],
    "gnn": ["cora_mlp_test_acc_mean", "cora_mlp_test_acc_std", "cora_gcn_test_acc_std", "cora_gat_test_acc_std",
            "citeseer_gcn_test_acc_std", "cora_gcn_seconds_per_run", "cora_gat_seconds_per_run"],
    "attention": ["attention_task_baseline_acc", "attention_vs_sdpa_time_ratio", "attention_task_lstm_acc",
                  "attention_task_bag_ceiling"],
    "vae": ["vae_test_iwae_bound", "anomaly_auc", "vae_fid_mnist", "vae_confident_rate", "vae_class_coverage",
            "real_fid_mnist", "real_confident_rate", "real_class_coverage"],
}
ORDERED = {  # (smaller, larger): the first must end below the second
    "foundations": [("softmax_fashion_mnist_test_acc", "mlp_fashion_mnist_test_acc")],
    "cnn": [("residual_deep_final_loss", "plain_deep_final_loss")],
    "attention": [("attention_task_baseline_acc", "attention_task_test_acc"),
                  ("attention_task_lstm_acc", "attention_task_test_acc")],
    "vae": [("vae_test_iwae_bound", "vae_test_neg_elbo_iwae_images")],
}
WIDTH = 79  # the website's code column


def source(cell) -> str:
    return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def slug_of(path: Path) -> str:
    return path.stem[3:]


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code" and source(c).strip()]


def test_there_are_chapters():
    assert NOTEBOOKS, "no notebooks/NN_slug.ipynb found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_name_matches_the_chapter_table(path):
    number, slug = int(path.name[:2]), slug_of(path)
    assert slug in CHAPTERS, f"{path.name}: unknown slug {slug!r}"
    assert CHAPTERS.index(slug) + 1 == number, f"{path.name}: chapter {slug} is number {CHAPTERS.index(slug) + 1:02d}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_anatomy(path):
    nb = load(path)
    first = source(nb["cells"][0])
    assert first.startswith("# "), "the first cell is the title"
    assert "Open in Colab" in first and "Open in Kaggle" in first
    text = "\n".join(source(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    for heading in ("What you will learn", "Runtime", "## How fast is it?", "## Exercises", "## Results",
                    "## Summary", "## References"):
        assert heading in text, f"missing section {heading!r}"
    code = code_cells(nb)
    assert source(code[0]).startswith("# Colab and Kaggle: install dlbook"), "the first code cell installs dlbook"
    assert "dlbook.setup(seed=" in source(code[1]), "the second code cell is the setup cell"
    checked = [c for c in code if "# NBVAL_CHECK_OUTPUT" in source(c)]
    assert len(checked) >= 5, f"only {len(checked)} cells carry # NBVAL_CHECK_OUTPUT"
    assert any(f'dlbook.results.save("{slug_of(path)}"' in source(c) for c in code)


def test_badges_and_install_cell_follow_config():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "badges.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercises_are_checked_and_solutions_hidden(path):
    nb = load(path)
    code = code_cells(nb)
    keys = re.findall(r'dlbook\.exercises\.check\("([\w.]+)"', "\n".join(source(c) for c in code))
    assert len(keys) >= 3, f"only {len(keys)} checked exercises"
    assert set(keys) <= set(exercises.keys()), f"unknown exercise keys: {set(keys) - set(exercises.keys())}"
    solutions = [c for c in code if is_solution(c)]
    assert len(solutions) >= 3
    untagged = [source(c)[:60] for c in code if "### BEGIN SOLUTION" in source(c) and not is_solution(c)]
    assert not untagged, f"cells with a solution but no 'solution' tag (shown on the website): {untagged}"
    for cell in solutions:
        assert "hide-input" in cell["metadata"]["tags"], "a solution cell must be collapsed on the website"
    student, count = student_notebook(nb)
    assert count == len(solutions)
    student_code = "\n".join(source(c) for c in student["cells"])
    assert "BEGIN SOLUTION" not in student_code
    for cell in solutions:
        body = source(cell).split("### BEGIN SOLUTION")[-1].split("### END SOLUTION")[0].strip()
        assert body not in student_code, f"solution left in the student version: {body[:40]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_outputs_are_one_clean_full_run(path):
    nb = load(path)
    code = code_cells(nb)
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), "stored outputs are not one top-to-bottom run"
    outputs = [o for c in code for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"], "stored error outputs"
    streams = "".join("".join(o["text"]) if isinstance(o["text"], list) else o["text"]
                      for o in outputs if o["output_type"] == "stream")
    assert "\r" not in streams, "streams were not coalesced (progress bars keep only their last line)"
    assert "profile: full" in streams, "the stored run is not the full profile"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_results_file(path):
    slug = slug_of(path)
    result_path = ROOT / "results" / f"{slug}.json"
    assert result_path.exists(), f"{result_path.name} missing: run make execute NB={path.relative_to(ROOT)}"
    record = load(result_path)
    assert set(record) == RESULT_KEYS
    assert record["chapter"] == slug and record["profile"] == "full"
    for key, (op, target) in TARGETS.get(slug, {}).items():
        assert key in record["metrics"], f"{slug}: metric {key} missing"
    # The runtime table in the chapter states the stored run's wall time.
    text = "\n".join(source(c) for c in load(path)["cells"] if c["cell_type"] == "markdown")
    row = re.search(r"^\| `full` \|.*\|\s*(.+?)\s*\|\s*$", text, re.M)
    assert row, "no full-profile row in the runtime table"
    assert f"{record['seconds']:.0f} s" in row.group(1), (
        f"runtime table says {row.group(1)!r}; results/{slug}.json says {record['seconds']} s")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_and_printed_lines_fit_the_column(path):
    """On the website a longer line is cut at the column's right edge."""
    too_long = []
    for i, cell in enumerate(code_cells(load(path))):
        texts = [("code", source(cell))]
        for out in cell["outputs"]:
            if out["output_type"] == "stream":
                texts.append(("output", "".join(out["text"])))
            elif out["output_type"] in ("execute_result", "display_data") and "image/png" not in out["data"]:
                texts.append(("output", "".join(out["data"].get("text/plain", ""))))
        for kind, text in texts:
            too_long += [f"code cell {i + 1}, {kind}: {line[:60]}... ({len(line)})"
                         for line in text.splitlines() if len(line) > WIDTH]
    too_long = [t for t in too_long if "interactive(children=" not in t]  # a widget's text fallback
    assert not too_long, "\n".join(too_long)


@pytest.mark.parametrize("slug", sorted(set(REQUIRED) | set(ORDERED)))
def test_named_metrics_and_orderings(slug):
    path = ROOT / "results" / f"{slug}.json"
    if not path.exists():
        pytest.fail(f"results/{slug}.json missing")
    metrics = load(path)["metrics"]
    missing = [k for k in REQUIRED.get(slug, []) if k not in metrics]
    assert not missing, f"{slug}: metrics missing: {missing}"
    for small, large in ORDERED.get(slug, []):
        assert metrics[small] < metrics[large], f"{slug}: {small} = {metrics[small]} is not below {large} = {metrics[large]}"


@pytest.mark.parametrize("slug", sorted(TARGETS))
def test_targets(slug):
    path = ROOT / "results" / f"{slug}.json"
    if not path.exists():
        pytest.fail(f"results/{slug}.json missing")
    metrics = load(path)["metrics"]
    missed = [f"{k} = {metrics.get(k)} (target {op} {t})" for k, (op, t) in TARGETS[slug].items()
              if k not in metrics or not (metrics[k] >= t if op == ">=" else metrics[k] <= t)]
    assert not missed, f"{slug}: targets missed: {missed}"
