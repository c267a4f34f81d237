"""Shared fixtures: every test gets its own cache folder; MNIST comes from $MNIST_DIR."""

from __future__ import annotations

import math
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


def ellipsoid_flows(side: int, eps: float, n: int, threat: str, gen) -> torch.Tensor:
    """Flows on the surface and inside the threat set: r = M^{-1} s, ||s|| <= eps (the
    radius sqrt(2) eps for full flows); half of them on the surface."""
    from flowbound.threat.geometry import m_inv

    d = side * side
    mi = torch.from_numpy(m_inv(side).copy())
    parts = 1 if threat == "tied" else 2
    s = torch.randn(n, parts * d, generator=gen, dtype=torch.float64)
    s = s / s.norm(dim=1, keepdim=True)
    scale = torch.rand(n, 1, generator=gen, dtype=torch.float64) ** (1 / (parts * d))
    scale[: n // 2] = 1.0  # half on the surface
    s = s * scale * (eps if threat == "tied" else math.sqrt(2) * eps)
    flows = torch.stack([p @ mi for p in s.split(d, dim=1)], 1).reshape(n, parts, side, side)
    return flows[:, 0] if threat == "tied" else flows


def sampled_margins(model, x, y, eps: float, threat: str, gen, n: int) -> torch.Tensor:
    """(N, K) per digit the least f_y - f_j over ``n`` flows of the threat set
    (:func:`ellipsoid_flows`), +inf at j = y (a certified margin's convention there)."""
    from flowbound.threat.warp import warp

    side = x.shape[-1]
    out = []
    for b in range(len(x)):
        flows = ellipsoid_flows(side, eps, n, threat, gen)
        images = warp(x[b].expand(n, side, side).contiguous(), flows)
        found = margins_of(model, images, y[b].expand(n)).min(0).values
        found[y[b]] = math.inf
        out.append(found)
    return torch.stack(out)


def tiny_grid_case():
    """The exhaustive 2 x 2 case: (network, image, label, eps, the least f_0 - f_1 over
    :func:`grid_margins`), tied flows."""
    from flowbound.networks.architectures import OneHidden

    eps = 0.8
    torch.manual_seed(3)
    net = OneHidden(4, 6, 2).double()
    x = torch.tensor([[[0.1, 0.9], [0.7, 0.3]]], dtype=torch.float64)
    y = torch.tensor([0])
    return net, x, y, eps, float(grid_margins(net, x, y, eps)[:, 1].min())


def grid_margins(model, x: torch.Tensor, y: torch.Tensor, eps: float, points: int = 25):
    """(F, K) f_y - f_j of one image x (1, s, s) warped by every tied flow of a grid of
    ``points`` values per pixel (over the box of the ellipsoid) that lies in the
    ellipsoid: exhaustive search on tiny images."""
    import itertools

    import numpy as np

    from flowbound.threat.geometry import aabb_lambda, mtm
    from flowbound.threat.warp import warp

    side = x.shape[-1]
    axes = [np.linspace(-v, v, points) for v in aabb_lambda(side) * eps]
    grid = np.array(list(itertools.product(*axes)))
    keep = np.einsum("ni,ij,nj->n", grid, mtm(side), grid) <= eps**2
    flows = torch.from_numpy(grid[keep]).reshape(-1, side, side)
    images = warp(x.expand(len(flows), side, side).contiguous(), flows)
    return margins_of(model, images, y.expand(len(flows)))


def margins_of(model, images: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, K) f_y - f_j of the images (N, s, s), in float64, for any supported network."""
    from flowbound.networks.chain import image_model

    with torch.no_grad():
        scores = image_model(model)(images).double()
    return scores.gather(1, y.view(-1, 1)) - scores
