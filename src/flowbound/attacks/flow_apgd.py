"""A flow attack in the style of APGD (Croce & Hein, 2020), on any threat set.

Beyond the paper: the upper end of Figure 12's bracket. The threat sets are
those of the per-digit certificate (:mod:`flowbound.threat.sets`): for tied flows
(||M r||_2 <= eps, Eq. 3) and full flows (||M du||^2 + ||M dv||^2 <= 2 eps^2,
l_diff <= sqrt(2) eps, Eq. 2) the search runs on a plain l2 ball in z = M r (r =
M^{-1} z; for full flows z stacks M du and M dv), of radius eps or sqrt(2) eps; a
box threat set is searched in the flow itself with sign steps (APGD's l_inf form).
The attack runs APGD's
schedule: normalised gradient steps of size eta (2 R at first), a
momentum of 0.25 on the previous step, and at checkpoints p_j (0, 0.22, then
gaps shrinking by 0.03 down to 0.06 of the run) eta halves and the run
restarts from its best point when fewer than 75% of the steps since the last
checkpoint lowered the loss, or when neither eta nor the best loss changed.
Each run minimises a margin: the Carlini-Wagner margin f_y - max_{j != y} f_j
(``restarts`` runs from random starts), then f_y - f_t for the ``targets``
classes t the clean image scores highest after y (one run each, APGD-T's
way). An image leaves the batch once fooled. Every score computed on the way
enters ``margins``: the smallest f_y - f_j seen per class, which a sound
certificate can never exceed.

Used in: Beyond the paper: certifying individual digits (Figure 12's attack,
the soundness count), the per-digit certificate's tests.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from flowbound.attacks.result import AttackResult
from flowbound.checks import check_device, check_images, check_int, check_labels, check_number
from flowbound.networks.chain import image_model
from flowbound.threat.geometry import m_inv_tensor
from flowbound.threat.sets import TIED, ThreatSet, threat_set
from flowbound.threat.warp import warp, warp_and_jacobian

__all__ = ["FlowAttackResult", "checkpoints", "flow_apgd"]


#: The dtypes the attack computes in (half precision cannot resolve its steps).
_DTYPES = (torch.float32, torch.float64)

#: APGD's constants: momentum weight on the new step, the share of improving steps a
#: checkpoint asks for.
_ALPHA, _RHO = 0.75, 0.75


@dataclass(frozen=True, kw_only=True)
class FlowAttackResult(AttackResult):
    """images g(r; x) (B, H, W); flows r (B, H, W) tied or (B, 2, H, W) (du, dv);
    success (B,) (the returned image is misclassified, checked by a forward pass);
    budget (B,) ||z||_2 / R * eps, the budget the flow uses (<= eps); margins (B, K),
    the smallest f_y - f_j found per class over every iterate (+inf at j = y)."""

    budget: torch.Tensor
    margins: torch.Tensor


def checkpoints(steps: int) -> list[int]:
    """APGD's checkpoints in a run of ``steps`` steps: ceil(p_j steps) for p_0 = 0,
    p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), below 1."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(q * steps, 9)) for q in p[1:]} - {0, steps})


class _Problem:
    """The images, labels and threat set of one call: flows and scores from z, and
    what the runs found (per image: the best z, its CW margin, success, the smallest
    margin per class)."""

    def __init__(self, model, x, y, threat: ThreatSet, eps: float, clean: torch.Tensor) -> None:
        self.model, self.x, self.y, self.threat = model, x, y, threat
        self.parts = threat.parts
        self.side = x.shape[-1]
        self.mi = m_inv_tensor(self.side, dtype=x.dtype, device=x.device)
        self.radius = threat.radius(eps)
        n = len(x)
        self.z = torch.zeros(n, self.parts * self.side**2, dtype=x.dtype, device=x.device)
        self.margins = torch.full((n, clean.shape[1]), math.inf, dtype=torch.float64)
        self.margins = self.margins.to(x.device)
        self.cw = torch.full((n,), math.inf, dtype=torch.float64, device=x.device)
        self.success = torch.zeros(n, dtype=torch.bool, device=x.device)
        self.record(torch.arange(n, device=x.device), self.z, clean)

    def flows(self, z: torch.Tensor) -> torch.Tensor:
        """The flows of z (:meth:`~flowbound.threat.sets.ThreatSet.flows`)."""
        return self.threat.flows(z, self.side, self.mi)

    @torch.no_grad()
    def record(self, rows: torch.Tensor, z: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Keep what the scores at z show; returns which of ``rows`` are fooled."""
        m = scores.detach().double()
        y = self.y[rows]
        m = m.gather(1, y[:, None]) - m
        self.margins[rows] = torch.minimum(self.margins[rows], m)
        cw = m.scatter(1, y[:, None], math.inf).amin(1)
        better = cw < self.cw[rows]
        self.cw[rows[better]] = cw[better]
        self.z[rows[better]] = z.detach()[better]
        fooled = scores.detach().argmax(1) != y
        self.success[rows[fooled]] = True
        return fooled


def _margin(scores: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    own = scores.gather(1, y[:, None])[:, 0]
    if target is not None:
        return own - scores.gather(1, target[:, None])[:, 0]
    return own - scores.scatter(1, y[:, None], -math.inf).amax(1)


def _loss_and_grad(prob: _Problem, rows, z, target, grad: bool = True):
    """Scores, margins and the margins' gradient in z. The warp's own derivative is
    applied pixel by pixel (:func:`~flowbound.threat.warp.warp_and_jacobian`: what autograd
    computes through the warp's gathers, without building their graph), then
    r = M^{-1} z carries it to z (M^{-1} is symmetric)."""
    with torch.no_grad():
        r = prob.flows(z)
        images, jac = warp_and_jacobian(prob.x[rows], r)
    with torch.enable_grad():  # also when called under no_grad
        images.requires_grad_(grad)
        scores = prob.model(images)
        loss = _margin(scores, prob.y[rows], target)
        g_img = torch.autograd.grad(loss.sum(), images)[0] if grad else None
    g = None
    if grad:
        g_r = jac * (g_img if prob.parts == 1 else g_img[:, None])
        g = prob.threat.grad_z(g_r, prob.side, prob.mi)
    return scores.detach(), loss.detach(), g


def _run(prob: _Problem, rows, z, target, steps: int) -> None:
    """One APGD run of ``steps`` steps from z (len(rows), P d) on images ``rows``,
    minimising the margin against ``target`` (None: the CW margin); a fooled image
    leaves the run."""
    marks = set(checkpoints(steps))
    eta = torch.full((len(rows),), 2.0 * prob.radius, dtype=z.dtype, device=z.device)
    prev = z
    best_z, best = z, torch.full_like(eta, math.inf)
    improved, last = torch.zeros_like(eta), None
    eta_mark, best_mark = eta, best
    since = 0
    for step in range(steps + 1):
        scores, loss, grad = _loss_and_grad(prob, rows, z, target, grad=step < steps)
        fooled = prob.record(rows, z, scores)
        better = loss < best
        best_z = torch.where(better[:, None], z, best_z)
        best = torch.where(better, loss, best)
        if last is not None:
            improved = improved + (loss < last).to(improved.dtype)
        last = loss
        if step == steps or bool(fooled.all()):
            return
        if bool(fooled.any()):  # a fooled image is done
            k = ~fooled
            rows, z, grad, prev, last = rows[k], z[k], grad[k], prev[k], last[k]
            eta, best_z, best, improved = eta[k], best_z[k], best[k], improved[k]
            eta_mark, best_mark = eta_mark[k], best_mark[k]
            target = None if target is None else target[k]
        since += 1
        if step in marks:  # halve eta and go back to the best point where the run stalls
            stuck = (improved < _RHO * since) | ((eta == eta_mark) & (best == best_mark))
            if bool(stuck.any()):
                eta = torch.where(stuck, eta / 2, eta)
                z = torch.where(stuck[:, None], best_z, z)
                prev = torch.where(stuck[:, None], best_z, prev)
                _, _, g_best = _loss_and_grad(prob, rows, z, target)
                grad = torch.where(stuck[:, None], g_best, grad)
            eta_mark, best_mark = eta, best
            improved, since = torch.zeros_like(improved), 0
        unit = prob.threat.direction(grad)
        nxt = prob.threat.project(z - eta[:, None] * unit, prob.radius)
        if step > 0:  # APGD's momentum: a share of the previous step
            nxt = z + _ALPHA * (nxt - z) + (1 - _ALPHA) * (z - prev)
            nxt = prob.threat.project(nxt, prob.radius)
        prev, z = z, nxt


def flow_apgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    threat: str | ThreatSet = TIED,
    steps: int = 100,
    restarts: int = 1,
    targets: int = 3,
    seed: int = 0,
    domain: str = "unit",
    device: str | torch.device | None = None,
    search_dtype: torch.dtype | None = None,
) -> FlowAttackResult:
    """The strongest flow attack here, within budget eps (module notes): ``restarts``
    untargeted runs, then one targeted run against each of the ``targets`` classes the
    clean image scores highest after y; ``steps`` steps each. Computed in the model's
    dtype on ``device`` (default: the model's); results on x's device and dtype.

    ``search_dtype`` (e.g. float32 for a float64 model, about 2x faster on a CPU): the
    runs use a copy of the model in that dtype; the best flows found are then projected
    onto the budget, warped and classified again in the model's own dtype, so
    ``success``, ``images``, ``flows`` and ``budget`` are the model's own arithmetic
    (``margins`` stay the search's scores).

    An image's result does not depend on the other images of the batch (its random
    starts are drawn for every image, in order, whichever images still run)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model = image_model(model)  # a Sequential: the images in the shape its first layer reads
    x = check_images("x", x, domain=domain)
    y = check_labels("y", y, len(x))
    eps = check_number("eps", eps, low=0.0, low_open=True)
    threat = threat_set(threat)
    steps = check_int("steps", steps)
    restarts = check_int("restarts", restarts)
    targets = check_int("targets", targets, low=0)
    seed = check_int("seed", seed, low=0)
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(
            f"x must hold square images (B, s, s): M is built per side; got {tuple(x.shape)}"
        )
    p = next(model.parameters(), None)
    if p is None:
        raise TypeError(f"model ({type(model).__name__}) has no parameters")
    dev = check_device("device", device) or p.device
    own = p.dtype
    if own not in _DTYPES:
        raise TypeError(
            f"model must hold float32 or float64 parameters (the attack's budget and "
            f"success are checked in its dtype), got {own}"
        )
    if not all(bool(torch.isfinite(q).all()) for q in model.parameters()):
        raise ValueError(f"model ({type(model).__name__}) has NaN or inf parameters")
    search = own if search_dtype is None else search_dtype
    if search not in _DTYPES:
        raise TypeError(
            f"search_dtype must be torch.float32, torch.float64 or None (the model's "
            f"dtype), got {search!r}; half precision cannot resolve the warp's small steps"
        )
    net = model if search == own else copy.deepcopy(model).to(search)
    xs, ys = x.detach().to(dev, search), y.to(dev)
    n = len(xs)
    clean = _scores(net, xs, n)
    k = clean.shape[1]
    if n and int(ys.max()) >= k:
        raise ValueError(f"y must lie in [0, {k}) for a model with {k} classes")
    prob = _Problem(net, xs, ys, threat, eps, clean)
    order = clean.scatter(1, ys[:, None], -math.inf).argsort(1, descending=True)
    for number, run in enumerate([None] * restarts + list(range(min(targets, k - 1)))):
        # drawn for every image from a generator per run, so an image's starts depend
        # on its place in the batch only, not on the batch's size or which images still run
        gen = torch.Generator().manual_seed(seed * 1_000_003 + number)
        u = torch.rand(n, prob.z.shape[1], generator=gen, dtype=torch.float64)
        # Gaussian by the inverse CDF, element by element (torch's randn transforms
        # blocks of 16 draws, so an image's draws would depend on the batch's size)
        z0 = math.sqrt(2.0) * torch.erfinv(2 * u.clamp(1e-12, 1 - 1e-12) - 1)
        z0 = threat.start(z0.to(dev, search), u.to(dev, search), prob.radius)
        rows = torch.nonzero(~prob.success).squeeze(1)
        if len(rows) == 0:
            break
        _run(prob, rows, z0[rows], None if run is None else order[rows, run], steps)
    with torch.no_grad():
        # the best z, projected in float64 (the search's rounding may leave it just
        # outside the ball), its flows in x's dtype, their budget rechecked in float64
        z = threat.project(prob.z.double(), prob.radius)
        flows, used = _within_budget(prob, z, x.dtype)
        images = warp(x.detach().to(dev, own), flows.to(own)).to(x.dtype)
        # success is what the model says of the images returned, in the dtype returned
        success = model(images.to(own)).argmax(1) != ys
    margins = prob.margins.scatter(1, ys[:, None], math.inf)
    budget = used * (eps / prob.radius)
    return FlowAttackResult(
        images=images.to(x.device),
        flows=flows.to(x.device),
        success=success.to(x.device),
        budget=budget.to(x.device),
        margins=margins.to(x.device),
    )


def _scores(net: nn.Module, xs: torch.Tensor, n: int) -> torch.Tensor:
    """The model's clean scores, checked: (B, K) with K >= 2, finite."""
    try:
        with torch.no_grad():
            clean = net(xs)
    except (RuntimeError, IndexError, ValueError) as exc:
        raise ValueError(
            f"the model could not score x of shape {tuple(xs.shape)} (images (B, H, W)): "
            f"{' '.join(str(exc).split())[:200]}"
        ) from None
    if not isinstance(clean, torch.Tensor) or clean.dim() != 2 or clean.shape[0] != n:
        got = tuple(clean.shape) if isinstance(clean, torch.Tensor) else type(clean).__name__
        raise ValueError(f"the model must return scores of shape (B, K) = ({n}, K), got {got}")
    if clean.shape[1] < 2:
        raise ValueError(f"the model must score at least 2 classes, got {clean.shape[1]}")
    if n and not bool(torch.isfinite(clean).all()):
        raise ValueError("the model's scores of x have NaN or inf entries")
    return clean


def _within_budget(prob: _Problem, z: torch.Tensor, dtype: torch.dtype):
    """The flows of z in ``dtype`` whose size, recomputed from them in float64
    (:meth:`~flowbound.threat.sets.ThreatSet.size`), is at most the radius: a flow that
    the cast pushed past it is shrunk until it is not. Returns (flows, that size)."""
    s, n = prob.side, len(z)
    mi = m_inv_tensor(s, dtype=torch.float64, device=z.device)
    r64 = prob.threat.flows(z, s, mi)
    r = r64.to(dtype)
    scale = torch.ones(n, dtype=torch.float64, device=z.device)
    tiny = torch.finfo(dtype).eps
    grow = (slice(None),) + (None,) * (r64.dim() - 1)
    for _ in range(60):
        norm = prob.threat.size(r)
        over = norm > prob.radius
        if not bool(over.any()):
            return r, norm
        scale = torch.where(over, scale * (prob.radius / norm) * (1 - 4 * tiny), scale)
        r = torch.where(over[grow], r64 * scale[grow], r64).to(dtype)
    raise FloatingPointError("flow_apgd could not bring a flow within its budget")
