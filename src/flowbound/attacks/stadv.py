"""stAdv (Xiao et al., 2018): a flow attack with stAdv's flow loss as a penalty.

A batched pure function over images (B, H, W) in [0, 1] and a classifier returning
scores (B, K), optimised in float64 by the batched L-BFGS; the inputs are never
modified. Also the flow loss (both forms and borders) and the Carlini-Wagner
margin.

Used in: Introduction (Figure 1), the model zoo (``at``), Possibility results
(Figure 6).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from flowbound.attacks.lbfgs import lbfgs
from flowbound.attacks.result import AttackResult
from flowbound.checks import check_images, check_int, check_labels, check_number
from flowbound.device import chunk_size
from flowbound.progress import bar as progress_bar
from flowbound.threat.geometry import l_diff
from flowbound.threat.warp import shifted, warp, warp_and_jacobian

__all__ = ["BORDERS", "StAdvResult", "cw_margin", "flow_loss", "flow_loss_and_grad", "stadv"]


_SHIFTS = ((-1, 0), (1, 0), (0, -1), (0, 1))


#: Border rules of :func:`flow_loss`: what a missing neighbour's flow reads as.
BORDERS = ("zero", "symmetric")


def flow_loss(
    flow: torch.Tensor, *, form: str = "stadv", delta: float = 1e-8, border: str = "zero"
) -> torch.Tensor:
    """Smoothness of a flow (B, 2, H, W), per image (B,).

    ``form="stadv"`` is L_flow of Xiao et al. (2018, Eq. 4): a square root per
    pair (pixel p, neighbour q), sum_p sum_q sqrt(|du_p - du_q|^2 +
    |dv_p - dv_q|^2 + delta), over the 4 neighbours. ``form="paper"`` is the
    seed paper's Eq. (2): one square root over the whole sum (l_diff).

    ``border`` says what a neighbour outside the image reads: ``"zero"``
    (flow 0, the zero-fill of Proposition 1 and of M; a uniform half-pixel
    shift of a 28 x 28 image then costs about 79 under ``form="stadv"``) or
    ``"symmetric"`` (the pixel's own flow, as the symmetric padding of the
    public ``stadv`` TensorFlow package's ``flow_loss``; the same shift costs
    4 * 784 * sqrt(delta), about 0.31). ``delta`` = 1e-8 is that package's
    default epsilon; it keeps the square roots differentiable at 0.
    """
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must have shape (B, 2, H, W), got {tuple(flow.shape)}")
    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
    diffs = []
    for dr, dc in _SHIFTS:
        nb = shifted(flow, dr, dc)
        if border == "symmetric":
            nb = nb + flow * (1 - shifted(torch.ones_like(flow), dr, dc))
        diffs.append(((flow - nb) ** 2).sum(1))
    sq = torch.stack(diffs)
    if form == "stadv":
        return torch.sqrt(sq + delta).sum(dim=(0, 2, 3))
    if form == "paper":
        return torch.sqrt(sq.sum(dim=(0, 2, 3)) + delta)
    raise ValueError(f"form must be 'stadv' or 'paper', got {form!r}")


def _pair_weights(n: int, like: torch.Tensor) -> torch.Tensor:
    """How often each of the n + 1 neighbour pairs along one axis (padded border
    pairs first and last) enters L_flow: twice inside (each pixel's own term),
    once at the border (only the pixel inside has a term)."""
    w = torch.full((n + 1,), 2.0, dtype=like.dtype, device=like.device)
    w[0] = w[-1] = 1.0
    return w


def flow_loss_and_grad(
    flow: torch.Tensor, *, form: str = "stadv", delta: float = 1e-8, border: str = "zero"
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`flow_loss` (B,) and its gradient with respect to ``flow`` (B, 2, H, W),
    in closed form (the attacks' hot path; tested against autograd of ``flow_loss``).

    Every pair of neighbours (p, q) enters L_flow twice (p's term and q's), a
    pair of a pixel and a missing neighbour once. Padding the flow by one
    pixel (zeros for ``border="zero"``; the edge value, a difference of 0, for
    ``"symmetric"``) turns both into differences along each axis with
    weights 2 inside and 1 at the border.
    """
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must have shape (B, 2, H, W), got {tuple(flow.shape)}")
    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
    if form not in ("stadv", "paper"):
        raise ValueError(f"form must be 'stadv' or 'paper', got {form!r}")
    _, _, h, w = flow.shape
    mode = "constant" if border == "zero" else "replicate"
    padded = torch.nn.functional.pad(flow, (1, 1, 1, 1), mode=mode)
    d_cols = padded[:, :, 1:-1, 1:] - padded[:, :, 1:-1, :-1]  # (B, 2, H, W + 1)
    d_rows = padded[:, :, 1:, 1:-1] - padded[:, :, :-1, 1:-1]  # (B, 2, H + 1, W)
    w_cols = _pair_weights(w, flow).view(1, 1, w + 1)
    w_rows = _pair_weights(h, flow).view(1, h + 1, 1)
    sq_cols, sq_rows = (d_cols**2).sum(1), (d_rows**2).sum(1)
    if form == "stadv":
        root_cols, root_rows = torch.sqrt(sq_cols + delta), torch.sqrt(sq_rows + delta)
        value = (w_cols * root_cols).sum((1, 2)) + (w_rows * root_rows).sum((1, 2))
        c_cols, c_rows = (w_cols / root_cols).unsqueeze(1), (w_rows / root_rows).unsqueeze(1)
    else:
        total = (w_cols * sq_cols).sum((1, 2)) + (w_rows * sq_rows).sum((1, 2))
        value = torch.sqrt(total + delta)
        inv = (1.0 / value).view(-1, 1, 1, 1)
        c_cols, c_rows = w_cols.unsqueeze(1) * inv, w_rows.unsqueeze(1) * inv
    # pair k along an axis joins pixels k - 1 and k: + for its second pixel, - for its first
    g_cols, g_rows = c_cols * d_cols, c_rows * d_rows
    grad = g_cols[..., :w] - g_cols[..., 1:] + g_rows[..., :h, :] - g_rows[..., 1:, :]
    return value, grad


def cw_margin(
    scores: torch.Tensor, labels: torch.Tensor, *, targeted: bool = False, kappa: float = 0.0
) -> torch.Tensor:
    """Carlini-Wagner margin loss (B,), zero once the goal is met with margin kappa.

    Untargeted (labels = true classes): max(Z_y - max_{j != y} Z_j, -kappa).
    Targeted (labels = targets): max(max_{j != t} Z_j - Z_t, -kappa).
    """
    own = scores.gather(1, labels.unsqueeze(1)).squeeze(1)
    others = scores.scatter(1, labels.unsqueeze(1), float("-inf")).amax(1)
    gap = own - others if not targeted else others - own
    return torch.clamp(gap, min=-kappa)


@dataclass(frozen=True, kw_only=True)
class StAdvResult(AttackResult):
    """stAdv output: images (B, H, W), flows (B, 2, H, W) or (B, H, W), success (B,),
    l_diff (B,) of Eq. (2), iterations (B,), and ``success_final`` (B,).

    ``success`` counts an image as fooled when any iterate fooled it (the
    returned image is the best such iterate; Carlini-Wagner practice);
    ``success_final`` only when the last L-BFGS iterate does (what the public
    stAdv code reports).
    """

    l_diff: torch.Tensor
    iterations: torch.Tensor
    success_final: torch.Tensor


def _per_image(name: str, value: float | torch.Tensor, b: int) -> torch.Tensor:
    """A number >= 0, or one per image (a finite 1-D tensor of length b, >= 0), as (b,)."""
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        if value.shape != (b,) or not bool(torch.isfinite(value).all() & (value >= 0).all()):
            raise ValueError(
                f"{name} must be a number >= 0 or one finite value >= 0 per image, shape ({b},);"
                f" got shape {tuple(value.shape)}"
            )
        return value.detach().to(torch.float64)
    number = check_number(name, value, low=0.0)
    return torch.full((b,), number, dtype=torch.float64)


def _goal_met(scores: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    pred = scores.argmax(1)
    return pred == labels if targeted else pred != labels


def stadv(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    tau: float | torch.Tensor = 0.05,
    steps: int = 100,
    targeted: bool = False,
    tied: bool = False,
    form: str = "stadv",
    border: str = "zero",
    kappa: float = 0.0,
    history: int = 10,
    dtype: torch.dtype = torch.float64,
    domain: str = "unit",
    chunk: int | None = None,
    progress: bool = False,
) -> StAdvResult:
    """Spatially transformed adversarial examples (Xiao et al., 2018), batched.

    Minimises L_adv + tau * L_flow per image with L-BFGS from zero flow, where
    L_adv is the untargeted (or, with ``targeted``, targeted) :func:`cw_margin`
    (kappa = 0) and L_flow is :func:`flow_loss` (``form``, ``border``). Every
    image has its own L-BFGS history, line search and
    stopping, so its result does not depend on the batch. Like Carlini and
    Wagner, the function returns, per image, the iterate of lowest objective
    among those that meet the goal (at kappa = 0 the optimum sits on the
    decision boundary, where the last iterate may fall on either side), or
    the last iterate when none does; ``success_final`` says whether the
    last iterate itself meets the goal.

    Parameters
    ----------
    model : classifier mapping (B, H, W) images to (B, K) scores.
    x, y : images (B, H, W) in [0, 1]; true labels (or targets if ``targeted``).
    tau : weight of the flow loss (0.05 in Xiao et al.), or one weight per image
        (B,): several values of tau in one batch (the rows stay independent).
    steps : L-BFGS iteration cap per image.
    tied : optimise a tied flow du = dv (the seed paper's setting) instead of (du, dv).
    progress : show a bar over the chunks (:mod:`flowbound.progress`).
    chunk : images per L-BFGS batch; None: by device (:func:`~flowbound.device.chunk_size`;
        results do not depend on it; on a 2-core CPU, 1,000 images run about 1.4x
        faster in chunks of 256 than at once: the L-BFGS history of a smaller batch
        stays in cache; a GPU takes thousands).
    domain : the pixel domain x must lie in: ``"unit"`` ([0, 1], default) or
        ``"symmetric"`` ([-1, 1]); NaN, inf or pixels outside raise ValueError.
    dtype : precision of the optimisation (a copy of the model runs in it). In
        float32 the Armijo line search cannot always see the objective's
        decrease at small tau (below float32 resolution of a margin of order
        10): on 1,000 test images against f_nt at tau = 0.0005, success 0.993
        in float32 and 1.000 in float64, the last iterate 0.717 and 0.871
        (benchmarks/RESULTS.md; an earlier version stopped at 0.79 in
        float32). Images are returned in ``x``'s dtype; ``success`` is judged
        in ``dtype``.
    """
    check_images("x", x, domain=domain)
    check_labels("y", y, len(x))
    taus = _per_image("tau", tau, len(x))
    kappa = check_number("kappa", kappa, low=0.0)
    steps = check_int("steps", steps)
    history = check_int("history", history)
    chunk = chunk_size("stadv", x.device) if chunk is None else check_int("chunk", chunk)
    _, h, w = x.shape
    comps = 1 if tied else 2
    out_dtype = x.dtype
    model = copy.deepcopy(model).to(dtype)

    def one_chunk(x: torch.Tensor, y: torch.Tensor, taus: torch.Tensor) -> StAdvResult:
        """stAdv on one chunk of images (every setting above applies)."""
        b = len(x)
        if b == 0:
            empty = torch.zeros(0, dtype=torch.bool, device=x.device)
            shape = (0, h, w) if tied else (0, 2, h, w)
            return StAdvResult(
                images=x.clone(),
                flows=x.new_zeros(shape),
                success=empty,
                l_diff=x.new_zeros(0),
                iterations=torch.zeros(0, dtype=torch.long, device=x.device),
                success_final=empty.clone(),
            )
        x = x.detach().to(dtype)
        taus = taus.to(dtype=dtype, device=x.device)

        def as_flow(v: torch.Tensor) -> torch.Tensor:
            f = v.view(-1, comps, h, w)
            return f.expand(-1, 2, h, w) if tied else f

        def objective(v: torch.Tensor, idx: torch.Tensor):
            # dL_adv/dflow = dL_adv/dg * Dg (Dg diagonal per axis, warp_and_jacobian):
            # autograd runs through the classifier only; L_flow's gradient is in closed form.
            flow = as_flow(v)
            images, jac = warp_and_jacobian(x[idx], flow)
            images.requires_grad_(True)
            with torch.enable_grad():
                scores = model(images)
                margin = cw_margin(scores, y[idx], targeted=targeted, kappa=kappa)
                (d_images,) = torch.autograd.grad(margin.sum(), images)
            smooth, d_smooth = flow_loss_and_grad(flow, form=form, border=border)
            weight = taus[idx]
            grad = d_images.unsqueeze(1) * jac + weight.view(-1, 1, 1, 1) * d_smooth
            grad = grad.sum(1) if tied else grad
            met = _goal_met(scores.detach(), y[idx], targeted)
            return margin.detach() + weight * smooth, grad.reshape(len(idx), -1), met

        best_v = torch.zeros(b, comps * h * w, dtype=x.dtype, device=x.device)
        best_f = torch.full((b,), float("inf"), dtype=x.dtype, device=x.device)
        found = torch.zeros(b, dtype=torch.bool, device=x.device)

        def keep_best(v: torch.Tensor, f: torch.Tensor, idx: torch.Tensor, met: torch.Tensor):
            better = met & (f < best_f[idx])
            best_v[idx[better]] = v[better]
            best_f[idx[better]] = f[better]
            found[idx[met]] = True

        v0 = torch.zeros(b, comps * h * w, dtype=x.dtype, device=x.device)
        everyone = torch.arange(b, device=x.device)
        f0, _, met0 = objective(v0, everyone)
        keep_best(v0, f0, everyone, met0)
        res = lbfgs(objective, v0, max_iter=steps, history=history, callback=keep_best)
        v = torch.where(found.unsqueeze(1), best_v, res.x)
        flows = v.view(b, comps, h, w)
        flows = flows[:, 0] if tied else flows
        final = res.x.view(b, comps, h, w)
        final = final[:, 0] if tied else final
        with torch.no_grad():
            images = warp(x, flows)
            success = _goal_met(model(images), y, targeted)
            success_final = _goal_met(model(warp(x, final)), y, targeted)
        ld = torch.from_numpy(np.asarray(l_diff(flows, full=not tied))).to(out_dtype)
        return StAdvResult(
            images=images.to(out_dtype),
            flows=flows.detach().to(out_dtype),
            success=success,
            l_diff=ld,
            iterations=res.iterations,
            success_final=success_final,
        )

    if len(x) <= chunk:
        return one_chunk(x, y, taus)
    parts = [
        one_chunk(x[i : i + chunk], y[i : i + chunk], taus[i : i + chunk])
        for i in progress_bar(
            range(0, len(x), chunk), desc=f"stAdv, {len(x)} images", disable=not progress,
            unit="chunk",
        )
    ]  # fmt: skip
    names = [f.name for f in dataclasses.fields(StAdvResult)]
    return StAdvResult(**{n: torch.cat([getattr(r, n) for r in parts]) for n in names})
