"""Step 3 of the per-digit certificate: through the network.

Pre-activation bounds of h = W g(r; x) from the pixel bounds (step 1) and the flow
terms' values (step 2), and the CROWN relaxation of c^T relu(h): stable neurons
exactly, an unstable one by the chord above and a line alpha h below (alpha in
[0, 1]; by default 1 where u > -l, else 0).

Used in: :mod:`flowbound.certificates.local`, ``benchmarks/certificate_slack.py``.
"""

from __future__ import annotations

import torch

from flowbound.certificates.ellipsoid import FlowTerms
from flowbound.certificates.pixels import PixelBounds
from flowbound.networks.view import NetView

__all__ = [
    "back_substituted",
    "chain_pre_activation_bounds",
    "over_threat",
    "pre_activation_bounds",
    "relaxed_output",
]


def _check_relaxation(low, up, c, lower) -> None:
    for name, t in (("low", low), ("up", up), ("c", c), ("lower", lower)):
        if t is None and name == "lower":
            continue
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor, got {t!r:.80}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} has NaN or inf entries")
    if low.dim() != 2 or up.shape != low.shape:
        raise ValueError(
            f"low and up must both have shape (N, h), got {tuple(low.shape)} and {tuple(up.shape)}"
        )
    if bool((low > up).any()):
        raise ValueError("low must be <= up everywhere (pre-activation bounds l <= h <= u)")
    n, h = low.shape
    if c.dim() != 3 or c.shape[0] != n or c.shape[2] != h:
        raise ValueError(f"c must have shape (N, K, h) = ({n}, K, {h}), got {tuple(c.shape)}")
    if lower is not None:
        if lower.dim() != 3 or lower.shape[0] != n or lower.shape[2] != h:
            raise ValueError(
                f"lower must have shape (N, K, h) = ({n}, {c.shape[1]}, {h}) (or K = 1), got "
                f"{tuple(lower.shape)}"
            )
        if lower.shape[1] not in (1, c.shape[1]):
            raise ValueError(f"lower must have K = 1 or {c.shape[1]} rows, got {lower.shape[1]}")
        if bool(((lower < 0) | (lower > 1)).any()):
            raise ValueError(
                "lower must lie in [0, 1]: a line alpha h lies below relu(h) on [l, u] with "
                "l < 0 < u only for 0 <= alpha <= 1"
            )


def relaxed_output(
    low: torch.Tensor, up: torch.Tensor, c: torch.Tensor, lower: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """CROWN for c^T relu(h) with l <= h <= u (each (N, h); c (N, K, h)): the
    coefficients lam (N, K, h) and constant (N, K) of a linear lower bound
    lam^T h + const. Stable neurons exactly; an unstable one by the chord above
    (where c < 0) and the line ``lower`` h below (where c >= 0): ``lower`` (N, K, h) any
    slopes in [0, 1] (alpha-CROWN), by default 1 where u > -l, else 0.

    Checked first: l and u finite with l <= u, c finite, ``lower`` finite in [0, 1]
    (any other slope is not a lower bound of relu), shapes that agree; a ValueError or
    TypeError names the argument."""
    _check_relaxation(low, up, c, lower)
    return _relaxed_output(low, up, c, lower)


def _relaxed_output(low, up, c, lower=None):
    """:func:`relaxed_output` on the certificate's own bounds (no checks: the training
    surrogate keeps its gradient and its NaN, which the training loop reports)."""
    active, dead = low >= 0, up <= 0
    unstable = ~(active | dead)
    width = torch.where(unstable, up - low, torch.ones_like(up))
    upper_slope = torch.where(unstable, up / width, active.to(up.dtype))
    upper_icpt = torch.where(unstable, -up * low / width, torch.zeros_like(up))
    if lower is None:
        lower_slope = torch.where(unstable, (up > -low).to(up.dtype), active.to(up.dtype))
        lower = lower_slope[:, None]
    else:
        lower = torch.where(unstable[:, None], lower, active[:, None].to(up.dtype))
    pos = c >= 0
    lam_ = torch.where(pos, lower, upper_slope[:, None]) * c
    const = (torch.where(pos, 0.0, c) * upper_icpt[:, None]).sum(-1)
    return lam_, const


def _box(low, up, a, bias):
    """Interval arithmetic for A v + b with low <= v <= up (each (N, n)): the centre
    (N, m) and the half-width (N, m) of its box."""
    centre = (low + up) / 2 @ a.T
    if bias is not None:
        centre = centre + bias
    return centre, (up - low) / 2 @ a.abs().T


def pre_activation_bounds(
    net: NetView, pb: PixelBounds, flow: FlowTerms, idx, chunk: int, skip: bool, bias=None
):
    """Bounds (l, u) of h = W g(r; x) + b (``bias`` b (h,) or None), each (N, h); with
    ``skip``, the ellipsoid values only for the neurons that the box values leave
    unstable (:meth:`FlowTerms.shared`)."""
    centre, spread = _box(pb.lower, pb.upper, net.w, bias)
    decided = (centre, spread) if skip else None
    v = flow.shared(net.w, pb, idx, chunk, decided)
    return centre - spread - v.linear - v.down, centre + spread + v.linear + v.up


#: Deeper layers: rows (images x rows x inputs) back-substituted at once, at most.
_ROW_ENTRIES = 1 << 24


def back_substituted(stages, bounds, top: int, rows: torch.Tensor, const: torch.Tensor):
    """CROWN back-substitution: a linear lower bound rows^T relu(z) + const of the
    input of stage ``top`` (z the pre-activations of stage top - 1, bounded by
    ``bounds``), carried through every ReLU and stage below it: (rows on the network's
    input (N, R, n_0), constant (N, R)). Stages are
    :class:`~flowbound.networks.chain.Stage`."""
    for j in range(top - 1, -1, -1):
        low, up = bounds[j]
        lam_, c0 = _relaxed_output(low, up, rows)
        const = const + c0
        stage = stages[j]
        if stage.bias is not None:
            const = const + lam_ @ stage.bias
        rows = stage.back(lam_)
    return rows, const


def over_threat(rows, const, pb: PixelBounds, flow: FlowTerms, idx, chunk: int) -> torch.Tensor:
    """A lower bound (N, R) of rows^T g(r; x) + const over the threat set: the pixel
    offsets at their interval's worst end, the flow terms at their values (step 2)."""
    mid, rad = (pb.lower + pb.upper) / 2, (pb.upper - pb.lower) / 2
    out = const + (rows * mid[:, None]).sum(-1) - (rows.abs() * rad[:, None]).sum(-1)
    v = flow.per_image(rows, pb, idx, chunk)
    return out - v.linear - v.down


def _unsettled(stage, a, below):
    """(the neurons of ``stage`` worth back-substituting, their box bounds or None): the
    box (interval) bounds of A relu(z) + b from the bounds of z below already fix the
    sign of most neurons, and the ReLU relaxation reads only the sign of a neuron whose
    sign is fixed; the others (unstable for some image) are back-substituted. Without a
    dense A (a stage too large to form), every neuron."""
    if a is None:
        return torch.arange(stage.n_out, device=below[0].device), None
    centre, spread = _box(below[0].clamp(min=0), below[1].clamp(min=0), a, stage.bias)
    low, up = centre - spread, centre + spread
    open_ = ((low < 0) & (up > 0)).any(0)
    return torch.nonzero(open_).squeeze(1), (low, up)


def chain_pre_activation_bounds(
    stages, pb: PixelBounds, flow: FlowTerms, idx, chunk, skip, deeper: str = "crown"
):
    """Bounds (l, u) of every ReLU's input, first to last: the first stage's rows are the
    same for every image (:func:`pre_activation_bounds`, the ellipsoid values only where
    the box leaves a neuron unstable with ``skip``), a deeper stage's by back-substitution
    through the ReLUs below it (:func:`back_substituted`), lower and upper bound as the
    lower bounds of z and -z, in blocks of rows, for the neurons whose sign the box
    bounds leave open (:func:`_unsettled`), the box bounds for the others.
    ``deeper="interval"``: every deeper stage takes its box bounds (interval
    propagation from the first stage's bounds, CROWN-IBP's intermediate bounds: looser,
    a fraction of the cost) wherever the stage has a dense matrix."""
    n = len(pb.lower)
    bounds = []
    for k, stage in enumerate(stages[:-1]):
        a = stage.matrix()
        if k == 0 and a is not None:
            first = NetView(a, a)  # rows W = A_0, the same for every image
            bounds.append(
                pre_activation_bounds(first, pb, flow, idx, chunk, skip=skip, bias=stage.bias)
            )
            continue
        rows_of, box = _unsettled(stage, a, bounds[k - 1])
        if deeper == "interval" and box is not None:
            rows_of = rows_of[:0]
        widest = max(s.n_in for s in stages[: k + 1])
        block = max(1, _ROW_ENTRIES // max(1, 2 * n * widest))
        lows, ups = [], []
        for s in range(0, len(rows_of), block):
            which = rows_of[s : s + block]
            if a is not None:
                a_part = a[which]  # (b, n_in)
            else:
                eye = torch.eye(stage.n_out, dtype=pb.lower.dtype, device=pb.lower.device)
                a_part = stage.back(eye[which])
            rows = torch.cat([a_part, -a_part])[None].expand(n, -1, -1)
            if stage.bias is None:
                const = torch.zeros(n, len(rows[0]), dtype=rows.dtype, device=rows.device)
            else:
                b = stage.bias[which]
                const = torch.cat([b, -b])[None].expand(n, -1)
            rows, const = back_substituted(stages, bounds, k, rows, const)
            lower = over_threat(rows, const, pb, flow, idx, chunk)
            m = len(a_part)
            lows.append(lower[:, :m])
            ups.append(-lower[:, m:])
        if box is None:
            bounds.append((torch.cat(lows, 1), torch.cat(ups, 1)))
            continue
        low, up = box
        if len(rows_of):  # the tighter of the box and back-substituted values
            low, up = low.clone(), up.clone()
            low[:, rows_of] = torch.maximum(low[:, rows_of], torch.cat(lows, 1))
            up[:, rows_of] = torch.minimum(up[:, rows_of], torch.cat(ups, 1))
        bounds.append((low, up))
    return bounds
