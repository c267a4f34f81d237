"""Batched L-BFGS against scipy, and independence of the rows."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize as so
import torch

from flowbound.lbfgs import lbfgs


@pytest.fixture
def problems():
    g = torch.Generator().manual_seed(0)
    b, d = 5, 12
    a = torch.randn(b, d, d, generator=g, dtype=torch.float64)
    a = a @ a.transpose(1, 2) + 0.1 * torch.eye(d, dtype=torch.float64)
    c = torch.randn(b, d, generator=g, dtype=torch.float64)

    def fun(x, idx):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            f = 0.5 * torch.einsum("bi,bij,bj->b", x, a[idx], x) - (c[idx] * x).sum(1)
            f = f + 0.1 * (x**4).sum(1)
            (grad,) = torch.autograd.grad(f.sum(), x)
        return f.detach(), grad

    return fun, b, d


def test_reaches_the_scipy_minimum(problems):
    fun, b, d = problems
    res = lbfgs(fun, torch.zeros(b, d, dtype=torch.float64), max_iter=500)
    assert bool(res.converged.all())
    for k in range(b):

        def single(v, k=k):
            f, g = fun(torch.from_numpy(v).unsqueeze(0), torch.tensor([k]))
            return float(f[0]), g[0].numpy()

        ref = so.minimize(single, np.zeros(d), jac=True, method="L-BFGS-B")
        assert float(res.f[k]) == pytest.approx(ref.fun, abs=1e-6)


def test_each_row_is_independent_of_the_batch(problems):
    fun, b, d = problems
    batch = lbfgs(fun, torch.zeros(b, d, dtype=torch.float64), max_iter=200)
    for k in range(b):
        alone = lbfgs(lambda x, idx, k=k: fun(x, idx * 0 + k),
                      torch.zeros(1, d, dtype=torch.float64), max_iter=200)  # fmt: skip
        assert torch.equal(alone.x[0], batch.x[k])
        assert int(alone.iterations[0]) == int(batch.iterations[k])


def test_iteration_cap_and_callback(problems):
    fun, b, d = problems
    seen = []
    res = lbfgs(fun, torch.zeros(b, d, dtype=torch.float64), max_iter=3,
                callback=lambda x, f, idx: seen.append(idx.clone()))  # fmt: skip
    assert int(res.iterations.max()) <= 3 and len(seen) == 3
