"""Networks people train (biases, deeper MLPs, CNNs) as chains: read exactly, refused
otherwise, and never beaten by a flow in the threat set."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import ellipsoid_flows, margins_of
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from flowbound.attacks.flow_apgd import flow_apgd
from flowbound.certificates.local import CHORD, certified, certified_margins, level_margins
from flowbound.certificates.registry import certified_digits
from flowbound.networks.architectures import Linear, OneHidden, STNClassifier
from flowbound.networks.chain import chain, image_model
from flowbound.threat.warp import warp


def _random_batch_norm(m: nn.Module, gen: torch.Generator) -> None:
    """Running statistics and affine parameters away from the identity (eval mode)."""
    n = m.num_features
    with torch.no_grad():
        m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
        m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
        m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
        m.bias.copy_(torch.rand(n, generator=gen) - 0.5)


def _network(kind: str, side: int, width: int, depth: int, bias: bool, seed: int) -> nn.Module:
    """A random network of one of the supported shapes, in float64 and eval mode."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    d = side * side
    if kind == "mlp":  # any depth, with or without biases, a folded 1-d batch norm
        layers: list[nn.Module] = [nn.Flatten()]
        n = d
        for i in range(depth):
            layers += [nn.Linear(n, width, bias=bias)]
            if i == 1:
                layers += [nn.BatchNorm1d(width)]
            layers += [nn.ReLU(), nn.Dropout(0.3)]
            n = width
        layers += [nn.Linear(n, 3, bias=bias)]
    elif kind == "cnn":  # stride, padding, a folded 2-d batch norm, pooling
        layers = [nn.Conv2d(1, 3, 3, stride=2, padding=1, bias=bias), nn.BatchNorm2d(3), nn.ReLU()]
        s = (side + 1) // 2
        if depth > 1:
            layers += [nn.Conv2d(3, 4, 2, stride=1, padding=0, bias=bias), nn.ReLU()]
            s, c = s - 1, 4
        else:
            c = 3
        if s >= 2:
            layers += [nn.AvgPool2d(2, stride=1)]
            s -= 1
        layers += [nn.Flatten(), nn.Linear(c * s * s, width, bias=bias), nn.ReLU()]
        layers += [nn.Linear(width, 3, bias=bias)]
    else:  # a pooling layer first, then a dense chain
        layers = [nn.AvgPool2d(2, stride=2, padding=1), nn.Flatten()]
        s = side // 2 + 1
        layers += [nn.Linear(s * s, width, bias=bias), nn.ReLU(), nn.Linear(width, 3, bias=bias)]
    net = nn.Sequential(*layers).double()
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            _random_batch_norm(m, gen)
    return net.eval()


@pytest.mark.parametrize("kind", ["mlp", "cnn", "pool"])
def test_the_chain_computes_what_the_network_computes(kind):
    net = _network(kind, 8, 6, 3, True, 0)
    x = torch.rand(5, 8, 8, dtype=torch.float64)
    got = chain(net, 8).scores(x.flatten(1))
    assert torch.allclose(got, image_model(net)(x), atol=1e-12, rtol=0)
    for stage in chain(net, 8).stages:  # the dense matrix and the layer-by-layer transpose
        rows = torch.randn(4, stage.n_out, dtype=torch.float64)
        assert torch.allclose(rows @ stage.matrix(), stage._back_layers(rows), atol=1e-12)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    kind=st.sampled_from(["mlp", "cnn", "pool"]),
    side=st.integers(5, 8),
    width=st.integers(3, 10),
    depth=st.integers(1, 3),
    bias=st.booleans(),
    eps=st.floats(0.01, 1.5),
    threat=st.sampled_from(["tied", "full"]),
    seed=st.integers(0, 10_000),
)
def test_no_flow_in_the_threat_set_beats_a_certified_margin(
    kind, side, width, depth, bias, eps, threat, seed
):
    """Dense sampling of the threat set (inside and on its surface) and flow_apgd."""
    net = _network(kind, side, width, depth, bias, seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, side, side, generator=gen, dtype=torch.float64)
    x[1] = (x[1] > 0.6).double()  # a binary image: large kinks
    y = torch.tensor([0, 2])
    bound = certified_margins(net, x, y, eps, threat=threat, modes=side * side // 2)
    chord = level_margins(net, x, y, eps, CHORD, threat=threat)
    ibp = certified_margins(
        net, x, y, eps, threat=threat, modes=side * side // 2, deeper="interval"
    )
    attack = flow_apgd(net, x, y, eps=eps, threat=threat, steps=25, targets=2)
    after = margins_of(net, attack.images, y)
    for b in range(2):
        flows = ellipsoid_flows(side, eps, 150, threat, gen)
        images = warp(x[b].expand(150, side, side).contiguous(), flows)
        found = margins_of(net, images, y[b].expand(150)).min(0).values
        found = torch.minimum(found, after[b])
        found[y[b]] = math.inf
        assert bool((found >= bound[b] - 1e-9).all()), (found, bound[b])
        assert bool((found >= chord[b] - 1e-9).all()), (found, chord[b])
        assert bool((found >= ibp[b] - 1e-9).all()), (found, ibp[b])


def test_flowbounds_own_networks_and_their_sequential_twins_give_the_same_margins():
    """One implementation: OneHidden / Linear and the same layers as an nn.Sequential."""
    torch.manual_seed(3)
    x = torch.rand(4, 10, 10, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    own = OneHidden(100, 12, 3).double()
    twin = nn.Sequential(nn.Flatten(), own.W, nn.ReLU(), own.V)
    lin = Linear(100, 3).double()
    for threat in ("tied", "full"):
        for a, b in ((own, twin), (lin, nn.Sequential(lin.V))):
            ma = certified_margins(a, x, y, 0.4, threat=threat)
            mb = certified_margins(b, x, y, 0.4, threat=threat)
            assert torch.equal(ma, mb)


def test_a_bias_moves_the_margin_by_exactly_the_bias_at_eps_zero_width():
    """With every weight into the output zero but the bias, the margin is the bias's."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    with torch.no_grad():
        net[3].weight.zero_()
        net[3].bias.copy_(torch.tensor([0.5, -0.25, 1.0], dtype=torch.float64))
    x = torch.rand(2, 6, 6, dtype=torch.float64)
    m = certified_margins(net, x, torch.tensor([2, 0]), 0.7)
    assert m[0, 0] == 0.5 and m[0, 1] == 1.25 and m[1, 1] == 0.75 and m[1, 2] == -0.5


def test_certified_and_the_registry_take_a_cnn_and_zero_eps_is_accuracy():
    net = _network("cnn", 8, 6, 2, True, 1)
    x = torch.rand(6, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        y = image_model(net)(x).argmax(1)
    y[0] = (y[0] + 1) % 3  # one misclassified digit
    ok = certified(net, x, y, [0.0, 0.01, 0.5])
    assert ok[0].tolist() == [False] + [True] * 5
    assert (ok[1] >= ok[2]).all()
    same = certified_digits(net, x, y, [0.0, 0.01, 0.5], "local_tied")
    assert np.array_equal(ok, same)
    with pytest.raises(ValueError, match="per-digit certificates"):
        certified_digits(net, x, y, [0.1], "sdp")


def test_unsupported_layers_are_refused_by_name_with_the_list_of_supported_ones():
    cases = [
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(18, 3)),
        nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.Tanh(), nn.Linear(4, 3)),
        nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2), nn.Flatten(), nn.Linear(32, 3)),
        nn.Sequential(nn.Conv2d(1, 2, 3, padding_mode="circular", padding=1), nn.Flatten()),
        nn.Sequential(nn.AvgPool2d(3, ceil_mode=True), nn.Flatten(), nn.Linear(9, 3)),
    ]
    x, y = torch.rand(2, 8, 8), torch.tensor([0, 1])
    for net in cases:
        with pytest.raises(TypeError, match="represents only these layers exactly: nn.Linear"):
            certified_margins(net, x, y, 0.1)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(64, 64), nn.Linear(64, 3)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)) + x)


class _Traced(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 2, 3, stride=2), nn.Linear(18, 3)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


def test_a_module_torch_fx_traces_to_a_chain_is_read_and_a_residual_one_is_refused():
    x = torch.rand(3, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    traced = _Traced().double()
    twin = nn.Sequential(traced.conv, nn.ReLU(), nn.Flatten(), traced.fc)
    assert torch.equal(certified_margins(traced, x, y, 0.3), certified_margins(twin, x, y, 0.3))
    with pytest.raises(TypeError, match="not a chain"):
        certified_margins(_Residual().double(), x, y, 0.3)


def test_training_mode_nan_weights_wrong_sizes_and_outputs_are_one_error_each():
    x, y = torch.rand(2, 8, 8, dtype=torch.float64), torch.tensor([0, 1])
    bn = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="training mode: call model.eval"):
        certified_margins(bn.double(), x, y, 0.1)
    drop = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.Dropout(0.5), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="training mode"):
        certified_margins(drop.double(), x, y, 0.1)
    nan = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).double()
    with torch.no_grad():
        nan[1].bias[0] = math.nan
    with pytest.raises(FloatingPointError, match="NaN or infinite weights"):
        certified_margins(nan, x, y, 0.1)
    with pytest.raises(ValueError, match="needs 49 features"):
        certified_margins(nn.Sequential(nn.Flatten(), nn.Linear(49, 3)), x, y, 0.1)
    with pytest.raises(ValueError, match="3 input channels"):
        certified_margins(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten()), x, y, 0.1)
    with pytest.raises(ValueError, match="must be K scores"):
        certified_margins(nn.Sequential(nn.Conv2d(1, 3, 8)), x, y, 0.1)
    with pytest.raises(ValueError, match="classes"):
        certified_margins(nn.Sequential(nn.Flatten(), nn.Linear(64, 1)), x, y, 0.1)


def test_the_surrogate_runs_on_a_cnn_and_its_gradient_reaches_every_layer():
    net = _network("cnn", 8, 5, 2, True, 4).float()
    x = torch.rand(3, 8, 8)
    m = certified_margins(net, x, torch.tensor([0, 1, 2]), 0.2, grad=True)
    m[torch.isfinite(m)].sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name


def test_interval_deeper_layers_train_a_cnn_and_change_nothing_on_one_hidden_layer():
    from flowbound.training.certified import CertLoss

    own = OneHidden(36, 7, 3).double()
    x, y = torch.rand(4, 6, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    a = certified_margins(own, x, y, 0.3, modes=None)
    b = certified_margins(own, x, y, 0.3, modes=None, deeper="interval")
    assert torch.equal(a, b)  # no layer after the first: the same computation
    with pytest.raises(ValueError, match="deeper must be one of crown, interval"):
        certified_margins(own, x, y, 0.3, deeper="ibp")
    net = _network("cnn", 8, 5, 2, True, 4).float()
    s = {"eps": 0.5, "kappa": 0.5, "ramp_epochs": 1, "cert_batch": 3, "modes": 8,
         "threat": "tied", "kink": False, "deeper": "interval"}  # fmt: skip
    loss = CertLoss(s)(image_model(net), torch.rand(3, 8, 8), torch.tensor([0, 1, 2]))
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
    with pytest.raises(ValueError, match=r"settings\['deeper'\] must be one of"):
        CertLoss({**s, "deeper": "box"})


def test_an_stn_is_still_refused_unless_its_classifier_alone_is_asked_for():
    x, y = torch.rand(1, 28, 28, dtype=torch.float64), torch.tensor([3])
    with pytest.raises(TypeError, match="classifier_only=True"):
        certified_margins(STNClassifier(hidden=8, stn_hidden=4), x, y, 0.1)


def test_the_relu_relaxation_lies_below_every_point_of_the_box():
    """lam^T h + const <= c^T relu(h) for every h in [l, u], for any signs of c (each
    neuron's relaxation checked at its ends, its kink and inside)."""
    from flowbound.certificates.propagation import relaxed_output

    gen = torch.Generator().manual_seed(5)
    low = torch.randn(4, 30, generator=gen, dtype=torch.float64)
    up = low + torch.rand(4, 30, generator=gen, dtype=torch.float64) * 3
    c = torch.randn(4, 5, 30, generator=gen, dtype=torch.float64)
    lam_, const = relaxed_output(low, up, c)
    t = torch.rand(500, 4, 30, generator=gen, dtype=torch.float64)
    t[:3] = torch.tensor([0.0, 1.0, 0.5])[:, None, None]
    h = low + t * (up - low)
    h[3] = torch.where((low < 0) & (up > 0), torch.zeros_like(low), low)  # the kink
    per = lam_[None] * h[:, :, None] - c[None] * h.clamp(min=0)[:, :, None]  # (S, N, K, h)
    worst = per.amax(0).sum(-1) + const  # each neuron at its own worst point
    assert bool((worst <= 1e-12).all()), float(worst.max())


def test_back_substitution_bounds_every_hidden_layer_on_sampled_flows():
    """The deeper layers' pre-activation bounds hold on flows sampled in the threat set."""
    from flowbound.certificates.ellipsoid import FlowTerms, support
    from flowbound.certificates.pixels import pixel_bounds
    from flowbound.certificates.propagation import chain_pre_activation_bounds

    side, eps = 7, 0.6
    net = _network("mlp", side, 8, 3, True, 11)
    layers = chain(net, side)
    gen = torch.Generator().manual_seed(11)
    x = torch.rand(2, side, side, generator=gen, dtype=torch.float64)
    for threat in ("tied", "full"):
        pb = pixel_bounds(x, eps, threat=threat)
        flow = FlowTerms(eps, threat, side, "cpu", None, torch.float64)
        bounds = chain_pre_activation_bounds(layers.stages, pb, flow, support(pb), 4, True)
        for b in range(2):
            g = warp(x[b].expand(300, side, side).contiguous(),
                     ellipsoid_flows(side, eps, 300, threat, gen)).flatten(1)  # fmt: skip
            h = g
            for k, stage in enumerate(layers.stages[:-1]):
                h = stage.forward(h if k == 0 else h.clamp(min=0))
                low, up = bounds[k]
                assert bool((h >= low[b] - 1e-9).all() and (h <= up[b] + 1e-9).all())
