"""Theorems 1-2 and Algorithms 1-2: constraints, exactness, brute force on 3x3."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from flowbound.certificates.impossibility import (
    _best_flow,
    algorithm1,
    algorithm2,
    all_pairs,
    gradient_search,
    loss_ceiling,
    prop3_first_order,
    theorem1_bound,
    theorem2_bound,
)
from flowbound.networks.architectures import Linear, OneHidden
from flowbound.networks.view import pair_layers
from flowbound.threat.geometry import flow_norm, m_inv
from flowbound.threat.warp import jacobian_one_sided, jacobian_true, warp

PAIRS = [(0, 1), (2, 0), (1, 2)]


@pytest.fixture
def net6():
    torch.manual_seed(0)
    net = OneHidden(d=36, hidden=20, classes=3).double()
    return net


def _exact(net, pair, x, r):
    i, j = pair
    f = lambda z: net(z)[:, i] - net(z)[:, j]  # noqa: E731
    with torch.no_grad():
        return float((f(warp(x[None], r[None])) - f(x[None]))[0]) / 2


@pytest.mark.parametrize("jacobian", ["paper", "true"])
def test_theorem1_flow_is_on_the_ellipsoid_and_value_is_exact(net6, jacobian):
    eps = 0.7
    res = theorem1_bound(net6, PAIRS, eps, side=6, jacobian=jacobian)
    np.testing.assert_allclose(flow_norm(res.r), eps, rtol=1e-6)
    assert float(res.x.abs().max()) <= 1 + 1e-12
    for b, pair in enumerate(PAIRS):
        assert float(res.exact[b]) == pytest.approx(_exact(net6, pair, res.x[b], res.r[b]))


def test_theorem1_linear_value_matches_the_printed_formula(net6):
    """l~ = (1/2) grad sigma(W x)^T diag(v) W diag(x) r, and r_* maximises it."""
    eps = 0.5
    res = theorem1_bound(net6, PAIRS, eps, side=6, jacobian="paper")
    w, v = pair_layers(net6, PAIRS)
    x = (torch.linalg.pinv(w) @ torch.ones(20, dtype=torch.float64)).numpy()
    x = x / np.abs(x).max()
    np.testing.assert_allclose(res.x[0].flatten().numpy(), x, atol=1e-12)
    act = (w.numpy() @ x > 0).astype(float)
    rng = np.random.default_rng(0)
    for b in range(len(PAIRS)):
        coef = act @ np.diag(v[b].numpy()) @ w.numpy() @ np.diag(x)  # row vector (d,)
        lin = 0.5 * coef @ res.r[b].flatten().numpy()
        assert float(res.estimate[b]) == pytest.approx(lin, rel=1e-10)
        s = rng.standard_normal((500, 36))
        r = s @ m_inv(6)
        r *= eps / flow_norm(r.reshape(-1, 6, 6))[:, None]
        assert (0.5 * r @ coef).max() <= lin * (1 + 1e-10)


@pytest.mark.parametrize("jacobian", ["paper", "true"])
def test_algorithm1_never_below_theorem1_and_stays_feasible(net6, jacobian):
    eps = 1.0
    start = theorem1_bound(net6, PAIRS, eps, side=6, jacobian=jacobian)
    res = algorithm1(net6, PAIRS, eps, side=6, jacobian=jacobian, n=8, max_iter=10)
    assert bool((res.exact >= start.exact - 1e-12).all())
    np.testing.assert_allclose(flow_norm(res.r), eps, rtol=1e-6)
    assert float(res.x.abs().max()) <= 1 + 1e-12
    for b, pair in enumerate(PAIRS):
        assert float(res.exact[b]) == pytest.approx(_exact(net6, pair, res.x[b], res.r[b]))
    assert torch.equal(res.exact, res.exact_history.max(0).values)


def test_algorithm2_on_3x3_against_brute_force():
    torch.manual_seed(1)
    net = Linear(d=9, classes=2).double()
    pair, eps = (0, 1), 0.8
    res = algorithm2(net, [pair], eps, side=3, n=16, max_iter=20, jacobian="true")
    printed = algorithm2(net, [pair], eps, side=3, n=16, max_iter=20, jacobian="paper")
    v = (net.V.weight[0] - net.V.weight[1]).detach()
    # For a linear f, l_adv is linear in x (the warp is), so for each r the best x is a
    # vertex of the box; search all 512 vertices against many flows on the ellipsoid.
    rng = np.random.default_rng(0)
    s = rng.standard_normal((4000, 9))
    r = torch.from_numpy((s / np.linalg.norm(s, axis=1, keepdims=True)) @ m_inv(3) * eps)
    r = r.reshape(-1, 3, 3)
    verts = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=9)), dtype=torch.float64)
    best = -np.inf
    for chunk in torch.split(r, 500):
        xs = verts.reshape(1, 512, 3, 3).expand(len(chunk), 512, 3, 3).reshape(-1, 3, 3)
        rs = chunk.unsqueeze(1).expand(len(chunk), 512, 3, 3).reshape(-1, 3, 3)
        vals = ((warp(xs, rs) - xs).flatten(1) @ v) / 2
        best = max(best, float(vals.max()))
    got = float(res.exact[0])
    direct = float(((warp(res.x, res.r) - res.x).flatten(1) @ v)[0]) / 2
    assert got == pytest.approx(direct, rel=1e-12)
    assert float(flow_norm(res.r[0])) == pytest.approx(eps, rel=1e-6)
    assert got >= 0.95 * best  # the exact-Jacobian algorithm reaches the brute-force max
    assert got <= best * 1.25  # and not far above what a dense search can reach
    # The printed Jacobian optimises another objective; its value is still exact.
    direct = float(((warp(printed.x, printed.r) - printed.x).flatten(1) @ v)[0]) / 2
    assert float(printed.exact[0]) == pytest.approx(direct, rel=1e-12)


def test_theorem2_matches_the_printed_closed_form():
    torch.manual_seed(2)
    net = Linear(d=16, classes=2).double()
    eps = 0.6
    res = theorem2_bound(net, [(1, 0)], eps, side=4)
    v = (net.V.weight[1] - net.V.weight[0]).detach().numpy()
    mi = m_inv(4)
    a = np.diag(v) @ mi @ mi @ np.diag(v)
    top = np.linalg.eigh(a)[1][:, -1]
    x = top / np.abs(top).max()
    x = x * np.sign(x @ res.x[0].flatten().numpy())  # eigenvectors have no sign
    np.testing.assert_allclose(np.abs(res.x[0].flatten().numpy()), np.abs(x), atol=1e-10)
    bound = eps * np.linalg.norm(mi @ np.diag(v) @ res.x[0].flatten().numpy()) / 2
    assert float(res.estimate[0]) == pytest.approx(bound, rel=1e-10)


def test_all_pairs():
    pairs = all_pairs(10)
    assert len(pairs) == 90 and (3, 7) in pairs and (7, 3) in pairs and (4, 4) not in pairs


def test_per_row_budgets_match_separate_runs(net6):
    both = theorem1_bound(net6, [(0, 1), (0, 1)], [0.5, 1.5], side=6)
    for k, eps in enumerate((0.5, 1.5)):
        alone = theorem1_bound(net6, [(0, 1)], eps, side=6)
        torch.testing.assert_close(both.r[k], alone.r[0])
    with pytest.raises(ValueError, match="one per class pair"):
        theorem1_bound(net6, PAIRS, [0.5, 1.0], side=6)


@pytest.mark.parametrize("tied", [True, False])
def test_gradient_search_stays_feasible_and_never_loses_its_start(net6, tied):
    eps = 0.8
    start = algorithm1(net6, PAIRS, eps, side=6, jacobian="true", n=8, max_iter=5)
    r0 = start.r if tied else torch.stack([start.r, start.r], 1) / 2**0.5
    res = gradient_search(net6, PAIRS, eps, start.x, r0, steps=30, tied=tied, side=6)
    assert float(res.x.abs().max()) <= 1 + 1e-12
    if tied:
        assert (flow_norm(res.r) <= eps * (1 + 1e-9)).all()
    else:
        joint = np.sqrt(flow_norm(res.r[:, 0]) ** 2 + flow_norm(res.r[:, 1]) ** 2)
        assert (joint <= eps * (1 + 1e-9)).all()
    assert bool((res.exact >= res.exact_history[0] - 1e-12).all())
    for b, pair in enumerate(PAIRS):
        assert float(res.exact[b]) == pytest.approx(_exact(net6, pair, res.x[b], res.r[b]))


def _tiny_net(side, hidden=12, seed=0):
    torch.manual_seed(seed)
    return OneHidden(d=side * side, hidden=hidden, classes=3).double()


@pytest.mark.parametrize("side", [4, 6])
def test_one_sided_linearisation_matches_the_exact_loss_to_first_order(side):
    """l_adv(x, s r_*) / s -> the theorem's linearised value as s -> 0 (exact Jacobian)."""
    net = _tiny_net(side)
    pairs = [(0, 1), (1, 2), (2, 0)]
    res = theorem1_bound(net, pairs, 1.0, side=side, jacobian="true")
    for s in (1e-5, 1e-7):
        for b, pair in enumerate(pairs):
            ratio = _exact(net, pair, res.x[b], s * res.r[b]) / s
            assert float(ratio) == pytest.approx(float(res.estimate[b]), rel=1e-3)


def test_right_derivative_alone_misjudges_negative_flows():
    """The old linearisation (right derivative for every pixel) is not the first-order term."""
    side = 5
    g = torch.Generator().manual_seed(4)
    x = torch.rand(1, side, side, generator=g, dtype=torch.float64)
    r = -torch.rand(1, side, side, generator=g, dtype=torch.float64)  # every pixel moves left/up
    grad = torch.randn(1, side, side, generator=g, dtype=torch.float64)
    s = 1e-7
    first_order = float((grad * (warp(x, s * r) - x)).sum() / s)
    one_sided = float((grad * jacobian_one_sided(x, r) * r).sum())
    right_only = float((grad * jacobian_true(x, torch.zeros_like(x)) * r).sum())
    assert one_sided == pytest.approx(first_order, rel=1e-5)
    assert abs(right_only - first_order) > 0.1 * abs(first_order)


@pytest.mark.parametrize("x_range", [(-1.0, 1.0), (0.0, 1.0)])
def test_loss_ceiling_is_never_beaten_even_at_huge_eps(net6, x_range):
    ceiling = loss_ceiling(net6, PAIRS, x_range=x_range)
    g = torch.Generator().manual_seed(5)
    lo, hi = x_range
    for eps in (1.0, 30.0, 1000.0):
        x0 = lo + (hi - lo) * torch.rand(len(PAIRS), 6, 6, generator=g, dtype=torch.float64)
        r0 = eps * torch.randn(len(PAIRS), 6, 6, generator=g, dtype=torch.float64) / 36
        found = gradient_search(net6, PAIRS, eps, x0, r0, steps=100, side=6, x_range=x_range)
        assert bool((found.exact <= ceiling + 1e-12).all())
    # and it is attained in the limit for a single hidden unit (tight construction)
    w, v = pair_layers(net6, PAIRS)
    assert bool((ceiling > 0).all())
    assert float(ceiling.max()) <= float((v.abs() * w.abs().sum(1)).sum(1).max()) / 2 + 1e-12


def test_loss_ceiling_of_a_linear_network():
    torch.manual_seed(1)
    lin = Linear(d=16, classes=3).double()
    ceiling = loss_ceiling(lin, [(0, 1)])
    v = (lin.V.weight[0] - lin.V.weight[1]).detach()
    assert float(ceiling[0]) == pytest.approx(float(v.abs().sum()))


def test_prop3_first_order_full_flows_never_lose_and_match_the_closed_form(net6):
    res = prop3_first_order(net6, PAIRS, 0.8, side=6)
    assert bool((res["full"] >= res["tied"] - 1e-12).all())
    # with both partials forced equal, full flows gain nothing (Proposition 3's case)
    c = torch.randn(2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    eps = torch.full((2,), 0.8, dtype=torch.float64)
    _, tied_norm = _best_flow(c, eps, 6)
    _, full_norm = _best_flow(torch.stack([c, c], 1), eps * 2**0.5, 6)
    torch.testing.assert_close(
        full_norm * 2**0.5, 2 * tied_norm
    )  # sqrt2 eps ||(p, p)|| = eps ||2p||
