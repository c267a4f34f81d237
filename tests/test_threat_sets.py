"""Threat sets as objects: TIED and FULL against the geometry, and a toy box threat set
that reaches the certificate, flow_apgd, the registries and their checks through
its registration alone (CONTRIBUTING, "A threat set")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowbound.threat.geometry import aabb_lambda, flow_norm, l_diff
from flowbound.threat.sets import FULL, THREAT_SETS, TIED, ThreatSet, threat_set


def test_tied_and_full_measure_what_the_geometry_measures():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(5, 6, 6, generator=g, dtype=torch.float64)
    f = torch.randn(5, 2, 6, 6, generator=g, dtype=torch.float64)
    np.testing.assert_allclose(TIED.used(r).numpy(), flow_norm(r), rtol=1e-12)
    # full flows: l_diff <= sqrt(2) eps
    np.testing.assert_allclose(
        FULL.used(f).numpy(), l_diff(f, full=True) / math.sqrt(2), rtol=1e-12
    )
    np.testing.assert_allclose(TIED.box(0.3, 6), 0.3 * np.array(aabb_lambda(6)))
    np.testing.assert_allclose(FULL.box(0.3, 6), math.sqrt(2) * 0.3 * np.array(aabb_lambda(6)))
    assert TIED.flow_shape(6) == (6, 6) and FULL.flow_shape(6) == (2, 6, 6)
    assert threat_set("full") is FULL and threat_set(TIED) is TIED
    with pytest.raises(ValueError, match="threat must be one of tied, full"):
        threat_set("affine")


def test_projection_and_starts_stay_inside():
    g = torch.Generator().manual_seed(1)
    z = 10 * torch.randn(7, 36, generator=g, dtype=torch.float64)
    for t in (TIED, FULL):
        assert bool((t.project(z, 0.4).norm(dim=1) <= 0.4 * (1 + 1e-12)).all())
        start = t.start(z, torch.rand(7, 36, generator=g, dtype=torch.float64), 0.4)
        assert bool((start.norm(dim=1) <= 0.2 * (1 + 1e-12)).all())


def test_a_threat_set_is_checked_when_built():
    with pytest.raises(ValueError, match="parts"):
        ThreatSet("odd", "odd", parts=3, scale=1.0)
    with pytest.raises(ValueError, match="scale"):
        ThreatSet("odd", "odd", parts=1, scale=-1.0)


#: The toy: a per-pixel box of delta pixels on both components (Ruoss et al. 2021).
BOX = ThreatSet("box", "a per-pixel box", parts=2, scale=1.0, ellipsoid=False)


@pytest.fixture
def box_registered(monkeypatch):
    """The toy threat set, its attack and its certificate, each by one registration."""
    from flowbound.attacks.registry import ATTACKS, flow_apgd_attack
    from flowbound.certificates.local import certified
    from flowbound.certificates.registry import BOUNDS, Bound

    monkeypatch.setitem(THREAT_SETS, BOX.name, BOX)
    a = flow_apgd_attack(BOX)
    monkeypatch.setitem(ATTACKS, a.name, a)

    def certify(model, x, y, eps, *, modes=200, classifier_only=False):
        return certified(model, x, y, eps, threat=BOX, modes=modes, classifier_only=classifier_only)

    b = Bound("local_box", "per digit, box", certify=certify, threat=BOX.name)
    monkeypatch.setitem(BOUNDS, b.name, b)
    return a, b


def test_the_box_threat_set_reaches_certificate_attack_and_checks(box_registered):
    from flowbound.attacks.flow_apgd import flow_apgd
    from flowbound.certificates.local import certified_margins
    from flowbound.certificates.registry import certified_digits, sound_bounds
    from flowbound.networks.architectures import OneHidden
    from flowbound.threat.warp import warp

    attack_, bound_ = box_registered
    torch.manual_seed(3)
    side = 5
    net = OneHidden(side * side, 10, 3).double()
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(10, side, side, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = net(x).argmax(1)
    for eps in (0.05, 0.3, 1.2):
        bound = certified_margins(net, x, y, eps, threat="box", modes=None)
        res = flow_apgd(net, x, y, eps=eps, threat="box", steps=30, targets=2)
        assert res.flows.shape == (10, 2, side, side)
        assert bool((BOX.used(res.flows) <= eps * (1 + 1e-9)).all())
        assert bool((res.margins >= bound - 1e-9).all()), "the attack beat the box certificate"
        # dense samples of the box, corners included
        for b in range(3):
            u = (2 * torch.rand(400, 2, side, side, generator=gen, dtype=torch.float64) - 1) * eps
            u[:200] = u[:200].sign() * eps
            with torch.no_grad():
                sc = net(warp(x[b].expand(400, side, side).contiguous(), u))
            m = (sc[:, y[b] : y[b] + 1] - sc).min(0).values
            m[y[b]] = math.inf
            assert bool((m >= bound[b] - 1e-9).all())
    ok = certified_digits(net, x, y, [0.0, 0.05, 0.3], bound_.name, side=side)
    assert ok.shape == (3, 10) and ok[0].all() and ok[1].sum() >= ok[2].sum()
    assert ok[1].any()  # the box alone certifies something at a small budget
    assert bound_.name in sound_bounds("one_hidden")  # what the soundness tests iterate over


def test_the_box_attack_keeps_the_attack_contract(box_registered):
    from test_attacks import check_attack_contract

    from flowbound.networks.architectures import OneHidden

    attack_, _ = box_registered
    torch.manual_seed(0)
    net = OneHidden(d=100, hidden=32, classes=4).double()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.rand(6, 10, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        y = net(x).argmax(1)
    check_attack_contract(attack_, net, x, y)
