"""Upper bounds: the fast SDP solver against cvxpy, brute force and its own certificate."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowbound.certificates.bounds import (
    certify,
    certify_cholesky,
    frobenius_bound,
    sdp_adversarial_bound,
    sdp_bound,
    sdp_bound_cvxpy,
    sdp_matrix,
    spectral_bound,
)
from flowbound.certificates.impossibility import gradient_search
from flowbound.certificates.registry import BOUNDS, decrease_bounds, sound_bounds
from flowbound.networks.architectures import OneHidden
from flowbound.threat.geometry import aabb_lambda, mtm_eigh


def _p(a: np.ndarray) -> np.ndarray:
    h, d = a.shape
    return np.block([[np.zeros((h, h)), a], [a.T, np.zeros((d, d))]])


@pytest.mark.parametrize("h, d, seed", [(10, 15, 0), (20, 30, 1), (40, 60, 2)])
def test_fast_solver_agrees_with_cvxpy(h, d, seed):
    a = np.random.default_rng(seed).standard_normal((h, d))
    ref = sdp_bound_cvxpy(a)
    res = sdp_bound(torch.from_numpy(a), tol=1e-5)
    assert res.upper == pytest.approx(ref, rel=1e-3)
    assert res.lower <= ref * (1 + 1e-6) and res.upper >= ref * (1 - 1e-4)
    assert res.gap <= 1e-5


def test_momentum_certifies_the_same_value_in_fewer_sweeps():
    """The extrapolated mixing method and the plain one certify the same SDP value
    (within tol of each other and of cvxpy), the extrapolated one in fewer sweeps;
    momentum outside [0, 1) is an error."""
    a = torch.from_numpy(np.random.default_rng(8).standard_normal((60, 90)))
    ref = sdp_bound_cvxpy(a.numpy())
    plain = sdp_bound(a, tol=1e-5, momentum=0.0, check_every=5)
    fast = sdp_bound(a, tol=1e-5, momentum=0.7, check_every=5)
    for res in (plain, fast):
        assert res.lower <= ref * (1 + 1e-6) and res.upper >= ref * (1 - 1e-4)
        assert res.gap <= 1e-5
    assert fast.upper == pytest.approx(plain.upper, rel=2e-5)
    assert fast.iterations < plain.iterations
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="momentum"):
            sdp_bound(a, momentum=bad)


def test_upper_is_recomputed_independently_from_c_and_exceeds_lower():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 25, 35))
    res = sdp_bound(torch.from_numpy(a), tol=1e-4)
    for k in range(3):
        p = _p(a[k])
        top = np.linalg.eigvalsh(p - np.diag(res.c[k]))[-1]
        upper = res.c[k].sum() + len(p) * max(0.0, top)
        # proved by a shifted Cholesky: at least the eigenvalue bound, within the
        # slack the solver allows itself (5% of tol, grown at most 4^3 times)
        assert upper <= res.upper[k] <= upper * (1 + 1e-4)
        assert res.upper[k] >= res.lower[k]
        assert res.upper[k] <= len(p) * np.linalg.eigvalsh(p)[-1] + 1e-9  # spectral relaxation


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cholesky_certificate_proves_exactly_the_true_bounds(seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((12, 20))
    c = rng.random(32)
    top = np.linalg.eigvalsh(_p(a) - np.diag(c))[-1]
    above = certify_cholesky(a, c, top + 1e-7)
    assert above is not None and above >= certify(a, c)
    assert above == pytest.approx(certify(a, c), rel=1e-6)
    assert certify_cholesky(a, c, top - 1e-6) is None  # never proves a false bound
    # with a c that makes P - diag(c) negative definite, the bound is sum(c)
    big = np.abs(a).sum() * np.ones(32)
    assert certify_cholesky(a, big, -1.0) == pytest.approx(big.sum())


def test_any_c_gives_a_valid_bound():
    a = np.random.default_rng(4).standard_normal((6, 8))
    exact = sdp_bound(torch.from_numpy(a), tol=1e-8).lower
    for c in (np.zeros(14), np.ones(14), np.random.default_rng(5).random(14) * 10):
        assert certify(a, c) >= exact * (1 - 1e-8)


@pytest.mark.parametrize("h, d, seed", [(5, 6, 0), (7, 9, 1), (8, 8, 2)])
def test_upper_beats_the_brute_force_cut_norm(h, d, seed):
    a = np.random.default_rng(seed).standard_normal((h, d))
    # max over s, t in {-1, 1} of 2 s^T A t: for fixed s the best t is sign(A^T s).
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=h)))
    best = float((2 * np.abs(signs @ a).sum(1)).max())
    res = sdp_bound(torch.from_numpy(a), tol=1e-6)
    assert res.upper >= best - 1e-9
    assert res.upper <= 1.783 * best  # Grothendieck's constant (Readings table, point 13)


def test_batched_equals_one_at_a_time():
    a = np.random.default_rng(6).standard_normal((4, 12, 20))
    batch = sdp_bound(torch.from_numpy(a), tol=1e-6)
    for k in range(4):
        alone = sdp_bound(torch.from_numpy(a[k]), tol=1e-6)
        assert alone.upper == pytest.approx(batch.upper[k], rel=2e-6)


def test_sdp_matrix_is_diag_v_w_diag_lambda():
    rng = np.random.default_rng(7)
    w, v, lam = rng.standard_normal((4, 9)), rng.standard_normal(4), rng.random(9)
    np.testing.assert_allclose(sdp_matrix(w, v, lam).numpy(), np.diag(v) @ w @ np.diag(lam))


def test_naive_bounds_printed_and_sound():
    rng = np.random.default_rng(8)
    w, v = rng.standard_normal((5, 16)), rng.standard_normal(5)
    s2, fro = np.linalg.norm(w, 2), np.linalg.norm(w, "fro")
    assert spectral_bound(w, v, 0.3, form="printed", side=4) == pytest.approx(
        0.3 * s2 * np.linalg.norm(v)
    )
    m_inv = 1 / np.sqrt(mtm_eigh(4)[0][0])
    assert frobenius_bound(w, v, 0.3, side=4) == pytest.approx(
        0.3 * fro * np.linalg.norm(v) * m_inv
    )
    assert spectral_bound(w, v, 0.3, domain="symmetric", side=4) == pytest.approx(
        2 * 0.3 * s2 * np.linalg.norm(v) * m_inv
    )


#: Every registered sound bound with a pairwise Delta for one-hidden-layer networks: a
#: bound added with ``register_bound`` is checked here with no edit.
GLOBAL_SOUND = [k for k in sound_bounds("one_hidden") if not BOUNDS[k].local]


@pytest.mark.parametrize("kind", GLOBAL_SOUND)
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.floats(0.1, 3.0))
def test_no_attack_beats_a_registered_sound_bound(kind, seed, eps):
    check_no_gradient_search_beats(kind, seed, eps)


#: The gradient search the soundness check runs per pair and eps: starts (half of them
#: at corners of the pixel box, where the decrease is largest) and Adam steps, with the
#: step size scaled to the budget. At these settings it catches a global bound set to
#: 0.1 x the SDP bound in 40 of 40 draws, 0.2 x in 30 of 40 (benchmarks/RESULTS.md,
#: "What the soundness check catches"): below the truth, but the SDP bound of these
#: 3 x 3 networks is itself 2.7x to 8x above the strongest search found.
SEARCH_STARTS, SEARCH_STEPS, SHARP_EPS = 48, 120, 0.3


def largest_decrease(net, pair, eps: float, gen: torch.Generator) -> float:
    """The largest decrease of f_i - f_j (2 l_adv) the search finds over [0, 1] images
    of side 3 and tied flows with ||M r|| <= eps."""
    x0 = torch.rand(SEARCH_STARTS, 3, 3, generator=gen, dtype=torch.float64)
    x0[: SEARCH_STARTS // 2] = x0[: SEARCH_STARTS // 2].round()
    r0 = torch.randn(SEARCH_STARTS, 3, 3, generator=gen, dtype=torch.float64)
    found = gradient_search(
        net, [pair] * SEARCH_STARTS, eps, x0, r0, steps=SEARCH_STEPS, lr=0.1 * eps, side=3,
        x_range=(0.0, 1.0),
    )  # fmt: skip
    return 2 * float(found.exact.max())


def check_no_gradient_search_beats(kind: str, seed: int, eps: float, *, delta=None) -> None:
    """Gradient search over [0, 1] images and ||M r|| <= eps never lowers f_0 - f_1 (or
    f_1 - f_0) by more than the registered bound's eps * Delta (= 2 sup l_adv); the
    search also runs at min(eps, 0.3), where the decrease is closest to linear in eps
    and a bound linear in eps is sharpest to test. ``delta`` replaces the registered
    bound's Delta (to test the check itself)."""
    torch.manual_seed(seed)
    net = OneHidden(d=9, hidden=6, classes=2).double()
    if delta is None:
        delta = decrease_bounds(net, kind, side=3, tol=1e-6)[0, 1]
    g = torch.Generator().manual_seed(seed)
    for e in sorted({eps, min(eps, SHARP_EPS)}):
        for pair in ((0, 1), (1, 0)):
            assert largest_decrease(net, pair, e, g) <= e * delta + 1e-9, (kind, seed, e)


def test_the_soundness_check_catches_a_bound_a_tenth_of_the_sdp():
    """A global bound at 0.1 x the SDP bound is not sound: the check says so in every
    draw tried here (the old four-start search passed it at seed 1, eps 0.5)."""
    rng = np.random.default_rng(1)
    for seed in range(6):
        eps = float(rng.uniform(0.1, 3.0))
        torch.manual_seed(seed)
        net = OneHidden(d=9, hidden=6, classes=2).double()
        weak = 0.1 * decrease_bounds(net, "sdp", side=3, tol=1e-6)[0, 1]
        with pytest.raises(AssertionError):
            check_no_gradient_search_beats("sdp", seed, eps, delta=weak)
    with pytest.raises(AssertionError):
        check_no_gradient_search_beats("sdp", 1, 0.5, delta=0.2 * _sdp_delta(1))


def _sdp_delta(seed: int) -> float:
    torch.manual_seed(seed)
    return decrease_bounds(OneHidden(d=9, hidden=6, classes=2).double(), "sdp", side=3)[0, 1]


def test_the_search_records_only_feasible_starts():
    """A start outside the ellipsoid or the pixel range is projected before it counts."""
    torch.manual_seed(0)
    net = OneHidden(d=9, hidden=6, classes=2).double()
    x0 = torch.full((2, 3, 3), 3.0, dtype=torch.float64)
    r0 = torch.full((2, 3, 3), 50.0, dtype=torch.float64)
    found = gradient_search(net, [(0, 1)] * 2, 0.2, x0, r0, steps=0, side=3, x_range=(0.0, 1.0))
    from flowbound.threat.geometry import flow_norm

    assert np.all(flow_norm(found.r) <= 0.2 * (1 + 1e-12))
    assert float(found.x.max()) <= 1.0


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.floats(0.1, 3.0))
def test_no_attack_beats_a_certified_bound(seed, eps):
    """Gradient search over x in [-1, 1]^9 and ||M r|| <= eps never exceeds the
    SDP bound, nor the sound spectral bound (domain [-1, 1])."""
    torch.manual_seed(seed)
    net = OneHidden(d=9, hidden=6, classes=2).double()
    w = net.W.weight.detach()
    v = (net.V.weight[0] - net.V.weight[1]).detach()
    sdp = sdp_bound(sdp_matrix(w, v, aabb_lambda(3)), tol=1e-6).upper
    bound = sdp_adversarial_bound(sdp, eps, domain="symmetric")
    spec = spectral_bound(w.numpy(), v.numpy(), eps, domain="symmetric", side=3)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(4, 3, 3, generator=g, dtype=torch.float64) * 2 - 1
    r0 = torch.randn(4, 3, 3, generator=g, dtype=torch.float64) * 0.1
    found = gradient_search(net, [(0, 1)] * 4, eps, x0, r0, steps=60, lr=0.1, side=3)
    assert float(found.exact.max()) <= bound + 1e-9
    assert float(found.exact.max()) <= spec + 1e-9
