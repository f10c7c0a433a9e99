"""The built website (make book): no CDN, and every page loads in a real
browser without console errors or broken images.

Screenshots of every page go to test-artifacts/site/.
"""

from __future__ import annotations

import functools
import http.server
import re
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import pytest

from sphinx_helpers import load_extension
from tools.run_tests import chromium, missing_chromium

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"
ARTIFACTS = ROOT / "test-artifacts" / "site"
PAGES = sorted(p.relative_to(SITE).as_posix() for p in SITE.rglob("*.html")
               if not p.relative_to(SITE).as_posix().startswith("_")) if SITE.exists() else []


def test_site_was_built():
    assert (SITE / "index.html").exists(), "no _build/html/index.html: run `make book` first"
    assert "notebooks/03_cnn.html" in PAGES


class ResourceParser(HTMLParser):
    """Collects the URLs a page *loads* (scripts, styles, images, frames), not its links."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "img", "iframe", "source", "audio", "video") and a.get("src"):
            self.urls.append(a["src"])
        if tag == "link" and a.get("href") and {"stylesheet", "preload", "icon", "modulepreload",
                                                 "prefetch"} & set((a.get("rel") or "").split()):
            self.urls.append(a["href"])


def external(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme not in ("", "data", "file") or url.startswith("//")


CDN_HOSTS = ("cdn.jsdelivr.net", "unpkg.com", "cdnjs.cloudflare.com", "fonts.googleapis.com",
             "fonts.gstatic.com", "ajax.googleapis.com", "code.jquery.com", "stackpath.bootstrapcdn.com",
             "cdn.plot.ly")


@pytest.mark.parametrize("page", PAGES)
def test_no_page_loads_from_a_cdn(page):
    html = (SITE / page).read_text(encoding="utf-8")
    parser = ResourceParser()
    parser.feed(html)
    outside = [u for u in parser.urls if external(u)]
    assert not outside, f"{page} loads resources from other hosts: {outside}"
    named = [host for host in CDN_HOSTS if host in html]
    assert not named, f"{page} names CDN hosts: {named}"


@pytest.fixture(scope="module")
def server():
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(SITE))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    executable = chromium()
    if executable is None:
        pytest.fail(missing_chromium(), pytrace=False)
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


def open_page(browser, server, page_path, width=1280, height=900):
    """Load a page in a window ``width`` pixels wide; return (page, console errors, requests to other hosts)."""
    page = browser.new_page(viewport={"width": width, "height": height})
    errors, foreign = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: foreign.append(r.url) if not r.url.startswith((server, "data:", "blob:", "about:")) else None)
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    page.goto(f"{server}/{page_path}", wait_until="load")
    page.wait_for_load_state("networkidle")
    return page, errors, foreign


@pytest.mark.parametrize("page_path", PAGES)
def test_page_loads_in_chromium(browser, server, page_path):
    page, errors, foreign = open_page(browser, server, page_path)
    try:
        if page.evaluate("() => !!document.querySelector('.math, mjx-container')"):
            page.wait_for_function("() => document.querySelectorAll('mjx-container').length > 0", timeout=15000)
        broken = page.evaluate("() => Array.from(document.images)"
                               ".filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src.slice(0, 80))")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / (page_path.replace("/", "__").removesuffix(".html") + ".png")),
                        full_page=True)
    finally:
        page.close()
    assert not errors, f"{page_path}: console errors {errors}"
    assert not foreign, f"{page_path}: requests to other hosts {foreign}"
    assert not broken, f"{page_path}: broken images {broken}"


def test_chapter_renders_math_widgets_and_collapsed_solutions(browser, server):
    page, errors, _ = open_page(browser, server, "notebooks/03_cnn.html")
    try:
        page.wait_for_function("() => document.querySelectorAll('mjx-container').length > 10", timeout=15000)
        page.wait_for_selector(".widget-slider", timeout=15000)
        sliders = page.locator(".widget-slider").count()
        solutions = page.evaluate("""() => Array.from(document.querySelectorAll('.cell.tag_solution'))
            .map(c => { const d = c.querySelector('details'); return d ? d.open : 'no details'; })""")
        figures = page.evaluate("() => Array.from(document.querySelectorAll('.cell_output img')).length")
    finally:
        page.close()
    assert not errors, errors
    assert sliders == 4, f"the output-size explorer should show 4 sliders, found {sliders}"
    assert solutions and all(s is False for s in solutions), f"solution cells not collapsed: {solutions}"
    assert figures >= 15, f"only {figures} figures on the chapter page"


def _repository_setting() -> str:
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    return ((config.get("repository") or {}).get("url") or "").strip().rstrip("/")


@pytest.mark.parametrize("page", PAGES)
def test_links_to_the_repository_only_when_it_is_set(page):
    """No page sends a reader to a repository, or to Colab, that is not the book's own."""
    html = (SITE / page).read_text(encoding="utf-8")
    hrefs = re.findall(r'href="(https?://[^"]+)"', html)
    url = _repository_setting()
    repo_links = [h for h in hrefs if h.startswith("https://github.com/") or "colab.research.google.com" in h
                  or "kaggle.com/kernels" in h]
    if not url:
        assert not repo_links, f"{page} links to a repository although none is set: {repo_links}"
    else:
        owner_name = url.removeprefix("https://github.com/")
        strangers = [h for h in repo_links if owner_name not in h]
        assert not strangers, f"{page} links to other repositories: {strangers}"


def _toc_pages() -> list[str]:
    """The pages of the book, as _toc.yml lists them (root first), by their address in the site."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]] + [c["file"] for part in toc.get("parts", []) for c in part.get("chapters", [])]
    return [f"{f}.html" for f in files]


@pytest.mark.parametrize("page", _toc_pages())
def test_every_page_ends_with_a_report_link_only_when_the_repository_is_set(page):
    """A new issue on the book's tracker, pre-filled with the page's name; left out while no repository is set
    (the link itself: tests/test_badges.py)."""
    from urllib.parse import parse_qs, urlsplit

    html = (SITE / page).read_text(encoding="utf-8")
    links = re.findall(r'<p class="dlbook-report-problem">.*?href="([^"]+)"', html, re.S)
    url = _repository_setting()
    if not url:
        assert not links, f"{page} has a report link although no repository is set"
        return
    assert len(links) == 1, f"{page}: {len(links)} report links"
    href = links[0].replace("&amp;", "&")
    assert href.startswith(f"{url}/issues/new?"), href
    title = parse_qs(urlsplit(href).query)["title"][0]
    assert f"({page})" in title, f"{page}: the report's title {title!r} does not name the page"


RAW_TABLE = re.compile(r"^\s*\|[^\n]*\|\s*\n\s*\|[\s:|-]*-{3,}[\s:|-]*\|\s*$", re.M)


@pytest.mark.parametrize("page", PAGES)
def test_no_page_shows_a_table_as_raw_text(page):
    """A Markdown table that was not rendered shows as '| a | b |' lines in the page's text."""
    html = (SITE / page).read_text(encoding="utf-8")
    text = _visible_text(html)
    found = RAW_TABLE.search(text)
    assert not found, f"{page} shows a Markdown table as raw text: {found.group(0)[:120]!r}"


def _visible_text(html: str) -> str:
    """The text of a page outside code blocks (where a table may be code, on purpose)."""

    class Text(HTMLParser):
        def __init__(self):
            super().__init__()
            self.parts, self.skip = [], 0

        def handle_starttag(self, tag, attrs):
            if tag in ("pre", "script", "style"):
                self.skip += 1

        def handle_endtag(self, tag):
            if tag in ("pre", "script", "style") and self.skip:
                self.skip -= 1

        def handle_data(self, data):
            if not self.skip:
                self.parts.append(data)

    parser = Text()
    parser.feed(html)
    return "".join(parser.parts)


@pytest.mark.parametrize("page_path", [p for p in PAGES if p.startswith("notebooks/")])
def test_code_and_outputs_fit_the_column_on_a_desktop(browser, server, page_path):
    """On a 1280-pixel screen no code or output block is cut at the right edge."""
    page, errors, _ = open_page(browser, server, page_path)
    try:
        cut = page.evaluate("""() => Array.from(document.querySelectorAll('pre'))
            .filter(e => e.scrollWidth > e.clientWidth + 2)
            .map(e => e.textContent.split('\\n').reduce((a, b) => b.length > a.length ? b : a, ''))""")
    finally:
        page.close()
    assert not cut, f"{page_path}: {len(cut)} blocks wider than the column, e.g. {cut[0][:90]!r}"


def _fragments(text: str, size: int = 60) -> list[str]:
    """Whitespace-normalized pieces of an explanation, as a browser would show them."""
    words = " ".join(text.split())
    return [words[i:i + size] for i in range(0, max(1, len(words) - size // 2), size)][:4]


@pytest.mark.parametrize("page_path", [p for p in PAGES if p.startswith("notebooks/")])
def test_no_exercise_explanation_is_visible_without_a_click(browser, server, page_path):
    """Under each exercise the website shows the check's verdict; its worked
    explanation (the answer) is folded until the reader opens it."""
    from dlbook import exercises

    page, errors, _ = open_page(browser, server, page_path)
    try:
        visible = " ".join(page.evaluate("() => document.body.innerText").split())
        keys = sorted(set(re.findall(r"PASS \[([a-z0-9_]+\.[a-z0-9_]+)\]", visible)))
        shown = {key: frag for key in keys for frag in _fragments(exercises.get(key).explanation)
                 if frag in visible}
        folded = page.evaluate("""() => Array.from(document.querySelectorAll('details.dlbook-explanation'))
            .map(d => d.open)""")
        # opening one proves the explanation is there, one click away
        page.locator("details.dlbook-explanation > summary").first.click()
        opened = " ".join(page.evaluate("() => document.body.innerText").split())
    finally:
        page.close()
    assert keys, f"{page_path}: no exercise verdict (PASS [key]) on the page"
    assert not shown, f"{page_path}: exercise explanations visible without a click: {shown}"
    assert len(folded) == len(keys) and not any(folded), \
        f"{page_path}: {len(keys)} verdicts but folded explanations {folded}"
    assert any(frag in opened for key in keys for frag in _fragments(exercises.get(key).explanation)), \
        f"{page_path}: opening an explanation showed none of them"


# ---------------------------------------------------------------- the results page and the runtime table
# (book/results.md and book/how_to_use.md, built by book/_ext/results_table.py from results/*.json and
# book/targets.yml; the machinery itself is tested in tests/test_targets.py)


def _results_table():
    return load_extension("results_table.py", "dlbook_results_table_site")


def _html_table(html: str, css_class: str) -> str:
    start = html.index(css_class)
    return html[start:html.index("</table>", start)]


def test_the_results_page_shows_every_results_file_and_every_target():
    rt = _results_table()
    results = rt.load_results(ROOT / "results")
    targets = rt.load_targets(ROOT / "book" / "targets.yml")
    html = (SITE / "book" / "results.html").read_text(encoding="utf-8")
    text = " ".join(_visible_text(html).replace("\u2019", "'").split())  # Sphinx's smart quotes
    summary = _html_table(html, "dlbook-results-summary")
    assert summary.count("<tr") == 1 + len(results), "the summary has one row per results file"
    for slug, record in results.items():
        chapter = targets.chapters[slug]
        assert f'id="results-{slug}"' in html, f"no section for {slug}"
        assert " ".join(chapter.entries[chapter.headline].name.split()) in _visible_text(summary)
        for key, entry in chapter.entries.items():
            assert " ".join(entry.name.split()) in text, f"{slug}.{key}: {entry.name!r} not on the page"
            shown = rt.format_metric(key, record["metrics"], entry)
            assert shown in text, f"{slug}.{key}: {shown!r} not on the page"
    # an error of 3.6e-7 is written so, not as 0.0000
    error = results["attention"]["metrics"]["attention_parity_max_abs_err"]
    assert re.fullmatch(r"\d\.\de-\d+", rt.sci(error)) and rt.sci(error) in text
    landed = [slug for slug in targets.generative["chapters"] if slug in results]
    assert ("Not landed yet" in text) == (len(landed) < len(targets.generative["chapters"]))


def test_the_how_to_page_gives_the_measured_runtimes():
    rt = _results_table()
    results = rt.load_results(ROOT / "results")
    html = (SITE / "book" / "how_to_use.html").read_text(encoding="utf-8")
    table = " ".join(_visible_text(_html_table(html, "dlbook-runtime")).split())  # no-break spaces too
    for row in rt.runtime_rows(results, rt.load_targets(ROOT / "book" / "targets.yml"), ROOT):
        for shown in (row.full, row.smoke, row.title, row.device):
            assert " ".join(shown.split()) in table, f"{row.slug}: {shown!r} not in the runtime table"
    assert "No chapter needs one" in _visible_text(html)


@pytest.mark.parametrize("page_path", ["book/results.html", "book/how_to_use.html"])
def test_results_and_runtimes_on_a_phone(browser, server, page_path):
    """At 390 px the page never scrolls sideways; a wide table scrolls inside its own box, and the
    results tables turn into cards (book/_ext/static/dlbook-results.css) that fit the column."""
    page = browser.new_page(viewport={"width": 390, "height": 844})
    try:
        page.goto(f"{server}/{page_path}", wait_until="load")
        page.wait_for_load_state("networkidle")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / (page_path.replace("/", "__").removesuffix(".html") + "-390px.png")),
                        full_page=True)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        tables = page.evaluate("""() => Array.from(document.querySelectorAll('article table')).map(t => {
            const box = t.parentElement;
            return {wide: t.scrollWidth > box.clientWidth + 1, scrolls: getComputedStyle(box).overflowX,
                    cards: t.matches('.dlbook-results-summary, .dlbook-results-chapter')};
        })""")
    finally:
        page.close()
    assert overflow <= 1, f"{page_path} scrolls sideways by {overflow} px at 390 px"
    assert tables, f"no tables on {page_path}"
    cut = [t for t in tables if t["wide"] and t["scrolls"] not in ("auto", "scroll")]
    assert not cut, f"{page_path}: {len(cut)} wide tables that do not scroll in their own box"
    # the results tables become cards on a phone: nothing of them is out of sight
    hidden = [t for t in tables if t["cards"] and t["wide"]]
    assert page_path != "book/results.html" or sum(t["cards"] for t in tables) >= 2
    assert not hidden, f"{page_path}: {len(hidden)} results tables wider than the phone's column"


# Chinese text (the newcomer's checks) ------------------------------------------------------------

# Draws the first two different Chinese characters of an element in its own font on a canvas and
# says whether they came out as the same picture: without a font that has them, every character is
# the same empty box (.notdef).
SAME_GLYPH_JS = """(selector) => {
    const el = Array.from(document.querySelectorAll(selector)).find(e => /[\\u4e00-\\u9fff]/.test(e.textContent));
    if (!el) return null;
    const chars = Array.from(new Set(el.textContent.match(/[\\u4e00-\\u9fff]/g))).slice(0, 2);
    const style = getComputedStyle(el);
    const draw = (ch) => {
        const canvas = document.createElement('canvas');
        canvas.width = canvas.height = 64;
        const g = canvas.getContext('2d');
        g.font = `${style.fontWeight} 40px ${style.fontFamily}`;
        g.fillText(ch, 8, 48);
        return Array.from(g.getImageData(0, 0, 64, 64).data).join(',');
    };
    return {text: chars.join(''), same: chars.length === 2 && draw(chars[0]) === draw(chars[1])};
}"""


@pytest.mark.parametrize("selector", ["h1", "td"])
def test_the_glossarys_chinese_is_drawn_in_a_font_that_has_it(browser, server, selector):
    """The title (English / 中文) and the 中文 column: two different characters look different.

    Needs a CJK font where the tests run (Debian: fonts-noto-cjk; .ci/run installs it)."""
    page, errors, _ = open_page(browser, server, "book/glossary.html")
    try:
        found = page.evaluate(SAME_GLYPH_JS, selector)
    finally:
        page.close()
    assert found is not None, f"no <{selector}> with Chinese text on the glossary page"
    assert len(found["text"]) == 2, found
    assert not found["same"], (f"{found['text']!r} in the glossary's <{selector}> are drawn as the same "
                               f"glyph, an empty box: no font with Chinese characters (fonts-noto-cjk)")


# Search (the site's own, offline: Sphinx's searchindex.js) ---------------------------------------

def _chapters_mentioning(word: str) -> list[str]:
    """The chapter pages whose notebook's text (any cell) holds ``word``."""
    import json

    found = []
    for notebook in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        if any(word.lower() in "".join(c["source"]).lower() for c in cells):
            found.append(f"notebooks/{notebook.stem}.html")
    return found


@pytest.mark.parametrize("word, chapter", [("Weisfeiler", "notebooks/06_gnn.html"),
                                           ("im2col", "notebooks/03_cnn.html")])
def test_search_finds_a_word_in_the_one_chapter_that_has_it(browser, server, word, chapter):
    """A reader clicks the search field on the landing page, types a word only one chapter uses and
    presses Enter: the search page lists that chapter, and no other chapter."""
    assert _chapters_mentioning(word) == [chapter], (
        f"pick another word: {word!r} is in {_chapters_mentioning(word)}, not only in {chapter}")
    page, errors, _ = open_page(browser, server, "book/intro.html")
    try:
        page.locator(".search-button-field:visible").first.click()
        field = page.locator("input[name=q]:visible").first
        field.fill(word)
        field.press("Enter")
        page.wait_for_url("**/search.html?q=*")
        # searchtools.js writes the heading "Search Results" when it has finished, hits or none
        page.wait_for_function("() => /Search Results/.test(document.querySelector('#search-results h2')?.textContent)",
                               timeout=15000)
        hits = page.evaluate("() => Array.from(document.querySelectorAll('#search-results li a'))"
                             ".map(a => new URL(a.getAttribute('href'), location.href).pathname.replace(/^\\//, ''))")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"search-{word}.png"))
    finally:
        page.close()
    assert not errors, f"console errors while searching: {errors}"
    assert chapter in hits, f"searching {word!r} did not find {chapter}; results: {hits}"
    others = [h for h in hits if h.startswith("notebooks/") and h != chapter]
    assert not others, f"searching {word!r} lists chapters that do not have it: {others}"



# Phone width and dark mode ------------------------------------------------------------------------

def _wait_for_math(page):
    if page.evaluate("() => !!document.querySelector('.math, mjx-container')"):
        page.wait_for_function("() => document.querySelectorAll('mjx-container').length > 0", timeout=15000)
        page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")


# What of the page's text reaches past the right edge of the window without being in a box that
# scrolls sideways (overflow-x auto or scroll): pushed off the page, or cut by a box that hides
# its overflow. MathJax's copy for screen readers (mjx-assistive-mml) is hidden on purpose.
BEYOND_THE_EDGE_JS = """() => {
    const width = window.innerWidth, found = [];
    const name = (e) => e.tagName.toLowerCase() + (e.className && e.className.baseVal === undefined && e.className
        ? '.' + e.className.trim().split(/\\s+/).slice(0, 2).join('.') : '');
    const article = document.querySelector('article.bd-article') || document.body;
    for (const e of article.querySelectorAll('*')) {
        if (e.closest('mjx-assistive-mml')) continue;
        const box = e.getBoundingClientRect();
        if (!(box.right > width + 1 && box.width > 0 && box.height > 0)) continue;
        let verdict = 'off the page';
        for (let a = e.parentElement; a; a = a.parentElement) {
            const overflow = getComputedStyle(a).overflowX;
            if (overflow === 'auto' || overflow === 'scroll') { verdict = null; break; }
            if ((overflow === 'hidden' || overflow === 'clip') && a.getBoundingClientRect().right <= width + 1) {
                verdict = 'cut by ' + name(a); break; }
        }
        if (verdict) found.push(name(e) + ' "' + (e.textContent || '').trim().slice(0, 40) + '" ' + verdict);
    }
    return found;
}"""


@pytest.mark.parametrize("page_path", PAGES)
def test_every_page_fits_a_phone(browser, server, page_path):
    """At a 390-pixel viewport the page itself never scrolls sideways, and nothing is pushed past the
    edge or cut off there: wide tables, code, outputs and formulas scroll inside their own box."""
    page, errors, _ = open_page(browser, server, page_path, width=390, height=844)
    try:
        _wait_for_math(page)
        sideways = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        beyond = page.evaluate(BEYOND_THE_EDGE_JS)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / (page_path.replace("/", "__").removesuffix(".html") + "-phone.png")))
    finally:
        page.close()
    assert sideways <= 1, f"{page_path} scrolls sideways by {sideways} px at 390 px"
    assert not beyond, f"{page_path}: {len(beyond)} elements past the edge at 390 px, e.g. {beyond[:3]}"


def _has_figures(page_path: str) -> bool:
    return bool(re.search(r'<img (?![^>]*alt="Open in)', (SITE / page_path).read_text(encoding="utf-8")))


# For every figure of the article: the colour behind it (the first opaque background of the image
# or a box around it), and how much of the figure, drawn on that colour, is dark ink (lines, labels).
FIGURES_JS = """() => {
    const luminance = (colour) => {
        const [r, g, b] = colour.match(/[\\d.]+/g).map(Number);
        return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
    };
    const behind = (e) => {
        for (; e; e = e.parentElement) {
            const c = getComputedStyle(e).backgroundColor, parts = c.match(/[\\d.]+/g);
            if (parts && (parts.length < 4 || +parts[3] > 0.5)) return c;
        }
        return 'rgb(255, 255, 255)';
    };
    const figures = [];
    for (const img of document.querySelectorAll('article img')) {
        if (img.naturalWidth < 64 || (img.alt || '').startsWith('Open in')) continue;
        const colour = behind(img), canvas = document.createElement('canvas');
        const w = canvas.width = Math.min(img.naturalWidth, 300);
        const h = canvas.height = Math.max(1, Math.round(w * img.naturalHeight / img.naturalWidth));
        const g = canvas.getContext('2d');
        g.fillStyle = colour;
        g.fillRect(0, 0, w, h);
        g.drawImage(img, 0, 0, w, h);
        const d = g.getImageData(0, 0, w, h).data;
        let ink = 0;
        for (let i = 0; i < d.length; i += 4) if ((0.2126 * d[i] + 0.7152 * d[i + 1] + 0.0722 * d[i + 2]) / 255 < 0.5) ink++;
        figures.push({src: img.getAttribute('src').slice(0, 60), behind: colour, light: luminance(colour),
                      ink: ink / (w * h)});
    }
    return {theme: document.documentElement.dataset.theme, page: luminance(behind(document.querySelector('.bd-main'))),
            figures};
}"""


@pytest.mark.parametrize("page_path", [p for p in PAGES if _has_figures(p)])
def test_figures_stay_visible_in_dark_mode(browser, server, page_path):
    """The reader switches the theme to dark (the button in the header): the page turns dark, and
    every figure still sits on light paper, with its dark lines and labels showing."""
    page, errors, _ = open_page(browser, server, page_path)
    try:
        # the button cycles through the modes (light, auto, dark, in an order that depends on the system's)
        for _ in range(3):
            if page.evaluate("() => document.documentElement.dataset.theme") == "dark":
                break
            page.locator(".theme-switch-button:visible").first.click()
        page.evaluate("() => Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))")
        seen = page.evaluate(FIGURES_JS)
        page.locator("article img:not([alt^='Open in'])").first.scroll_into_view_if_needed()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / (page_path.replace("/", "__").removesuffix(".html") + "-dark.png")))
    finally:
        page.close()
    assert seen["theme"] == "dark" and seen["page"] < 0.25, f"{page_path}: dark mode did not darken the page: {seen}"
    assert seen["figures"], f"{page_path}: no figures found"
    on_dark = [f for f in seen["figures"] if f["light"] < 0.8]
    assert not on_dark, f"{page_path}: {len(on_dark)} figures on a dark background, e.g. {on_dark[:2]}"
    blank = [f for f in seen["figures"] if f["ink"] < 0.001]
    assert not blank, f"{page_path}: {len(blank)} figures with no visible ink in dark mode, e.g. {blank[:2]}"


def test_the_references_list_lee_hung_yis_course():
    """The chapters build on Lee Hung-yi's Machine Learning course (NTU); the one bibliography has it."""
    text = " ".join(_visible_text((SITE / "book" / "references.html").read_text(encoding="utf-8")).split())
    assert "Hung-yi Lee" in text and "Machine Learning (機器學習)" in text and "National Taiwan University" in text
