"""The smoke site in a real browser: headless Chromium opens every page.

For each page the browser loads a copy with a small script that records,
after the load event and MathJax's typesetting, every image's natural width;
Chromium then dumps the rendered DOM and saves a screenshot to
``_build/smoke/_build/screenshots``. The test fails on a broken image, TeX
left unrendered, an execution error, or one of the paper's figures 1-11
missing from the site.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from html import unescape
from pathlib import Path

import pytest
from conftest import HTML, OUT, site_pages

SHOTS = OUT / "_build" / "screenshots"
_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
# Runs after load; waits for MathJax 3 to finish, then marks every image.
_PROBE = """
<script>
window.addEventListener("load", function () {
  var done = function () {
    for (const img of document.images) {
      img.setAttribute("data-natural-width", String(img.naturalWidth));
    }
    document.body.setAttribute("data-probe", "done");
  };
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(done, done);
  } else {
    done();
  }
});
</script>
"""


def _chromium() -> str:
    """The Chromium binary, installed with apt (Debian package ``chromium``) when missing."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    cmds = [["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]]
    for cmd in cmds:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"could not install Chromium ({' '.join(cmd)}): {proc.stderr[-500:]}")
    found = shutil.which("chromium")
    if not found:
        pytest.fail("apt-get installed the chromium package but no chromium binary is on PATH")
    return found


def _pages() -> list[Path]:
    # the root index.html only redirects to book/index.html
    return [p for p in site_pages() if 'http-equiv="Refresh"' not in p.read_text()[:500]]


def _render(chromium: str, page: Path) -> str:
    """The rendered DOM of ``page`` after the probe ran; saves a screenshot."""
    probe = page.with_name(f".probe-{page.name}")
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    shot = SHOTS / (page.relative_to(HTML).as_posix().replace("/", "__") + ".png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory() as profile:
            proc = subprocess.run(
                [
                    chromium,
                    *_FLAGS,
                    f"--user-data-dir={profile}",
                    "--virtual-time-budget=15000",
                    "--window-size=1280,2400",
                    f"--screenshot={shot}",
                    "--dump-dom",
                    probe.as_uri(),
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
    finally:
        probe.unlink(missing_ok=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.stat().st_size > 10_000, f"empty screenshot for {page}"
    return proc.stdout


def _visible_text(dom: str) -> str:
    dom = re.sub(r"<(script|style|pre|code|mjx-assistive-mml)\b.*?</\1>", " ", dom, flags=re.S)
    return unescape(re.sub(r"<[^>]+>", " ", dom))


@pytest.fixture(scope="module")
def rendered(smoke_build) -> dict[str, str]:
    chromium = _chromium()
    return {p.relative_to(HTML).as_posix(): _render(chromium, p) for p in _pages()}


def test_every_page_renders_in_the_browser(rendered):
    assert len(rendered) >= 12, sorted(rendered)
    for name, dom in rendered.items():
        assert 'data-probe="done"' in dom, f"{name}: the page did not finish loading"


def test_no_broken_images(rendered):
    for name, dom in rendered.items():
        for img in re.findall(r"<img\b[^>]*>", dom):
            width = re.search(r'data-natural-width="(\d+)"', img)
            assert width and int(width.group(1)) > 0, f"{name}: broken image {img[:200]}"


def test_no_raw_tex_left(rendered):
    for name, dom in rendered.items():
        text = _visible_text(dom)
        for marker in ("\\(", "\\[", "$$", "\\frac", "\\epsilon", "\\mathrm", "\\begin{"):
            assert marker not in text, f"{name}: raw TeX {marker!r} left unrendered"
        if "mjx-container" not in dom:
            assert "$" not in text, f"{name}: a $ is shown but MathJax rendered nothing"


def test_no_execution_errors(rendered):
    for name, dom in rendered.items():
        text = _visible_text(dom)
        assert "Traceback" not in text and "Error:" not in text, f"{name}: execution error"
        assert "{glue" not in text, f"{name}: a glue reference was not filled"


def test_every_glued_figure_is_drawn_as_an_image(rendered):
    """A figure glued from a cell without an inline backend reaches the page as its
    text form ("<Figure size 760x260 with 2 Axes>"): no page may show one, and every
    page shows at least as many drawn images as its source has {glue} figure blocks."""
    book = Path(__file__).resolve().parents[1] / "book"
    for name, dom in rendered.items():
        text = _visible_text(dom)
        assert not re.search(r"<Figure size [\d.]+x[\d.]+", text), f"{name}: a figure as text"
        assert "matplotlib.figure.Figure" not in text, f"{name}: a figure as text"
        source = book / Path(name).with_suffix(".md").name
        if not source.exists():
            continue
        blocks = len(re.findall(r"^```\{glue(?::figure)?\}", source.read_text(), flags=re.M))
        drawn = [
            int(w)
            for w in re.findall(r'<img\b[^>]*data-natural-width="(\d+)"', dom)
            if int(w) > 100
        ]
        assert len(drawn) >= blocks, f"{name}: {blocks} glued figures, {len(drawn)} drawn"


def test_every_figure_of_the_paper_is_shown(rendered):
    found: dict[int, str] = {}
    for name, dom in rendered.items():
        for block in re.findall(r"<figure\b.*?</figure>", dom, flags=re.S):
            caption = re.search(r"Figure (\d+)\.", _visible_text(block))
            width = re.search(r'data-natural-width="(\d+)"', block)
            if caption and width and int(width.group(1)) > 100:
                found[int(caption.group(1))] = name
    missing = sorted(set(range(1, 12)) - set(found))
    assert not missing, f"figures missing from the site: {missing}"


def _cells(row: str) -> list[str]:
    """Each cell's visible content: its text (code spans included), or "math" / "image"
    for a cell that MathJax or an image fills (their glyphs are not text)."""
    out = []
    for raw in re.findall(r"<t[hd]\b[^>]*>(.*?)</t[hd]>", row, re.S):
        text = unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)\b.*?</\1>", "", raw)))
        if not text.strip() and "<mjx-container" in raw:
            text = "math"
        elif not text.strip() and "<img" in raw:
            text = "image"
        out.append(" ".join(text.split()))
    return out


def test_every_table_row_has_the_header_cells_and_none_is_empty(rendered):
    """A stray "|" in a computed cell (as in ||M r||) splits it: the row then has
    more cells than the header, or a cell that should hold a number is empty."""
    tables = 0
    for name, dom in rendered.items():
        for table in re.findall(r"<table\b.*?</table>", dom, flags=re.S):
            tables += 1
            rows = re.findall(r"<tr\b.*?</tr>", table, flags=re.S)
            header = _cells(rows[0])
            for row in rows[1:]:
                cells = _cells(row)
                assert len(cells) == len(header), f"{name}: row {cells} vs header {header}"
                assert all(cells), f"{name}: an empty cell in {cells} (header {header})"
    assert tables >= 10, f"only {tables} tables found on the site"
