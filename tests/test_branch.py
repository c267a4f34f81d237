"""Branch and bound over the hidden ReLUs: sound against samples, an attack and an
exhaustive grid; never looser than the level it starts from; refuses what it cannot
split."""

from __future__ import annotations

import pytest
import torch
from conftest import ellipsoid_flows, sampled_margins, tiny_grid_case
from torch import nn

from flowbound.attacks.flow_apgd import flow_apgd
from flowbound.certificates import local
from flowbound.certificates.branch import Branching, branched, branched_margins
from flowbound.networks.architectures import OneHidden
from flowbound.threat.warp import warp


def _biased(d, hidden, k):
    return nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, k))


@pytest.mark.parametrize("threat", ["tied", "full"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("level", [local.KINKED, local.DESCENT, local.DESCENT._replace(split=3)])
@pytest.mark.parametrize("tighten", [0, 2])
def test_no_sample_or_attack_beats_a_branched_margin(threat, bias, level, tighten):
    side, hidden, eps = 5, 10, 0.6
    d = side * side
    gen = torch.Generator().manual_seed(11)
    torch.manual_seed(5)
    net = (_biased(d, hidden, 3) if bias else OneHidden(d, hidden, 3)).double().eval()
    x = torch.rand(4, side, side, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = net(x if bias else x.flatten(1)).argmax(1)
    split = Branching(depth=4, leaves=16, steps=6, rate=0.2, tighten=tighten)
    bound = branched_margins(
        net, x, y, eps, threat=threat, modes=None, level=level, branching=split
    )
    start = local.level_margins(net, x, y, eps, level, threat=threat, modes=None)
    assert bool((bound >= start - 1e-12).all())  # never looser than where it starts
    assert bool((bound > start + 1e-6).any())  # and tighter somewhere
    res = flow_apgd(net, x, y, eps=eps, threat=threat, steps=40, targets=2)
    assert bool((bound <= res.margins + 1e-9).all())
    found = sampled_margins(net, x, y, eps, threat, gen, 300)
    assert bool((found >= bound - 1e-9).all()), (found - bound).min()


@pytest.mark.parametrize("threat", ["tied", "full"])
def test_a_leaf_narrows_its_neurons_bounds_only_where_samples_allow(threat):
    """Inside the leaf s z_j >= 0 every sampled flow on that side keeps each neuron's
    pre-activation within the narrowed bounds, which lie within the threat set's."""
    from flowbound.certificates.branch import _narrowed
    from flowbound.certificates.ellipsoid import FlowTerms, support
    from flowbound.certificates.pixels import _pixel_bounds
    from flowbound.certificates.propagation import chain_pre_activation_bounds
    from flowbound.networks.chain import chain

    side, hidden, eps = 5, 12, 1.0
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(8)
    net = _biased(side * side, hidden, 3).double().eval()
    x = torch.rand(6, side, side, generator=gen, dtype=torch.float64)
    first, last = chain(net, side).stages
    pb = _pixel_bounds(x, eps, threat, torch.float64, True)
    flow = FlowTerms(eps, threat, side, x.device, None, torch.float64, local.DESCENT.ellipsoid)
    idx = support(pb)
    ((low, up),) = chain_pre_activation_bounds((first, last), pb, flow, idx, 8, skip=True)
    zs = []
    for d in range(len(x)):
        flows = ellipsoid_flows(side, eps, 2000, threat, gen)
        images = warp(x[d].expand(2000, side, side).contiguous(), flows)
        with torch.no_grad():
            zs.append(net[1](images.flatten(1)))
    # split on the (digit, neuron) pairs the samples put most evenly on both sides
    balance = torch.stack([torch.minimum((z >= 0).sum(0), (z <= 0).sum(0)) for z in zs])
    top = balance.flatten().topk(4).indices
    digit, neuron = top // hidden, top % hidden
    assert bool((balance[digit, neuron] > 100).all())  # both sides sampled
    inside = _narrowed(first, pb, flow, idx, 8, low, up, digit, neuron)
    assert bool((inside[:, 0] >= low[digit] - 1e-12).all())
    assert bool((inside[:, 1] <= up[digit] + 1e-12).all())
    assert bool((inside[:, 0] > low[digit] + 1e-9).any())  # it narrows somewhere
    # a twin of a split neuron is decided by the split: >= 0 on its active side, <= 0 on
    # the other (beta = 1 makes the bound exact, whatever the relaxation's slack)
    j0, d0 = int(neuron[0]), int(digit[0])
    twin = int(balance[d0].argsort()[0])  # a neuron of no use to the test otherwise
    with torch.no_grad():
        net[1].weight[twin], net[1].bias[twin] = net[1].weight[j0], net[1].bias[j0]
    first = chain(net, side).stages[0]
    low[:, twin], up[:, twin] = low[:, j0], up[:, j0]
    both = _narrowed(first, pb, flow, idx, 8, low, up, digit[:1], neuron[:1])
    assert float(both[0, 0, 0, twin]) >= -1e-9 and float(both[1, 1, 0, twin]) <= 1e-9
    assert float(both[0, 1, 0, twin]) > 0.1 and float(both[1, 0, 0, twin]) < -0.1
    for s_at, (d, j) in enumerate(zip(digit.tolist(), neuron.tolist(), strict=True)):
        for k, sign in enumerate((1.0, -1.0)):
            on = sign * zs[d][:, j] >= 0
            lo, hi = inside[k, 0, s_at], inside[k, 1, s_at]
            assert bool((zs[d][on] >= lo - 1e-9).all()) and bool((zs[d][on] <= hi + 1e-9).all())


def test_an_exhaustive_grid_never_beats_it_and_splitting_tightens_it():
    """Tied flows on a 2 x 2 image: a fine grid over the ellipsoid stays above the
    branched bound, which is at least the kinked level's and above it once split."""
    net, x, y, eps, found = tiny_grid_case()
    level = float(local.level_margins(net, x, y, eps, local.KINKED, modes=None)[0, 1])
    splits = [Branching(depth, 64, 10) for depth in (0, 2, 6)]
    bounds = [branched_margins(net, x, y, eps, modes=None, branching=b)[0, 1] for b in splits]
    bounds = [float(v) for v in bounds]
    assert all(found >= v - 1e-12 for v in bounds)
    assert bounds[0] >= level - 1e-12 and bounds[2] > level + 1e-3
    assert bounds[1] >= bounds[0] - 1e-12 and bounds[2] >= bounds[1] - 1e-12


@pytest.mark.parametrize(
    "level", [local.CHORD, local.KINKED, local.DESCENT, local.DESCENT._replace(split=3)]
)
def test_no_split_and_no_step_is_the_level_itself(level):
    torch.manual_seed(2)
    net = OneHidden(36, 12, 4).double()
    x = torch.rand(5, 6, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    plain = Branching(depth=0, leaves=1, steps=0)
    got = branched_margins(net, x, y, 0.4, level=level, modes=10, branching=plain, batch=2)
    want = local.level_margins(net, x, y, 0.4, level, modes=10)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-10)


def test_branched_is_its_margins_on_the_correctly_classified_digits():
    torch.manual_seed(6)
    net = OneHidden(36, 10, 3).double()
    x = torch.rand(10, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        y = net(x.flatten(1)).argmax(1)
    y[:2] = (y[:2] + 1) % 3
    split = Branching(depth=3, leaves=8, steps=4)
    ok = branched(net, x, y, [0.0, 0.3], branching=split, batch=3)
    m = branched_margins(net, x, y, 0.3, branching=split, batch=3)
    assert not ok[:, :2].any() and ok[0, 2:].all()
    assert (ok[1, 2:] == (m[2:] > 0).all(1).numpy()).all()


def test_it_refuses_what_it_cannot_split():
    x = torch.rand(2, 5, 5, dtype=torch.float64)
    y = torch.tensor([0, 1])
    deep = nn.Sequential(
        nn.Flatten(), nn.Linear(25, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3)
    ).double()
    with pytest.raises(TypeError, match="one-hidden-layer"):
        branched_margins(deep, x, y, 0.2)
    net = OneHidden(25, 6, 3).double()
    with pytest.raises(TypeError, match="branching"):
        branched(net, x, y, [0.2], branching=(4, 16, 5, 0.1))
    with pytest.raises(TypeError, match="level"):
        branched(net, x, y, [0.2], level="kinked")
    with pytest.raises(ValueError, match="branching.depth"):
        branched(net, x, y, [0.2], branching=Branching(depth=-1))
    with pytest.raises(ValueError, match="eps"):
        branched_margins(net, x, y, -0.1)
    assert branched_margins(net, x[:0], y[:0], 0.2).shape == (0, 3)
