"""Per-digit certificates (local_bounds): pixel relaxations and margins are never beaten."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from conftest import ellipsoid_flows, grid_margins, margins_of
from hypothesis import given, settings
from hypothesis import strategies as st

from flowbound.attacks.flow_apgd import flow_apgd
from flowbound.attacks.pgd import flow_pgd
from flowbound.certificates.local import certified, certified_margins
from flowbound.certificates.pixels import pixel_bounds
from flowbound.networks.architectures import Linear, OneHidden
from flowbound.threat.geometry import m_inv, mtm
from flowbound.threat.warp import warp


def _uniform_box(rad, shape, gen):
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * rad


@pytest.mark.parametrize("threat", ["tied", "full"])
@pytest.mark.parametrize("eps", [0.05, 0.4, 1.0, 2.5])  # 2.5: boxes span several cells
def test_pixel_bounds_hold_on_dense_samples_of_the_box(threat, eps):
    gen = torch.Generator().manual_seed(0)
    side = 7
    x = torch.rand(6, side, side, generator=gen, dtype=torch.float64)
    x[0] = (x[0] > 0.5).double()  # a binary image: large kinks
    pb = pixel_bounds(x, eps, threat=threat)
    rad = pb.radius.view(side, side)
    worst = 0.0
    for _ in range(300):
        if threat == "tied":
            r = _uniform_box(rad, x.shape, gen)
            r[:, 0, 0] = rad[0, 0]  # box corners too
            g = warp(x, r).flatten(1)
            lin = pb.slope_u * r.flatten(1) + pb.kink_u * r.flatten(1).abs()
        else:
            du, dv = _uniform_box(rad, x.shape, gen), _uniform_box(rad, x.shape, gen)
            g = warp(x, torch.stack([du, dv], 1)).flatten(1)
            lin = pb.slope_u * du.flatten(1) + pb.slope_v * dv.flatten(1)
            lin = lin + pb.kink_u * du.flatten(1).abs() + pb.kink_v * dv.flatten(1).abs()
        worst = max(worst, float((pb.lower - (g - lin)).max()), float((g - lin - pb.upper).max()))
    assert worst <= 0.0


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    side=st.integers(4, 8),
    hidden=st.integers(3, 12),
    eps=st.floats(0.01, 2.0),
    threat=st.sampled_from(["tied", "full"]),
    linear=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_no_attack_beats_a_certified_margin(side, hidden, eps, threat, linear, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    d = side * side
    net = (Linear(d, 3) if linear else OneHidden(d, hidden, 3)).double()
    x = torch.rand(2, side, side, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 2])
    bound = certified_margins(net, x, y, eps, threat=threat, modes=d // 2)
    for b in range(2):
        flows = ellipsoid_flows(side, eps, 200, threat, gen)
        images = warp(x[b].expand(200, side, side).contiguous(), flows)
        found = margins_of(net, images, y[b].expand(200)).min(0).values
        if threat == "tied":  # the budgeted attack, one target at a time via the CW margin
            res = flow_pgd(net, x[b : b + 1], y[b : b + 1], eps=eps, steps=30, restarts=2)
            found = torch.minimum(found, margins_of(net, res.images, y[b : b + 1])[0])
        found[y[b]] = math.inf  # f_y - f_y = 0: the bound there is +inf by convention
        assert bool((found >= bound[b] - 1e-9).all()), (found, bound[b])


def test_exhaustive_search_on_a_two_by_two_grid():
    """Tied flows on 4 pixels: a fine grid over the ellipsoid never beats the bound,
    and the bound is not vacuous (it is within the grid's value plus a margin)."""
    eps = 0.8
    torch.manual_seed(3)
    net = OneHidden(4, 6, 2).double()
    x = torch.tensor([[[0.1, 0.9], [0.7, 0.3]]], dtype=torch.float64)
    y = torch.tensor([0])
    bound = float(certified_margins(net, x, y, eps, modes=None)[0, 1])
    found = float(grid_margins(net, x, y, eps)[:, 1].min())
    assert found >= bound - 1e-12
    assert bound > found - 1.0  # a real bound, not -inf


def test_certified_reports_fewer_digits_as_eps_grows_and_zero_eps_is_accuracy():
    torch.manual_seed(0)
    net = OneHidden(36, 8, 3).double()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(20, 6, 6, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = net(x).argmax(1)
    y[:5] = (y[:5] + 1) % 3  # five misclassified digits
    ok = certified(net, x, y, [0.0, 0.05, 0.3, 1.0])
    margin = margins_of(net, x, y)
    margin[torch.arange(20), y] = math.inf
    strict = (margin > 0).all(1).numpy()  # a tie (all ReLUs dead) is not a certificate
    assert (ok[0] == strict).all() and strict.sum() >= 10 and not ok[:, :5].any()
    assert (ok[1:] <= ok[:-1]).all()


def test_bad_threat_and_eps_are_refused():
    net = OneHidden(16, 4, 3).double()
    x, y = torch.rand(1, 4, 4, dtype=torch.float64), torch.tensor([0])
    with pytest.raises(ValueError, match="threat must be one of"):
        certified_margins(net, x, y, 0.1, threat="affine")
    with pytest.raises(ValueError, match="eps"):
        certified_margins(net, x, y, -0.1)


def test_fewer_modes_give_a_looser_but_sound_bound():
    torch.manual_seed(2)
    net = OneHidden(64, 10, 3).double()
    x = torch.rand(4, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    exact = certified_margins(net, x, y, 0.3, modes=None)
    cheap = certified_margins(net, x, y, 0.3, modes=8)
    finite = torch.isfinite(exact)
    assert bool((cheap[finite] <= exact[finite] + 1e-12).all())


@pytest.mark.parametrize("threat", ["tied", "full"])
@pytest.mark.parametrize("share", [0.0, 0.6, 1.0])  # never, sometimes, always gathered
def test_neurons_the_box_decides_skip_the_ellipsoid_without_changing_a_margin(
    threat, share, monkeypatch
):
    """A certificate computes the ellipsoid value only for the neurons that the box value
    leaves unstable: the margins equal those with every neuron's value (the training
    surrogate's path), with some neurons of some chunks skipped."""
    import flowbound.certificates.ellipsoid as ell
    import flowbound.certificates.propagation as lb

    torch.manual_seed(4)
    net = OneHidden(64, 40, 3).double()
    x = torch.rand(70, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.arange(70) % 3
    widths = []
    rows = ell._trimmed_rows

    def spy(mask):
        cols = rows(mask)
        widths.append(0 if cols is None else cols.shape[1])
        return cols

    monkeypatch.setattr(ell, "_GATHER_SHARE", share)
    monkeypatch.setattr(ell, "_trimmed_rows", spy)
    skipping = lb.pre_activation_bounds

    def every_neuron(*args, skip, **kw):
        return skipping(*args, skip=False, **kw)

    for eps in (0.02, 0.3):
        got = certified_margins(net, x, y, eps, threat=threat, modes=10)
        monkeypatch.setattr(lb, "pre_activation_bounds", every_neuron)
        want = certified_margins(net, x, y, eps, threat=threat, modes=10)
        monkeypatch.setattr(lb, "pre_activation_bounds", skipping)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    assert any(0 < w < 40 for w in widths)  # some chunks bound only some neurons


def test_a_broken_network_is_an_error_never_a_certificate():
    net = OneHidden(16, 4, 3).double()
    with torch.no_grad():
        net.W.weight[0, 0] = float("nan")
    x, y = torch.rand(2, 4, 4, dtype=torch.float64), torch.tensor([0, 1])
    with pytest.raises(FloatingPointError, match="no certificate"):
        certified_margins(net, x, y, 0.1)
    with pytest.raises(FloatingPointError, match="no certificate"):
        certified(net, x, y, [0.1])


@pytest.mark.parametrize("side", [2, 3, 5, 28])
def test_the_absolute_flow_stays_in_the_ellipsoid(side):
    """||M |r| || <= ||M r||: M^T M has no positive entry off its diagonal, which is what
    lets the kink term b |r| take the ellipsoid value (module notes)."""
    a = torch.from_numpy(mtm(side))
    off = a - torch.diag(torch.diag(a))
    assert float(off.max()) <= 0.0
    gen = torch.Generator().manual_seed(side)
    r = torch.randn(200, side * side, generator=gen, dtype=torch.float64)
    r[::2] *= torch.rand(100, side * side, generator=gen, dtype=torch.float64) > 0.5  # sparse
    quad = lambda v: ((v @ a) * v).sum(1)  # noqa: E731
    assert bool((quad(r.abs()) <= quad(r) * (1 + 1e-12) + 1e-12).all())


@pytest.mark.parametrize("threat", ["tied", "full"])
def test_every_level_of_the_cascade_is_sound_and_certified_takes_any_of_them(threat):
    """The ellipsoid value for no flow term, the linear one, or all: each is a sound
    bound; certified() reports a digit certified by any level."""
    import flowbound.certificates.local as lb

    torch.manual_seed(7)
    net = OneHidden(36, 10, 3).double()
    x = torch.rand(12, 6, 6, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    with torch.no_grad():
        y = net(x).argmax(1)
    eps = 0.3
    res = flow_apgd(net, x, y, eps=eps, threat=threat, steps=40, targets=2)
    levels = [
        lb.Level(True, frozenset()),
        lb.CHORD,
        lb.Level(True, frozenset({"kink"})),
        lb.KINKED,
        lb.SLOPED,
        lb.DESCENT,
        lb.SPLIT,
    ]
    any_level = torch.zeros(12, dtype=torch.bool)
    for level in levels:
        m = lb.level_margins(net, x, y, eps, level, threat=threat, modes=20, chunk=4)
        assert bool((m <= res.margins + 1e-9).all())
        any_level |= (m > 0).all(1)
    full = lb.level_margins(net, x, y, eps, lb.KINKED, threat=threat, modes=20, chunk=4)
    boxed = lb.level_margins(net, x, y, eps, levels[0], threat=threat, modes=20, chunk=4)
    assert float((full - boxed)[torch.isfinite(full)].mean()) > 0  # the ellipsoid pays off
    ok = certified(net, x, y, [eps], threat=threat, modes=20)[0]
    cascade = torch.zeros(12, dtype=torch.bool)
    for level in lb.CASCADE:
        m = lb.level_margins(net, x, y, eps, level, threat=threat, modes=20, chunk=4)
        cascade |= (m > 0).all(1)
    assert (torch.from_numpy(ok) == cascade).all() and bool((cascade <= any_level).all())


@pytest.mark.parametrize("modes", [None, 4])
def test_the_joint_slope_and_kink_value_covers_every_sign_pattern(modes):
    """sup over ||M r|| <= eps of a^T r + b^T |r| (b >= 0) is at most max over sign
    patterns s of eps ||M^{-1} (a + s b)||, which the joint value must not undercut (all
    2^9 patterns on a 3 x 3 grid), and no sample of the ellipsoid exceeds it; the value
    used is the smaller of the joint and the separate one."""
    import itertools

    from flowbound.certificates.ellipsoid import FlowTerms, support
    from flowbound.certificates.local import KINKED
    from flowbound.certificates.pixels import PixelBounds

    gen = torch.Generator().manual_seed(0 if modes is None else 1)
    side, d, eps = 3, 9, 0.4
    mi = torch.from_numpy(m_inv(side).copy())
    for _ in range(5):
        a = torch.randn(1, d, generator=gen, dtype=torch.float64)
        b = torch.randn(1, d, generator=gen, dtype=torch.float64).abs()
        zero = torch.zeros(1, d, dtype=torch.float64)
        pb = PixelBounds(a, None, zero, zero, torch.full((d,), 0.5, dtype=torch.float64), b)
        w = torch.ones(1, d, dtype=torch.float64)
        flow = FlowTerms(eps, "tied", side, "cpu", modes, torch.float64, KINKED.ellipsoid)
        v = flow.shared(w, pb, support(pb), 4)
        value = float(v.linear + v.up)
        patterns = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=d)), dtype=torch.float64)
        best = float((eps * ((a + patterns * b) @ mi).norm(dim=1)).max())
        assert value >= best * (1 - 1e-12)
        r = torch.randn(20000, d, generator=gen, dtype=torch.float64)
        r = (eps * r / r.norm(dim=1, keepdim=True)) @ mi  # the ellipsoid's surface
        assert float((r @ a[0] + r.abs() @ b[0]).max()) <= value * (1 + 1e-12)


def _exact_sup(a, b, eps, mi, sign):
    """sup over ||M r|| <= eps of sign (a^T r + b^T |r|), exactly: per orthant s a
    linear objective over the ellipsoid and the orthant (cvxpy, each a small SOCP)."""

    import cvxpy as cp

    m = np.linalg.inv(mi)
    d = len(a)
    best = -np.inf
    for s in itertools.product((-1.0, 1.0), repeat=d):
        s = np.array(s)
        r = cp.Variable(d)
        prob = cp.Problem(
            cp.Maximize(sign * (a + s * b) @ r),
            [cp.norm(m @ r) <= eps, cp.multiply(s, r) >= 0],
        )
        prob.solve(solver="CLARABEL")
        best = max(best, prob.value)
    return best


@pytest.mark.parametrize("modes", [None, 3])
def test_each_rows_own_slopes_stay_above_the_exact_supremum(modes):
    """The sloped level's values (a kink part against the bound moved into the slope
    term, slopes between the chords) against the exact sup of +-(a^T r + b^T |r|) over
    the ellipsoid on a 2 x 2 grid, b of both signs (every orthant solved by cvxpy):
    never below it, for the neurons' rows (up and down) and a margin's rows (down);
    no larger than the kinked level's, smaller on some rows; and the same for the
    descent level (the slopes' further steps) against the sloped one."""
    from flowbound.certificates.ellipsoid import FlowTerms, support
    from flowbound.certificates.local import DESCENT, KINKED, SLOPED
    from flowbound.certificates.pixels import PixelBounds

    gen = torch.Generator().manual_seed(5 if modes is None else 6)
    side, d, eps = 2, 4, 0.4
    mi = m_inv(side).copy()
    gained = {SLOPED: 0.0, DESCENT: 0.0}
    for _ in range(12):
        a = torch.randn(1, d, generator=gen, dtype=torch.float64)
        b = torch.randn(1, d, generator=gen, dtype=torch.float64)
        zero = torch.zeros(1, d, dtype=torch.float64)
        pb = PixelBounds(a, None, zero, zero, torch.full((d,), 0.5, dtype=torch.float64), b)
        w = torch.ones(1, d, dtype=torch.float64)
        values = {}
        for level in (KINKED, SLOPED, DESCENT):
            flow = FlowTerms(eps, "tied", side, "cpu", modes, torch.float64, level.ellipsoid)
            v = flow.shared(w, pb, support(pb), 2)
            mine = flow.per_image(w[None], pb, support(pb), 2)
            values[level] = [float(v.linear + v.up), float(v.linear + v.down)]
            values[level].append(float(mine.linear + mine.down))
        up = _exact_sup(a[0].numpy(), b[0].numpy(), eps, mi, 1.0)
        down = _exact_sup(a[0].numpy(), b[0].numpy(), eps, mi, -1.0)
        for tighter, looser in ((SLOPED, KINKED), (DESCENT, SLOPED)):
            for got, exact in zip(values[tighter], (up, down, down), strict=True):
                assert got >= exact * (1 - 1e-7) - 1e-9
            for new, old in zip(values[tighter], values[looser], strict=True):
                assert new <= old * (1 + 1e-12) + 1e-15
                gained[tighter] = max(gained[tighter], old - new)
    assert min(gained.values()) > 1e-3  # each level pays off on some row


def test_levels_pick_a_prefix_of_the_cascade_and_bad_levels_are_refused():
    """``levels`` = the cascade's first level is the one-chord certificate
    (``kink=False``); more levels certify at least as many digits; a single Level, an
    empty list or levels with kink=False are refused."""
    import flowbound.certificates.local as lb

    torch.manual_seed(3)
    net = OneHidden(36, 10, 3).double()
    x = torch.rand(10, 6, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        y = net(x).argmax(1)
    eps = [0.2, 0.5]
    first = lb.certified(net, x, y, eps, levels=lb.CASCADE[:1], modes=10)
    assert (first == lb.certified(net, x, y, eps, kink=False, modes=10)).all()
    previous = first
    for k in (2, 3, 4):
        now = lb.certified(net, x, y, eps, levels=lb.CASCADE[:k], modes=10)
        assert (now >= previous).all()
        previous = now
    for bad in (lb.SLOPED, [], ["chord"]):
        with pytest.raises(TypeError, match="levels"):
            lb.certified(net, x, y, eps, levels=bad)
    with pytest.raises(ValueError, match="kink=False or levels"):
        lb.certified(net, x, y, eps, kink=False, levels=lb.CASCADE)
