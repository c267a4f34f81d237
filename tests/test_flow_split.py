"""The last step with the flow's sign split: sound against samples, descent on the very
function it bounds, the attack and an exhaustive grid; never looser than the level it
extends and tighter somewhere; refuses a split it cannot run."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import ellipsoid_flows, sampled_margins, tiny_grid_case
from torch import nn

from flowbound.attacks.flow_apgd import flow_apgd
from flowbound.certificates import local
from flowbound.certificates.ellipsoid import FlowTerms, support
from flowbound.certificates.flow_split import split_over_threat
from flowbound.certificates.pixels import _pixel_bounds
from flowbound.certificates.propagation import (
    back_substituted,
    chain_pre_activation_bounds,
    over_threat,
)
from flowbound.networks.architectures import OneHidden
from flowbound.networks.chain import chain
from flowbound.threat.geometry import m_inv
from flowbound.threat.warp import warp


def _net(kind: str, d: int):
    torch.manual_seed(5)
    if kind == "own":
        return OneHidden(d, 10, 3).double().eval()
    if kind == "bias":
        return nn.Sequential(nn.Flatten(), nn.Linear(d, 10), nn.ReLU(), nn.Linear(10, 3))
    return nn.Sequential(  # two hidden layers, biases
        nn.Flatten(), nn.Linear(d, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3)
    )


def _last_step(net, x, y, eps, threat, level=local.DESCENT):
    """The pieces the last step bounds: rows rho (N, K, d) and const (N, K) of the
    back-substituted margins, with the pixel bounds, flow terms and support."""
    side = x.shape[-1]
    layers = chain(net, side)
    pb = _pixel_bounds(x, eps, threat, torch.float64, True)
    flow = FlowTerms(eps, threat, side, x.device, None, torch.float64, level.ellipsoid)
    idx = support(pb)
    bounds = chain_pre_activation_bounds(layers.stages, pb, flow, idx, 8, skip=True)
    last = layers.stages[-1]
    a = last.matrix()
    c = a[y][:, None, :] - a[None, :, :]
    const = torch.zeros(len(x), layers.classes, dtype=torch.float64)
    if last.bias is not None:
        const = last.bias[y][:, None] - last.bias[None, :]
    rho, const = back_substituted(layers.stages, bounds, len(layers.stages) - 1, c, const)
    return rho, const, pb, flow, idx


def _descended(x, rho, const, eps, threat, gen, starts=4, steps=150):
    """Per row the least rho^T g(r) + const found by projected gradient descent over the
    threat set (r = M^-1 s, ||s|| <= the radius): (N, K)."""
    side = x.shape[-1]
    d = side * side
    parts = 1 if threat == "tied" else 2
    radius = eps if threat == "tied" else math.sqrt(2) * eps
    mi = torch.from_numpy(m_inv(side).copy())
    n, k = rho.shape[:2]
    best = torch.full((n, k), math.inf, dtype=torch.float64)
    for _ in range(starts):
        s = torch.randn(n, k, parts * d, generator=gen, dtype=torch.float64)
        s = (radius * s / s.norm(dim=-1, keepdim=True)).requires_grad_(True)
        for _ in range(steps):
            flows = torch.stack([p @ mi for p in s.split(d, dim=-1)], 2)
            flows = flows.reshape(n * k, parts, side, side)
            flows = flows[:, 0] if parts == 1 else flows
            xs = x[:, None].expand(n, k, side, side).reshape(n * k, side, side)
            g = warp(xs, flows).reshape(n, k, d)
            value = (rho * g).sum(-1) + const
            best = torch.minimum(best, value.detach())
            (grad,) = torch.autograd.grad(value.sum(), s)
            with torch.no_grad():
                s -= 0.05 * radius * grad / (grad.norm(dim=-1, keepdim=True) + 1e-12)
                s *= (radius / s.norm(dim=-1, keepdim=True)).clamp(max=1.0)
    return best


@pytest.mark.parametrize("threat", ["tied", "full"])
@pytest.mark.parametrize("kind", ["own", "bias", "deep"])
def test_no_flow_found_beats_a_split_last_step(threat, kind):
    """Every row of every digit, whatever its sign: the split bound stays below the least
    value of rho^T g(r) + const found by samples and by descent on that very function,
    and it is tighter than the unsplit last step for some row."""
    side, eps = 5, 0.7
    gen = torch.Generator().manual_seed(2)
    net = _net(kind, side * side).double().eval()
    x = torch.rand(4, side, side, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = net(x.flatten(1)).argmax(1)
    rho, const, pb, flow, idx = _last_step(net, x, y, eps, threat)
    n, k, d = rho.shape
    plain = over_threat(rho, const, pb, flow, idx, 8)
    rows_of = torch.arange(n).repeat_interleave(k)
    split = split_over_threat(
        rho.reshape(n * k, d),
        const.reshape(-1),
        type(pb)(*[t if t is None or t.dim() == 1 else t[rows_of] for t in pb]),
        flow,
        idx[rows_of],
        8,
        3,
    ).view(n, k)
    found = _descended(x, rho, const, eps, threat, gen)
    for b in range(n):
        flows = ellipsoid_flows(side, eps, 400, threat, gen)
        g = warp(x[b].expand(400, side, side).contiguous(), flows).reshape(400, d)
        sampled = (g @ rho[b].T + const[b]).min(0).values
        found[b] = torch.minimum(found[b], sampled)
    assert bool((split <= found + 1e-9).all()), (split - found).max()
    assert bool((split > plain + 1e-6).any())  # the split tightens some row


@pytest.mark.parametrize("threat", ["tied", "full"])
@pytest.mark.parametrize("kind", ["own", "bias"])
def test_the_split_level_is_sound_and_never_looser_than_descent(threat, kind):
    side, eps = 5, {"tied": 2.0, "full": 1.2}[threat]  # some margins open at DESCENT
    gen = torch.Generator().manual_seed(11)
    net = _net(kind, side * side).double().eval()
    x = torch.rand(8, side, side, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = net(x.flatten(1)).argmax(1)
    level = local.Level(True, local.DESCENT.ellipsoid, 3)
    bound = local.level_margins(net, x, y, eps, level, threat=threat, modes=None)
    start = local.level_margins(net, x, y, eps, local.DESCENT, threat=threat, modes=None)
    assert bool((bound >= start).all())
    open_ = start <= 0
    assert bool((bound[open_] > start[open_] + 1e-6).any())  # it tightens an open margin
    assert bool((bound[~open_] == start[~open_]).all())  # and touches nothing else
    res = flow_apgd(net, x, y, eps=eps, threat=threat, steps=40, targets=2)
    assert bool((bound <= res.margins + 1e-9).all())
    found = sampled_margins(net, x, y, eps, threat, gen, 300)
    assert bool((found >= bound - 1e-9).all()), (found - bound).min()


def test_an_exhaustive_grid_never_beats_the_split_level():
    """Tied flows on a 2 x 2 image: every flow of a fine grid over the ellipsoid keeps
    each margin above the split level's bound, with every pixel split (exact kinks)."""
    net, x, y, eps, found = tiny_grid_case()
    for pixels in (0, 2, 4):
        level = local.Level(True, local.DESCENT.ellipsoid, pixels)
        bound = float(local.level_margins(net, x, y, eps, level, modes=None)[0, 1])
        assert bound <= found + 1e-12


def test_split_zero_is_descent_and_the_cascade_ends_with_the_split():
    side, eps = 5, 0.6
    gen = torch.Generator().manual_seed(4)
    net = _net("own", side * side)
    x = torch.rand(3, side, side, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    zero = local.Level(True, local.DESCENT.ellipsoid, 0)
    a = local.level_margins(net, x, y, eps, zero, modes=None)
    b = local.level_margins(net, x, y, eps, local.DESCENT, modes=None)
    assert torch.equal(a, b)
    assert local.CASCADE[-1] == local.SPLIT and local.SPLIT.split == local.SPLIT_PIXELS
    assert local.SPLIT._replace(split=0) == local.DESCENT


@pytest.mark.parametrize(
    ("split", "error", "match"),
    [(-1, ValueError, "between 0 and"), (13, ValueError, "between 0 and"),
     (True, TypeError, "integer"), (2.0, TypeError, "integer")],
)  # fmt: skip
def test_a_split_it_cannot_run_is_refused(split, error, match):
    side = 4
    net = _net("own", side * side)
    x = torch.rand(2, side, side, dtype=torch.float64)
    y = torch.tensor([0, 1])
    level = local.Level(True, local.DESCENT.ellipsoid, split)
    with pytest.raises(error, match=match):
        local.level_margins(net, x, y, 0.3, level)
    with pytest.raises(error, match=match):
        local.certified(net, x, y, [0.3], levels=(local.KINKED, level))
