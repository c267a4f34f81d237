"""The APGD-style flow attack: inside its threat set, honest about success, batch-independent."""

from __future__ import annotations

import math

import pytest
import torch

from flowbound.attacks.flow_apgd import checkpoints, flow_apgd
from flowbound.networks.architectures import OneHidden
from flowbound.threat.geometry import flow_norm
from flowbound.threat.warp import warp


def _setup(n=6, side=6, hidden=12, seed=0):
    torch.manual_seed(seed)
    net = OneHidden(side * side, hidden, 4).double()
    x = torch.rand(n, side, side, generator=torch.Generator().manual_seed(seed + 1)).double()
    with torch.no_grad():
        y = net(x).argmax(1)
    return net, x, y


def test_checkpoints_are_apgds_for_100_steps():
    # Croce & Hein (2020), Section 3.1: w = {0, 22, 41, 57, 70, 80, 87, 93, 99} of 100
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert all(0 < c < 10 for c in checkpoints(10))


@pytest.mark.parametrize("search", [None, torch.float32])
@pytest.mark.parametrize("threat", ["tied", "full"])
def test_flows_stay_in_the_threat_set_and_success_is_a_forward_pass(threat, search):
    """Also with the search in float32 on a float64 model: flows, images, budget and
    success are then the float64 model's own (the margins, the search's, to 1e-5)."""
    net, x, y = _setup()
    eps = 0.5
    res = flow_apgd(
        net, x, y, eps=eps, threat=threat, steps=30, restarts=2, targets=2, search_dtype=search
    )
    assert res.flows.dtype == res.images.dtype == torch.float64
    torch.testing.assert_close(res.images, warp(x, res.flows))
    if threat == "tied":
        used = torch.from_numpy(flow_norm(res.flows))
    else:
        used = torch.from_numpy(
            ((flow_norm(res.flows[:, 0]) ** 2 + flow_norm(res.flows[:, 1]) ** 2) / 2) ** 0.5
        )
    assert bool((used <= eps * (1 + 1e-9)).all())
    torch.testing.assert_close(used, res.budget)
    with torch.no_grad():
        scores = net(res.images)
    assert (res.success == (scores.argmax(1) != y)).all()
    assert res.success.any() and not res.success.all()  # a real test of both outcomes
    own = scores.gather(1, y[:, None])
    reached = own - scores
    reached[torch.arange(len(y)), y] = math.inf
    slack = 1e-12 if search is None else 1e-5
    assert bool((res.margins <= reached + slack).all())  # every margin seen is kept
    assert bool(torch.isinf(res.margins.gather(1, y[:, None])).all())


def test_an_image_does_not_depend_on_the_rest_of_the_batch():
    """Rows of a batch equal the same images attacked in a smaller batch (their starts
    depend on their place in the batch only)."""
    net, x, y = _setup(n=6, seed=3)
    for threat in ("tied", "full"):
        res = flow_apgd(net, x, y, eps=0.8, threat=threat, steps=20, targets=1)
        part = flow_apgd(net, x[:4], y[:4], eps=0.8, threat=threat, steps=20, targets=1)
        torch.testing.assert_close(part.flows, res.flows[:4], rtol=0, atol=1e-12)
        torch.testing.assert_close(part.margins, res.margins[:4], rtol=0, atol=1e-12)
        assert (part.success == res.success[:4]).all()


def test_targeted_runs_find_lower_margins_than_the_untargeted_one_alone():
    net, x, y = _setup(n=8, hidden=20, seed=5)
    plain = flow_apgd(net, x, y, eps=0.6, steps=25, targets=0)
    more = flow_apgd(net, x, y, eps=0.6, steps=25, targets=3)
    assert bool((more.margins <= plain.margins + 1e-12).all())
    assert int(more.success.sum()) >= int(plain.success.sum())


def test_misclassified_images_count_as_fooled_with_zero_flow():
    net, x, y = _setup(n=3)
    y = (y + 1) % 4
    res = flow_apgd(net, x, y, eps=0.5, steps=5)
    assert res.success.all() and float(res.flows.abs().max()) == 0.0


def test_bad_arguments_and_empty_batches():
    net, x, y = _setup(n=2)
    for kw, match in [
        ({"eps": 0.0}, "eps"),
        ({"eps": math.nan}, "eps"),
        ({"threat": "Tied"}, "threat"),
        ({"steps": 0}, "steps"),
        ({"targets": -1}, "targets"),
        ({"restarts": 1.5}, "restarts"),
        ({"device": "bogus"}, "device"),
        ({"search_dtype": torch.int64}, "search_dtype"),
        ({"search_dtype": "float32"}, "search_dtype"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            flow_apgd(net, x, y, **({"eps": 0.5} | kw))
    with pytest.raises(ValueError, match="square"):
        flow_apgd(OneHidden(20, 3, 4).double(), torch.rand(2, 4, 5).double(), y, eps=0.5)
    with pytest.raises(ValueError, match=r"y must lie in \[0, 4\)"):
        flow_apgd(net, x, torch.tensor([0, 4]), eps=0.5)
    res = flow_apgd(net, x[:0], y[:0], eps=0.5, threat="full")
    assert res.images.shape == (0, 6, 6) and res.flows.shape == (0, 2, 6, 6)
    assert res.success.shape == (0,) and res.margins.shape == (0, 4)


def test_float32_models_take_float64_images():
    net, x, y = _setup(n=3)
    res = flow_apgd(net.float(), x, y, eps=0.5, steps=5)
    assert res.images.dtype == torch.float64 and res.success.shape == (3,)


@pytest.mark.parametrize("threat", ["tied", "full"])
def test_a_float32_model_returns_flows_within_the_budget_in_float64(threat):
    """The search rounds in float32; the flows returned are rechecked in float64 from
    what is returned (no slack), and ``budget`` is that float64 value."""
    net, x, y = _setup(n=8, seed=4)
    net, x = net.float(), x.float()
    eps = 0.6
    res = flow_apgd(net, x, y, eps=eps, threat=threat, steps=20, targets=1)
    flows = res.flows.double()
    if threat == "tied":
        used = torch.from_numpy(flow_norm(flows))
    else:
        used = ((torch.from_numpy(flow_norm(flows[:, 0])) ** 2
                 + torch.from_numpy(flow_norm(flows[:, 1])) ** 2) / 2) ** 0.5  # fmt: skip
    assert bool((used <= eps).all()), float(used.max() / eps - 1)
    assert bool((res.budget.double() <= eps).all())
    torch.testing.assert_close(res.budget.double(), used, rtol=1e-12, atol=0)


def test_success_holds_on_the_images_returned_in_their_dtype():
    """bfloat16 images: the returned (bfloat16) images are what success is checked on
    (checked before the cast back, 5 of 384 successes here did not hold)."""
    for seed in range(6):
        torch.manual_seed(seed)
        net = OneHidden(36, 12, 4).float()
        xb = torch.rand(64, 6, 6, generator=torch.Generator().manual_seed(seed + 1))
        xb = xb.to(torch.bfloat16)
        with torch.no_grad():
            y = net(xb.float()).argmax(1)
        res = flow_apgd(net, xb, y, eps=0.8, steps=20, targets=1)
        assert res.images.dtype == res.flows.dtype == torch.bfloat16
        with torch.no_grad():
            fooled = net(res.images.float()).argmax(1) != y
        assert torch.equal(res.success, fooled)


def test_bad_models_and_dtypes_get_one_clear_error():
    net, x, y = _setup(n=3)
    for dtype in (torch.float16, torch.bfloat16, torch.int32, "float32"):
        with pytest.raises(TypeError, match="search_dtype"):
            flow_apgd(net, x, y, eps=0.5, steps=2, search_dtype=dtype)
    broken = OneHidden(36, 12, 4).double()
    with torch.no_grad():
        broken.W.weight[0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN or inf parameters"):
        flow_apgd(broken, x, y, eps=0.5, steps=2)
    with pytest.raises(ValueError, match="could not score x of shape"):
        flow_apgd(net, torch.rand(3, 5, 5, dtype=torch.float64), y, eps=0.5, steps=2)

    class OneScore(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(36, dtype=torch.float64))

        def forward(self, z):
            return z.flatten(1) @ self.w

    with pytest.raises(ValueError, match=r"scores of shape \(B, K\)"):
        flow_apgd(OneScore(), x, y, eps=0.5, steps=2)
    with pytest.raises(TypeError, match="float32 or float64 parameters"):
        flow_apgd(OneHidden(36, 12, 4).half(), x.half(), y, eps=0.5, steps=2)
