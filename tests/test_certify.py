"""The multi-class certificate: its logic, and that certified inputs cannot be flipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowbound.certify import BOUNDS, KINDS, certified_fraction, decrease_bounds, margins
from flowbound.geometry import m_inv
from flowbound.models import Linear, OneHidden
from flowbound.warp import warp


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    net = OneHidden(d=9, hidden=8, classes=3).double()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(200, 3, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = net(x).argmax(1)
    y[:20] = (y[:20] + 1) % 3  # some misclassified inputs
    return net, x, y


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "linear" and not BOUNDS[k].local])
def test_decrease_bounds_are_symmetric_and_positive(tiny, kind):
    net, _, _ = tiny
    d = decrease_bounds(net, kind, side=3)
    np.testing.assert_allclose(d, d.T)
    assert np.all(np.diag(d) == 0) and np.all(d[~np.eye(3, dtype=bool)] > 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_sdp_decrease_is_the_sdp_value_exactly(tiny, dtype):
    """Delta^ij at eps = 1 under the SDP bound is q^ij itself, bit for bit, whatever the
    model's dtype: the attack-vs-certificate check reads q from the shared Delta."""
    from flowbound.bounds import sdp_bound, sdp_matrix
    from flowbound.geometry import aabb_lambda
    from flowbound.nets import binary_weights, unordered_pairs, view

    net = tiny[0].to(dtype)
    layers = view(net)
    pairs = unordered_pairs(3)
    q = sdp_bound(sdp_matrix(layers.w, binary_weights(layers.v, pairs), aabb_lambda(3))).upper
    d = decrease_bounds(net, "sdp", side=3)
    assert [d[i, j] for i, j in pairs] == [float(v) for v in q]


def test_loss_at_zero_is_the_clean_error_and_grows_with_eps(tiny):
    net, x, y = tiny
    loss = certified_fraction(net, x, y, [0.0, 0.01, 0.1, 1.0, 10.0], side=3)
    assert loss[0] == pytest.approx(0.1)  # the 20 relabelled inputs
    assert np.all(np.diff(loss) >= 0) and loss[-1] == 1.0


def test_linear_networks_use_the_linear_bound():
    torch.manual_seed(2)
    net = Linear(d=9, classes=3).double()
    d = decrease_bounds(net, "linear", side=3)
    assert d[0, 1] > 0
    with pytest.raises(ValueError, match="applies to one_hidden networks, not linear"):
        decrease_bounds(net, "sdp", side=3)


@pytest.mark.parametrize("kind", ["sdp", "spectral", "frobenius"])
def test_certified_inputs_cannot_be_flipped(tiny, kind):
    net, x, y = tiny
    d = decrease_bounds(net, kind, side=3)
    m = margins(net, x, y)
    m[np.arange(len(y)), y.numpy()] = np.inf
    need = d[y.numpy()]
    need[np.arange(len(y)), y.numpy()] = 1.0
    radius = (m / need).min(1)  # the largest certified eps of each input
    eps = float(np.median(radius[radius > 0]))  # half of the correct inputs certified
    safe = np.where((m > 0).all(1) & (m > eps * d[y.numpy()]).all(1))[0]
    assert len(safe) > 0
    mi = torch.from_numpy(m_inv(3).copy())
    g = torch.Generator().manual_seed(3)
    xs, ys = x[safe], y[safe]
    for _ in range(20):  # random flows on the ellipsoid, then ascent on the flow alone
        s = torch.randn(len(safe), 9, generator=g, dtype=torch.float64)
        s = (eps * s / s.norm(dim=1, keepdim=True)).requires_grad_(True)
        for _ in range(30):
            r = (s @ mi).reshape(-1, 3, 3)
            out = net(warp(xs, r))
            gap = out.gather(1, ys.view(-1, 1)).squeeze(1) - out.scatter(
                1, ys.view(-1, 1), -torch.inf
            ).amax(1)
            (grad,) = torch.autograd.grad(gap.sum(), s)
            with torch.no_grad():
                s -= 0.05 * grad
                s *= torch.clamp(eps / s.norm(dim=1, keepdim=True), max=1.0)
        assert bool((gap > 0).all()), "a certified input was flipped"
