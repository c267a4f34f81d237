"""Batched L-BFGS against scipy, and independence of the rows."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize as so
import torch

from flowbound.attacks import lbfgs as lbfgs_module
from flowbound.attacks.lbfgs import lbfgs


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
                callback=lambda x, f, idx, aux: seen.append(idx.clone()))  # fmt: skip
    assert int(res.iterations.max()) <= 3 and len(seen) == 3


def test_several_halvings_per_call_accept_the_same_steps(problems, monkeypatch):
    """Speculative line-search calls (several halvings of a row's step at once)
    reach the iterates of the one-halving-per-call search, in fewer calls."""
    fun, b, d = problems
    x0 = torch.full((b, d), 3.0, dtype=torch.float64)  # far out: the x^4 term forces halvings
    calls = []

    def counted(x, idx):
        calls.append(len(idx))
        return fun(x, idx)

    fast = lbfgs(counted, x0, max_iter=40)
    fast_calls, calls[:] = len(calls), []
    monkeypatch.setattr(lbfgs_module, "SPECULATE_ROWS", 0)
    slow = lbfgs(counted, x0, max_iter=40)
    torch.testing.assert_close(fast.x, slow.x, rtol=1e-10, atol=1e-12)
    assert torch.equal(fast.iterations, slow.iterations)
    assert fast_calls < len(calls)


def test_the_objective_extra_output_reaches_the_callback(problems):
    fun, b, d = problems

    def with_aux(x, idx):
        f, g = fun(x, idx)
        return f, g, f.detach().clone()  # aux = the value at the evaluated point

    seen = []
    lbfgs(with_aux, torch.full((b, d), 2.0, dtype=torch.float64), max_iter=5,
          callback=lambda x, f, idx, aux: seen.append((f.clone(), aux)))  # fmt: skip
    for f, aux in seen:
        torch.testing.assert_close(aux, f)
