"""The batched paths on a GPU give the CPU's results (to tolerance).

Each check runs the same computation on the CPU and on ``device``. The CUDA
case runs only where CUDA is present (skipped otherwise); the ``cpu`` case
runs everywhere, so the comparison itself is always exercised. The SDP's
certificate and the per-digit certificate stay in float64 on either device.
"""

from __future__ import annotations

import copy

import pytest
import torch

from flowbound.attacks.flow_apgd import flow_apgd
from flowbound.attacks.pgd import flow_pgd
from flowbound.attacks.stadv import stadv
from flowbound.certificates.bounds import sdp_bound
from flowbound.certificates.local import certified, certified_margins
from flowbound.networks.architectures import OneHidden
from flowbound.threat.warp import warp, warp_and_jacobian

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
    ),
]


@pytest.fixture
def problem():
    torch.manual_seed(0)
    net = OneHidden(d=100, hidden=24, classes=4).double().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(8, 10, 10, generator=g, dtype=torch.float64)
    y = net(x).argmax(1)
    return net, x, y


def _on(net, device):
    return copy.deepcopy(net).to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_warp_on_device(problem, device):
    _, x, _ = problem
    flow = 2.0 * torch.randn(8, 2, 10, 10, generator=torch.Generator().manual_seed(1)).double()
    ref, ref_jac = warp_and_jacobian(x, flow)
    got, got_jac = warp_and_jacobian(x.to(device), flow.to(device))
    torch.testing.assert_close(got.cpu(), ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(got_jac.cpu(), ref_jac, rtol=0, atol=1e-12)
    torch.testing.assert_close(warp(x.to(device), flow.to(device)).cpu(), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_stadv_on_device(problem, device):
    net, x, y = problem
    ref = stadv(net, x, y, tau=0.01, steps=15)
    got = stadv(_on(net, device), x.to(device), y.to(device), tau=0.01, steps=15)
    assert got.flows.device.type == torch.device(device).type
    torch.testing.assert_close(got.flows.cpu(), ref.flows, rtol=0, atol=1e-6)
    assert torch.equal(got.success.cpu(), ref.success)


@pytest.mark.parametrize("device", DEVICES)
def test_flow_pgd_on_device(problem, device):
    net, x, y = problem
    ref = flow_pgd(net, x, y, eps=1.0, steps=20, restarts=2)
    got = flow_pgd(_on(net, device), x.to(device), y.to(device), eps=1.0, steps=20, restarts=2)
    torch.testing.assert_close(got.flows.cpu(), ref.flows, rtol=0, atol=1e-6)
    assert torch.equal(got.success.cpu(), ref.success)


@pytest.mark.parametrize("device", DEVICES)
def test_sdp_bound_on_device(device):
    a = torch.randn(3, 12, 20, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref = sdp_bound(a, tol=1e-5)
    got = sdp_bound(a, tol=1e-5, device=device)
    assert (got.gap <= 1e-5).all() and (ref.gap <= 1e-5).all()
    torch.testing.assert_close(
        torch.from_numpy(got.upper), torch.from_numpy(ref.upper), rtol=3e-5, atol=0
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("threat", ["tied", "full"])
def test_certified_margins_on_device(problem, device, threat):
    net, x, y = problem
    ref = certified_margins(net, x, y, 0.3, threat=threat, modes=None)
    got = certified_margins(_on(net, device), x.to(device), y.to(device), 0.3, threat=threat,
                            modes=None, device=device)  # fmt: skip
    assert got.dtype == torch.float64
    torch.testing.assert_close(got.cpu(), ref.cpu(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("threat", ["tied", "full"])
def test_flow_apgd_on_device(problem, device, threat):
    net, x, y = problem
    ref = flow_apgd(net, x, y, eps=1.0, threat=threat, steps=20, targets=2)
    got = flow_apgd(_on(net, device), x.to(device), y.to(device), eps=1.0, threat=threat,
                    steps=20, targets=2)  # fmt: skip
    assert got.flows.device.type == torch.device(device).type
    torch.testing.assert_close(got.flows.cpu(), ref.flows, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.margins.cpu(), ref.margins, rtol=0, atol=1e-6)
    assert torch.equal(got.success.cpu(), ref.success)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("threat", ["tied", "full"])
def test_flow_apgd_float32_search_on_device(problem, device, threat):
    """Figure 12's setting: the search in float32 on the device; what it returns is the
    float64 model's own (success a float64 forward pass, flows within the budget)."""
    net, x, y = problem
    on = _on(net, device)
    res = flow_apgd(on, x.to(device), y.to(device), eps=1.0, threat=threat, steps=20,
                    targets=2, search_dtype=torch.float32)  # fmt: skip
    assert res.flows.dtype == torch.float64
    assert res.flows.device.type == torch.device(device).type
    with torch.no_grad():
        assert torch.equal(on(res.images).argmax(1) != y.to(device), res.success)
    assert bool((res.budget <= 1.0 + 1e-9).all())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("threat", ["tied", "full"])
def test_certified_cascade_on_device(problem, device, threat):
    """certified() (one chord first, the kink in the ellipsoid where that leaves a digit
    open) gives the CPU's answers on the device, and the surrogate's gradients match."""
    net, x, y = problem
    eps = [0.0, 0.1, 0.4, 1.0]
    ref = certified(net, x, y, eps, threat=threat, modes=30)
    got = certified(_on(net, device), x.to(device), y.to(device), eps, threat=threat,
                    modes=30, device=device)  # fmt: skip
    assert (got == ref).all()
    on = _on(net, device)
    for p in (*net.parameters(), *on.parameters()):
        p.requires_grad_(True)
    grads = []
    for n_, xx, yy in ((net, x, y), (on, x.to(device), y.to(device))):
        m = certified_margins(n_, xx, yy, 0.4, threat=threat, modes=30, grad=True)
        m.masked_fill(torch.isinf(m), 0).sum().backward()
        grads.append(n_.W.weight.grad.cpu())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", ["nt", "spe", "at_pgd", "at", "sdp"])
def test_stacked_training_on_device(device, variant):
    """Three seeds trained as one stacked model on ``device`` equal the CPU's (float64)."""
    from flowbound.training.stacking import Stacked, fit_stacked
    from flowbound.training.zoo import VARIANTS

    g = torch.Generator().manual_seed(5)
    x = torch.rand(300, 10, 10, generator=g, dtype=torch.float64)
    y = torch.randint(4, (300,), generator=g)

    def trained(dev):
        settings = {"lambda": 0.01, "eps": 0.1, "alpha": 0.02, "steps": 3, "lambda_r": 0.3,
                    "tau": 0.05, "pool_every": 1, "pool_size": 30, "pool_steps": 3,
                    "lanczos_steps": 4, "refresh_tol": 1e-3}  # fmt: skip
        loss = VARIANTS.named(variant).stacked_loss_factory()(settings)  # stateful: one per run
        members = []
        for seed in (0, 1, 2):
            torch.manual_seed(seed)
            members.append(OneHidden(d=100, hidden=24, classes=4).double())
        net = Stacked(members).to(dev)
        plan = {"epochs": 2, "batch_size": 30, "lr": 0.01, "progress": False}
        return fit_stacked(net, loss, x, y, seeds=[0, 1, 2], **plan).cpu()

    ref, out = trained("cpu"), trained(device)
    for p, q in zip(ref.parameters(), out.parameters(), strict=True):
        torch.testing.assert_close(q.detach(), p.detach(), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("threat", ["tied", "full"])
def test_branch_and_bound_on_device(problem, device, threat):
    """branched_margins runs on the images' device and gives the CPU's bounds (the
    leaves' Adam steps in float64 on either)."""
    from flowbound.certificates.branch import Branching, branched_margins
    from flowbound.certificates.local import DESCENT

    net, x, y = problem
    split = Branching(depth=3, leaves=8, steps=4)
    ref = branched_margins(net, x, y, 0.4, threat=threat, modes=30, level=DESCENT,
                           branching=split)  # fmt: skip
    got = branched_margins(_on(net, device), x.to(device), y.to(device), 0.4, threat=threat,
                           modes=30, level=DESCENT, branching=split)  # fmt: skip
    assert got.device.type == torch.device(device).type and got.dtype == torch.float64
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-7, atol=1e-7)
