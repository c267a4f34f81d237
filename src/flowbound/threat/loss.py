"""The adversarial loss l_adv (Section 2.2): exactly, and by the midpoint rule.

Convention (Readings table, point 5): l_adv(x, r) = (f(g(r; x)) - f(x)) / 2, the
definition of Section 2.2. Eq. (4), (7) and (13) print the path integral
f(g(r)) - f(g(0)) without the 1/2; here the midpoint estimate carries the
1/2 too, so that both functions estimate the same number and every figure
reports l_adv with the 1/2.

``f`` is any callable mapping images (B, H, W) to scores (B,), e.g.
:func:`flowbound.networks.architectures.binary_head`.

Used in: Background (Eq. 4), Impossibility results (Eq. 7, 13).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from flowbound.threat.warp import jacobian_paper, jacobian_true, split_flow, warp

__all__ = ["JACOBIAN_TITLES", "JACOBIANS", "l_adv_exact", "l_adv_midpoint"]

#: How figures and tables name the two Jacobians.
JACOBIAN_TITLES = {"paper": "Dg as printed", "true": "exact Jacobian"}

Score = Callable[[torch.Tensor], torch.Tensor]

#: The two readings of Dg: ``"paper"`` (as printed) and ``"true"`` (exact).
JACOBIANS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "paper": jacobian_paper,
    "true": jacobian_true,
}


def l_adv_exact(f: Score, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """(f(g(r; x)) - f(x)) / 2, shape (B,): the network actually evaluated."""
    with torch.no_grad():
        return (f(warp(x, r)) - f(x)) / 2


def l_adv_midpoint(
    f: Score, x: torch.Tensor, r: torch.Tensor, n: int, *, jacobian: str = "true"
) -> torch.Tensor:
    """Midpoint estimate of l_adv (Eq. 4 by the rule of Eq. 7 / 13), shape (B,).

    (1 / 2n) sum_{i=1..n} grad f(g(r_i; x))^T Dg(r_i; x) r with
    r_i = (2i - 1) / (2n) r. ``jacobian`` selects Dg: ``"true"`` converges
    to :func:`l_adv_exact` as n grows; ``"paper"`` (tied flows only) does not.
    """
    if jacobian not in JACOBIANS:
        raise ValueError(f"jacobian must be one of {sorted(JACOBIANS)}, got {jacobian!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    split_flow(x, r)  # validates shapes
    b = x.shape[0]
    z = (2 * torch.arange(1, n + 1, dtype=x.dtype, device=x.device) - 1) / (2 * n)
    zr = (z.view(n, *([1] * r.dim())) * r.unsqueeze(0)).reshape(n * b, *r.shape[1:])
    xs = x.unsqueeze(0).expand(n, *x.shape).reshape(n * b, *x.shape[1:])
    g = warp(xs, zr).detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(f(g).sum(), g)
    dg = JACOBIANS[jacobian](xs, zr)
    rs = r.unsqueeze(0).expand(n, *r.shape).reshape(n * b, *r.shape[1:])
    if r.dim() == 4:  # full flow: sum both partials against (du, dv)
        terms = grad.unsqueeze(1) * dg * rs
    else:
        terms = grad * dg * rs
    per = terms.reshape(n, b, -1).sum(-1)
    return per.mean(0).detach() / 2
