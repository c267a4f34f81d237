"""Gradient attacks with a hard budget: L_inf PGD (Madry et al., 2018) on pixels and
flow_pgd on tied flows with ||M r||_2 <= eps (Eq. 3).

Batched pure functions over images (B, H, W) in [0, 1] and a classifier returning
scores (B, K); the inputs are never modified.

Used in: Introduction (Figure 1), the model zoo (``at_pgd``), Possibility results
(the budgeted attack), Beyond the paper (the former attack of the sides paragraph).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from flowbound.attacks.result import AttackResult
from flowbound.attacks.stadv import cw_margin
from flowbound.checks import DOMAINS, check_images, check_int, check_labels, check_number
from flowbound.threat.geometry import flow_norm, m_inv_tensor
from flowbound.threat.warp import warp

__all__ = ["FlowPGDResult", "PGDResult", "flow_pgd", "pgd"]


@dataclass(frozen=True)
class PGDResult(AttackResult):
    """PGD output: adversarial images (B, H, W) and per-image success (B,); no flows."""


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool = True,
    seed: int = 0,
    domain: str = "unit",
) -> PGDResult:
    """Untargeted L_inf PGD on the cross-entropy (Madry et al., 2018).

    Every iterate stays in the eps-ball around x and in the pixel ``domain``
    (``"unit"`` [0, 1] or ``"symmetric"`` [-1, 1]), which x must lie in.
    """
    check_images("x", x, domain=domain)
    check_labels("y", y, len(x))
    eps = check_number("eps", eps, low=0.0)
    alpha = check_number("alpha", alpha, low=0.0, low_open=True)
    steps = check_int("steps", steps)
    lo, hi = DOMAINS[domain]
    x = x.detach()
    adv = x.clone()
    if random_start:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        noise = (torch.rand(x.shape, generator=gen, dtype=x.dtype) * 2 - 1) * eps
        adv = (x + noise.to(x.device)).clamp(lo, hi)
    for _ in range(steps):
        adv.requires_grad_(True)
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(model(adv), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + alpha * grad.sign()
        adv = torch.minimum(torch.maximum(adv, x - eps), x + eps).clamp(lo, hi)
    if len(x) == 0:
        return PGDResult(adv.detach(), torch.zeros(0, dtype=torch.bool, device=x.device))
    with torch.no_grad():
        success = model(adv).argmax(1) != y
    return PGDResult(adv.detach(), success)


@dataclass(frozen=True, kw_only=True)
class FlowPGDResult(AttackResult):
    """Images g(r; x) (B, H, W), tied flows r, success (B,) and ||M r|| (B,)."""

    budget: torch.Tensor


def _adam_rows(
    s: torch.Tensor, opt: torch.optim.Adam, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.optim.Adam]:
    """The rows ``keep`` of the parameter ``s`` with a new Adam that continues the old one
    on them (its moments and step count): Adam is elementwise, so each row's steps are
    the same as if the other rows had stayed."""
    state = opt.state[s]
    kept = s.detach()[keep].requires_grad_(True)
    new = torch.optim.Adam([kept], **{k: opt.defaults[k] for k in ("lr", "betas", "eps")})
    if state:
        new.state[kept] = {
            "step": state["step"].clone(),
            "exp_avg": state["exp_avg"][keep],
            "exp_avg_sq": state["exp_avg_sq"][keep],
        }
    return kept, new


def flow_pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int = 100,
    lr: float = 0.05,
    restarts: int = 1,
    seed: int = 0,
    domain: str = "unit",
) -> FlowPGDResult:
    """Beyond the paper: a flow attack with a hard budget ||M r||_2 <= eps (Eq. 3).

    Minimises the Carlini-Wagner margin f_y - max_{j != y} f_j of g(r; x)
    over tied flows, parametrised as r = M^{-1} s with ||s||_2 <= eps (the
    ellipsoid as a ball), by Adam on s projected after every step, from
    ``restarts`` random starts inside the ball. Unlike stAdv's fixed trade-off
    tau * L_flow against the margin, success at a budget does not depend on
    the scale of the network's scores. Returns the first fooling flow found
    per image, else the last iterate. A fooled image leaves the batch (its
    later steps could not change what is returned), so a run costs steps x
    the images still standing.
    """
    check_images("x", x, domain=domain)
    check_labels("y", y, len(x))
    eps = check_number("eps", eps, low=0.0, low_open=True)
    lr = check_number("lr", lr, low=0.0, low_open=True)
    steps = check_int("steps", steps)
    restarts = check_int("restarts", restarts)
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(
            f"flow_pgd needs square images (M is built per side), got {tuple(x.shape)}"
        )
    side = x.shape[-1]
    if len(x) == 0:
        empty = torch.zeros(0, dtype=torch.bool, device=x.device)
        return FlowPGDResult(x.clone(), empty, flows=x.clone(), budget=x.new_zeros(0))
    dev, dt = x.device, x.dtype
    mi = m_inv_tensor(side, dtype=dt, device=dev)
    x = x.detach()
    b = len(x)
    gen = torch.Generator().manual_seed(seed)
    best_r = torch.zeros_like(x)
    success = torch.zeros(b, dtype=torch.bool, device=dev)
    for _ in range(restarts):
        # drawn for every image, so an image's start does not depend on which still run
        s0 = torch.randn(b, side * side, generator=gen, dtype=dt).to(dev)
        s0 = s0 * (0.5 * eps / s0.norm(dim=1, keepdim=True))
        rows = torch.nonzero(~success).squeeze(1)  # a fooled image is done: its flow is kept
        if len(rows) == 0:
            continue
        s = s0[rows].requires_grad_(True)
        xa, ya = x[rows], y[rows]
        opt = torch.optim.Adam([s], lr=lr * eps)
        # One forward per step: the scores at the iterate of step k - 1 are checked
        # (fooled images stop with that flow) and give the gradient of step k.
        for step in range(steps + 1):
            with torch.set_grad_enabled(step < steps):
                r = (s @ mi).reshape(-1, side, side)
                scores = model(warp(xa, r))
            keep = None
            if step > 0:
                with torch.no_grad():
                    fooled = scores.argmax(1) != ya
                    best_r[rows] = r.detach()  # the first fooling flow, or the last iterate
                    success[rows[fooled]] = True
                if step == steps or bool(fooled.all()):
                    break
                keep = ~fooled if bool(fooled.any()) else None
            opt.zero_grad()
            with torch.enable_grad():  # also when called under no_grad
                margin = cw_margin(scores, ya)
                (margin if keep is None else margin[keep]).sum().backward()
            if keep is not None:
                grad = s.grad[keep]
                rows, xa, ya = rows[keep], xa[keep], ya[keep]
                s, opt = _adam_rows(s, opt, keep)
                s.grad = grad
            opt.step()
            with torch.no_grad():
                s.mul_((eps / s.norm(dim=1, keepdim=True).clamp_min(1e-30)).clamp(max=1.0))
    with torch.no_grad():
        images = warp(x, best_r)
        success = model(images).argmax(1) != y
    budget = torch.from_numpy(flow_norm(best_r.cpu())).to(dev)
    return FlowPGDResult(images, success, flows=best_r, budget=budget)
