"""Bad input gets one clear error; a certificate never comes out below the truth.

Hypothesis drives the numeric entry points (sdp_bound and the dual
certificates, the norm bounds, the warp, the attacks) with NaN, inf, empty,
wrongly shaped, wrongly typed and out-of-domain input. Each either raises a
ValueError or TypeError, or returns a sound, well-formed result.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowbound.attacks.pgd import flow_pgd, pgd
from flowbound.attacks.stadv import stadv
from flowbound.certificates.bounds import (
    certify,
    certify_cholesky,
    frobenius_bound,
    sdp_adversarial_bound,
    sdp_bound,
    sdp_bound_cvxpy,
    spectral_bound,
)
from flowbound.networks.architectures import OneHidden
from flowbound.threat.warp import warp

BAD = (ValueError, TypeError)


@pytest.fixture(scope="module")
def small_sdp():
    g = np.random.default_rng(7)
    a = g.standard_normal((5, 7))
    return a, sdp_bound_cvxpy(a, solver="CLARABEL")


@pytest.mark.parametrize("tol", [math.nan, math.inf, -math.inf, 1e308, 1.0, 0.0, -0.1])
def test_sdp_bound_refuses_tolerances_outside_0_1(small_sdp, tol):
    a, _ = small_sdp
    with pytest.raises(ValueError, match="tol"):
        sdp_bound(a, tol=tol)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"check_every": 0}, "check_every"),
        ({"max_iter": 0}, "max_iter"),
        ({"max_iter": -3}, "max_iter"),
        ({"rank": 0}, "rank"),
        ({"check_every": 2.5}, "check_every"),
    ],
)
def test_sdp_bound_refuses_bad_iteration_settings(small_sdp, kwargs, match):
    with pytest.raises(BAD, match=match):
        sdp_bound(small_sdp[0], **kwargs)


def test_certify_cholesky_fails_closed_on_nan_and_inf(small_sdp):
    a, ref = small_sdp
    c = np.zeros(12)
    for delta in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="delta"):
            certify_cholesky(a, c, delta)
    for bad in (math.nan, math.inf):
        cc = c.copy()
        cc[3] = bad
        with pytest.raises(ValueError, match="c has"):
            certify_cholesky(a, cc, 1.0)
        with pytest.raises(ValueError, match="c has"):
            certify(a, cc)
    with pytest.raises(ValueError, match="entries"):
        certify(a, np.zeros(11))
    # a proof that succeeds is a valid bound
    up = certify_cholesky(a, np.zeros(12), 50.0)
    assert up is None or up >= ref - 1e-6


@pytest.mark.parametrize(
    "a, error",
    [
        (np.zeros((0, 3)), ValueError),
        (np.zeros(5), ValueError),
        (np.zeros((2, 2, 2, 2)), ValueError),
        (np.ones((3, 4)) * (1 + 1j), TypeError),
        (np.array([["a", "b"]]), TypeError),
    ],
)
def test_sdp_bound_refuses_wrong_arrays(a, error):
    with pytest.raises(error):
        sdp_bound(a)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tol=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e-12, 0.5])),
    max_iter=st.integers(-2, 400),
    check_every=st.integers(-1, 60),
)
def test_sdp_bound_raises_or_is_at_least_the_true_value(small_sdp, tol, max_iter, check_every):
    a, ref = small_sdp
    try:
        res = sdp_bound(a, tol=tol, max_iter=max_iter, check_every=check_every)
    except BAD:
        return
    assert math.isfinite(float(res.upper))
    assert float(res.upper) >= ref * (1 - 1e-6)  # never below the SDP's value (cvxpy)


@settings(max_examples=30, deadline=None)
@given(
    entry=st.sampled_from([math.nan, math.inf, -math.inf]),
    where=st.tuples(st.integers(0, 4), st.integers(0, 6)),
)
def test_sdp_bound_refuses_nan_and_inf_entries(entry, where):
    a = np.ones((5, 7))
    a[where] = entry
    with pytest.raises(ValueError, match="NaN or inf"):
        sdp_bound(a)


@settings(max_examples=20, deadline=None)
@given(scale=st.sampled_from([1e150, 1e200, 1e300]))
def test_sdp_bound_with_overflowing_entries_raises_or_stays_sound(scale):
    a = np.random.default_rng(1).standard_normal((4, 5)) * scale
    try:
        res = sdp_bound(a, max_iter=100)
    except (ValueError, FloatingPointError):
        return
    assert math.isfinite(float(res.upper)) and float(res.upper) >= float(res.lower)


def test_norm_bounds_refuse_negative_eps_and_mismatched_shapes():
    w, v = np.ones((3, 4)), np.ones(3)
    for fn in (spectral_bound, frobenius_bound):
        with pytest.raises(ValueError, match="eps"):
            fn(w, v, -1.0, side=2)
        with pytest.raises(ValueError, match="eps"):
            fn(w, v, math.nan, side=2)
        with pytest.raises(ValueError, match="one entry per row"):
            fn(w, np.ones(4), 1.0, side=2)
        with pytest.raises(ValueError, match="columns"):
            fn(w, v, 1.0, side=3)
        assert fn(w, v, 0.5, side=2) >= 0
    with pytest.raises(ValueError, match="eps"):
        sdp_adversarial_bound(1.0, -1.0)
    with pytest.raises(ValueError, match="sdp_upper"):
        sdp_adversarial_bound(math.nan, 1.0)


@pytest.fixture
def net():
    torch.manual_seed(0)
    m = OneHidden(d=16, hidden=8, classes=3)
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _x(values, b=2):
    return torch.full((b, 4, 4), values)


def _registered_attacks() -> list[str]:
    from flowbound.attacks.registry import ATTACKS

    return list(ATTACKS)


@pytest.mark.parametrize("name", _registered_attacks())
def test_every_registered_attack_refuses_bad_input(net, name):
    """Every attack of the registry (a new one with no edit here): NaN, 0-255 and
    negative images, an unknown domain, float or ragged labels, a NaN or negative
    budget: one ValueError or TypeError each; [-1, 1] images with domain='symmetric'."""
    from flowbound.attacks.registry import attack

    a = attack(name)
    budget = {"pixels": 0.1, "penalty": 0.005}.get(a.threat, 0.5)
    y = torch.zeros(2, dtype=torch.long)

    def run(x, labels=y, b=budget, **k):
        return a.run(net, x, labels, b, 0, steps=2, **k)

    with pytest.raises(ValueError, match="NaN or inf"):
        run(_x(math.nan))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        run(_x(200.0))  # 0-255 images
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        run(_x(-0.5))
    run(_x(-0.5), domain="symmetric")  # legitimate on [-1, 1]
    with pytest.raises(ValueError, match="domain"):
        run(_x(0.5), domain="0-255")
    with pytest.raises(BAD):
        run(_x(0.5), labels=torch.zeros(2))
    with pytest.raises(BAD):
        run(_x(0.5), labels=torch.zeros(3, dtype=torch.long))
    for bad in (math.nan, -1.0):
        with pytest.raises(BAD):
            run(_x(0.5), b=bad)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tau": math.nan}, "tau"),
        ({"tau": math.inf}, "tau"),
        ({"steps": 0}, "steps"),
        ({"history": 0}, "history"),
        ({"kappa": -1.0}, "kappa"),
    ],
)
def test_stadv_refuses_bad_parameters(net, kwargs, match):
    with pytest.raises(ValueError, match=match):
        stadv(net, _x(0.5), torch.zeros(2, dtype=torch.long), **kwargs)


def test_attacks_refuse_bad_labels_and_steps(net):
    x = _x(0.5)
    with pytest.raises(ValueError, match="shape"):
        stadv(net, x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="labels"):
        pgd(net, x, torch.zeros(2), eps=0.1, alpha=0.1, steps=1)
    with pytest.raises(ValueError, match="steps"):
        pgd(net, x, torch.zeros(2, dtype=torch.long), eps=0.1, alpha=0.1, steps=0)
    with pytest.raises(ValueError, match="eps"):
        flow_pgd(net, x, torch.zeros(2, dtype=torch.long), eps=math.inf)


def test_attacks_and_warp_return_empty_results_for_an_empty_batch(net):
    x, y = torch.zeros(0, 4, 4), torch.zeros(0, dtype=torch.long)
    st_res = stadv(net, x, y, steps=3)
    assert st_res.images.shape == (0, 4, 4) and st_res.flows.shape == (0, 2, 4, 4)
    assert st_res.success.shape == (0,) and st_res.success_final.shape == (0,)
    assert pgd(net, x, y, eps=0.1, alpha=0.1, steps=1).success.shape == (0,)
    fp = flow_pgd(net, x, y, eps=0.5, steps=2)
    assert fp.images.shape == (0, 4, 4) and fp.success.shape == (0,)
    assert warp(x, torch.zeros(0, 2, 4, 4)).shape == (0, 4, 4)


@settings(max_examples=30, deadline=None)
@given(
    value=st.sampled_from([math.nan, math.inf, -math.inf]),
    tied=st.booleans(),
)
def test_warp_refuses_nan_and_inf_flows(value, tied):
    x = torch.rand(2, 5, 5)
    flow = torch.zeros((2, 5, 5) if tied else (2, 2, 5, 5))
    flow.view(-1)[3] = value
    with pytest.raises(ValueError, match="NaN or inf"):
        warp(x, flow)


def test_warp_refuses_wrong_types_and_shapes():
    with pytest.raises(TypeError):
        warp(torch.zeros(1, 3, 3, dtype=torch.long), torch.zeros(1, 3, 3))
    with pytest.raises(TypeError):
        warp(np.zeros((1, 3, 3)), torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="flow must have shape"):
        warp(torch.zeros(1, 3, 3), torch.zeros(1, 3, 4))
