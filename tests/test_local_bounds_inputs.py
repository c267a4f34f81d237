"""The per-digit certificate fails closed on every input (issue: two unsound cases).

Each numbered case of the issue is a test here: what a new user might pass to
``certified_margins``, ``certified`` and the registry's ``local_tied`` /
``local_full`` either raises a ValueError / TypeError naming the argument, or
gives margins no attack beats. The property test at the end draws all of it at
random and counts how many draws ran and how many were refused.
"""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from flowbound.attacks.flow_apgd import flow_apgd
from flowbound.book.profiles import ProfileError, load_profile, validate_profile
from flowbound.certificates.local import KINKED, certified, certified_margins, level_margins
from flowbound.certificates.pixels import pixel_bounds
from flowbound.certificates.registry import bound
from flowbound.networks.architectures import Linear, OneHidden, STNClassifier
from flowbound.threat.geometry import m_inv_tensor
from flowbound.threat.warp import warp
from flowbound.training.certified import CertLoss
from flowbound.training.fit import fit

BAD = (ValueError, TypeError)


class _Biased(nn.Module):
    """The issue's network: f = V relu(W x) + biases, layers named like the project's."""

    def __init__(self, d: int = 784, h: int = 50, k: int = 10) -> None:
        super().__init__()
        self.W, self.V = nn.Linear(d, h), nn.Linear(h, k)

    def forward(self, x):
        return self.V(torch.relu(self.W(x.flatten(1))))


class _OneHiddenElsewhere(OneHidden):
    """A subclass that changes forward: W and V alone no longer describe it."""

    def forward(self, x):
        return super().forward(x) + 1.0


def _net(d=16, h=6, k=3, seed=0):
    torch.manual_seed(seed)
    return OneHidden(d, h, k).double()


def _images(n=3, side=4, seed=1):
    return torch.rand(n, side, side, generator=torch.Generator().manual_seed(seed)).double()


# 1. A network with biases is read with them (a chain), never certified as if it had none.
def test_a_biased_network_that_an_attack_fools_is_not_certified():
    torch.manual_seed(0)
    net = _Biased().double()
    x = torch.rand(1, 28, 28, dtype=torch.float64)
    with torch.no_grad():  # a clean margin of 1e-6 between the top two classes, set by V's bias
        s = net(x)[0]
        top = s.argsort(descending=True)
        net.V.bias[top[1]] += s[top[0]] - s[top[1]] - 1e-6
    y = top[:1].clone()
    res = flow_apgd(net, x, y, eps=0.05, steps=20)
    assert bool(res.success[0])  # it is not robust
    assert bool((certified_margins(net, x, y, 0.05) <= res.margins + 1e-9).all())
    assert not certified(net, x, y, [0.05]).any()
    for threat in ("tied", "full"):
        assert not bound(f"local_{threat}").certify(net, x, y, [0.05]).any()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: _OneHiddenElsewhere(16, 4, 3), "represents only these layers exactly"),
        (
            lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.Sigmoid(), nn.Linear(4, 3)),
            "Sigmoid is not supported",
        ),
        (lambda: "a network", "must be a torch.nn.Module"),
    ],
)
def test_modules_that_the_certificate_cannot_read_are_refused(make, match):
    x, y = _images(2), torch.tensor([0, 1])
    with pytest.raises(TypeError, match=match):
        certified_margins(make(), x, y, 0.1)
    with pytest.raises(TypeError, match=match):
        certified(make(), x, y, [0.1])


def test_a_bias_swapped_into_a_project_network_is_refused():
    net = OneHidden(16, 4, 3)
    net.W = nn.Linear(16, 4)  # bias=True
    with pytest.raises(TypeError, match=r"OneHidden\.W has a bias"):
        certified_margins(net, _images(2).float(), torch.tensor([0, 1]), 0.1)
    lin = Linear(16, 3)
    lin.V = nn.Linear(16, 3)
    with pytest.raises(TypeError, match=r"Linear\.V has a bias"):
        certified(lin, _images(2), torch.tensor([0, 1]), [0.1])


# 2. and 4. Size-like arguments: an int >= 1 (modes: None or an int >= 0).
@pytest.mark.parametrize("chunk, error", [(-1, ValueError), (0, ValueError), (2.5, TypeError)])
def test_bad_chunks_are_refused(chunk, error):
    with pytest.raises(error, match="chunk"):
        certified_margins(_net(), _images(), torch.tensor([0, 1, 2]), 0.3, chunk=chunk)


def test_the_chunk_changes_no_margin():
    net, x, y = _net(), _images(7), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    want = certified_margins(net, x, y, 0.3, chunk=32)
    for chunk in (1, 3, 1000):
        torch.testing.assert_close(certified_margins(net, x, y, 0.3, chunk=chunk), want)


@pytest.mark.parametrize(
    "batch, error", [(-1, ValueError), (0, ValueError), (2.5, TypeError), (True, TypeError)]
)
def test_bad_batches_are_refused(batch, error):
    with pytest.raises(error, match="batch"):
        certified(_net(), _images(), torch.tensor([0, 1, 2]), [0.0, 0.1], batch=batch)


def test_every_batch_size_gives_the_same_rows_and_eps_zero_is_clean_accuracy():
    net, x = _net(h=8), _images(9, seed=4)
    with torch.no_grad():
        y = net(x).argmax(1)
    y[:2] = (y[:2] + 1) % 3
    want = certified(net, x, y, [0.0, 0.2])
    assert want[0].tolist() == [False, False] + [True] * 7
    for batch in (1, 2, 500):
        assert (certified(net, x, y, [0.0, 0.2], batch=batch) == want).all()


@pytest.mark.parametrize(
    "modes, error", [(-5, ValueError), (-1000, ValueError), ("200", TypeError), (2.0, TypeError)]
)
def test_bad_modes_are_refused(modes, error):
    x, y = _images(), torch.tensor([0, 1, 2])
    with pytest.raises(error, match="modes"):
        certified_margins(_net(), x, y, 0.3, modes=modes)
    with pytest.raises(error, match="modes"):
        certified(_net(), x, y, [0.3], modes=modes)


def test_modes_from_zero_to_all_are_sound_and_tighten():
    """At a fixed relaxation (the kinked level) more eigenvectors only tighten the
    margins; the last level (own slopes) picks its slopes from the truncated G a, so it
    need not be monotone in ``modes``, but it never falls below the kinked level at the
    same modes, and above d it is the exact value."""
    net, x, y = _net(h=8), _images(4, seed=2), torch.tensor([0, 1, 2, 0])
    exact = level_margins(net, x, y, 0.4, KINKED, modes=None)
    prev = None
    for modes in (0, 1, 8, 16, 10_000):  # above d: all d eigenvectors, the exact value
        m = level_margins(net, x, y, 0.4, KINKED, modes=modes)
        assert bool((m <= exact + 1e-12).all())
        if prev is not None:
            assert bool((prev <= m + 1e-12).all())
        prev = m
        sloped = certified_margins(net, x, y, 0.4, modes=modes)
        assert bool((sloped >= m - 1e-12).all())
    torch.testing.assert_close(prev, exact)
    torch.testing.assert_close(sloped, certified_margins(net, x, y, 0.4, modes=None))


# 3. Any finite budget, in bounded memory.
@pytest.mark.parametrize("threat", ["tied", "full"])
def test_budgets_past_the_image_bound_every_pixel_exactly(threat):
    """Boxes reaching far past the image (eps 20 on 4 x 4: |r| up to 11 px): the pixel
    bounds hold on dense samples, and the margins on samples of the threat set."""
    side, eps = 4, 20.0
    gen = torch.Generator().manual_seed(5)
    x = _images(3, side, seed=6)
    pb = pixel_bounds(x, eps, threat=threat)
    rad = pb.radius.view(side, side)
    assert float(rad.max()) > side + 1  # past the cap of the tables
    for _ in range(200):
        u = (torch.rand(x.shape, generator=gen, dtype=torch.float64) * 2 - 1) * rad
        v = (torch.rand(x.shape, generator=gen, dtype=torch.float64) * 2 - 1) * rad
        if threat == "tied":
            g = warp(x, u).flatten(1)
            lin = pb.slope_u * u.flatten(1) + pb.kink_u * u.flatten(1).abs()
        else:
            g = warp(x, torch.stack([u, v], 1)).flatten(1)
            lin = pb.slope_u * u.flatten(1) + pb.slope_v * v.flatten(1)
            lin = lin + pb.kink_u * u.flatten(1).abs() + pb.kink_v * v.flatten(1).abs()
        assert bool((g - lin >= pb.lower).all() & (g - lin <= pb.upper).all())
    net, y = _net(h=5), torch.tensor([0, 1, 2])
    bound_ = certified_margins(net, x, y, eps, threat=threat, modes=None)
    res = flow_apgd(net, x, y, eps=eps, threat=threat, steps=20, targets=2)
    assert bool((res.margins >= bound_ - 1e-9).all())


def test_a_budget_of_a_million_runs_in_bounded_memory():
    """eps = 1e6 on 28 x 28 images, both threat sets, under a 3 GiB address-space limit
    (the old shift table had (2k + 1)^2 entries for k up to 600,000)."""
    code = textwrap.dedent(
        """
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        import torch
        from flowbound.certificates.local import KINKED, certified, certified_margins, level_margins
        from flowbound.networks.architectures import OneHidden
        torch.manual_seed(0)
        net = OneHidden(784, 20, 10).double()
        x = torch.rand(3, 28, 28, dtype=torch.float64)
        y = torch.tensor([0, 1, 2])
        for threat in ("tied", "full"):
            m = certified_margins(net, x, y, 1e6, threat=threat)
            assert torch.isfinite(m[m != float("inf")]).all()
            assert not certified(net, x, y, [1e6], threat=threat).any()
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=os.environ
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


# 5. Labels and empty batches.
def test_labels_outside_the_models_classes_are_refused():
    with pytest.raises(ValueError, match=r"y must lie in \[0, 3\)"):
        certified_margins(_net(), _images(), torch.tensor([0, 1, 3]), 0.1)
    with pytest.raises(ValueError, match=r"y must lie in \[0, 3\)"):
        certified(_net(), _images(), torch.tensor([0, 1, 7]), [0.1])


def test_an_empty_batch_gives_empty_results():
    x, y = torch.zeros(0, 4, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
    assert certified_margins(_net(), x, y, 0.1).shape == (0, 3)
    assert certified_margins(_net(), x, y, 0.1, grad=True).shape == (0, 3)
    assert certified(_net(), x, y, [0.0, 0.1]).shape == (2, 0)


# 6. Shapes, dtypes, parameters and devices.
def test_non_square_images_are_refused_as_images():
    x = torch.rand(2, 4, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="square images"):
        certified_margins(OneHidden(20, 4, 3).double(), x, torch.tensor([0, 1]), 0.1)
    with pytest.raises(ValueError, match="square images"):
        pixel_bounds(x, 0.1)


def test_images_of_the_wrong_size_are_refused():
    with pytest.raises(ValueError, match="5 x 5 = 25 pixels per image, but the network takes 16"):
        certified_margins(_net(), _images(2, side=5), torch.tensor([0, 1]), 0.1)
    with pytest.raises(ValueError, match="pixels per image"):
        certified(Linear(16, 3), _images(2, side=5), torch.tensor([0, 1]), [0.1])


def test_float32_and_float64_models_and_images_mix_freely():
    net64, x = _net(h=8), _images(6, seed=3)
    net32 = copy.deepcopy(net64).float()
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    want = certified_margins(net64, x, y, 0.2)
    for net in (net32, net64):
        for xx in (x, x.float()):
            got = certified_margins(net, xx, y, 0.2)
            assert got.dtype == torch.float64
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            ok = certified(net, xx, y, [0.0, 0.2])
            assert ok.shape == (2, 6)
    # the registry's path (it hands the certificate float64 images) with a float32 model
    assert bound("local_tied").certify(net32, x.float(), y, [0.0, 0.2]).shape == (2, 6)


def test_a_bogus_device_is_refused_by_name():
    x, y = _images(), torch.tensor([0, 1, 2])
    for device in ("bogus", 3.5):
        with pytest.raises(ValueError, match="device"):
            certified_margins(_net(), x, y, 0.1, device=device)
        with pytest.raises(ValueError, match="device"):
            certified(_net(), x, y, [0.1], device=device)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            certified_margins(_net(), x, y, 0.1, device="cuda")


def test_the_stn_is_certified_on_its_classifier_in_any_dtype_when_asked_by_name():
    torch.manual_seed(0)
    stn = STNClassifier(6)
    x = torch.rand(3, 28, 28, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    m = certified_margins(stn, x, y, 0.1, classifier_only=True)
    assert m.shape == (3, 10) and m.dtype == torch.float64
    for call in (certified_margins, certified):
        with pytest.raises(TypeError, match="classifier_only=True"):
            call(stn, x, y, 0.1)
        with pytest.raises(TypeError, match="classifier_only must be True or False"):
            call(stn, x, y, 0.1, classifier_only="yes")


def test_relaxed_output_refuses_what_is_not_a_relaxation():
    from flowbound.certificates.propagation import relaxed_output

    low = torch.tensor([[-1.0, 0.5, -2.0]], dtype=torch.float64)
    up = torch.tensor([[1.0, 2.0, -1.0]], dtype=torch.float64)
    c = torch.randn(1, 2, 3, dtype=torch.float64)
    lam, const = relaxed_output(low, up, c, torch.full((1, 2, 3), 0.3, dtype=torch.float64))
    assert lam.shape == (1, 2, 3) and const.shape == (1, 2)
    for slope in (-1.0, 2.0, math.nan):
        with pytest.raises(ValueError, match="lower"):
            relaxed_output(low, up, c, torch.full((1, 2, 3), slope, dtype=torch.float64))
    with pytest.raises(ValueError, match="low must be <= up"):
        relaxed_output(up, low, c)
    with pytest.raises(ValueError, match="c must have shape"):
        relaxed_output(low, up, c[:, :, :2])
    with pytest.raises(ValueError, match="NaN or inf"):
        relaxed_output(low * math.inf, up, c)


def test_pixel_bounds_are_float64_only():
    from flowbound.certificates.pixels import pixel_bounds

    x = _images(2)
    for dtype in (torch.float32, torch.float16):
        with pytest.raises(ValueError, match="dtype must be torch.float64"):
            pixel_bounds(x, 0.3, dtype=dtype)
    assert pixel_bounds(x, 0.3).lower.dtype == torch.float64


# 7. Arguments are checked before any early return.
def test_arguments_are_checked_when_no_image_is_classified_correctly():
    net, x = _net(), _images(3)
    with torch.no_grad():
        y = (net(x).argmax(1) + 1) % 3  # every image misclassified
    assert not certified(net, x, y, [0.0, 0.1]).any()
    with pytest.raises(ValueError, match="threat"):
        certified(net, x, y, [0.1], threat="Tied")
    with pytest.raises(TypeError, match="modes"):
        certified(net, x, y, [0.1], modes="x")
    with pytest.raises(ValueError, match="batch"):
        certified(net, x, y, [0.1], batch=0)
    with pytest.raises(ValueError, match="device"):
        certified(net, x, y, [0.1], device="bogus")


# 8. CertLoss checks its settings and its plan.
def _cert_settings(**kw):
    s = dict(eps=0.5, kappa=0.5, ramp_epochs=2, cert_batch=16, modes=32, threat="tied", kink=True)
    return s | kw


@pytest.mark.parametrize(
    "kw, error, match",
    [
        ({"eps": 0.0}, ValueError, "eps"),
        ({"kappa": 1.5}, ValueError, "kappa"),
        ({"ramp_epochs": 0}, ValueError, "ramp_epochs"),
        ({"cert_batch": 2.5}, TypeError, "cert_batch"),
        ({"modes": -1}, ValueError, "modes"),
        ({"threat": "Tied"}, ValueError, "threat"),
        ({"extra": 1}, ValueError, "unknown: extra"),
    ],
)
def test_cert_loss_refuses_bad_settings(kw, error, match):
    with pytest.raises(error, match=match):
        CertLoss(_cert_settings(**kw))


def test_cert_loss_refuses_a_ramp_longer_than_training_or_a_batch_larger_than_the_batch():
    with pytest.raises(ValueError, match="ramp_epochs.*more than the 1 training epochs"):
        CertLoss(_cert_settings(ramp_epochs=2), epochs=1, batch_size=32)
    with pytest.raises(ValueError, match="cert_batch.*more than the batch size 8"):
        CertLoss(_cert_settings(cert_batch=16), epochs=3, batch_size=8)
    CertLoss(_cert_settings(ramp_epochs=2, cert_batch=16), epochs=2, batch_size=16)
    net = OneHidden(16, 4, 3)
    x, y = torch.rand(20, 4, 4), torch.arange(20) % 3
    with pytest.raises(ValueError, match="ramp_epochs"):  # the plan reaches it through fit
        fit(net, CertLoss(_cert_settings()), x, y, epochs=1, batch_size=32, lr=1e-3, seed=0)
    with pytest.raises(ValueError, match="cert_batch"):
        fit(net, CertLoss(_cert_settings()), x, y, epochs=2, batch_size=8, lr=1e-3, seed=0)


def test_the_profile_refuses_a_cert_ramp_or_batch_the_training_cannot_hold():
    p = load_profile("smoke")
    p["variants"]["cert"]["ramp_epochs"] = p["train"]["epochs"] + 1
    with pytest.raises(ProfileError, match="ramp_epochs"):
        validate_profile(p)
    p = load_profile("smoke")
    p["variants"]["cert"]["cert_batch"] = p["train"]["batch_size"] + 1
    with pytest.raises(ProfileError, match="cert_batch"):
        validate_profile(p)


# The property test: refused with a named argument, or never beaten.
_ARGS = ("model", "x", "y", "eps", "threat", "modes", "chunk", "device")
_COUNTS = {"ran": 0, "refused": 0}


def _random_model(kind: str, d: int, h: int, k: int):
    if kind == "one_hidden":
        return OneHidden(d, h, k).double()
    if kind == "linear":
        return Linear(d, k).double()
    if kind == "biased":
        return _Biased(d, h, k).double()
    if kind == "sequential":
        return nn.Sequential(nn.Flatten(), nn.Linear(d, h, bias=False), nn.ReLU(),
                             nn.Linear(h, k, bias=False)).double()  # fmt: skip
    return _OneHiddenElsewhere(d, h, k).double()


_SPOILED = {
    "kind": ["biased", "sequential", "subclass"],
    "eps": [-0.1, math.nan, math.inf, "0.1"],
    "threat": ["Tied", "affine", None],
    "modes": [-1, -1000, "8", 2.0, True],
    "chunk": [-1, 0, 1.5, None],
}


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(["one_hidden", "one_hidden", "linear"]),
    side=st.integers(3, 6),
    hidden=st.integers(2, 10),
    eps=st.one_of(st.floats(0.0, 3.0), st.just(40.0)),
    threat=st.sampled_from(["tied", "full"]),
    modes=st.one_of(st.none(), st.integers(0, 60)),
    chunk=st.integers(1, 70),
    spoil=st.sampled_from([None, None, *_SPOILED]),
    bad=st.integers(0, 4),
    seed=st.integers(0, 10_000),
)
def test_certified_margins_refuse_or_are_never_beaten(
    kind, side, hidden, eps, threat, modes, chunk, spoil, bad, seed
):
    """Valid draws of every argument, and one argument spoiled in most draws."""
    args = {"kind": kind, "eps": eps, "threat": threat, "modes": modes, "chunk": chunk}
    if spoil is not None:
        args[spoil] = _SPOILED[spoil][bad % len(_SPOILED[spoil])]
    kind, eps, threat, modes, chunk = (args[a] for a in ("kind", "eps", "threat", "modes", "chunk"))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    d, k = side * side, 3
    net = _random_model(kind, d, hidden, k)
    x = torch.rand(2, side, side, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 2])
    try:
        bound_ = certified_margins(net, x, y, eps, threat=threat, modes=modes, chunk=chunk)
    except BAD as exc:
        _COUNTS["refused"] += 1
        assert (
            any(a in str(exc) for a in _ARGS) or "bias" in str(exc) or "architecture" in str(exc)
        ), str(exc)
        return
    _COUNTS["ran"] += 1
    assert kind in ("one_hidden", "linear") and threat in ("tied", "full")
    found = torch.full_like(bound_, math.inf)
    if eps > 0:
        res = flow_apgd(net, x, y, eps=eps, threat=threat, steps=15, targets=2, seed=seed)
        found = torch.minimum(found, res.margins)
    parts = 1 if threat == "tied" else 2
    for b in range(2):  # samples of the threat set, half on its surface
        s = torch.randn(100, parts * d, generator=gen, dtype=torch.float64)
        s = s / s.norm(dim=1, keepdim=True) * eps * math.sqrt(parts)
        s[50:] *= torch.rand(50, 1, generator=gen, dtype=torch.float64)
        flows = (s.view(100, parts, d) @ m_inv_tensor(side)).view(100, parts, side, side)
        flows = flows[:, 0] if parts == 1 else flows
        with torch.no_grad():
            sc = net(warp(x[b].expand(100, side, side).contiguous(), flows))
        m = (sc[:, y[b] : y[b] + 1] - sc).min(0).values
        m[y[b]] = math.inf
        found[b] = torch.minimum(found[b], m)
    assert bool((found >= bound_ - 1e-9).all()), (found, bound_)


def test_the_property_test_ran_and_refused_draws():
    """Runs after the property test (file order): both outcomes happened."""
    if _COUNTS["ran"] + _COUNTS["refused"] == 0:
        pytest.skip("the property test did not run in this session")
    print(f"property test: {_COUNTS['ran']} draws ran, {_COUNTS['refused']} refused")
    assert _COUNTS["ran"] >= 20 and _COUNTS["refused"] >= 20, _COUNTS


# The settings tables: every size read from device.CHUNKS is checked where it is read,
# and no valid size changes what is certified (property test over the table).
_CHUNK_KINDS = ("certificate", "certificate_inner")
_BAD_SIZES = [-1, 0, 2.5, "8", True, None]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    sizes=st.tuples(st.integers(1, 600), st.integers(1, 70)),
    spoil=st.sampled_from([None, None, *_CHUNK_KINDS]),
    bad=st.integers(0, len(_BAD_SIZES) - 1),
    threat=st.sampled_from(["tied", "full"]),
    eps=st.floats(0.05, 1.5),
    seed=st.integers(0, 10_000),
)
def test_certified_under_any_chunk_table_refuses_or_is_never_beaten(
    sizes, spoil, bad, threat, eps, seed
):
    from unittest import mock

    from flowbound import device
    from flowbound.checks import SettingError

    table = {
        kind: {"cpu": size, "cuda": size} for kind, size in zip(_CHUNK_KINDS, sizes, strict=True)
    }
    if spoil is not None:
        table[spoil]["cpu"] = _BAD_SIZES[bad]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    side = 4
    net = OneHidden(side * side, 8, 3).double()
    x = torch.rand(12, side, side, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = net(x).argmax(1)
    with mock.patch.dict(device.CHUNKS, table):
        if spoil is not None:
            with pytest.raises(SettingError, match=rf"CHUNKS\[{spoil!r}\]\['cpu'\]"):
                certified(net, x, y, [eps], threat=threat)
            return
        ok = certified(net, x, y, [eps], threat=threat)[0]
    ref = certified(net, x, y, [eps], threat=threat, batch=500)[0]
    assert np.array_equal(ok, ref)  # the table changes no answer
    res = flow_apgd(net, x, y, eps=eps, threat=threat, steps=20, targets=2, seed=seed)
    assert not bool((torch.from_numpy(ok) & res.success).any()), "a certified digit was flipped"


def test_chunk_sizes_are_checked_where_they_are_read(monkeypatch):
    from flowbound import device
    from flowbound.checks import SettingError

    for bad in _BAD_SIZES:
        monkeypatch.setitem(device.CHUNKS, "certificate_inner", {"cpu": bad})
        with pytest.raises(SettingError, match="certificate_inner"):
            device.chunk_size("certificate_inner", "cpu")
    with pytest.raises(ValueError, match="device must be"):
        device.chunk_size("certificate", "tpu")
