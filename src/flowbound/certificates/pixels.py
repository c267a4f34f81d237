"""Step 1 of the per-digit certificate: each warped pixel bounded over the box.

Pixel i of g depends on its own flow only. Over the box the ellipsoid implies
(Prop. 2: |r_i| <= eps lambda_i; |du_i|, |dv_i| <= sqrt(2) eps lambda_i for full
flows), the tied warp is one quadratic per integer cell of r_i and the full warp
one bilinear function per cell of (du_i, dv_i). The warp has a kink at zero flow
(forward differences on one side, backward on the other, Readings table, point 9),
so each pixel gets its two one-sided chords through g_i(0) over the box: their
mean a_i is the slope, half their difference b_i the kink,
g_i(r) = a_i r_i + b_i |r_i| + e_i (per axis for full flows, chords averaged over
the other axis). The exact extremes of e_i over each cell (endpoints and the
vertex of each quadratic; the corners of each bilinear cell, which never straddle
an axis) give e_i in [lower_i, upper_i], widened by a rounding allowance sized for
float64. Any budget works: a box wider than one pixel spans more cells, and past
the image the warp reads zeros.

Used in: :mod:`flowbound.certificates.local`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from flowbound.checks import (
    check_images,
    check_number,
)
from flowbound.threat.sets import TIED, ThreatSet, threat_set
from flowbound.threat.warp import shifted, warp

__all__ = ["PixelBounds", "pixel_bounds"]


#: Rounding allowance added to every pixel offset (relative to the pixel scale).
_ROUNDING = 1e-12


#: Full flows: rows (knots x images) warped in one call when bounding g over the box.
_KNOT_ROWS = 8192


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

    def of_images(self, at: torch.Tensor) -> PixelBounds:
        """The bounds of the images ``at`` (indices, repeats allowed): every per-image
        field indexed, the radius (per pixel) shared."""
        per_image = (f for f in self._fields if f != "radius" and getattr(self, f) is not None)
        return self._replace(**{f: getattr(self, f)[at] for f in per_image})


def _side(x: torch.Tensor) -> int:
    """The side s of square images (N, s, s); M and lambda are built per side."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(
            f"x must hold square images (N, s, s): the threat set's M and lambda are built "
            f"per side; got shape {tuple(x.shape)}"
        )
    return x.shape[-1]


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
    threat: str | ThreatSet = TIED,
    dtype: torch.dtype = torch.float64,
    kink: bool = True,
) -> PixelBounds:
    """Sound linear bounds of every warped pixel over the box the budget implies (step 1).

    ``x`` (N, s, s) images, computed in ``dtype`` (float64 for certificates); the box
    is the threat set's (:meth:`~flowbound.threat.sets.ThreatSet.box`): |r_i| <= eps
    lambda_i for tied flows, |du_i|, |dv_i| <= sqrt(2) eps lambda_i for full ones.
    Any finite eps works in bounded memory: past :func:`_far` pixels g_i is 0.
    ``kink=False``: one chord per pixel (the mean of the two; kinks 0, so the kink
    widens the offset interval instead), the cheaper relaxation of the cascade's
    first level. ``dtype`` must be float64: the rounding allowance is sized for it
    (in float32 the bounds would be beaten by rounding); the training surrogate runs
    the same steps in its model's dtype through ``certified_margins(grad=True)``.
    """
    threat = threat_set(threat)
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
    x: torch.Tensor, eps: float, threat: str | ThreatSet, dtype: torch.dtype, kink: bool
) -> PixelBounds:
    """:func:`pixel_bounds` on checked arguments, in any floating ``dtype`` (float64 for
    certificates; the model's own for the training surrogate, which is not one)."""
    threat = threat_set(threat)
    side = _side(x)
    x = x.to(dtype)
    n = len(x)
    lam = torch.from_numpy(threat.pixel_scale(side)).to(x.device, dtype)
    rad = threat.radius(eps) * lam
    flat = x.reshape(n, -1)
    scale = _ROUNDING * (1 + flat.abs().amax(1, keepdim=True))
    safe = torch.where(rad > 0, rad, torch.ones_like(rad))
    r = rad.expand(n, -1)

    def chords(plus, zero, minus):  # one-sided chords through g(0): (slope, kink)
        up = torch.where(rad > 0, (plus - zero) / safe, torch.zeros_like(plus))
        down = torch.where(rad > 0, (zero - minus) / safe, torch.zeros_like(plus))
        return up, down

    if threat.parts == 1:
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
