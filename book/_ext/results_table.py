"""The results page and the runtime table, built from the stored runs.

Sphinx directives, each reading ``results/*.json`` (what every chapter's
full-profile run measured) when the site is built, so that no measured
number is copied by hand:

``results-summary``
    one row per chapter: its headline number beside its target and the
    published number it is compared with, the wall time of the full run and
    the device;
``results-chapters``
    a section per chapter: every metric with a readable name, its value in a
    format that fits it, its target and the published numbers with their
    sources, and whether the target was met;
``results-generative``
    the generative chapters (VAE, GAN, diffusion) on one yardstick, and a
    grid of each one's samples side by side;
``runtime-table``
    for the how-to page: each chapter's measured full-run time and device,
    its smoke time (from the runtime table of its notebook), and which
    chapters take longest.

The targets, readable names and references live in ``book/targets.yml``.
A metric without an entry there, or an entry without a metric, is a build
warning (an error under ``--warningiserror``) and fails tests/test_targets.py.

The functions above the directives need no Sphinx build, so that
the tests can call them on a results folder of their own.
"""

from __future__ import annotations

import json
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

RESULTS_DIR = "results"
TARGETS_FILE = "book/targets.yml"
BIB_FILE = "book/references.bib"
NOTEBOOKS_DIR = "notebooks"
# The how-to page names the chapters whose full run takes longer than this on
# the CPU as the ones where a GPU saves the most time.
GPU_WORTH_IT_SECONDS = 300.0

SPREADS = {"_std": "std", "_stderr": "s.e."}
COMPARISONS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
SYMBOLS = {">=": "≥", "<=": "≤", ">": ">", "<": "<"}
FORMATS = ("sci", "accuracy", "seconds", "count", "ratio", "yesno", "two_decimals", "number")
RECORDED = "recorded"


class TargetsError(ValueError):
    """book/targets.yml is malformed."""


# ---------------------------------------------------------------- reading


def load_results(folder: Path, order: list[str] | None = None) -> dict[str, dict]:
    """``{slug: record}`` of every ``<slug>.json`` in ``folder``, in ``order``
    (slugs not in it after, alphabetically)."""
    records = {}
    for path in sorted(Path(folder).glob("*.json")):
        records[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    rank = {slug: i for i, slug in enumerate(dict.fromkeys(order or []))}
    return dict(sorted(records.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def chapter_numbers(notebooks: Path) -> dict[str, int]:
    """``{slug: NN}`` from the names ``NN_slug.ipynb`` of the chapter notebooks."""
    found = {}
    for path in Path(notebooks).glob("[0-9][0-9]_*.ipynb"):
        number, slug = path.stem.split("_", 1)
        found[slug] = int(number)
    return dict(sorted(found.items(), key=lambda kv: kv[1]))


@dataclass(frozen=True)
class Target:
    """A target: ``op`` and a number, or ``op`` and another metric's key; or recorded."""

    op: str | None = None
    threshold: float | None = None
    metric: str | None = None
    written: str | None = None  # the number as targets.yml writes it: "0.810", "1e-5"

    @property
    def recorded(self) -> bool:
        return self.op is None


def parse_target(text) -> Target:
    """``"recorded"``, or a comparison and a number or a metric key: ``">= 0.993"``,
    ``"<= 1e-5"``, ``"< plain_deep_final_loss"``."""
    if isinstance(text, str) and text.strip() == RECORDED:
        return Target()
    match = re.fullmatch(r"\s*(>=|<=|>|<)\s*(\S+)\s*", text) if isinstance(text, str) else None
    if not match:
        raise TargetsError(f"target {text!r}: expected 'recorded', or one of >=, <=, >, < and a number "
                           f"or a metric key, as in '>= 0.99'")
    op, rest = match.groups()
    try:
        return Target(op, threshold=float(rest), written=rest)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rest):
            raise TargetsError(f"target {text!r}: {rest!r} is neither a number nor a metric key") from None
        return Target(op, metric=rest)


@dataclass
class Reference:
    value: object = None  # a number, or text such as "about 0.83"
    what: str = ""
    cite: str | None = None
    source: str | None = None
    metric: str | None = None  # another metric: "key", or "slug/key" for another chapter's


@dataclass
class Entry:
    key: str
    name: str
    target: Target
    format: str | None = None
    seeds: str | None = None
    references: list[Reference] = field(default_factory=list)


@dataclass
class Chapter:
    slug: str
    title: str
    headline: str | None
    entries: dict[str, Entry]


@dataclass
class Targets:
    chapters: dict[str, Chapter]
    generative: dict


def load_targets(path: Path) -> Targets:
    """Read and check book/targets.yml; a malformed file raises TargetsError naming the place."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict) or not isinstance(raw.get("chapters"), dict):
        raise TargetsError(f"{path}: expected a mapping with 'chapters:'")
    chapters = {}
    for slug, spec in raw["chapters"].items():
        where = f"{path}: chapters.{slug}"
        if not isinstance(spec, dict) or not isinstance(spec.get("metrics"), dict):
            raise TargetsError(f"{where}: expected 'title:', 'headline:' and 'metrics:'")
        unknown = set(spec) - {"title", "headline", "metrics"}
        if unknown:
            raise TargetsError(f"{where}: unknown fields {sorted(unknown)}")
        entries = {}
        for key, item in spec["metrics"].items():
            entries[key] = _entry(f"{where}.metrics.{key}", key, item)
        chapters[slug] = Chapter(slug, str(spec.get("title") or slug), spec.get("headline"), entries)
    generative = raw.get("generative") or {}
    for name in ("chapters", "yardstick", "models", "sample_grids"):
        if not isinstance(generative.get(name) or {}, dict):
            raise TargetsError(f"{path}: generative.{name} must be a mapping")
    return Targets(chapters, generative)


def _entry(where: str, key: str, item) -> Entry:
    if not isinstance(item, dict):
        raise TargetsError(f"{where}: expected a mapping with 'name:' and 'target:'")
    unknown = set(item) - {"name", "target", "format", "seeds", "references"}
    if unknown:
        raise TargetsError(f"{where}: unknown fields {sorted(unknown)}")
    if not isinstance(item.get("name"), str) or not item["name"].strip():
        raise TargetsError(f"{where}: needs a readable 'name:'")
    if "target" not in item:
        raise TargetsError(f"{where}: needs 'target:' (a comparison such as '>= 0.99', or 'recorded')")
    try:
        target = parse_target(item["target"])
    except TargetsError as error:
        raise TargetsError(f"{where}: {error}") from None
    fmt = item.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise TargetsError(f"{where}: format {fmt!r} is not one of {', '.join(FORMATS)}")
    references = []
    for i, ref in enumerate(item.get("references") or []):
        if not isinstance(ref, dict) or set(ref) - {"value", "what", "cite", "source", "metric"}:
            raise TargetsError(f"{where}.references[{i}]: expected value, what, cite, source or metric")
        if ("value" in ref) == ("metric" in ref):
            raise TargetsError(f"{where}.references[{i}]: give either 'value:' or 'metric:'")
        if "value" in ref and not (ref.get("cite") or ref.get("source")):
            raise TargetsError(f"{where}.references[{i}]: a published number needs 'cite:' or 'source:'")
        references.append(Reference(**ref))
    return Entry(key, item["name"].strip(), target, fmt, item.get("seeds"), references)


def bib_keys(path: Path) -> set[str]:
    """The citation keys of a BibTeX file."""
    text = Path(path).read_text(encoding="utf-8")
    return set(re.findall(r"^\s*@\w+\s*\{\s*([^,\s]+)\s*,", text, re.M))


# ---------------------------------------------------------------- spreads


def spread_of(key: str, metrics: dict) -> tuple[str, str] | None:
    """The spread that belongs to ``key``, as ``(spread key, "std" or "s.e.")``:
    ``key_std`` / ``key_stderr``, or for ``base_mean`` also ``base_std`` / ``base_stderr``."""
    bases = [key] + ([key[:-len("_mean")]] if key.endswith("_mean") else [])
    for base in bases:
        for suffix, label in SPREADS.items():
            if base + suffix in metrics and base + suffix != key:
                return base + suffix, label
    return None


def spread_keys(metrics: dict) -> set[str]:
    """The keys that are the spread of another metric (shown with it, no entry of their own)."""
    return {found[0] for key in metrics if (found := spread_of(key, metrics))}


# ---------------------------------------------------------------- formatting


def format_kind(key: str, value, fmt: str | None = None) -> str:
    """How a metric's value is written: the entry's ``format``, else from its key and type."""
    if fmt:
        return fmt
    if "_err" in key:
        return "sci"
    if "seconds" in key:
        return "seconds"
    if key.endswith("_ratio") or key.endswith("speedup"):
        return "ratio"
    if isinstance(value, int) and not isinstance(value, bool):
        return "count"
    if "_acc" in key or key.endswith("exact_match") or key.endswith("_rate"):
        return "accuracy"
    if key.endswith("coverage") or key.endswith("fid_mnist"):
        return "two_decimals"
    return "number"


def sci(value: float, digits: int = 1) -> str:
    """Scientific notation without padded exponents: 3.5762e-07 -> '3.6e-7'."""
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.{digits}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def plain(value: float) -> str:
    """A number as it was given: 0.993, 14, 1e-5 (for thresholds and published numbers)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    text = f"{value:g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def format_value(value, kind: str) -> str:
    """A metric's value in the format of its kind."""
    if kind == "sci":
        return sci(value)
    if kind == "accuracy":
        return f"{value:.4f}"
    if kind == "two_decimals":
        return f"{value:.2f}"
    if kind == "seconds":
        return seconds(value)
    if kind == "count":
        return f"{int(round(value)):,}"
    if kind == "ratio":
        return f"{value:.3g}×"
    if kind == "yesno":
        return "yes" if value else "no"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
        return sci(value, digits=2)
    if abs(value) >= 1e4:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def seconds(value: float) -> str:
    """A duration: '1.44 s', '43.7 s', '255 s (4.2 min)'."""
    if value < 10:
        return f"{value:.2f} s"
    if value < 100:
        return f"{value:.1f} s"
    if value < 120:
        return f"{value:.0f} s"
    return f"{value:.0f} s ({value / 60:.1f} min)"


def format_metric(key: str, metrics: dict, entry: Entry | None = None) -> str:
    """A metric as the page shows it, with its spread when it has one:
    '0.8148 ± 0.0070 (std, 10 seeds)', '0.9948 ± 0.0007 (s.e.)', '3.6e-7'."""
    value = metrics[key]
    kind = format_kind(key, value, entry.format if entry else None)
    text = format_value(value, kind)
    spread = spread_of(key, metrics)
    if spread:
        spread_key, label = spread
        note = label
        if label == "std" and entry and entry.seeds and entry.seeds in metrics:
            note += f", {int(metrics[entry.seeds])} seeds"
        text += f" ± {format_value(metrics[spread_key], kind).removesuffix(' s')} ({note})"
    return text


def format_threshold(threshold: float, kind: str, written: str | None = None) -> str:
    """A target's number as it was set: '1e-5', '0.810', '60 s'."""
    return (written or plain(threshold)) + (" s" if kind == "seconds" else "")


# ---------------------------------------------------------------- verdicts


def verdict(target: Target, value: float, metrics: dict) -> str:
    """'met' or 'missed' (from the unrounded numbers), or 'recorded'."""
    if target.recorded:
        return RECORDED
    other = target.threshold if target.metric is None else metrics[target.metric]
    return "met" if COMPARISONS[target.op](value, other) else "missed"


# ---------------------------------------------------------------- checks


def problems(results: dict[str, dict], targets: Targets, bib: set[str] | None = None) -> list[str]:
    """Everything that does not match between the results files and targets.yml."""
    found = []
    for slug, record in results.items():
        metrics = record.get("metrics", {})
        chapter = targets.chapters.get(slug)
        if chapter is None:
            found.append(f"results/{slug}.json has no chapter '{slug}' in {TARGETS_FILE}: add its metrics there")
            continue
        spreads = spread_keys(metrics)
        for key in metrics:
            if key in spreads:
                if key in chapter.entries:
                    found.append(f"{TARGETS_FILE}: {slug}.{key} is a spread, shown with its mean: remove its entry")
            elif key not in chapter.entries:
                found.append(f"results/{slug}.json: metric {key!r} has no entry in {TARGETS_FILE} "
                             f"(chapters.{slug}.metrics: add its name and target, or 'target: recorded')")
    for slug, chapter in targets.chapters.items():
        metrics = results.get(slug, {}).get("metrics")
        if metrics is None:
            found.append(f"{TARGETS_FILE}: chapter {slug!r} has entries but no results/{slug}.json")
            continue
        for key, entry in chapter.entries.items():
            if key not in metrics:
                found.append(f"{TARGETS_FILE}: {slug}.{key} names no metric of results/{slug}.json")
            if entry.target.metric and entry.target.metric not in metrics:
                found.append(f"{TARGETS_FILE}: {slug}.{key}: its target names {entry.target.metric!r}, "
                             f"not a metric of results/{slug}.json")
            if entry.seeds and entry.seeds not in metrics:
                found.append(f"{TARGETS_FILE}: {slug}.{key}: seeds {entry.seeds!r} is not a metric")
            for ref in entry.references:
                if ref.metric:
                    other_slug, _, other_key = ref.metric.rpartition("/")
                    other_slug = other_slug or slug
                    if other_slug not in targets.chapters:
                        found.append(f"{TARGETS_FILE}: {slug}.{key}: reference {ref.metric!r} names no chapter")
                    elif other_slug in results and other_key not in results[other_slug]["metrics"]:
                        found.append(f"{TARGETS_FILE}: {slug}.{key}: reference {ref.metric!r} names no metric")
                if bib is not None and ref.cite and ref.cite not in bib:
                    found.append(f"{TARGETS_FILE}: {slug}.{key}: citation key {ref.cite!r} is not in {BIB_FILE}")
        if chapter.headline not in chapter.entries:
            found.append(f"{TARGETS_FILE}: chapter {slug!r}: headline {chapter.headline!r} is not one of its metrics")
    return found


# ---------------------------------------------------------------- rows


@dataclass
class Row:
    """One metric of one chapter, as the page writes it (cells are MyST inline text)."""

    key: str
    name: str
    value: str
    target: str
    verdict: str
    references: list[str]


def _escape(text: str) -> str:
    """Markdown-safe text for an inline parse (no emphasis or roles by accident)."""
    return re.sub(r"([\\`*_\[\]{}<>#|])", r"\\\1", str(text))


def reference_text(ref: Reference, slug: str, results: dict, targets: Targets, kind: str) -> str:
    """One comparison number with what it is and its source, as MyST inline text."""
    if ref.metric:
        other_slug, _, other_key = ref.metric.rpartition("/")
        other_slug = other_slug or slug
        other = results.get(other_slug, {}).get("metrics", {})
        entry = targets.chapters.get(other_slug, Chapter(other_slug, other_slug, None, {})).entries.get(other_key)
        value = format_metric(other_key, other, entry) if other_key in other else "not run yet"
        return f"**{_escape(value)}** {_escape(ref.what)} (this run)"
    value = ref.value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = plain(value) + (" s" if kind == "seconds" else "")
    text = f"**{_escape(value)}** {_escape(ref.what)}"
    if ref.source:
        text += f", {_escape(ref.source)}"
    if ref.cite:
        text += f" {{cite:p}}`{ref.cite}`"
    return text


def target_text(entry: Entry, metrics: dict, chapter: Chapter, kind: str) -> str:
    target = entry.target
    if target.recorded:
        return RECORDED
    if target.metric:
        other = chapter.entries.get(target.metric)
        value = format_metric(target.metric, metrics, other)
        return f"{SYMBOLS[target.op]} {value} ({other.name if other else target.metric})"
    return f"{SYMBOLS[target.op]} {format_threshold(target.threshold, kind, target.written)}"


def chapter_rows(slug: str, results: dict, targets: Targets) -> list[Row]:
    """Every metric of a chapter: its entries in the order of targets.yml, then
    any metric that has none (named by its key)."""
    metrics = results[slug]["metrics"]
    chapter = targets.chapters.get(slug, Chapter(slug, slug, None, {}))
    spreads = spread_keys(metrics)
    rows = []
    for key, entry in chapter.entries.items():
        if key not in metrics:
            continue
        kind = format_kind(key, metrics[key], entry.format)
        rows.append(Row(key, _escape(entry.name), _escape(format_metric(key, metrics, entry)),
                        _escape(target_text(entry, metrics, chapter, kind)),
                        verdict(entry.target, metrics[key], metrics),
                        [reference_text(r, slug, results, targets, kind) for r in entry.references]))
    for key in metrics:
        if key not in chapter.entries and key not in spreads:
            rows.append(Row(key, f"`{key}` (no entry in {TARGETS_FILE})", _escape(format_metric(key, metrics)),
                            RECORDED, RECORDED, []))
    return rows


def run_text(record: dict) -> tuple[str, str]:
    """(wall time, device) of a stored run: ('255 s (4.2 min)', 'CPU (AMD EPYC), 2 threads')."""
    device = str(record.get("device", "?"))
    label = {"cpu": "CPU", "cuda": "GPU", "mps": "Apple GPU (MPS)"}.get(device, device)
    name = record.get("device_name")
    text = f"{label} ({name})" if name else label
    if device == "cpu" and record.get("threads"):
        text += f", {record['threads']} threads"
    return seconds(float(record["seconds"])), text


@dataclass
class SummaryRow:
    slug: str
    number: int | None
    title: str
    headline: str
    value: str
    target: str
    verdict: str
    reference: str
    met: int
    targets: int
    wall_time: str
    device: str


def summary_rows(results: dict, targets: Targets, numbers: dict[str, int]) -> list[SummaryRow]:
    """One row per chapter with a results file."""
    rows = []
    for slug, record in results.items():
        chapter = targets.chapters.get(slug, Chapter(slug, slug, None, {}))
        by_key = {row.key: row for row in chapter_rows(slug, results, targets)}
        head = by_key.get(chapter.headline) or next(iter(by_key.values()))
        checked = [row for row in by_key.values() if row.verdict != RECORDED]
        wall_time, device = run_text(record)
        rows.append(SummaryRow(
            slug, numbers.get(slug), chapter.title, head.name, head.value, head.target, head.verdict,
            head.references[0] if head.references else "", sum(r.verdict == "met" for r in checked),
            len(checked), wall_time, device))
    return rows


@dataclass
class GenerativeRow:
    model: str
    chapter: str
    values: dict[str, str]  # yardstick suffix -> formatted value, or "–"


def generative_rows(results: dict, targets: Targets) -> tuple[list[GenerativeRow], list[str], list[str]]:
    """The generative comparison: (rows, the chapters that have landed, those that have not).

    A row per model: every prefix ``<m>`` named under ``generative.models`` of a
    ``<m>_<yardstick metric>`` key in the generative chapters' results files, the
    floor (``real``) first. Other prefixes (a sampler judged on fewer samples) are left out."""
    spec = targets.generative
    chapters = spec.get("chapters") or {}
    yardstick = list((spec.get("yardstick") or {}).keys())
    models = spec.get("models") or {}
    landed = [slug for slug in chapters if slug in results]
    missing = [slug for slug in chapters if slug not in results]
    rows: dict[str, GenerativeRow] = {}
    for slug in landed:
        metrics = results[slug]["metrics"]
        entries = targets.chapters.get(slug, Chapter(slug, slug, None, {})).entries
        for key in metrics:
            for suffix in yardstick:
                if key.endswith("_" + suffix):
                    prefix = key[: -len(suffix) - 1]
                    if prefix not in models:  # e.g. a sampler measured on fewer samples
                        continue
                    row = rows.setdefault(prefix, GenerativeRow(str(models[prefix]), slug, {}))
                    entry = entries.get(key)
                    row.values[suffix] = format_metric(key, metrics, entry)
    for row in rows.values():
        for suffix in yardstick:
            row.values.setdefault(suffix, "–")
    ordered = sorted(rows.items(), key=lambda kv: (kv[0] != "real", landed.index(kv[1].chapter)))
    return [row for _, row in ordered], landed, missing


def sample_grid(slug: str, targets: Targets) -> str:
    """The path (from the book's root) of a generative chapter's grid of samples."""
    grids = targets.generative.get("sample_grids") or {}
    return str(grids.get(slug) or f"book/images/{slug}_samples.png")


RUNTIME_ROW = re.compile(r"^\| `smoke` \|[^|\n]*\|([^|\n]*)\|\s*$", re.M)


def smoke_time(notebook: Path) -> str | None:
    """The smoke time in the runtime table of a chapter notebook ('14 s'), or None."""
    try:
        cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError):
        return None
    for cell in cells:
        source = "".join(cell.get("source", []))
        if cell.get("cell_type") == "markdown" and "**Runtime**" in source:
            match = RUNTIME_ROW.search(source)
            if match and match.group(1).strip():
                return match.group(1).strip()
    return None


@dataclass
class RuntimeRow:
    slug: str
    number: int | None
    title: str
    seconds: float
    full: str
    device: str
    smoke: str
    cpu_threads: int | None = None  # the run's CPU threads; None on a GPU


def runtime_rows(results: dict, targets: Targets, root: Path) -> list[RuntimeRow]:
    numbers = chapter_numbers(root / NOTEBOOKS_DIR)
    rows = []
    for slug, record in results.items():
        wall_time, device = run_text(record)
        number = numbers.get(slug)
        notebook = root / NOTEBOOKS_DIR / f"{number:02d}_{slug}.ipynb" if number else None
        smoke = (smoke_time(notebook) if notebook else None) or "not measured"
        title = targets.chapters[slug].title if slug in targets.chapters else slug
        threads = record.get("threads") if record.get("device") == "cpu" else None
        rows.append(RuntimeRow(slug, number, title, float(record["seconds"]), wall_time, device, smoke, threads))
    return rows


def gpu_advice(rows: list[RuntimeRow]) -> str:
    """Which chapters take longest and want a GPU, from the measured times (MyST text)."""
    if not rows:
        return "No chapter has a stored full run yet."
    longest = sorted(rows, key=lambda r: -r.seconds)
    slow = [r for r in longest if r.seconds > GPU_WORTH_IT_SECONDS]
    minutes = GPU_WORTH_IT_SECONDS / 60

    def name(r):
        label = f"{r.number:02d} {r.title}" if r.number else r.title
        return f"{label} ({r.seconds / 60:.1f}\u00a0min)"

    text = f"The longest full runs: {', '.join(name(r) for r in longest[:3])}."
    if slow:
        text += (f" A GPU saves the most time on the chapters that take longer than {minutes:.0f} minutes: "
                 f"{', '.join(name(r) for r in slow)}.")
    else:
        text += f" Every full run took under {minutes:.0f} minutes, so a GPU saves minutes at most."
    threads = sorted({r.cpu_threads for r in rows if r.cpu_threads})
    if all(r.cpu_threads for r in rows):
        text += (f" No chapter needs one: every run in the table was made on a CPU with "
                 f"{' or '.join(map(str, threads))} threads, and on a GPU the code is the same.")
    return text


# ---------------------------------------------------------------- Sphinx

from docutils import nodes  # noqa: E402
from sphinx.util import logging  # noqa: E402
from sphinx.util.docutils import SphinxDirective  # noqa: E402


class _ResultsDirective(SphinxDirective):
    has_content = False

    def root(self) -> Path:
        return Path(self.env.srcdir)

    def read(self) -> tuple[dict, Targets]:
        root = self.root()
        numbers = chapter_numbers(root / NOTEBOOKS_DIR)
        targets_path = root / TARGETS_FILE
        self.env.note_dependency(str(targets_path))
        try:
            targets = load_targets(targets_path)
        except (TargetsError, yaml.YAMLError) as error:
            raise self.error(str(error)) from None
        order = list(numbers) + [s for s in targets.chapters if s not in numbers] + list(
            (targets.generative.get("chapters") or {}))
        results = load_results(root / RESULTS_DIR, order)
        for slug in results:
            self.env.note_dependency(str(root / RESULTS_DIR / f"{slug}.json"))
        return results, targets

    def warn_problems(self, results, targets):
        bib = self.root() / BIB_FILE
        logger = logging.getLogger(__name__)
        for problem in problems(results, targets, bib_keys(bib) if bib.exists() else None):
            logger.warning(problem, location=(self.env.docname, self.lineno))

    # building blocks
    def inline(self, text: str) -> list:
        parsed, messages = self.state.inline_text(text, self.lineno)
        return parsed + messages

    def paragraph(self, text: str, classes=()) -> nodes.paragraph:
        para = nodes.paragraph(classes=list(classes))
        para += self.inline(text)
        return para

    def table(self, header: list[str], rows: list[list], classes=()) -> nodes.table:
        """A table of MyST inline cells; a cell may be a list (one paragraph each) or nodes."""
        table = nodes.table(classes=["colwidths-auto", *classes])
        group = nodes.tgroup(cols=len(header))
        table += group
        for _ in header:
            group += nodes.colspec(colwidth=1)
        head = nodes.thead()
        group += head
        head += self._row(header)
        body = nodes.tbody()
        group += body
        for row in rows:
            body += self._row(row)
        return table

    def _row(self, cells) -> nodes.row:
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            if isinstance(cell, nodes.Node):
                entry += cell
            else:
                for text in (cell if isinstance(cell, list) else [cell]):
                    if text:
                        entry += self.paragraph(text)
            row += entry
        return row

    def target_cell(self, target: str, verdict: str) -> str:
        """A target with its verdict: 'target ≥ 0.99: met', 'target ≤ 1e-5: **missed**', or 'recorded'."""
        if verdict == RECORDED:
            return RECORDED
        return f"target {target}: " + ("**missed**" if verdict == "missed" else verdict)


def keep_together(value: str) -> str:
    """A value and its spread on one line: no break around '±' or before a unit."""
    return re.sub(r"(\d) (s|min)\b", "\\1\u00a0\\2", value.replace(" ± ", "\u00a0±\u00a0"))


def chapter_link(slug: str, number: int | None, title: str) -> str:
    label = f"{number:02d} {title}" if number else title
    return f"{{doc}}`{label} </{NOTEBOOKS_DIR}/{number:02d}_{slug}>`" if number else _escape(label)


class ResultsSummary(_ResultsDirective):
    """``results-summary``: one row per chapter."""

    def run(self):
        results, targets = self.read()
        self.warn_problems(results, targets)
        if not results:
            return [self.paragraph("No chapter has stored results yet.")]
        numbers = chapter_numbers(self.root() / NOTEBOOKS_DIR)
        rows = []
        for r in summary_rows(results, targets, numbers):
            rows.append([
                [chapter_link(r.slug, r.number, r.title), f"{r.met} of {r.targets} targets met"],
                [r.headline, f"**{keep_together(r.value)}**"],
                [self.target_cell(r.target, r.verdict), r.reference],
                [keep_together(r.wall_time), _escape(r.device)],
            ])
        header = ["chapter", "headline number", "target and published", "full run"]
        return [self.table(header, rows, classes=["dlbook-results-summary"])]


class ResultsChapters(_ResultsDirective):
    """``results-chapters``: a section per chapter with every metric."""

    def run(self):
        results, targets = self.read()
        numbers = chapter_numbers(self.root() / NOTEBOOKS_DIR)
        sections = []
        for slug, record in results.items():
            chapter = targets.chapters.get(slug, Chapter(slug, slug, None, {}))
            number = numbers.get(slug)
            title = f"{number:02d} {chapter.title}" if number else chapter.title
            section = nodes.section(ids=[f"results-{slug}"], names=[nodes.fully_normalize_name(title)])
            section += nodes.title(text=title)
            self.state.document.note_implicit_target(section, section)
            rows = chapter_rows(slug, results, targets)
            checked = [r for r in rows if r.verdict != RECORDED]
            met = sum(r.verdict == "met" for r in checked)
            wall_time, device = run_text(record)
            link = chapter_link(slug, number, chapter.title)
            section += self.paragraph(
                f"{link}: {met} of {len(checked)} targets met. Full run: {wall_time} on "
                f"{_escape(device)}; torch {_escape(record.get('torch', '?'))}, dlbook "
                f"{_escape(record.get('dlbook', '?'))}, seed {record.get('seed', '?')}, finished "
                f"{_escape(str(record.get('finished', '?'))[:10])}.")
            body = [[r.name, f"**{keep_together(r.value)}**",
                     [self.target_cell(r.target, r.verdict)] + r.references]
                    for r in rows]
            section += self.table(["metric", "this run", "target and compared with"], body,
                                  classes=["dlbook-results-chapter"])
            sections.append(section)
        return sections


class ResultsGenerative(_ResultsDirective):
    """``results-generative``: VAE, GAN and diffusion on one yardstick, with their samples."""

    def run(self):
        results, targets = self.read()
        spec = targets.generative
        names = spec.get("chapters") or {}
        yardstick = spec.get("yardstick") or {}
        rows, landed, missing = generative_rows(results, targets)
        out = []
        if rows:
            header = ["model"] + [f"{v.get('name', k)} {'↓' if v.get('better') == 'lower' else '↑'}"
                                  for k, v in yardstick.items()]
            body = [[_escape(r.model)] + [f"**{_escape(r.values[k])}**" for k in yardstick] for r in rows]
            out.append(self.table(header, body, classes=["dlbook-results-generative"]))
            out.append(self.paragraph("↓ lower is better, ↑ higher is better."))
            out.extend(self.samples(landed, targets, names))
        if missing:
            which = ", ".join(names.get(slug, slug) for slug in missing)
            out.append(self.paragraph(
                f"Not landed yet: {_escape(which)}. Each fills in its row and its grid of samples here "
                f"when its full run writes its results file."))
        return out

    def samples(self, landed, targets, names) -> list:
        """The sample grids side by side, one column per chapter, under a line that says so."""
        root = self.root()
        cells, captions = [], []
        logger = logging.getLogger(__name__)
        for slug in landed:
            path = sample_grid(slug, targets)
            if not (root / path).exists():
                logger.warning(f"results/{slug}.json exists but its grid of samples {path} does not: save it "
                               f"there, or name it under generative.sample_grids in {TARGETS_FILE}",
                               location=(self.env.docname, self.lineno))
                continue
            image = nodes.image(uri="/" + path, alt=f"samples of {names.get(slug, slug)}", width="100%")
            cells.append(image)
            captions.append(_escape(names.get(slug, slug)))
        if not cells:
            return []
        return [self.paragraph("Samples of each chapter's best model, side by side:"),
                self.table(captions, [cells], classes=["dlbook-results-samples"])]


class RuntimeTable(_ResultsDirective):
    """``runtime-table`` (how-to page): measured full and smoke times per chapter."""

    def run(self):
        results, targets = self.read()
        root = self.root()
        rows = runtime_rows(results, targets, root)
        for row in rows:
            if row.number:
                self.env.note_dependency(str(root / NOTEBOOKS_DIR / f"{row.number:02d}_{row.slug}.ipynb"))
        if not rows:
            return [self.paragraph("No chapter has a stored full run yet.")]
        body = [[chapter_link(r.slug, r.number, r.title), f"**{keep_together(r.full)}**", keep_together(r.smoke),
                 _escape(r.device)] for r in rows]
        table = self.table(["chapter", "full run", "smoke run", "measured on"], body,
                           classes=["dlbook-runtime"])
        return [table, self.paragraph(gpu_advice(rows))]


STATIC = Path(__file__).resolve().parent / "static"


def add_static_path(app):
    """Serve book/_ext/static (the extensions' CSS), once."""
    if str(STATIC) not in app.config.html_static_path:
        app.config.html_static_path.append(str(STATIC))


def setup(app):
    # the tables' own rules (cards on a phone), served from the site itself
    app.connect("builder-inited", add_static_path)
    app.add_css_file("dlbook-results.css")
    app.add_directive("results-summary", ResultsSummary)
    app.add_directive("results-chapters", ResultsChapters)
    app.add_directive("results-generative", ResultsGenerative)
    app.add_directive("runtime-table", RuntimeTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "2.0"}
