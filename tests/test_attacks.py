"""stAdv and PGD: budgets, success re-checked, batch independence, limits."""

from __future__ import annotations

import pytest
import torch

from flowbound.attacks.pgd import flow_pgd, pgd
from flowbound.attacks.stadv import cw_margin, flow_loss, flow_loss_and_grad, stadv
from flowbound.networks.architectures import OneHidden
from flowbound.threat.geometry import l_diff
from flowbound.threat.warp import warp


@pytest.fixture
def setup():
    torch.manual_seed(0)
    net = OneHidden(d=100, hidden=32, classes=4).double()
    for p in net.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 10, 10, generator=g, dtype=torch.float64)
    y = net(x).argmax(1)  # attack the network's own predictions
    return net, x, y


def test_flow_loss_forms_against_loops():
    g = torch.Generator().manual_seed(1)
    flow = torch.randn(2, 2, 4, 5, generator=g, dtype=torch.float64)
    for b in range(2):
        total, per_pair = 0.0, 0.0
        for i in range(4):
            for j in range(5):
                for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                    ni, nj = i + di, j + dj
                    inside = 0 <= ni < 4 and 0 <= nj < 5
                    q = flow[b, :, ni, nj] if inside else torch.zeros(2, dtype=torch.float64)
                    sq = float(((flow[b, :, i, j] - q) ** 2).sum())
                    total += sq
                    per_pair += (sq + 1e-8) ** 0.5
        assert float(flow_loss(flow, form="stadv")[b]) == pytest.approx(per_pair, rel=1e-12)
        assert float(flow_loss(flow, form="paper")[b]) == pytest.approx(
            (total + 1e-8) ** 0.5, rel=1e-12
        )
    # The paper form is Eq. (2)'s l_diff (up to delta).
    torch.testing.assert_close(flow_loss(flow, form="paper", delta=0.0),
                               torch.from_numpy(l_diff(flow, full=True)))  # fmt: skip


@pytest.mark.parametrize("form", ["stadv", "paper"])
@pytest.mark.parametrize("border", ["zero", "symmetric"])
@pytest.mark.parametrize("shape", [(3, 2, 5, 7), (2, 2, 1, 4), (1, 2, 28, 28)])
def test_flow_loss_and_grad_matches_autograd(form, border, shape):
    g = torch.Generator().manual_seed(sum(shape))
    flow = (0.7 * torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_(True)
    value = flow_loss(flow, form=form, border=border)
    (grad,) = torch.autograd.grad(value.sum(), flow)
    closed, closed_grad = flow_loss_and_grad(flow.detach(), form=form, border=border)
    torch.testing.assert_close(closed, value.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(closed_grad, grad, rtol=1e-12, atol=1e-12)


def test_cw_margin():
    s = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    torch.testing.assert_close(cw_margin(s, torch.tensor([0, 2])), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(
        cw_margin(s, torch.tensor([2, 1]), targeted=True), torch.tensor([1.0, 0.0])
    )


def test_stadv_success_is_real_and_flows_match_images(setup):
    net, x, y = setup
    res = stadv(net, x, y, tau=0.001, steps=60)
    assert res.success.any()
    torch.testing.assert_close(res.images, warp(x, res.flows))
    pred = net(res.images).argmax(1)
    assert torch.equal(res.success, pred != y)
    torch.testing.assert_close(res.l_diff, torch.from_numpy(l_diff(res.flows, full=True)))


def test_stadv_with_huge_tau_returns_zero_flow(setup):
    net, x, y = setup
    res = stadv(net, x, y, tau=1e9, steps=30)
    assert float(res.flows.abs().max()) < 1e-6
    assert not res.success.any()


def test_stadv_gives_the_same_result_alone_or_in_a_batch(setup):
    net, x, y = setup
    batch = stadv(net, x, y, tau=0.02, steps=40)
    for k in (0, 3, 5):
        alone = stadv(net, x[k : k + 1], y[k : k + 1], tau=0.02, steps=40)
        torch.testing.assert_close(alone.flows[0], batch.flows[k], rtol=0, atol=1e-9)
        assert bool(alone.success[0]) == bool(batch.success[k])


def test_stadv_with_one_tau_per_image_equals_one_run_per_tau(setup):
    net, x, y = setup
    taus = torch.tensor([0.001, 0.02, 0.001, 0.3, 0.02, 0.001], dtype=torch.float64)
    mixed = stadv(net, x, y, tau=taus, steps=30)
    for tau in (0.001, 0.02, 0.3):
        rows = (taus == tau).nonzero().flatten()
        alone = stadv(net, x[rows], y[rows], tau=tau, steps=30)
        torch.testing.assert_close(alone.flows, mixed.flows[rows], rtol=0, atol=1e-9)
        assert torch.equal(alone.success, mixed.success[rows])
    with pytest.raises(ValueError, match="one finite value >= 0 per image"):
        stadv(net, x, y, tau=taus[:3], steps=3)


def test_stadv_in_chunks_equals_one_batch(setup):
    net, x, y = setup
    whole = stadv(net, x, y, tau=0.005, steps=30, tied=True)
    chunked = stadv(net, x, y, tau=0.005, steps=30, tied=True, chunk=4)
    for name in ("images", "flows", "success", *whole.extras):
        a, b = getattr(whole, name), getattr(chunked, name)
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_stadv_targeted_and_tied(setup):
    net, x, y = setup
    target = (y + 1) % 4
    res = stadv(net, x, target, tau=0.001, steps=80, targeted=True, tied=True)
    assert res.flows.shape == x.shape
    assert torch.equal(res.success, net(res.images).argmax(1) == target)
    assert res.success.any()


def test_stadv_does_not_mutate_inputs(setup):
    net, x, y = setup
    x0, y0 = x.clone(), y.clone()
    stadv(net, x, y, steps=3)
    assert torch.equal(x, x0) and torch.equal(y, y0)


@pytest.mark.parametrize("eps", [0.0, 0.05, 0.2])
def test_pgd_respects_its_budget_and_the_pixel_range(setup, eps):
    net, x, y = setup
    res = pgd(net, x, y, eps=eps, alpha=0.02, steps=15)
    assert float((res.images - x).abs().max()) <= eps + 1e-12
    assert float(res.images.min()) >= 0 and float(res.images.max()) <= 1
    assert torch.equal(res.success, net(res.images).argmax(1) != y)


def test_pgd_loss_grows_with_the_budget(setup):
    net, x, y = setup
    ce = torch.nn.functional.cross_entropy
    losses = [float(ce(net(pgd(net, x, y, eps=e, alpha=e / 4 + 1e-9, steps=20).images), y))
              for e in (0.0, 0.05, 0.2)]  # fmt: skip
    assert losses[0] < losses[1] < losses[2]


def test_bad_arguments():
    net = OneHidden(d=4, hidden=2, classes=2)
    with pytest.raises(ValueError, match="form must be"):
        flow_loss(torch.zeros(1, 2, 2, 2), form="tv")
    with pytest.raises(ValueError, match="tau must be"):
        stadv(net, torch.zeros(1, 2, 2), torch.zeros(1, dtype=torch.long), tau=-1)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        pgd(net, torch.zeros(1, 2, 2), torch.zeros(1, dtype=torch.long), eps=-1, alpha=1, steps=1)


def test_flow_pgd_respects_the_budget_and_fools_a_linear_model():
    from flowbound.attacks.pgd import flow_pgd
    from flowbound.networks.architectures import Linear
    from flowbound.threat.geometry import flow_norm
    from flowbound.threat.warp import warp

    torch.manual_seed(0)
    model = Linear(36, 2).double()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 6, 6, generator=g, dtype=torch.float64)
    y = model(x).argmax(1)
    small = flow_pgd(model, x, y, eps=1e-3, steps=30)
    large = flow_pgd(model, x, y, eps=5.0, steps=60)
    for res, eps in ((small, 1e-3), (large, 5.0)):
        assert (torch.from_numpy(flow_norm(res.flows)) <= eps * (1 + 1e-9)).all()
        assert torch.allclose(res.images, warp(x, res.flows))
        assert torch.equal(res.success, model(res.images).argmax(1) != y)
    # a larger budget fools at least as often, and a big one fools this tiny model
    assert large.success.sum() >= small.success.sum()
    assert large.success.float().mean() > 0.5


def _flow_pgd_every_image_every_step(model, x, y, *, eps, steps, lr, restarts, seed):
    """flow_pgd as its docstring states it, with no shortcut: every image runs every step
    of every restart, and the fooled check is a second forward after each step."""
    from flowbound.threat.geometry import m_inv_tensor
    from flowbound.threat.warp import warp

    side = x.shape[-1]
    mi = m_inv_tensor(side, dtype=x.dtype)
    gen = torch.Generator().manual_seed(seed)
    best_r, success = torch.zeros_like(x), torch.zeros(len(x), dtype=torch.bool)
    for _ in range(restarts):
        s = torch.randn(len(x), side * side, generator=gen, dtype=x.dtype)
        s = (s * (0.5 * eps / s.norm(dim=1, keepdim=True))).requires_grad_(True)
        opt = torch.optim.Adam([s], lr=lr * eps)
        for _ in range(steps):
            opt.zero_grad()
            cw_margin(model(warp(x, (s @ mi).reshape(-1, side, side))), y).sum().backward()
            opt.step()
            with torch.no_grad():
                s.mul_((eps / s.norm(dim=1, keepdim=True)).clamp(max=1.0))
                r = (s @ mi).reshape(-1, side, side)
                fooled = model(warp(x, r)).argmax(1) != y
                best_r[fooled & ~success] = r[fooled & ~success]
                best_r[~success & ~fooled] = r[~success & ~fooled]
                success |= fooled
    return best_r, success


def test_flow_pgd_stops_fooled_images_without_changing_any_result():
    """Images leave the batch once fooled and each step runs one forward: the flows and
    the outcome equal the plain loop's, with images fooled at different steps and
    restarts (some never)."""
    torch.manual_seed(0)
    net = OneHidden(d=64, hidden=24, classes=3).double()
    for q in net.parameters():
        q.requires_grad_(False)
    x = torch.rand(40, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y = net(x).argmax(1)
    y[:3] = (y[:3] + 1) % 3  # misclassified from the start
    for eps, restarts in ((0.3, 2), (1.5, 3)):
        got = flow_pgd(net, x, y, eps=eps, steps=25, lr=0.05, restarts=restarts, seed=4)
        flows, success = _flow_pgd_every_image_every_step(
            net, x, y, eps=eps, steps=25, lr=0.05, restarts=restarts, seed=4
        )
        assert 0 < int(success.sum()) < len(x)  # some fooled, some not
        assert torch.equal(got.success, success)
        torch.testing.assert_close(got.flows, flows, rtol=0, atol=1e-12)
    with torch.no_grad():  # a caller's no_grad does not stop the attack's own gradients
        again = flow_pgd(net, x, y, eps=1.5, steps=25, lr=0.05, restarts=3, seed=4)
    torch.testing.assert_close(again.flows, got.flows, rtol=0, atol=0)


def test_flow_loss_symmetric_border_against_loops():
    g = torch.Generator().manual_seed(2)
    flow = torch.randn(2, 2, 4, 5, generator=g, dtype=torch.float64)
    for b in range(2):
        per_pair = 0.0
        for i in range(4):
            for j in range(5):
                for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                    ni, nj = i + di, j + dj
                    inside = 0 <= ni < 4 and 0 <= nj < 5
                    q = flow[b, :, ni, nj] if inside else flow[b, :, i, j]  # reflected
                    per_pair += (float(((flow[b, :, i, j] - q) ** 2).sum()) + 1e-8) ** 0.5
        got = float(flow_loss(flow, form="stadv", border="symmetric")[b])
        assert got == pytest.approx(per_pair, rel=1e-12)


def test_flow_loss_uniform_shift_costs_by_border():
    """A uniform half-pixel shift: only missing neighbours cost under zero fill."""
    flow = torch.full((1, 2, 28, 28), 0.5, dtype=torch.float64)
    zero = float(flow_loss(flow, border="zero"))
    sym = float(flow_loss(flow, border="symmetric"))
    assert zero == pytest.approx(112 * (0.5 + 1e-8) ** 0.5 + (4 * 784 - 112) * 1e-4, rel=1e-12)
    assert sym == pytest.approx(4 * 784 * 1e-4, rel=1e-9)
    with pytest.raises(ValueError, match="border"):
        flow_loss(flow, border="reflect")


def test_stadv_final_iterate_success_implies_any_iterate_success(setup):
    net, x, y = setup
    for border in ("zero", "symmetric"):
        res = stadv(net, x, y, tau=0.005, steps=40, border=border)
        assert bool((res.success | ~res.success_final).all())
        assert res.success_final.shape == res.success.shape


def test_every_attack_treats_images_independently(setup):
    """An image's result does not depend on the rest of its batch (pgd without its
    random start; flow_pgd for the first image, whose random start is the same draw)."""
    net, x, y = setup
    batch = pgd(net, x, y, eps=0.1, alpha=0.02, steps=10, random_start=False)
    for k in (0, 3, 5):
        alone = pgd(
            net, x[k : k + 1], y[k : k + 1], eps=0.1, alpha=0.02, steps=10, random_start=False
        )
        torch.testing.assert_close(alone.images[0], batch.images[k], rtol=0, atol=1e-12)
    # flow_pgd: Adam divides each gradient entry by its running size, so round-off
    # in entries near 0 (a batch of 1 runs other BLAS kernels) grows into visible
    # differences of the flow; the outcome per image must not depend on the batch
    batch = flow_pgd(net, x, y, eps=0.5, steps=15)
    for k in (0, 3, 5):
        alone = flow_pgd(net, x[k : k + 1], y[k : k + 1], eps=0.5, steps=15, seed=0)
        if k == 0:  # the same random start
            assert bool(alone.success[0]) == bool(batch.success[0])
        assert float(alone.budget[0]) <= 0.5 + 1e-9


# --- every registered attack (flowbound.attacks.registry.ATTACKS) ------------------------

#: The budget each generic check gives an attack whose budget is not a threat set.
_BUDGET = {"pixels": 0.1, "penalty": 0.005}


def _budget(a) -> float:
    return _BUDGET.get(a.threat, 0.5)  # a threat set of flows: eps = 0.5


def _flow_shapes(threat: str, x: torch.Tensor) -> list[tuple[int, ...] | None]:
    """The flow shapes (without the batch) an attack on ``threat`` may return."""
    from flowbound.threat.sets import THREAT_SETS

    side = x.shape[-1]
    if threat == "pixels":
        return [None]
    if threat == "penalty":  # stAdv: tied or full
        return [t.flow_shape(side) for t in THREAT_SETS.values()]
    return [THREAT_SETS[threat].flow_shape(side)]


def check_attack_contract(a, net, x, y) -> None:
    """What every attack promises (CONTRIBUTING, "An attack"): it returns an
    AttackResult and leaves its inputs as they were; success is what a forward pass
    says; images stay finite in [0, 1] and within the budget of its threat set; flows
    have the threat set's shape and give the images; an empty batch gives empty
    results; and an attack that claims batch independence gives the first images of a
    batch the same results when they are attacked without the rest and beside other
    companions."""
    from flowbound.attacks.registry import AttackResult
    from flowbound.threat.sets import THREAT_SETS

    budget = _budget(a)
    x_before, y_before = x.clone(), y.clone()
    params = [p.detach().clone() for p in net.parameters()]
    res = a.run(net, x, y, budget, 0)
    assert torch.equal(x, x_before) and torch.equal(y, y_before), f"{a.name}: changed its input"
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), params, strict=True)), (
        f"{a.name}: changed the model"
    )
    assert isinstance(res, AttackResult)
    assert res.images.shape == x.shape and res.success.shape == y.shape
    with torch.no_grad():
        fooled = net(res.images).argmax(1) != y
    assert torch.equal(res.success.cpu(), fooled.cpu()), f"{a.name}: success is not the model's"
    assert bool(torch.isfinite(res.images).all())
    assert float(res.images.min()) >= 0 and float(res.images.max()) <= 1
    shape = None if res.flows is None else tuple(res.flows.shape[1:])
    assert shape in _flow_shapes(a.threat, x), (
        f"{a.name}: flows of shape {shape} for the {a.threat!r} threat set"
    )
    slack = 1 + 1e-6
    if a.threat == "pixels":
        assert float((res.images - x).abs().max()) <= budget * slack
    elif a.threat in THREAT_SETS:
        used = THREAT_SETS[a.threat].used(res.flows)
        assert bool((used <= budget * slack).all()), f"{a.name}: over budget"
    if res.flows is not None:
        torch.testing.assert_close(warp(x, res.flows), res.images, rtol=0, atol=1e-9)
    empty = a.run(net, x[:0], y[:0], budget, 0)
    assert empty.images.shape == (0, *x.shape[1:]) and empty.success.shape == (0,)
    if a.batch_independent:  # random draws may depend on an image's place, not on the others
        others = x.flip(0)  # other companions for the same first images
        mixed_x = torch.cat([x[:2], others[2:]])
        with torch.no_grad():
            mixed_y = torch.cat([y[:2], net(others[2:]).argmax(1)])
        for m, part in (
            (1, a.run(net, x[:1], y[:1], budget, 0)),
            (len(x) - 2, a.run(net, x[:-2], y[:-2], budget, 0)),
            (2, a.run(net, mixed_x, mixed_y, budget, 0)),
        ):
            assert torch.equal(part.success[:m], res.success[:m]), f"{a.name}: first {m} images"
            torch.testing.assert_close(
                part.images[:m], res.images[:m], rtol=0, atol=1e-6,
                msg=f"{a.name}: the first {m} images depend on the rest of the batch",
            )  # fmt: skip


def _registered_attacks():
    from flowbound.attacks.registry import ATTACKS

    return list(ATTACKS)


@pytest.mark.parametrize("name", _registered_attacks())
def test_every_registered_attack_keeps_its_contract(setup, name):
    from flowbound.attacks.registry import attack

    check_attack_contract(attack(name), *setup)


def test_a_registered_toy_attack_is_checked_by_the_contract(setup, monkeypatch):
    """CONTRIBUTING, 'an attack': a uniform shift of the image by the whole budget,
    registered with its flags, passes the generic checks; one that lies about success
    does not."""
    from flowbound.attacks.registry import ATTACKS, Attack, AttackResult
    from flowbound.threat.geometry import flow_norm

    def shift(model, x, y, budget, seed):
        unit = torch.ones(x.shape[1:], dtype=x.dtype)
        flows = (budget / float(flow_norm(unit)) * unit).expand(len(x), -1, -1).clone()
        images = warp(x, flows)
        with torch.no_grad():
            success = model(images).argmax(1) != y
        return AttackResult(images, success, flows)

    toy = Attack("toy_shift", shift, "tied", batch_independent=True)
    monkeypatch.setitem(ATTACKS, "toy_shift", toy)
    assert "toy_shift" in ATTACKS
    check_attack_contract(toy, *setup)

    def liar(model, x, y, budget, seed):
        res = shift(model, x, y, budget, seed)
        return AttackResult(res.images, torch.ones_like(res.success), res.flows)

    with pytest.raises(AssertionError, match="success is not the model's"):
        check_attack_contract(Attack("liar", liar, "tied", True), *setup)


def _liars():
    """Attacks that break one promise each, and the message the contract gives."""
    from flowbound.attacks.registry import AttackResult
    from flowbound.threat.geometry import flow_norm

    def scored(model, images, y):
        with torch.no_grad():
            return model(images).argmax(1) != y

    def two_channel(model, x, y, budget, seed):  # "tied", but dv = -du
        unit = torch.ones(x.shape[1:], dtype=x.dtype)
        du = (budget / float(flow_norm(unit)) * unit).expand(len(x), -1, -1)
        flows = torch.stack([du, -du], 1).clone()
        images = warp(x, flows)
        return AttackResult(images, scored(model, images, y), flows)

    def zeroes_input(model, x, y, budget, seed):  # "no flow", after blanking x in place
        x.zero_()
        flows = torch.zeros_like(x)
        return AttackResult(x.clone(), scored(model, x, y), flows)

    def peeks(model, x, y, budget, seed):  # each flow scaled by the last image's mean
        unit = torch.ones(x.shape[1:], dtype=x.dtype)
        size = budget / float(flow_norm(unit)) * (float(x[-1].mean()) if len(x) else 0.0)
        flows = (size * unit).expand(len(x), -1, -1).clone()
        images = warp(x, flows)
        return AttackResult(images, scored(model, images, y), flows)

    return [
        (two_channel, "flows of shape"),
        (zeroes_input, "changed its input"),
        (peeks, "depend on the rest of the batch"),
    ]


@pytest.mark.parametrize("which", range(3))
def test_the_contract_catches_each_kind_of_liar(setup, which):
    from flowbound.attacks.registry import Attack

    run, match = _liars()[which]
    with pytest.raises(AssertionError, match=match):
        check_attack_contract(Attack(run.__name__, run, "tied", True), *setup)


def test_every_attack_returns_an_attack_result_with_its_own_fields(setup):
    """Each attack's own result extends AttackResult: the registry's one result type."""
    from flowbound.attacks.registry import ATTACKS, AttackResult

    net, x, y = setup
    for a in ATTACKS.values():
        res = a.run(net, x[:2], y[:2], _budget(a), 0)
        assert isinstance(res, AttackResult), a.name
        assert set(res.extras).isdisjoint({"images", "success", "flows"})
