"""Seconds per chapter of a build, without Jupyter: each chapter's code cells in a fresh process.

The book build (``flowbound book``) runs every chapter in its own kernel through
papermill. This script runs the same code cells, in the same order, each chapter
in a fresh Python process (so no chapter reuses another's memory, only the
cache), with myst-nb's ``glue`` and IPython's ``Markdown`` replaced by no-ops.
It needs only the library's own dependencies, so it also runs where the book's
(jupyter-book, papermill) are missing, such as a GPU machine. What it leaves out
against a real build: the kernel start, rendering glued figures into the
notebook, and the HTML (about a minute in all, see RESULTS.md). Like the build, it
preloads :mod:`flowbound.blas`'s library into the chapter processes (MKL's fast
kernels on an AMD CPU; ``FLOWBOUND_MKL_SHIM=0`` turns it off).

    python benchmarks/chapter_times.py --profile paper --json times.json

Results are written after every chapter, so a run stopped early keeps the
chapters it finished. The cache is ``$FLOWBOUND_CACHE`` as for the book.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```\s*$", re.S | re.M)


def chapters_in_order(root: Path) -> list[str]:
    """The executed chapters named in ``_toc.yml``, in the book's order."""
    toc = (root / "_toc.yml").read_text(encoding="utf-8")
    return re.findall(r"file: book/_executed/(\w+)", toc)


def code_of(chapter: Path) -> str:
    """The chapter's code cells as one script: cell options and IPython magics dropped."""
    cells = []
    for body in CELL.findall(chapter.read_text(encoding="utf-8")):
        lines = [
            line
            for line in body.splitlines()
            if not line.startswith(":tags:") and not line.lstrip().startswith("%")
        ]
        cells.append("\n".join(lines))
    return "\n\n".join(cells)


def _install_stubs() -> None:
    """A no-op ``myst_nb.glue`` (nothing is rendered), and ``IPython.display.Markdown``
    where IPython is missing."""
    myst_nb = types.ModuleType("myst_nb")
    myst_nb.glue = lambda *args, **kwargs: None
    sys.modules["myst_nb"] = myst_nb
    try:
        import IPython.display  # noqa: F401
    except ImportError:
        ipython = types.ModuleType("IPython")
        ipython.version_info = (9, 0, 0)  # matplotlib asks
        display = types.ModuleType("IPython.display")
        display.Markdown = lambda *args, **kwargs: None
        ipython.display = display
        sys.modules.update({"IPython": ipython, "IPython.display": display})


def run_one(root: Path, name: str, profile: str) -> None:
    """Execute one chapter's code in this process (the child's side)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _install_stubs()
    os.chdir(root)
    sys.path.insert(0, str(root / "src"))
    namespace: dict = {"__name__": "__main__", "profile": profile}
    source = code_of(root / "book" / f"{name}.md")
    # the parameters cell sets profile = "paper"; the injected value comes after it
    source = source.replace('profile = "paper"', f"profile = {profile!r}", 1)
    code = compile(source, f"<code cells of book/{name}.md>", "exec")
    exec(code, namespace)  # noqa: S102 - the book's own chapter code
    plt.close("all")


def _prefer_fast_blas() -> None:
    """The book build's BLAS setting for the chapter processes (:mod:`flowbound.blas`)."""
    from flowbound.blas import preload_for_kernels
    from flowbound.cache import cache_dir

    print(preload_for_kernels(cache_dir() / "blas"), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--chapters", nargs="*", help="default: every chapter, in the toc's order")
    parser.add_argument("--json", type=Path, help="write {chapter: seconds} here as it goes")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.one:
        run_one(ROOT, args.one, args.profile)
        return 0
    known = chapters_in_order(ROOT)
    unknown = [c for c in args.chapters or [] if c not in known]
    if unknown:
        parser.error(f"unknown chapter {', '.join(unknown)}; the toc's: {', '.join(known)}")
    os.environ.setdefault("FLOWBOUND_FIGURES", str(ROOT / "_build" / "chapter_times"))
    _prefer_fast_blas()  # as `flowbound book` does for its kernels (MKL on an AMD CPU)
    times: dict[str, float | str] = {}
    total = 0.0
    for name in args.chapters or known:
        print(f"== {name} ({args.profile})", flush=True)
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, __file__, "--profile", args.profile, "--one", name], check=False
        )
        seconds = time.perf_counter() - start
        total += seconds
        times[name] = round(seconds, 1) if done.returncode == 0 else f"failed ({seconds:.1f} s)"
        took = f"{times[name]} s" if done.returncode == 0 else times[name]
        print(f"== {name}: {took}; total {total:.1f} s", flush=True)
        if args.json:
            args.json.write_text(json.dumps(times, indent=1), encoding="utf-8")
        if done.returncode != 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
