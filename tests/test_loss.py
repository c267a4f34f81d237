"""l_adv: the midpoint rule with the exact Jacobian converges to the network's value."""

from __future__ import annotations

import pytest
import torch

from flowbound.networks.architectures import OneHidden, binary_head, binary_heads
from flowbound.threat.loss import l_adv_exact, l_adv_midpoint
from flowbound.threat.warp import warp


@pytest.fixture
def net() -> OneHidden:
    torch.manual_seed(0)
    return OneHidden(d=64, hidden=32, classes=3).double()


def _data(rng, b=4, scale=1.5, full=False):
    x = torch.rand(b, 8, 8, generator=rng, dtype=torch.float64)
    shape = (b, 2, 8, 8) if full else (b, 8, 8)
    r = (torch.rand(*shape, generator=rng, dtype=torch.float64) - 0.5) * scale
    return x, r


def test_exact_is_half_the_score_change(net, rng):
    x, r = _data(rng)
    f = binary_head(net, 0, 1)
    expected = (f(warp(x, r)) - f(x)) / 2
    torch.testing.assert_close(l_adv_exact(f, x, r), expected.detach())


@pytest.mark.parametrize("full", [False, True])
def test_midpoint_with_true_jacobian_converges_to_exact(net, rng, full):
    x, r = _data(rng, full=full)
    f = binary_head(net, 0, 2)
    exact = l_adv_exact(f, x, r)
    ns = (8, 64, 512, 4096)
    rel = [float(((l_adv_midpoint(f, x, r, n) - exact) / exact).abs().max()) for n in ns]
    # The ReLU and the pixel grid put jumps into d/dz f(g(zr)); a jump inside one
    # midpoint cell costs O(1/n), so the rule converges like 1/n: 8x the points,
    # about 8x less error.
    for coarse, fine in zip(rel, rel[1:], strict=False):
        assert fine < coarse / 4
    assert rel[-1] < 2e-3


def test_midpoint_is_exact_for_a_linear_score_and_a_flow_within_one_cell(rng):
    """f linear and a flow along one axis with 0 <= du < 1: no sample leaves its cell, so
    f(g(zr)) is linear in z and even the one-point midpoint rule is exact."""
    x = torch.rand(3, 6, 6, generator=rng, dtype=torch.float64)
    w = torch.randn(36, generator=rng, dtype=torch.float64)
    f = lambda z: z.flatten(1) @ w  # noqa: E731
    du = torch.rand(3, 6, 6, generator=rng, dtype=torch.float64) * 0.99
    flow = torch.stack([du, torch.zeros_like(du)], 1)
    exact = l_adv_exact(f, x, flow)
    torch.testing.assert_close(l_adv_midpoint(f, x, flow, 1), exact, rtol=0, atol=1e-12)


def test_midpoint_with_the_printed_jacobian_does_not_converge(net, rng):
    x, r = _data(rng, b=6)
    f = binary_head(net, 1, 2)
    exact = l_adv_exact(f, x, r)
    true_err = (l_adv_midpoint(f, x, r, 256, jacobian="true") - exact).abs().mean()
    paper_err = (l_adv_midpoint(f, x, r, 256, jacobian="paper") - exact).abs().mean()
    assert paper_err > 100 * true_err


def test_binary_heads_keep_each_images_pair_when_the_batch_is_repeated(net, rng):
    x = torch.rand(3, 8, 8, generator=rng, dtype=torch.float64)
    i, j = torch.tensor([0, 1, 2]), torch.tensor([2, 0, 1])
    f = binary_heads(net, i, j)
    rep = x.repeat(4, 1, 1)  # row k * 3 + b is image b
    got = f(rep).reshape(4, 3)
    for b in range(3):
        expected = binary_head(net, int(i[b]), int(j[b]))(x[b : b + 1])
        torch.testing.assert_close(got[:, b], expected.expand(4))


def test_per_image_heads_in_the_midpoint_rule_match_one_image_at_a_time(net, rng):
    x, r = _data(rng, b=3)
    i, j = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0])
    batch = l_adv_midpoint(binary_heads(net, i, j), x, r, 16)
    for b in range(3):
        alone = l_adv_midpoint(binary_head(net, int(i[b]), int(j[b])), x[b : b + 1],
                               r[b : b + 1], 16)  # fmt: skip
        torch.testing.assert_close(batch[b : b + 1], alone)


def test_bad_arguments_are_clear_errors(net, rng):
    x, r = _data(rng)
    f = binary_head(net, 0, 1)
    with pytest.raises(ValueError, match="jacobian must be one of"):
        l_adv_midpoint(f, x, r, 4, jacobian="autograd")
    with pytest.raises(ValueError, match="positive integer"):
        l_adv_midpoint(f, x, r, 0)
    with pytest.raises(ValueError, match="two different classes"):
        binary_head(net, 1, 1)
