"""A smoke build of the whole book: every chapter executes and the site is complete."""

from __future__ import annotations

import json
import re

import pytest
from conftest import HTML, OUT, ROOT, site_pages

from flowbound.book.build import figure_chapters


def test_every_chapter_page_is_built(smoke_build):
    names = {p.relative_to(HTML).as_posix() for p in site_pages()}
    chapters = (
        *("introduction", "background", "impossibility", "possibility", "related"),
        *("conclusion", "report", "proofs", "linear", "multiclass", "additional"),
    )
    assert {f"book/_executed/{c}.html" for c in ("index", *chapters)} <= names


def test_pages_have_no_raw_markup_or_errors(smoke_build):
    for page in site_pages():
        text = page.read_text()
        assert "{glue:" not in text and "```{" not in text, page
        assert "Traceback" not in text and "output error" not in text, page
        prose = re.sub(r"<(script|pre|code)\b.*?</\1>", "", text, flags=re.S)
        assert "$\\" not in prose, f"TeX left unparsed in {page}"


@pytest.mark.parametrize(
    "chapter, figures",
    [
        ("introduction", 1),
        ("background", 4),
        ("impossibility", 3),
        ("possibility", 2),
        ("linear", 2),
        ("additional", 3),
    ],
)
def test_images_exist_and_math_is_served_locally(smoke_build, chapter, figures):
    page = HTML / "book" / "_executed" / f"{chapter}.html"
    text = page.read_text()
    images = re.findall(r'<img[^>]+src="([^"]+)"', text)
    assert len(images) >= figures
    for src in images:
        assert (page.parent / src).resolve().is_file(), src
    scripts = re.findall(r'<script[^>]+src="([^"]*mathjax[^"]*)"', text)
    assert scripts and not any(s.startswith("http") for s in scripts)
    assert (page.parent / scripts[0].split("?")[0]).resolve().is_file()


def test_figures_are_saved_and_the_profile_was_injected(smoke_build):
    figures = OUT / "_build" / "figures"
    paper_figures = [f"fig{n:02d}" for n in figure_chapters(ROOT)]
    assert len(paper_figures) >= 11
    for name in ("bg-warp", "bg-lambda", "bg-jacobian", "bg-midpoint", *paper_figures):
        assert (figures / f"{name}.png").stat().st_size > 1000
        assert (figures / f"{name}.pdf").is_file()
    nb = json.loads((ROOT / "book" / "_executed" / "background.ipynb").read_text())
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and 'profile = "smoke"' in "".join(injected[0]["source"])
    html = (HTML / "book" / "_executed" / "background.html").read_text()
    assert "<strong>smoke</strong>" in html or ">smoke<" in html


def test_figure_numbers_come_from_the_chapters():
    chapters = figure_chapters(ROOT)
    assert set(chapters) == set(range(1, 13))
    assert chapters[5] == chapters[6] == "possibility" and chapters[12] == "certifying"


def test_chapter_cells_are_short():
    """A chapter's cells call the library: sentences, tables and glue are built by
    ``experiments.*_summary`` / ``*_table`` functions, so no cell exceeds 15 lines."""
    cell = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```\s*$", re.S | re.M)
    for chapter in sorted((ROOT / "book").glob("*.md")):
        for body in cell.findall(chapter.read_text(encoding="utf-8")):
            lines = [x for x in body.splitlines() if x.strip() and not x.startswith(":tags:")]
            assert len(lines) <= 15, f"{chapter.name}: a cell of {len(lines)} lines:\n{body}"
