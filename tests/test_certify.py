"""The multi-class certificate: its logic, and that certified inputs cannot be flipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowbound.attacks.flow_apgd import flow_apgd
from flowbound.certificates.registry import (
    BOUNDS,
    certified_digits,
    certified_fraction,
    decrease_bounds,
    sound_bounds,
)
from flowbound.networks.architectures import Linear, OneHidden
from flowbound.threat.geometry import m_inv
from flowbound.threat.warp import warp


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


@pytest.mark.parametrize("kind", [k for k in BOUNDS if k != "linear" and not BOUNDS[k].local])
def test_decrease_bounds_are_symmetric_and_positive(tiny, kind):
    net, _, _ = tiny
    d = decrease_bounds(net, kind, side=3)
    np.testing.assert_allclose(d, d.T)
    assert np.all(np.diag(d) == 0) and np.all(d[~np.eye(3, dtype=bool)] > 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_sdp_decrease_is_the_sdp_value_exactly(tiny, dtype):
    """Delta^ij at eps = 1 under the SDP bound is q^ij itself, bit for bit, whatever the
    model's dtype: the attack-vs-certificate check reads q from the shared Delta."""
    from flowbound.certificates.bounds import sdp_bound, sdp_matrix
    from flowbound.networks.view import binary_weights, unordered_pairs, view
    from flowbound.threat.geometry import aabb_lambda

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


#: Every registered sound bound with a tiny network it applies to: a bound added with
#: ``register_bound`` (and ``sound=True``) is checked here without editing this file.
SOUND = [(k, arch) for arch in ("one_hidden", "linear") for k in sound_bounds(arch)]


@pytest.fixture
def tiny_linear():
    torch.manual_seed(4)
    net = Linear(d=9, classes=3).double()
    g = torch.Generator().manual_seed(5)
    x = torch.rand(200, 3, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = net(x).argmax(1)
    return net, x, y


@pytest.mark.parametrize("kind, arch", SOUND)
def test_certified_inputs_cannot_be_flipped(tiny, tiny_linear, kind, arch):
    check_certified_inputs_cannot_be_flipped(tiny if arch == "one_hidden" else tiny_linear, kind)


def check_certified_inputs_cannot_be_flipped(problem, kind: str) -> None:
    """At the grid eps where about half the inputs are certified by ``kind``, flow_apgd
    on the bound's threat set (and, for tied flows, projected ascent from random points
    of the ellipsoid) flips none of them."""
    net, x, y = problem
    grid = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0]
    ok = certified_digits(net, x, y, grid, kind, side=3)
    e = int(np.argmin(np.abs(ok.mean(1) - 0.45)))
    eps, safe = grid[e], np.nonzero(ok[e])[0]
    assert len(safe) > 0, f"{kind} certifies nothing on the grid"
    xs, ys = x[safe], y[safe]
    threat = BOUNDS[kind].threat
    res = flow_apgd(net, xs, ys, eps=eps, threat=threat, steps=60, restarts=2, targets=2)
    assert not bool(res.success.any()), f"flow_apgd flipped an input {kind} certifies"
    if threat != "tied":
        return
    mi = torch.from_numpy(m_inv(3).copy())
    g = torch.Generator().manual_seed(3)
    for _ in range(10):  # random flows on the ellipsoid, then ascent on the flow alone
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


def test_the_printed_bounds_are_not_sound_and_every_other_is():
    assert {"spectral_printed", "frobenius_printed"} == {k for k in BOUNDS if not BOUNDS[k].sound}
    assert set(sound_bounds()) == {k for k in BOUNDS if k not in ("spectral_printed",
                                                                 "frobenius_printed")}  # fmt: skip
    assert "linear" in sound_bounds("linear") and "linear" not in sound_bounds("one_hidden")


#: Inputs every bound must refuse: (spoil(x, y, eps) -> (x, y, eps), message).
SPOILS = [
    (lambda x, y, e: (x * float("nan"), y, e), "NaN or inf"),
    (lambda x, y, e: (x * 255, y, e), r"\[0, 1\]"),
    (lambda x, y, e: (x, y[:-1], e), "shape"),
    (lambda x, y, e: (x, y, [-0.1]), "eps"),
    (lambda x, y, e: (x, y, [float("inf")]), "eps"),
    (lambda x, y, e: (x.flatten(1), y, e), "H, W"),
    (lambda x, y, e: (x, torch.full_like(y, 3), e), r"y must lie in \[0, 3\)"),
]


def check_refuses_bad_input(problem, kind: str) -> None:
    """``certified_digits`` with ``kind`` refuses every input of :data:`SPOILS`."""
    net, x, y = problem
    for spoil, match in SPOILS:
        xs, ys, eps = spoil(x[:6], y[:6], [0.1])
        with pytest.raises((ValueError, TypeError), match=match):
            certified_digits(net, xs, ys, eps, kind, side=3)


@pytest.mark.parametrize("kind", sound_bounds())
def test_every_sound_bound_refuses_bad_input(tiny, tiny_linear, kind):
    check_refuses_bad_input(tiny if "one_hidden" in BOUNDS[kind].applies_to else tiny_linear, kind)


@pytest.mark.parametrize("kind", sound_bounds("one_hidden"))
def test_an_empty_batch_is_an_empty_answer(tiny, kind):
    net, x, y = tiny
    ok = certified_digits(net, x[:0], y[:0], [0.0, 0.1], kind, side=3)
    assert ok.shape == (2, 0) and ok.dtype == bool


def test_certified_digits_refuses_bad_kinds_and_deltas(tiny):
    net, x, y = tiny
    x, y = x[:6], y[:6]
    with pytest.raises(ValueError, match="non-empty list"):
        certified_digits(net, x, y, [], "spectral", side=3)
    with pytest.raises(TypeError, match="kind must be a bound's name"):
        certified_digits(net, x, y, [0.1], ["sdp"], side=3)
    good = decrease_bounds(net, "spectral", side=3)
    for delta, match in [
        (good[:2], r"shape \(3, 3\)"),
        (-good, "must be >= 0"),
        (good * np.nan, "NaN or inf"),
        (good + np.triu(np.ones((3, 3)), 1), "symmetric"),
        ("big", "array of numbers|NaN"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            certified_digits(net, x, y, [0.1], "spectral", side=3, delta=delta)


def test_bounds_are_checked_when_registered():
    from flowbound.certificates.registry import Bound

    def fn(*args, **kwargs):
        return None

    with pytest.raises(TypeError, match="exactly one of decrease .* and certify"):
        Bound("b", "b")
    with pytest.raises(TypeError, match="exactly one of"):
        Bound("b", "b", decrease=fn, certify=fn)
    with pytest.raises(ValueError, match="threat must be one of"):
        Bound("b", "b", decrease=fn, threat="bogus")
    with pytest.raises(ValueError, match="applies_to"):
        Bound("b", "b", decrease=fn, applies_to=("cnn",))
    with pytest.raises(TypeError, match="must be callable"):
        Bound("b", "b", decrease=3)


def test_a_certificate_that_returns_the_wrong_shape_is_refused(tiny, monkeypatch):
    from flowbound.certificates.registry import Bound

    def scalar(model, x, y, eps, *, modes=200, classifier_only=False):
        return True

    monkeypatch.setitem(BOUNDS, "scalar", Bound("scalar", "scalar", certify=scalar))
    net, x, y = tiny
    with pytest.raises(TypeError, match=r"must return an \(E, N\)"):
        certified_digits(net, x[:6], y[:6], [0.1], "scalar", side=3)


@pytest.mark.parametrize("kind", sound_bounds("one_hidden"))
def test_a_spatial_transformer_needs_classifier_only(kind):
    """Certifying an STN's classifier on the transformed digit is not a certificate of
    the STN: refused unless asked for by name."""
    from flowbound.networks.architectures import STNClassifier

    torch.manual_seed(0)
    stn = STNClassifier(hidden=8, stn_hidden=4).double().eval()
    x = torch.rand(3, 28, 28, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        y = stn(x).argmax(1)
    with pytest.raises(TypeError, match="classifier_only=True"):
        certified_digits(stn, x, y, [0.0, 0.01], kind)
    ok = certified_digits(stn, x, y, [0.0, 0.01], kind, classifier_only=True)
    assert ok.shape == (2, 3)
