"""Input-dependent certificates against flows that keep the ellipsoid (beyond the paper).

For f = V relu(W z), an image x of class y and a budget eps, a certified
lower bound of min over the threat set of f_y(g(r; x)) - f_j(g(r; x)) for
every class j; x is certified at eps when it is classified correctly and
every bound is > 0. Two threat sets:

- ``"tied"``: tied flows r (du = dv = r) with ||M r||_2 <= eps (Sections 2-4);
- ``"full"``: flows (du, dv) with ||M du||_2^2 + ||M dv||_2^2 <= 2 eps^2, i.e.
  l_diff(du, dv) <= sqrt(2) eps, the set stAdv's flows live in (Eq. 2; with
  du = dv = r it is the tied set, Prop. 1). It contains the tied set.

The construction, every step in float64:

1. Pixel bounds. Pixel i of g depends on its own flow only. Over the box
   the ellipsoid implies (Prop. 2: |r_i| <= eps lambda_i; |du_i|, |dv_i| <=
   sqrt(2) eps lambda_i for full flows), the tied warp is one quadratic per
   integer cell of r_i and the full warp one bilinear function per cell of
   (du_i, dv_i). The warp has a kink at zero flow (forward differences on one
   side, backward on the other, Readings table, point 9), so each pixel gets
   its two one-sided chords through g_i(0) over the box: their mean a_i is the
   slope, half their difference b_i the kink, g_i(r) = a_i r_i + b_i |r_i| + e_i
   (per axis for full flows, chords averaged over the other axis). The exact
   extremes of e_i over each cell (endpoints and the vertex of each quadratic;
   the corners of each bilinear cell, which never straddle an axis) give
   e_i in [lower_i, upper_i]. Any budget works: a box wider than one pixel spans
   more cells, and past the image the warp reads zeros.
2. Network. Pre-activation bounds of h = W z take, for each flow term, the
   smaller of the ellipsoid value and the box value: eps ||M^{-1} c||_2 (M
   symmetric) or eps sum |c_i| lambda_i for the slope term c = W_k a, and the
   same for the positive and the negative part of W_k b against |r| (|r| stays
   in the ellipsoid: M^T M has no positive entry off its diagonal, so
   ||M |r| || <= ||M r||); the box [lower, upper] for e. A certificate computes
   ellipsoid values only for the neurons that the box values leave unstable (a
   stable neuron's bounds do not enter the margin). The margin c^T relu(h)
   (c = V_y - V_j) is bounded below CROWN-style with the real ReLU slopes:
   stable neurons exactly, unstable ones by the chord above and a line alpha h
   below (alpha = 1 where u > -l, else 0).
3. The last linear function of the flow is minimised over the ellipsoid in
   closed form (again the smaller of ellipsoid and box values, per term).

:func:`certified` tries each digit first with one chord per pixel (the kink
widening each pixel's interval: the certificate as it was before, a third of the
products with the eigenvectors of M^T M) and keeps the kink in the ellipsoid only
for the digits that level leaves open; both levels are sound. On f_nt the cascade
takes 2.1x (tied) and 2.3x (full) the time of the first level alone
(``benchmarks/local_bounds.py --kink``).

Sound by construction: every relaxation is a valid inequality over a
superset of the threat set, and pixel offsets are widened by a rounding
allowance. The bound covers the network's classifier (an STN's transform is
not certified, as in Figure 5).

Used in: Beyond the paper: certifying individual digits (Figure 12).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .checks import (
    check_device,
    check_eps_list,
    check_images,
    check_int,
    check_labels,
    check_number,
)
from .device import chunk_size
from .geometry import aabb_lambda, mtm_eigh
from .nets import NetView, certified_classifier, classifier_input, view, weights
from .progress import bar as progress_bar
from .warp import shifted, warp

__all__ = [
    "THREATS",
    "PixelBounds",
    "certified",
    "certified_margins",
    "pixel_bounds",
    "relaxed_output",
]

THREATS = ("tied", "full")

#: Rounding allowance added to every pixel offset (relative to the pixel scale).
_ROUNDING = 1e-12

#: The flow terms whose ellipsoid value a certificate computes (the others take their
#: box value): every subset is sound; fewer are cheaper and looser.
ELLIPSOID_TERMS = frozenset({"linear", "kink"})

#: The levels :func:`certified` tries a digit at, cheapest first: a digit one level
#: certifies is not tried at the next (each level is sound, so either certifying it is
#: a certificate); the answer is at least the last level's, at a fraction of its cost.
_CASCADE = (frozenset({"linear"}), ELLIPSOID_TERMS)

#: Whether a level of the cascade keeps the kink (False: one chord per pixel, the
#: relaxation the certificate had before, bit for bit).
_KINK_AT = {frozenset({"linear"}): False, ELLIPSOID_TERMS: True}

#: Full flows: rows (knots x images) warped in one call when bounding g over the box.
_KNOT_ROWS = 8192

#: Above this share of the hidden neurons left to bound in a chunk, the ellipsoid value
#: is computed for all of them (gathering their weights would cost more than it saves).
_GATHER_SHARE = 0.6


class PixelBounds(NamedTuple):
    """g_i = a_u_i du_i + b_u_i |du_i| + a_v_i dv_i + b_v_i |dv_i| + e_i, e_i in
    [lower_i, upper_i], for every flow in the box |du_i|, |dv_i| <= radius_i (tied:
    du = dv = r, the v terms None). ``slope`` a is the mean of the two one-sided
    chords through the unwarped pixel, ``kink`` b half their difference: the warp's
    kink at zero flow (forward against backward differences) is kept as b |r|, which
    the ellipsoid bounds (|r| stays in it), instead of widening [lower, upper].
    Shapes (N, d) for slopes, kinks and offsets, (d,) for the radius."""

    slope_u: torch.Tensor
    slope_v: torch.Tensor | None
    lower: torch.Tensor
    upper: torch.Tensor
    radius: torch.Tensor
    kink_u: torch.Tensor
    kink_v: torch.Tensor | None = None


def _check_threat(threat: str) -> str:
    if not isinstance(threat, str) or threat not in THREATS:
        raise ValueError(f"threat must be one of {', '.join(THREATS)}, got {threat!r}")
    return threat


def _side(x: torch.Tensor) -> int:
    """The side s of square images (N, s, s); M and lambda are built per side."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(
            f"x must hold square images (N, s, s): the threat set's M and lambda are built "
            f"per side; got shape {tuple(x.shape)}"
        )
    return x.shape[-1]


def _check_modes(modes, d: int) -> int | None:
    """None (all eigenvectors of M^T M), or an int >= 0; values above d mean all d."""
    if modes is None:
        return None
    if isinstance(modes, bool) or not isinstance(modes, numbers.Integral):
        raise TypeError(
            f"modes must be None or an integer 0 <= modes <= {d} (the eigenvectors of M^T M "
            f"used for the ellipsoid), got {type(modes).__name__} {modes!r}"
        )
    if modes < 0:
        raise ValueError(f"modes must be None or an integer 0 <= modes <= {d}, got {modes}")
    return int(modes)


class _Checked(NamedTuple):
    net: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    modes: int | None
    device: torch.device | None


def _checked(model, x, y, threat, modes, device, classifier_only=False) -> _Checked:
    """Every argument of a certificate, checked before any work (or early return): the
    network (flowbound's own architectures, no biases; a spatial transformer only with
    ``classifier_only=True``), square images of the size the network takes, labels
    among its classes, the threat set, ``modes`` and ``device``."""
    _check_threat(threat)
    net = certified_classifier(model, classifier_only)
    x = check_images("x", x)
    side = _side(x)
    inputs = getattr(net, "W", net.V).weight.shape[1]
    if side * side != inputs:
        raise ValueError(
            f"x has {side} x {side} = {side * side} pixels per image, but the network takes "
            f"{inputs} inputs"
        )
    y = check_labels("y", y, len(x), classes=net.V.weight.shape[0])
    return _Checked(net, x, y, _check_modes(modes, side * side), check_device("device", device))


def _far(side: int) -> int:
    """A shift of at least this many pixels (in either direction) reads only zeros:
    where the box reaches past it, g_i is 0 and the tables stop (bounded memory at any
    eps, still exact)."""
    return side + 1


class _Shifts:
    """x read at (row + q, col + p), flattened (N, d), computed when first asked for."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x, self.n, self.seen = x, len(x), {}

    def __getitem__(self, pq: tuple[int, int]) -> torch.Tensor:
        if pq not in self.seen:
            self.seen[pq] = shifted(self.x, pq[1], pq[0]).reshape(self.n, -1)
        return self.seen[pq]


def _warped(x: torch.Tensor, du: torch.Tensor, dv: torch.Tensor) -> torch.Tensor:
    """g_i(du_i, dv_i) for per-pixel flows du, dv (N, d): the warp of Eq. 1, flattened."""
    n, side = len(x), x.shape[-1]
    flow = torch.stack([du, dv], 1).reshape(n, 2, side, side)
    return warp(x, flow).reshape(n, -1)


def _tied_pieces(x: torch.Tensor, rad: torch.Tensor, up: torch.Tensor, down: torch.Tensor):
    """min and max of g_i(r) - s_i r over |r| <= rad_i, exactly, cell by cell, with the
    slope s = ``up`` for r >= 0 and ``down`` for r < 0 (zero is a cell boundary).

    Cells [c, c + 1] with |c| < :func:`_far` use the four neighbours' values; past
    them g_i = 0, so what is left of the box, [far, rad_i] and [-rad_i, -far], is one
    linear piece each, with its extremes at its ends."""
    far = _far(x.shape[-1])
    k = min(max(1, math.ceil(float(rad.max()))), far)
    table = _Shifts(x)
    lo_all = torch.full_like(up, math.inf)
    hi_all = torch.full_like(up, -math.inf)

    def take(valid, values):
        nonlocal lo_all, hi_all
        for h in values:
            lo_all = torch.minimum(lo_all, torch.where(valid, h, torch.full_like(h, math.inf)))
            hi_all = torch.maximum(hi_all, torch.where(valid, h, torch.full_like(h, -math.inf)))

    for c in range(-k, k):  # cell [c, c + 1]: g = s00 (1-t)^2 + (s01 + s10) t (1-t) + s11 t^2
        left = torch.maximum(-rad, torch.full_like(rad, float(c)))
        right = torch.minimum(rad, torch.full_like(rad, float(c + 1)))
        valid = left <= right
        if not bool(valid.any()):
            continue
        slope = up if c >= 0 else down
        s00, s11 = table[(c, c)], table[(c + 1, c + 1)]
        s01 = table[(c, c + 1)] + table[(c + 1, c)]
        qa = s00 - s01 + s11  # coefficients of t^2, t, 1 with t = r - c
        qb = s01 - 2 * s00
        qc = s00
        left = torch.where(valid, left, torch.zeros_like(left)).expand_as(slope)
        right = torch.where(valid, right, torch.zeros_like(right)).expand_as(slope)
        vertex_t = torch.where(
            qa != 0, (slope - qb) / (2 * torch.where(qa != 0, qa, torch.ones_like(qa))), 0.0
        )
        vertex = (vertex_t + c).clamp(min=left, max=right)
        ts = [(r, r - c) for r in (left, right, vertex)]
        take(valid, [qa * t * t + qb * t + qc - slope * r for r, t in ts])
    beyond = rad > far  # g = 0 on [far, rad] and [-rad, -far]
    if bool(beyond.any()):
        zero = torch.zeros_like(rad)
        for slope, ends in ((up, (rad, float(far))), (down, (-rad, float(-far)))):
            take(
                beyond,
                [-slope * torch.where(beyond, torch.as_tensor(e).to(rad), zero) for e in ends],
            )
    return lo_all, hi_all


def pixel_bounds(
    x: torch.Tensor,
    eps: float,
    *,
    threat: str = "tied",
    dtype: torch.dtype = torch.float64,
    kink: bool = True,
) -> PixelBounds:
    """Sound linear bounds of every warped pixel over the box the budget implies (step 1).

    ``x`` (N, s, s) images, computed in ``dtype`` (float64 for certificates); the box
    is |r_i| <= eps lambda_i (tied) or |du_i|, |dv_i| <= sqrt(2) eps lambda_i (full).
    Any finite eps works in bounded memory: past :func:`_far` pixels g_i is 0.
    ``kink=False``: one chord per pixel (the mean of the two; kinks 0, so the kink
    widens the offset interval instead), the cheaper relaxation of the cascade's
    first level. ``dtype`` must be float64: the rounding allowance is sized for it
    (in float32 the bounds would be beaten by rounding); the training surrogate runs
    the same steps in its model's dtype through ``certified_margins(grad=True)``.
    """
    _check_threat(threat)
    eps = check_number("eps", eps, low=0.0)
    check_images("x", x)
    if dtype != torch.float64:
        raise ValueError(
            f"dtype must be torch.float64: pixel_bounds are certified bounds and their "
            f"rounding allowance is sized for float64, got {dtype!r}"
        )
    if not isinstance(kink, bool):
        raise TypeError(f"kink must be True or False, got {kink!r}")
    return _pixel_bounds(x, eps, threat, dtype, kink)


def _pixel_bounds(
    x: torch.Tensor, eps: float, threat: str, dtype: torch.dtype, kink: bool
) -> PixelBounds:
    """:func:`pixel_bounds` on checked arguments, in any floating ``dtype`` (float64 for
    certificates; the model's own for the training surrogate, which is not one)."""
    side = _side(x)
    x = x.to(dtype)
    n = len(x)
    lam = torch.from_numpy(np.array(aabb_lambda(side))).to(x.device, dtype)
    rad = (eps if threat == "tied" else math.sqrt(2) * eps) * lam
    flat = x.reshape(n, -1)
    scale = _ROUNDING * (1 + flat.abs().amax(1, keepdim=True))
    safe = torch.where(rad > 0, rad, torch.ones_like(rad))
    r = rad.expand(n, -1)

    def chords(plus, zero, minus):  # one-sided chords through g(0): (slope, kink)
        up = torch.where(rad > 0, (plus - zero) / safe, torch.zeros_like(plus))
        down = torch.where(rad > 0, (zero - minus) / safe, torch.zeros_like(plus))
        return up, down

    if threat == "tied":
        plus, minus = _warped(x, r, r), _warped(x, -r, -r)
        if kink:
            up, down = chords(plus, flat, minus)
        else:  # one chord: (plus - minus) / 2 rad, the same slope on both sides
            up = down = torch.where(rad > 0, (plus - minus) / (2 * safe), torch.zeros_like(plus))
        lo, hi = _tied_pieces(x, rad, up, down)
        return PixelBounds((up + down) / 2, None, lo - scale, hi + scale, rad, (up - down) / 2)
    # full flows: per axis the one-sided chords, averaged over the other axis at -r, 0, r;
    # the base a_u u + b_u |u| + a_v v + b_v |v| is linear on each quadrant
    grid = {(i, j): _warped(x, i * r, j * r) for i in (-1, 0, 1) for j in (-1, 0, 1)}
    cu = [chords(grid[(1, j)], grid[(0, j)], grid[(-1, j)]) for j in (-1, 0, 1)]
    cv = [chords(grid[(i, 1)], grid[(i, 0)], grid[(i, -1)]) for i in (-1, 0, 1)]
    up_u, down_u = (sum(c[k] for c in cu) / 3 for k in (0, 1))
    up_v, down_v = (sum(c[k] for c in cv) / 3 for k in (0, 1))
    if kink:
        au, bu = (up_u + down_u) / 2, (up_u - down_u) / 2
        av, bv = (up_v + down_v) / 2, (up_v - down_v) / 2
    else:  # one plane: the mean chords in du and dv
        zero = torch.zeros_like(r)
        au = sum(grid[(1, j)] - grid[(-1, j)] for j in (-1, 0, 1)) / (6 * safe)
        av = sum(grid[(i, 1)] - grid[(i, -1)] for i in (-1, 0, 1)) / (6 * safe)
        au, av = torch.where(rad > 0, au, zero), torch.where(rad > 0, av, zero)
        bu = bv = zero
    # g minus the base is bilinear on each cell (cells never straddle an axis): its
    # extremes sit on the cell corners, so the grid {-rad, integers inside, rad}^2
    # holds them; past _far pixels g = 0, so the integers stop there
    inner = min(max(1, math.ceil(float(rad.max()))) - 1, _far(side))
    knots = [-r, r] + [torch.full_like(r, float(c)).clamp(-r, r) for c in range(-inner, inner + 1)]
    lo = torch.full_like(r, math.inf)
    hi = torch.full_like(r, -math.inf)
    per = max(1, _KNOT_ROWS // max(n, 1))  # knots of dv warped in one call
    for s in range(0, len(knots), per):
        vs = torch.cat(knots[s : s + per])  # (m n, d)
        m = len(vs) // n
        xm = x.repeat(m, 1, 1)
        base_v = av.repeat(m, 1) * vs + bv.repeat(m, 1) * vs.abs()
        au_m, bu_m = au.repeat(m, 1), bu.repeat(m, 1)
        for u in knots:
            um = u.repeat(m, 1)
            h = (_warped(xm, um, vs) - (au_m * um + bu_m * um.abs()) - base_v).view(m, n, -1)
            lo, hi = torch.minimum(lo, h.amin(0)), torch.maximum(hi, h.amax(0))
    return PixelBounds(au, av, lo - scale, hi + scale, rad, bu, bv)


class _Values(NamedTuple):
    """Per row c: the flow term's value sup c^T (a flow) (``linear``), and the kink
    term's sup (c b)^T |flow| split by sign: ``up`` for the part that raises c^T g
    (the positive entries of c b), ``down`` for the part that lowers it (the negative
    ones). Each (N, rows)."""

    linear: torch.Tensor
    up: torch.Tensor | None
    down: torch.Tensor


class _Flow:
    """Values over the threat set of the flow terms of rows c (module notes, step 2):
    sup over flows of sum_t (c a_t)^T flow_t, and of sum_t q_t^T |flow_t| for q = the
    positive or the negative part of c b_t (t = u, or u and v), each the smaller of
    the ellipsoid value and the box value. |flow| lies in the ellipsoid with the flow:
    M^T M has no positive entry off its diagonal, so ||M |r| || <= ||M r||.

    The ellipsoid value needs ||M^{-1} c||^2 = sum_i (q_i^T c)^2 / mu_i over the
    eigenpairs (mu_i, q_i) of M^T M (ascending). With ``modes`` = k < d it is bounded
    above by sum_{i <= k} (q_i^T c)^2 (1 / mu_i - 1 / mu_{k+1}) + ||c||^2 / mu_{k+1}
    (mu_{k+1} <= mu_i for i > k), a sound bound several times cheaper; only pixels
    where a slope or kink is nonzero (the image's support) enter the products with q.
    """

    def __init__(
        self,
        eps: float,
        threat: str,
        side: int,
        device,
        modes: int | None,
        dtype,
        ellipsoid: frozenset[str] = ELLIPSOID_TERMS,
    ) -> None:
        self.ellipsoid = ellipsoid  # the terms whose ellipsoid value is computed
        mu, q = mtm_eigh(side)
        d = side * side
        k = d if modes is None or modes >= d else int(modes)
        self.scale = eps if threat == "tied" else math.sqrt(2) * eps
        weight = 1.0 / mu[:k] - (1.0 / mu[k] if k < d else 0.0)
        q_pad = np.zeros((d + 1, k))  # row d: the padding pixel (zero)
        q_pad[:d] = q[:, :k] * np.sqrt(weight)
        self.q = torch.from_numpy(q_pad).to(device, dtype)
        self.tail = float(1.0 / mu[k]) if k < d else 0.0
        self.lam = torch.from_numpy(np.array(aabb_lambda(side))).to(device, dtype)

    def _finish(self, top, sq, box) -> torch.Tensor:
        ell2 = (top + self.tail * sq) * (1 + 1e-12)  # rounding allowance: never too small
        ell = (ell2 + torch.finfo(ell2.dtype).tiny).sqrt()  # finite gradient at 0
        return self.scale * torch.minimum(ell, box)

    def _box_shared(self, w, pb):
        """(squares, box values) of the three terms for rows W_k: ((N, h) x 3) x 2."""
        w2, wabs = w.square().T, w.abs().T
        wp, wn = w.clamp(min=0).T, (-w).clamp(min=0).T
        sq = [sum(sl.square() @ w2 for sl in _slopes(pb))]
        box = [sum((sl.abs() * self.lam) @ wabs for sl in _slopes(pb))]
        for sign in (1, -1):  # up: (c b)_+ = b_+ w_+ + b_- w_-; down: b_- w_+ + b_+ w_-
            sq.append(
                sum(
                    (sign * kb).clamp(min=0).square() @ wp.square()
                    + (-sign * kb).clamp(min=0).square() @ wn.square()
                    for kb in _kinks(pb)
                )
            )
            box.append(
                sum(
                    ((sign * kb).clamp(min=0) * self.lam) @ wp
                    + ((-sign * kb).clamp(min=0) * self.lam) @ wn
                    for kb in _kinks(pb)
                )
            )
        return sq, box

    def shared(
        self,
        w: torch.Tensor,
        pb: PixelBounds,
        idx: torch.Tensor,
        chunk: int,
        decided: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> _Values:
        """Rows c = W_k (h, d), the same for every image: each value (N, h).

        With ``decided`` = (centre, spread) of the pre-activations without the flow terms
        (both (N, h)), a neuron whose sign the box values already fix gets the box
        values: the ellipsoid could only narrow a bound that the ReLU relaxation of a
        stable neuron does not read, so the margins are the same and the products with
        q are spent on the other neurons."""
        n = len(idx)
        w_pad = torch.cat([w, torch.zeros_like(w[:, :1])], 1).T  # (d + 1, h)
        sq, box = self._box_shared(w, pb)
        top = [torch.zeros_like(sq[0]) for _ in range(3)]
        lin, kin = "linear" in self.ellipsoid, "kink" in self.ellipsoid
        if not (lin or kin):
            decided = None  # nothing to skip
        top = [
            t if on else torch.full_like(t, math.inf)  # inf: the box value
            for t, on in zip(top, (lin, kin, kin), strict=True)
        ]
        need = None
        if decided is not None:
            centre, spread = decided
            reach_up = spread + self.scale * (box[0] + box[1])
            reach_down = spread + self.scale * (box[0] + box[2])
            need = (centre - reach_down < 0) & (centre + reach_up > 0)
            top = [torch.where(need, t, torch.full_like(t, math.inf)) for t in top]  # box
        slopes, kinks = _slopes(pb) if lin else [], _kinks(pb) if kin else []
        for s in range(0, n if (lin or kin) else 0, chunk):
            i = _trimmed(idx[s : s + chunk], self.q.shape[0] - 1)
            cols = None if need is None else _trimmed_rows(need[s : s + chunk])
            if need is not None and cols is None:
                continue  # every neuron of the chunk is decided
            if cols is not None and cols.shape[1] > _GATHER_SHARE * w.shape[0]:
                cols = None  # nearly all neurons: the plain product is cheaper than gathering
            if cols is None:
                # (b, s, h); index_select, whose backward (index_add) is several times
                # faster on a CPU than that of w_pad[i] (f_cert's training)
                ws = w_pad.index_select(0, i.reshape(-1)).view(*i.shape, -1)
            else:  # (b, s, m): the neurons to bound
                ws = w_pad[i[:, :, None], cols.clamp(max=w.shape[0] - 1)[:, None, :]]
            qi = self.q[i]  # (b, s, k)
            qt = qi.transpose(1, 2)
            parts = [
                sum(
                    torch.bmm(
                        (_on_support(sl[s : s + chunk], i)[:, :, None] * qi).transpose(1, 2), ws
                    )
                    .square()
                    .sum(1)
                    for sl in slopes
                )
            ]
            prods = [_on_support(kb[s : s + chunk], i)[:, :, None] * ws for kb in kinks]
            for sign in (1, -1):
                parts.append(
                    sum(torch.bmm(qt, (sign * p).clamp(min=0)).square().sum(1) for p in prods)
                )
            for t, part in zip(top, parts, strict=True):
                if isinstance(part, int):
                    continue  # a term left to its box value
                if cols is None:
                    t[s : s + chunk] += part  # a decided neuron stays at inf: the box value
                else:  # scatter back; padding columns (index h) fall off the end
                    pad = part.new_zeros(len(part), w.shape[0] + 1)
                    t[s : s + chunk] += pad.scatter_(1, cols, part)[:, :-1]
        values = [self._finish(t, q, b) for t, q, b in zip(top, sq, box, strict=True)]
        return _Values(*values)

    def per_image(self, rho: torch.Tensor, pb: PixelBounds, idx: torch.Tensor, chunk: int):
        """Rows c = rho (N, R, d), one set per image: the ``linear`` and ``down`` values
        (N, R) (``up`` None: a lower bound of c^T g does not read it)."""
        n = len(idx)
        lin, kin = "linear" in self.ellipsoid, "kink" in self.ellipsoid
        slopes = _slopes(pb)
        downs = [(-rho * kb[:, None, :]).clamp(min=0) for kb in _kinks(pb)]
        sq = [
            sum(torch.bmm(rho.square(), sl.square()[:, :, None])[..., 0] for sl in slopes),
            sum(dn.square().sum(-1) for dn in downs),
        ]
        box = [
            sum(torch.bmm(rho.abs(), (sl.abs() * self.lam)[:, :, None])[..., 0] for sl in slopes),
            sum((dn * self.lam).sum(-1) for dn in downs),
        ]
        top = [
            torch.zeros_like(t) if on else torch.full_like(t, math.inf)  # inf: the box value
            for t, on in zip(sq, (lin, kin), strict=True)
        ]
        slopes, downs = slopes if lin else [], downs if kin else []
        pad = torch.zeros_like(rho[..., :1])
        rho_pad = torch.cat([rho, pad], -1)
        downs_pad = [torch.cat([dn, pad], -1) for dn in downs]
        for s in range(0, n if (lin or kin) else 0, chunk):
            i = _trimmed(idx[s : s + chunk], self.q.shape[0] - 1)
            at = i[:, None, :].expand(-1, rho.shape[1], -1)
            rs = rho_pad[s : s + chunk].gather(2, at)
            qi = self.q[i]  # (b, s, k)
            for sl in slopes:
                x = _on_support(sl[s : s + chunk], i)[:, :, None] * qi
                top[0][s : s + chunk] += torch.bmm(rs, x).square().sum(-1)
            for dn in downs_pad:
                top[1][s : s + chunk] += (
                    torch.bmm(dn[s : s + chunk].gather(2, at), qi).square().sum(-1)
                )
        lin, down = (self._finish(t, q, b) for t, q, b in zip(top, sq, box, strict=True))
        return _Values(lin, None, down)


def _support(pb: PixelBounds) -> torch.Tensor:
    """Per image the pixels where a slope or a kink is nonzero, padded with index d:
    (N, s)."""
    mask = torch.zeros_like(pb.slope_u, dtype=torch.bool)
    for t in _slopes(pb) + _kinks(pb):
        mask = mask | (t != 0)
    d = mask.shape[1]
    width = max(int(mask.sum(1).max()), 1) if len(mask) else 1
    order = torch.sort(mask.to(torch.int8), dim=1, descending=True, stable=True)
    idx = order.indices[:, :width]
    return torch.where(order.values[:, :width] > 0, idx, torch.full_like(idx, d))


def _trimmed(idx: torch.Tensor, pad: int) -> torch.Tensor:
    """A chunk's support indices without the columns that are padding for all its rows."""
    width = max(int((idx != pad).sum(1).max()), 1)
    return idx[:, :width]


def _trimmed_rows(mask: torch.Tensor) -> torch.Tensor | None:
    """Per row the column indices where ``mask`` holds, padded with the column count:
    (b, m) with m the most any row has; None when no row has any."""
    width = int(mask.sum(1).max()) if len(mask) else 0
    if width == 0:
        return None
    order = torch.sort(mask.to(torch.int8), dim=1, descending=True, stable=True)
    cols = order.indices[:, :width]
    return torch.where(order.values[:, :width] > 0, cols, torch.full_like(cols, mask.shape[1]))


def _on_support(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(b, d) -> (b, s) entries at idx, 0 at the padding index."""
    pad = torch.cat([t, torch.zeros_like(t[:, :1])], 1)
    return pad.gather(1, idx)


def _slopes(pb: PixelBounds) -> list[torch.Tensor]:
    return [pb.slope_u] if pb.slope_v is None else [pb.slope_u, pb.slope_v]


def _kinks(pb: PixelBounds) -> list[torch.Tensor]:
    return [pb.kink_u] if pb.kink_v is None else [pb.kink_u, pb.kink_v]


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


def _pre_activation(net: NetView, pb: PixelBounds, flow: _Flow, idx, chunk: int, skip: bool):
    """Bounds (l, u) of h = W g(r; x), each (N, h); with ``skip``, the ellipsoid values
    only for the neurons that the box values leave unstable (:meth:`_Flow.shared`)."""
    mid, rad = (pb.lower + pb.upper) / 2, (pb.upper - pb.lower) / 2
    centre = mid @ net.w.T
    spread = rad @ net.w.abs().T
    decided = (centre, spread) if skip else None
    v = flow.shared(net.w, pb, idx, chunk, decided)
    return centre - spread - v.linear - v.down, centre + spread + v.linear + v.up


def certified_margins(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    threat: str = "tied",
    modes: int | None = 200,
    chunk: int = 32,
    device: str | torch.device | None = None,
    grad: bool = False,
    kink: bool = True,
    classifier_only: bool = False,
) -> torch.Tensor:
    """Certified lower bounds (N, K) of min over the threat set of f_y(g) - f_j(g) in
    float64 (+inf at j = y); > 0 for every j certifies x at eps. Steps 1-3 of the module
    notes; ``modes`` eigenvectors of M^T M for the ellipsoid (None: all, exact),
    ``chunk`` images at a time; ``device`` defaults to x's.

    A spatial transformer (``models.STNClassifier``) is refused unless
    ``classifier_only=True``: the margins are then those of its classifier on the
    transformed digit, which the flow may move through the transform: they do not
    certify the model itself.

    ``grad=True`` is the training surrogate (f_cert): the same computation on the
    model's own parameters, in their dtype and on their device, differentiable in W
    and V. A certificate is what ``grad=False`` returns (float64, detached).

    Every argument is checked first (:func:`_checked`; ``chunk`` an int >= 1): a
    network the bound cannot represent exactly (a bias, another layer type) is a
    TypeError, a bad size or value a ValueError naming the argument. An empty batch
    gives a (0, K) result. ``kink=False``: one chord per pixel (the first level of
    :func:`certified`'s cascade; cheaper, looser)."""
    eps = check_number("eps", eps, low=0.0)
    chunk = check_int("chunk", chunk)
    for name, flag in (("grad", grad), ("kink", kink)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    checked = _checked(model, x, y, threat, modes, device, classifier_only)
    return _margins(model, checked, eps, threat, chunk, grad, _CASCADE[-1 if kink else 0])


def _margins(
    model: nn.Module,
    checked: _Checked,
    eps: float,
    threat: str,
    chunk: int,
    grad: bool,
    ellipsoid: frozenset[str],
) -> torch.Tensor:
    """:func:`certified_margins` on checked arguments, with the ellipsoid value for the
    flow terms in ``ellipsoid`` (the others take their box value)."""
    net, x, y, modes, dev = checked
    if grad:
        w, v = weights(net)
        layers, dtype, dev = NetView(w, v), v.dtype, v.device
    else:
        dev = dev if dev is not None else x.device
        layers, dtype = view(net, device=dev), torch.float64
    if len(x) == 0:
        return torch.zeros(0, layers.classes, dtype=dtype, device=dev)
    _, x = classifier_input(model, x)  # an STN: its classifier on the transformed images
    x = x.to(dev, dtype)
    y = y.to(dev)
    n, side = len(x), x.shape[-1]
    pb = _pixel_bounds(x, eps, threat, dtype, _KINK_AT.get(ellipsoid, True))
    flow = _Flow(eps, threat, side, dev, modes, dtype, ellipsoid)
    idx = _support(pb)
    k = layers.classes
    c = layers.v[y][:, None, :] - layers.v[None, :, :]  # (N, K, h): V_y - V_j
    if layers.w is None:  # linear: the margin is linear in g
        rho, const = c, torch.zeros(n, k, dtype=dtype, device=dev)
    else:
        # certificates skip the neurons the box decides; the training surrogate (grad)
        # computes every neuron's value, as it always did
        low, up = _pre_activation(layers, pb, flow, idx, chunk, skip=not grad)
        lam_, const = _relaxed_output(low, up, c)
        rho = lam_ @ layers.w  # (N, K, d)
    mid, rad = (pb.lower + pb.upper) / 2, (pb.upper - pb.lower) / 2
    out = const + (rho * mid[:, None]).sum(-1) - (rho.abs() * rad[:, None]).sum(-1)
    v = flow.per_image(rho, pb, idx, chunk)
    out = out - v.linear - v.down
    if not grad and not bool(torch.isfinite(out).all()):  # fail closed: never a bound
        raise FloatingPointError(
            "a certified margin came out NaN or infinite (check the network's weights): "
            "no certificate"
        )
    out[torch.arange(n, device=dev), y] = math.inf
    return out


def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """(N,) bool: every other class scores strictly below y, in float64 (the certificate
    at eps = 0: a tie is not a certificate); an STN's classifier on its output."""
    with torch.no_grad():
        _, xc = classifier_input(model, x)
        layers = view(model, device=xc.device)
        z = xc.flatten(1).to(torch.float64)
        if layers.w is not None:
            z = (z @ layers.w.T).clamp(min=0)
        scores = z @ layers.v.T
        if not bool(torch.isfinite(scores).all()):
            raise FloatingPointError(
                "the network's scores came out NaN or infinite (check its weights): no certificate"
            )
        yy = y.to(scores.device)
        gap = scores.gather(1, yy[:, None]) - scores
        gap[torch.arange(len(yy), device=gap.device), yy] = math.inf
        return (gap > 0).all(1).cpu().numpy()


def certified(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Sequence[float] | float,
    *,
    threat: str = "tied",
    modes: int | None = 200,
    batch: int | None = None,
    progress: bool = False,
    device: str | torch.device | None = None,
    kink: bool = True,
    classifier_only: bool = False,
) -> np.ndarray:
    """Whether each image is classified correctly and certified at each eps: (E, N) bool.

    A spatial transformer is refused unless ``classifier_only=True``, which certifies
    its classifier on the transformed digit, not the model (see
    :func:`certified_margins`).

    An image not certified at some eps is not tried at larger ones (the threat
    sets grow with eps, so this only ever reports fewer certificates). At eps = 0
    the threat set is the unwarped digit: certified means classified correctly, and
    no bound is computed. Every
    argument is checked before any work, as in :func:`certified_margins`
    (``batch`` an int >= 1, digits per call; None: by device,
    :func:`~flowbound.device.chunk_size`). ``kink=False``: the first level of the cascade
    alone (one chord per pixel, the kink widening each pixel's offset interval: the
    relaxation before the kink was kept in the ellipsoid, for comparison)."""
    eps_list = check_eps_list("eps", eps)
    if batch is not None:
        batch = check_int("batch", batch)
    if not isinstance(kink, bool):
        raise TypeError(f"kink must be True or False, got {kink!r}")
    net, x, y, modes, device = _checked(model, x, y, threat, modes, device, classifier_only)
    where = device if device is not None else x.device
    batch = chunk_size("certificate", where) if batch is None else batch
    inner = chunk_size("certificate_inner", where)
    order = np.argsort(eps_list, kind="stable")
    alive = _correct(model, x, y)
    out = np.zeros((len(eps_list), len(x)), dtype=bool)
    steps = [(int(e), eps_list[e]) for e in order]
    bar = progress_bar(
        total=len(steps), desc=f"certify ({threat})", disable=not progress, unit="eps"
    )
    # digits with similar areas (a proxy for how many pixels a flow moves) share
    # chunks, so little of each chunk is padding
    area = (x.flatten(1) > 0).sum(1).cpu().numpy()
    by_area = np.argsort(area, kind="stable")
    for row, e in steps:
        if e == 0:  # the threat set is the digit itself: certified is classified correctly
            out[row] = alive
            bar.update(1)
            continue
        for terms in _CASCADE if kink else _CASCADE[:1]:  # each level: what is left open
            idx = by_area[(alive & ~out[row])[by_area]]
            for s in range(0, len(idx), batch):
                part = torch.from_numpy(idx[s : s + batch])
                checked = _Checked(net, x[part], y[part], modes, device)
                m = _margins(model, checked, e, threat, inner, False, terms)
                out[row, idx[s : s + batch]] = (m > 0).all(1).cpu().numpy()
        alive = out[row].copy()
        bar.update(1)
    bar.close()
    return out
