"""Eq. (1) against independent implementations; both Jacobians against their definitions."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from flowbound.threat.warp import jacobian_paper, jacobian_true, warp, warp_and_jacobian


def eq1_brute(x: torch.Tensor, du: torch.Tensor, dv: torch.Tensor) -> torch.Tensor:
    """Eq. (1) literally: sum over every pixel j of x_j times both hat weights."""
    b, h, w = x.shape
    out = torch.zeros_like(x)
    for n, vi, ui in itertools.product(range(b), range(h), range(w)):
        pu, pv = ui + du[n, vi, ui], vi + dv[n, vi, ui]
        for vj, uj in itertools.product(range(h), range(w)):
            wu = max(0.0, 1 - abs(float(pu) - uj))
            wv = max(0.0, 1 - abs(float(pv) - vj))
            out[n, vi, ui] += x[n, vj, uj] * wu * wv
    return out


def paper_dg_brute(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The printed dg_i/dr_i of Section 2.2, case by case, over every pixel j."""
    b, h, w = x.shape
    out = torch.zeros_like(x)
    for n, vi, ui in itertools.product(range(b), range(h), range(w)):
        pu, pv = ui + float(r[n, vi, ui]), vi + float(r[n, vi, ui])
        for vj, uj in itertools.product(range(h), range(w)):
            if abs(pu - uj) >= 1:
                s = 0.0
            elif pu >= uj:
                s = 1.0
            else:
                s = -1.0
            out[n, vi, ui] += x[n, vj, uj] * max(0.0, 1 - abs(pv - vj)) * s
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_flow_is_identity_exactly(dtype, rng):
    x = torch.rand(4, 28, 28, generator=rng).to(dtype)
    assert torch.equal(warp(x, torch.zeros_like(x)), x)
    assert torch.equal(warp(x, torch.zeros(4, 2, 28, 28, dtype=dtype)), x)


@pytest.mark.parametrize("du,dv", [(1, 0), (0, 1), (-2, 0), (0, -3), (2, -1), (5, 5)])
def test_integer_flow_is_an_exact_shift_with_zero_fill(du, dv, rng):
    x = torch.rand(2, 9, 11, generator=rng, dtype=torch.float64)
    flow = torch.zeros(2, 2, 9, 11, dtype=torch.float64)
    flow[:, 0], flow[:, 1] = du, dv
    expected = torch.zeros_like(x)
    h, w = 9, 11
    src = x[:, max(dv, 0) : h + min(dv, 0), max(du, 0) : w + min(du, 0)]
    expected[:, max(-dv, 0) : h + min(-dv, 0), max(-du, 0) : w + min(-du, 0)] = src
    assert torch.equal(warp(x, flow), expected)


TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_warp_matches_eq1_summed_over_every_pixel(dtype, rng):
    x = torch.rand(2, 5, 6, generator=rng, dtype=torch.float64)
    flow = (torch.rand(2, 2, 5, 6, generator=rng, dtype=torch.float64) - 0.5) * 4
    expected = eq1_brute(x, flow[:, 0], flow[:, 1])  # the reference stays in float64
    out = warp(x.to(dtype), flow.to(dtype))
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_warp_matches_grid_sample(dtype, rng):
    x = torch.rand(3, 28, 28, generator=rng, dtype=dtype)
    flow = (torch.rand(3, 2, 28, 28, generator=rng, dtype=dtype) - 0.5) * 6
    cols = torch.arange(28, dtype=dtype).view(1, 1, 28)
    rows = torch.arange(28, dtype=dtype).view(1, 28, 1)
    gx = (cols + flow[:, 0]) / 27 * 2 - 1
    gy = (rows + flow[:, 1]) / 27 * 2 - 1
    grid = torch.stack([gx, gy], dim=-1)
    ref = F.grid_sample(x.unsqueeze(1), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=True)[:, 0]  # fmt: skip
    torch.testing.assert_close(warp(x, flow), ref, rtol=0, atol=TOL[dtype])


def test_tied_flow_equals_full_flow_with_equal_components(rng):
    x = torch.rand(2, 7, 7, generator=rng, dtype=torch.float64)
    r = torch.randn(2, 7, 7, generator=rng, dtype=torch.float64)
    assert torch.equal(warp(x, r), warp(x, torch.stack([r, r], 1)))


def test_an_image_gives_the_same_result_alone_or_in_a_batch(rng):
    x = torch.rand(5, 8, 8, generator=rng, dtype=torch.float64)
    r = torch.randn(5, 2, 8, 8, generator=rng, dtype=torch.float64)
    batch = warp(x, r)
    for k in range(5):
        assert torch.equal(warp(x[k : k + 1], r[k : k + 1])[0], batch[k])


def test_inputs_are_not_mutated(rng):
    x = torch.rand(2, 6, 6, generator=rng)
    r = torch.randn(2, 6, 6, generator=rng)
    x0, r0 = x.clone(), r.clone()
    warp(x, r), jacobian_true(x, r), jacobian_paper(x, r)
    assert torch.equal(x, x0) and torch.equal(r, r0)


@pytest.mark.parametrize("shape", [(2, 6, 6), (2, 2, 6, 6)])
def test_jacobian_true_matches_autograd(shape, rng):
    x = torch.rand(2, 6, 6, generator=rng, dtype=torch.float64)
    flow = (torch.rand(*shape, generator=rng, dtype=torch.float64) - 0.5) * 3
    probe = torch.randn(2, 6, 6, generator=rng, dtype=torch.float64)
    f = flow.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((warp(x, f) * probe).sum(), f)
    jac = jacobian_true(x, flow)
    expected = jac * (probe.unsqueeze(1) if len(shape) == 4 else probe)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)


def test_jacobian_true_matches_finite_differences_away_from_kinks(rng):
    x = torch.rand(3, 10, 10, generator=rng, dtype=torch.float64)
    # Integer part in {-2..2}, fraction in [0.2, 0.8]: no sample crosses a grid line.
    whole = torch.randint(-2, 3, (3, 10, 10), generator=rng).double()
    r = whole + 0.2 + 0.6 * torch.rand(3, 10, 10, generator=rng, dtype=torch.float64)
    h = 1e-6
    fd = (warp(x, r + h) - warp(x, r - h)) / (2 * h)
    torch.testing.assert_close(jacobian_true(x, r), fd, rtol=0, atol=1e-7)


def test_jacobian_true_at_zero_is_forward_differences(rng):
    x = torch.rand(2, 6, 6, generator=rng, dtype=torch.float64)
    right = F.pad(x[:, :, 1:], (0, 1))
    below = F.pad(x[:, 1:, :], (0, 0, 0, 1))
    expected = (right - x) + (below - x)
    assert torch.equal(jacobian_true(x, torch.zeros_like(x)), expected)


def test_jacobian_paper_matches_the_printed_formula(rng):
    x = torch.rand(2, 5, 5, generator=rng, dtype=torch.float64)
    r = (torch.rand(2, 5, 5, generator=rng, dtype=torch.float64) - 0.5) * 3
    r[0, 0, :3] = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64)  # grid points
    torch.testing.assert_close(jacobian_paper(x, r), paper_dg_brute(x, r), rtol=0, atol=1e-12)


def test_jacobian_paper_at_zero_is_diag_x(rng):
    x = torch.rand(3, 28, 28, generator=rng)
    assert torch.equal(jacobian_paper(x, torch.zeros_like(x)), x)


def test_jacobian_paper_has_the_column_derivative_with_flipped_sign(rng):
    """On an image varying only along columns, the printed Dg is -d/du (Readings table, point 9)."""
    x = torch.rand(2, 1, 8, generator=rng, dtype=torch.float64).expand(2, 8, 8).clone()
    r = 0.2 + 0.6 * torch.rand(2, 8, 8, generator=rng, dtype=torch.float64)
    r[:, :, -1] = 0.3
    full = torch.stack([r, torch.zeros_like(r)], 1)
    d_u = jacobian_true(x, full)[:, 0]
    inner = slice(0, 6)  # away from the bottom/right border
    torch.testing.assert_close(
        jacobian_paper(x, r)[:, inner, inner], -d_u[:, inner, inner], rtol=0, atol=1e-12
    )


def test_bad_shapes_are_clear_errors():
    x = torch.zeros(2, 5, 5)
    with pytest.raises(ValueError, match="flow must have shape"):
        warp(x, torch.zeros(2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        warp(torch.zeros(5, 5), torch.zeros(5, 5))
    with pytest.raises(ValueError, match="tied flow"):
        jacobian_paper(x, torch.zeros(2, 2, 5, 5))


@pytest.mark.parametrize("tied", [True, False])
def test_warp_and_jacobian_match_warp_and_autograd(tied):
    """One read of the neighbours gives warp() and the gradient autograd finds, also for
    sample points far outside the image (the frame) and on integer positions."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, 6, 7, generator=g, dtype=torch.float64)
    shape = x.shape if tied else (3, 2, 6, 7)
    flow = 4.0 * torch.randn(*shape, generator=g, dtype=torch.float64)
    flow[0] = torch.round(flow[0])
    flow.requires_grad_(True)
    images, jac = warp_and_jacobian(x, flow.detach())
    reference = warp(x, flow)
    torch.testing.assert_close(images, reference.detach(), rtol=0, atol=1e-14)
    weights = torch.randn(x.shape, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((weights * reference).sum(), flow)
    chain = weights * jac if tied else weights.unsqueeze(1) * jac
    torch.testing.assert_close(chain, grad, rtol=0, atol=1e-12)
