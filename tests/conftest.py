"""Shared fixtures: every test gets its own cache folder; MNIST comes from $MNIST_DIR."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "_build" / "smoke"
HTML = OUT / "_build" / "html"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FLOWBOUND_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("FLOWBOUND_FIGURES", str(tmp_path_factory.mktemp("figures")))


@pytest.fixture(scope="session")
def mnist_dir() -> str:
    path = os.environ.get("MNIST_DIR")
    if not path:
        pytest.fail("set MNIST_DIR to the folder with the four MNIST files (the Makefile does)")
    return path


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def smoke_build(tmp_path_factory):
    """One smoke build of the whole book per test session, from an empty cache."""
    figures = OUT / "_build" / "figures"
    for old in figures.glob("*.png"):
        old.unlink()
    env_cache = tmp_path_factory.mktemp("book-cache")
    cmd = [
        sys.executable,
        "-m",
        "flowbound.book.cli",
        "book",
        "--profile",
        "smoke",
        "--root",
        str(ROOT),
    ]
    env = {**os.environ, "FLOWBOUND_CACHE": str(env_cache)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def site_pages() -> list[Path]:
    """The smoke site's HTML pages (not assets, the index or search pages, or probe copies)."""
    return sorted(
        p
        for p in HTML.rglob("*.html")
        if "_static" not in p.parts
        and p.name not in {"genindex.html", "search.html"}
        and not p.name.startswith(".probe-")
    )


@pytest.fixture
def tiny() -> dict:
    """The smoke profile shrunk further: networks that train in a second or two."""
    from flowbound.book.profiles import load_profile

    p = load_profile("smoke")
    p["hidden"] = {"section3": 16, "section4": 12}
    p["train"].update(train_subset=2048, epochs=1, batch_size=32, lr=0.005)
    p["eval"]["test_subset"] = 500
    return p
