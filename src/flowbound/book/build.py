"""Build the book: run each chapter through papermill, then Jupyter Book.

``build_book(profile)`` converts every chapter ``book/<name>.md`` listed in
``_toc.yml`` as ``book/_executed/<name>`` to a notebook (jupytext), executes
it with the profile injected as a papermill parameter, and builds the HTML
with notebook execution off and warnings as errors. Figures are saved to
``<output>/_build/figures``. MathJax is installed from npm when missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from flowbound.book.profiles import load_profile
from flowbound.progress import Relay

__all__ = [
    "FigureNumberError",
    "build_figures",
    "EXECUTED",
    "BookError",
    "build_book",
    "ensure_mathjax",
    "execute_chapter",
    "figure_chapters",
    "toc_chapters",
]

#: Where executed chapters go, relative to the book root (not under _build/,
#: which Sphinx excludes).
EXECUTED = Path("book/_executed")
_MATHJAX_VERSION = "3"


class BookError(RuntimeError):
    """A chapter failed to execute or the book failed to build."""


def _files(node: object) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        if "file" in node:
            out.append(str(node["file"]))
        for value in node.values():
            out.extend(_files(value))
    elif isinstance(node, list):
        for item in node:
            out.extend(_files(item))
    return out


def toc_chapters(root: Path) -> list[str]:
    """Names of the executed chapters, in ``_toc.yml`` order, and the landing page last
    when it is executed too (its findings read what the chapters computed)."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    prefix = EXECUTED.as_posix() + "/"
    files = [*_files(toc), str(toc.get("root", ""))]
    return [f[len(prefix) :] for f in files if f.startswith(prefix)]


def ensure_mathjax(root: Path) -> Path:
    """Install MathJax 3 into ``.mathjax`` (npm) and lay out ``.mathjax/static/mathjax``."""
    static = root / ".mathjax" / "static" / "mathjax"
    if (static / "tex-chtml.js").exists():
        return static
    es5 = root / ".mathjax" / "node_modules" / "mathjax" / "es5"
    if not (es5 / "tex-chtml.js").exists():
        npm = shutil.which("npm")
        if npm is None:
            raise BookError(
                "MathJax is missing and npm is not installed: install Node.js/npm, "
                "or run `npm install --prefix .mathjax mathjax@3` yourself"
            )
        subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(root / ".mathjax"),
                "--no-save",
                "--no-audit",
                "--no-fund",
                f"mathjax@{_MATHJAX_VERSION}",
            ],
            check=True,
        )
    tmp = static.with_name(".mathjax.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(es5, tmp)
    tmp.rename(static)
    return static


def execute_chapter(root: Path, name: str, profile: str, *, progress: bool = True) -> Path:
    """Execute ``book/<name>.md`` with ``profile`` into ``book/_executed/<name>.ipynb``.

    What the kernel reports through :mod:`flowbound.progress` (each experiment
    it computes, bars with the time left) is shown on the terminal as it runs
    (with ``progress=False``, dropped); none of it reaches the notebook.

    The notebook is written under a temporary name and renamed when the run
    succeeds, so an interrupted run never leaves a half-executed chapter in
    place; a failed one is kept as ``<name>.failed.ipynb`` for inspection.
    """
    import jupytext
    import papermill

    src = root / "book" / f"{name}.md"
    out_dir = root / EXECUTED
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}"  # unique to this process: two builds never swap partial output
    source_nb = out_dir / f".{name}.{tag}.source.ipynb"
    running = out_dir / f".{name}.{tag}.running.ipynb"
    jupytext.write(jupytext.read(src), source_nb)
    failed = out_dir / f"{name}.failed.ipynb"
    relay = Relay(out_dir / f".{name}.{tag}.progress", show=progress)
    try:
        with relay:  # the kernel's progress reaches the terminal, not the notebook
            papermill.execute_notebook(
                str(source_nb),
                str(running),
                parameters={"profile": profile},
                kernel_name="python3",
                cwd=str(root),
                progress_bar=False,
                # the kernel's own log (ipykernel warns that its local TCP sockets are
                # unencrypted, and now and then logs at ERROR a KeyboardInterrupt from
                # the shutdown) would drown the progress lines; a failing cell is
                # reported by papermill, not by this log
                extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
            )
    except papermill.PapermillExecutionError as exc:
        running.replace(failed)
        raise BookError(
            f"chapter {name} failed in cell {exc.exec_count}: {exc.ename}: "
            f"{exc.evalue} (executed notebook kept at {failed})"
        ) from exc
    except KeyboardInterrupt:
        running.unlink(missing_ok=True)
        raise
    except Exception as exc:  # the kernel died (out of memory, killed), or papermill broke
        if running.exists():
            running.replace(failed)
        kept = f" (partial notebook kept at {failed})" if failed.exists() else ""
        raise BookError(
            f"chapter {name} stopped: {type(exc).__name__}: {exc}{kept}; "
            f"rerun `flowbound book` (finished work is cached)"
        ) from exc
    finally:
        source_nb.unlink(missing_ok=True)
    _hide_default_parameters(running)
    final = out_dir / f"{name}.ipynb"
    running.replace(final)
    (out_dir / f"{name}.failed.ipynb").unlink(missing_ok=True)
    return final


def _times_file() -> Path:
    from flowbound.cache import cache_dir

    return cache_dir() / "chapter-seconds.json"


def _last_seconds(profile: str, name: str) -> float | None:
    """How long the last run of chapter ``name`` under ``profile`` took (None: no record)."""
    try:
        return float(json.loads(_times_file().read_text())[profile][name])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _record_seconds(profile: str, name: str, seconds: float) -> None:
    path = _times_file()
    try:
        times = json.loads(path.read_text()) if path.exists() else {}
        times.setdefault(profile, {})[name] = round(seconds, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(times, indent=1, sort_keys=True))
        tmp.replace(path)
    except (OSError, ValueError, AttributeError):
        pass  # a record for the next estimate only: never fail a build over it


def _prefer_fast_blas() -> None:
    """Let the chapter kernels use MKL's fast kernels on an AMD CPU (:mod:`flowbound.blas`)."""
    from flowbound.blas import preload_for_kernels
    from flowbound.cache import cache_dir

    print(preload_for_kernels(cache_dir() / "blas"), flush=True)


def _run_chapter(root: Path, name: str, profile: str, count: str, why: str = "") -> None:
    """Execute one chapter, saying how long it took last time and this time."""
    last = _last_seconds(profile, name)
    hint = f"; {last:.0f} s last time" if last is not None else ""
    print(f"{count} executing {name} ({profile}{hint}){why}", flush=True)
    start = time.perf_counter()
    execute_chapter(root, name, profile)
    seconds = time.perf_counter() - start
    _record_seconds(profile, name, seconds)
    print(f"{count} {name} done in {seconds:.1f} s", flush=True)


def _hide_default_parameters(path: Path) -> None:
    """Tag the chapter's default ``parameters`` cell ``remove-cell`` when papermill
    injected the actual values after it, so the page shows the values used once."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    tags = [c.get("metadata", {}).get("tags", []) for c in nb.cells]
    if not any("injected-parameters" in t for t in tags):
        return
    for cell, cell_tags in zip(nb.cells, tags, strict=True):
        if "parameters" in cell_tags and "remove-cell" not in cell_tags:
            cell.metadata["tags"] = [*cell_tags, "remove-cell"]
    nbformat.write(nb, path)


def _jupyter_book() -> list[str]:
    exe = Path(sys.executable).with_name("jupyter-book")
    return [str(exe)] if exe.exists() else ["jupyter-book"]


def _default_output(root: Path, profile: str) -> Path:
    """The root for ``paper``, ``root/_build/<profile>`` for any other profile."""
    return root if profile == "paper" else root / "_build" / profile


def _book_root(root: str | Path) -> Path:
    """``root`` resolved, if it holds the book (``_toc.yml`` and ``book/``), else BookError."""
    path = Path(root).resolve()
    if not (path / "_toc.yml").is_file() or not (path / "book").is_dir():
        raise BookError(
            f"{path} holds no book (_toc.yml and book/): run from the repository root or "
            "pass --root"
        )
    return path


def build_book(profile: str, *, root: str | Path = ".", output: str | Path | None = None) -> Path:
    """Execute every chapter with ``profile`` and build the HTML site; return its folder.

    ``output`` defaults to ``root`` for ``paper`` (site in ``_build/html``)
    and to ``root/_build/<profile>`` otherwise, so a smoke build never
    overwrites the full one.
    """
    load_profile(profile)  # validates the name
    root = _book_root(root)
    out = Path(output).resolve() if output else _default_output(root, profile)
    os.environ["FLOWBOUND_FIGURES"] = str(out / "_build" / "figures")
    ensure_mathjax(root)
    _prefer_fast_blas()
    chapters = toc_chapters(root)
    for k, name in enumerate(chapters, 1):
        _run_chapter(root, name, profile, f"[{k}/{len(chapters)}]")
    # --all: a fresh Sphinx environment each time, so labels that moved between
    # chapters never clash with a stale copy (the cost is seconds).
    cmd = [*_jupyter_book(), "build", str(root), "-W", "-n", "--keep-going", "--all"]
    if out != root:
        cmd += ["--path-output", str(out)]
    print("building HTML:", " ".join(cmd), flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise BookError("jupyter-book build failed (warnings are errors); see the log above")
    html = out / "_build" / "html"
    print(f"book built: {html / 'index.html'}", flush=True)
    return html


#: The chapter that draws each of the paper's figures.
_FIGURE_NAME = re.compile(r'"fig(\d{2})"')


def figure_chapters(root: str | Path = ".") -> dict[int, str]:
    """Figure number -> the chapter that draws it, read from the chapters themselves: a
    chapter declares Figure N by saving it as ``"figNN"`` (``plots.save_figure``), so a
    new figure is declared once, where it is drawn."""
    root = _book_root(root)
    out: dict[int, str] = {}
    for chapter in toc_chapters(root):
        for number in _FIGURE_NAME.findall((root / "book" / f"{chapter}.md").read_text()):
            out.setdefault(int(number), chapter)
    return dict(sorted(out.items()))


class FigureNumberError(BookError):
    """A figure number that no chapter draws."""


def build_figures(numbers: list[int], profile: str, *, root: str | Path = ".") -> list[Path]:
    """Regenerate the paper's Figures ``numbers`` by executing only their chapters, once each.

    Writes ``_build/figures/figNN.png`` and ``.pdf`` (``_build/<profile>/_build/figures``
    for a profile other than ``paper``) without building the HTML. Cached
    models and results are reused.
    """
    load_profile(profile)
    root = _book_root(root)  # before anything is created
    chapter_of = figure_chapters(root)
    for number in numbers:
        if number not in chapter_of:
            raise FigureNumberError(
                f"figure {number} does not exist: the book's figures are "
                f"{', '.join(map(str, chapter_of))}"
            )
    figures = _default_output(root, profile) / "_build" / "figures"
    os.environ["FLOWBOUND_FIGURES"] = str(figures)
    chapters = list(dict.fromkeys(chapter_of[n] for n in numbers))
    _prefer_fast_blas()
    for k, chapter in enumerate(chapters, 1):
        wanted = ", ".join(str(n) for n in numbers if chapter_of[n] == chapter)
        _run_chapter(root, chapter, profile, f"[{k}/{len(chapters)}]", f" for Figure {wanted}")
    pngs = []
    for number in numbers:
        png = figures / f"fig{number:02d}.png"
        if not png.exists():
            raise BookError(f"chapter {chapter_of[number]} ran but did not save {png}")
        print(f"figure {number}: {png}", flush=True)
        pngs.append(png)
    return pngs
