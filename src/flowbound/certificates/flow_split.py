"""The last step with the flow's sign split at the pixels that matter most to a margin.

The last step bounds rows^T g(r; x) + const from below over the threat set, each
pixel g_i = a_i r_i + b_i |r_i| + e_i (per axis for full flows). The kink b |r| is
where the bound is loosest: it covers every sign pattern of the flow at once. Fixing
the sign of the flow at one pixel (and axis), sigma r_i >= 0, makes the kink exact
there, b_i |r_i| = sigma b_i r_i, and the constraint can enter the bound: on that
half of the threat set, min F >= min over the whole set of F - beta sigma r_i for
any beta >= 0 (a Lagrange multiplier). The choice here is the one that is exact for
a pixel alone: where the pixel's linear term c_i' r_i (c_i' = rows_i (a_i + sigma
b_i)) cannot lower the bound on that half (sigma c_i' >= 0), beta = sigma c_i' drops
the term; elsewhere beta = 0. Each of the 2^k sign patterns at a row's k most
influential (pixel, axis) pairs (|rows_i b_i| lambda_i, lambda_i the pixel's reach,
Prop. 2) is a leaf; the leaves cover the threat set (a flow with r_i = 0 lies in
both halves), so the least leaf bound is a bound, and each leaf is bounded by the
certificate's own last step (:func:`~flowbound.certificates.propagation.over_threat`)
at the level's flow terms on pixel bounds changed only at those pairs: every step
stays the certificate's, float64, with its rounding allowances.

The pre-activation bounds are not split: they hold on the whole threat set, so on
every leaf. A split costs 2^k last steps per row, and runs only on the rows the
unsplit last step leaves at or below zero.

Used in: :mod:`flowbound.certificates.local` (the cascade's last level).
"""

from __future__ import annotations

import itertools

import torch

from flowbound.certificates.ellipsoid import FlowTerms
from flowbound.certificates.pixels import PixelBounds
from flowbound.certificates.propagation import over_threat

__all__ = ["split_over_threat"]

#: Rows x leaves bounded in one call of the last step (memory: a PixelBounds each).
_LEAF_ROWS = 1024


def _pairs(rows: torch.Tensor, pb: PixelBounds, lam: torch.Tensor, k: int) -> torch.Tensor:
    """Per row the k (axis, pixel) pairs of largest |rows_i b_i| lambda_i, as flat indices
    axis * d + i: (M, k) for rows (M, d) and the pixel bounds of each row's image."""
    kinks = [pb.kink_u] if pb.kink_v is None else [pb.kink_u, pb.kink_v]
    score = torch.cat([(rows * kb).abs() * lam for kb in kinks], 1)
    return torch.topk(score, k, dim=1).indices


def _patterned(pb: PixelBounds, rows: torch.Tensor, pairs: torch.Tensor) -> PixelBounds:
    """The pixel bounds of every sign pattern: rows (M, d), their images' bounds ``pb``
    (M rows) and their pairs (M, k) give M 2^k leaves (row-major: row, then pattern). At
    a pair with sign sigma the kink is 0 and the slope a + sigma b, or 0 where that term
    cannot lower the bound on the leaf (sigma rows_i (a + sigma b) >= 0, the multiplier
    of the module notes); elsewhere each leaf keeps its row's bounds."""
    m, k = pairs.shape
    signs = torch.tensor(
        list(itertools.product((1.0, -1.0), repeat=k)), dtype=rows.dtype, device=rows.device
    )  # (L, k)
    leaves = len(signs)
    d = rows.shape[1]
    at = torch.arange(m, device=rows.device).repeat_interleave(leaves)
    out = pb.of_images(at)  # (M L, d) per field
    sig = signs.repeat(m, 1)  # (M L, k)
    pix = (pairs % d)[at]  # (M L, k)
    row = rows[at].gather(1, pix)
    axes = {"u": ("slope_u", "kink_u"), "v": ("slope_v", "kink_v")}
    for t, name in enumerate("uv" if pb.slope_v is not None else "u"):
        slope, kink = (getattr(out, f) for f in axes[name])  # indexed: fresh copies
        on = ((pairs // d) == t)[at]  # (M L, k): this leaf's pairs on this axis
        a_p, b_p = slope.gather(1, pix), kink.gather(1, pix)
        side = a_p + sig * b_p  # the slope on the leaf's half
        keep = sig * row * side < 0  # the term can lower the bound: beta = 0
        slope.scatter_(1, pix, torch.where(on, torch.where(keep, side, 0.0), a_p))
        kink.scatter_(1, pix, torch.where(on, 0.0, b_p))
        out = out._replace(**dict(zip(axes[name], (slope, kink), strict=True)))
    return out


def split_over_threat(
    rows: torch.Tensor,
    const: torch.Tensor,
    pb: PixelBounds,
    flow: FlowTerms,
    idx: torch.Tensor,
    chunk: int,
    pixels: int,
) -> torch.Tensor:
    """A lower bound (M,) of each row's rows^T g(r; x) + const over the threat set: the
    least over the 2^``pixels`` sign patterns of the flow at the row's most influential
    (pixel, axis) pairs of the last step on that leaf (module notes). ``rows`` (M, d),
    ``const`` (M,), and ``pb`` / ``idx`` of each row's image (M rows each)."""
    m = len(rows)
    if m == 0:
        return rows.new_zeros(0)
    k = max(0, min(int(pixels), rows.shape[1]))
    leaves = 1 << k
    out = []
    per = max(1, _LEAF_ROWS // leaves)
    for s in range(0, m, per):
        r, c = rows[s : s + per], const[s : s + per]
        sub = pb.of_images(torch.arange(s, s + len(r), device=rows.device))
        pairs = _pairs(r, sub, flow.lam, k)
        leaf_pb = _patterned(sub, r, pairs)
        leaf_rows = r.repeat_interleave(leaves, 0)[:, None, :]
        leaf_const = c.repeat_interleave(leaves, 0)[:, None]
        leaf_idx = idx[s : s + per].repeat_interleave(leaves, 0)
        value = over_threat(leaf_rows, leaf_const, leaf_pb, flow, leaf_idx, chunk)
        out.append(value.view(len(r), leaves).amin(1))
    return torch.cat(out)
