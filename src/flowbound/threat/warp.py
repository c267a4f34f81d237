"""Bilinear flow warp g(r; x) (Eq. 1) and its Jacobians (Section 2.2).

Conventions (Readings table, points 1-2): pixel i sits at column u_i and row v_i; the
flow r_i = (du_i, dv_i) points from the adversarial image to the benign one,
so the warped pixel samples x at (u_i + du_i, v_i + dv_i) (a backward map).
Samples outside the image read 0. A flow has shape (B, 2, H, W) holding
(du, dv), or (B, H, W) for the tied flow du = dv = r used in Sections 2-4.

Used in: Background, and every attack and bound built on g.
"""

from __future__ import annotations

import torch

__all__ = [
    "jacobian_one_sided",
    "jacobian_paper",
    "jacobian_true",
    "shifted",
    "split_flow",
    "warp",
    "warp_and_jacobian",
]


def split_flow(x: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (du, dv), each (B, H, W), from a tied (B, H, W) or full (B, 2, H, W) flow."""
    if not isinstance(x, torch.Tensor) or not isinstance(flow, torch.Tensor):
        raise TypeError("x and flow must be torch tensors")
    if x.dim() != 3:
        raise ValueError(f"x must have shape (B, H, W), got {tuple(x.shape)}")
    if not (x.is_floating_point() and flow.is_floating_point()):
        raise TypeError(f"x and flow must be real floating-point, got {x.dtype}, {flow.dtype}")
    b, h, w = x.shape
    if flow.shape == (b, h, w):
        return flow, flow
    if flow.shape == (b, 2, h, w):
        return flow[:, 0], flow[:, 1]
    raise ValueError(
        f"flow must have shape {(b, h, w)} (tied) or {(b, 2, h, w)} (du, dv), "
        f"got {tuple(flow.shape)}"
    )


def _corners(x: torch.Tensor, du: torch.Tensor, dv: torch.Tensor):
    """The four neighbours of each sample point and the fractional offsets.

    Returns x00, x01, x10, x11 (row offset first, column offset second) and
    a, b in [0, 1): the column and row fractions of the sample point.
    """
    n, h, w = x.shape
    cols = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, w)
    rows = torch.arange(h, dtype=x.dtype, device=x.device).view(1, h, 1)
    if du.numel() and not bool(torch.isfinite(du).all() & torch.isfinite(dv).all()):
        raise ValueError("flow has NaN or inf entries: a sample point must be a finite position")
    # The image sits in a frame of 2 zero pixels; a sample point more than one pixel
    # outside the image moves to the frame's edge (all four neighbours read 0 there,
    # as they do where it was), so every neighbour is read from the frame, unmasked.
    pu, pv = (cols + du).clamp(-2, w), (rows + dv).clamp(-2, h)
    u0, v0 = torch.floor(pu), torch.floor(pv)
    a, b = pu - u0, pv - v0
    wide = w + 4
    frame = torch.nn.functional.pad(x, (2, 2, 2, 2)).reshape(n, (h + 4) * wide)
    base = ((v0.long() + 2) * wide + u0.long() + 2).reshape(n, h * w)
    idx = torch.cat([base, base + 1, base + wide, base + wide + 1], dim=1)
    x00, x01, x10, x11 = torch.gather(frame, 1, idx).reshape(n, 4, h, w).unbind(1)
    return x00, x01, x10, x11, a, b


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Spatially transformed images g(r; x) by bilinear interpolation (Eq. 1).

    Parameters
    ----------
    x : (B, H, W) images.
    flow : (B, H, W) tied flow or (B, 2, H, W) flow (du, dv), in pixels.

    Returns
    -------
    (B, H, W) warped images. Zero flow returns ``x`` exactly and an integer
    flow an exact shift (zeros enter from outside the image).
    """
    du, dv = split_flow(x, flow)
    x00, x01, x10, x11, a, b = _corners(x, du, dv)
    return (1 - b) * ((1 - a) * x00 + a * x01) + b * ((1 - a) * x10 + a * x11)


def warp_and_jacobian(x: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`warp` and :func:`jacobian_true` from one read of the four neighbours.

    The gradient of any loss L(g(r; x)) with respect to the flow is then
    dL/dg times this Jacobian, pixel by pixel (g_i depends on r_i alone):
    what autograd computes through the gathers, without building their graph.
    """
    du, dv = split_flow(x, flow)
    x00, x01, x10, x11, a, b = _corners(x, du, dv)
    top, bottom = (1 - a) * x00 + a * x01, (1 - a) * x10 + a * x11
    images = (1 - b) * top + b * bottom
    d_u = (1 - b) * (x01 - x00) + b * (x11 - x10)
    d_v = bottom - top
    if flow.dim() == 3:
        return images, d_u + d_v
    return images, torch.stack([d_u, d_v], dim=1)


def jacobian_true(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Exact one-sided (right) derivative of the warp with respect to the flow.

    g_i depends on r_i alone, so the Jacobian is diagonal per axis. With a, b
    the column and row fractions of the sample point,
    dg/ddu = (1-b)(x01-x00) + b(x11-x10) and dg/ddv = (1-a)(x10-x00) + a(x11-x01).
    At zero flow these are forward differences of the image (Readings table, point 9).

    Returns
    -------
    (B, H, W) dg_i/dr_i for a tied flow (the sum of both partials), or
    (B, 2, H, W) (dg/ddu, dg/ddv) for a full flow.
    """
    return warp_and_jacobian(x, flow)[1]


def shifted(x: torch.Tensor, dr: int, dc: int) -> torch.Tensor:
    """x shifted so that entry (i, j) holds x[i + dr, j + dc] (zero outside)."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    if abs(dr) >= h or abs(dc) >= w:
        return out  # every entry reads from outside the image
    out[..., max(-dr, 0) : h - max(dr, 0), max(-dc, 0) : w - max(dc, 0)] = x[
        ..., max(dr, 0) : h - max(-dr, 0), max(dc, 0) : w - max(-dc, 0)
    ]
    return out


def jacobian_one_sided(x: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """One-sided derivative of the warp at zero flow, in the direction of each pixel's flow.

    The warp has a kink at every integer flow, so at r = 0 the right and left
    derivatives differ: for r_i > 0 the pixel samples towards its right and
    lower neighbours (forward differences), for r_i < 0 towards its left and
    upper ones (backward differences). Samples outside the image read 0.
    The directional derivative of g at 0 along r is this array times r, so
    a linearisation at r = 0 must use the side that matches the sign of r_i
    (the book's "Readings we had to choose", point 9). Neither side is diag(x).

    Parameters
    ----------
    x : (B, H, W) images.
    direction : (B, H, W) tied or (B, 2, H, W) full flow (or just its signs):
        entries < 0 take the left derivative, entries >= 0 the right one.

    Returns
    -------
    Same shape as ``direction``: dg_i/dr_i from the chosen side (a tied flow
    sums the u and v partials), or (dg/ddu, dg/ddv) per pixel for a full flow.
    """
    du_dir, dv_dir = split_flow(x, direction)
    fwd_u, bwd_u = shifted(x, 0, 1) - x, x - shifted(x, 0, -1)
    fwd_v, bwd_v = shifted(x, 1, 0) - x, x - shifted(x, -1, 0)
    d_u = torch.where(du_dir < 0, bwd_u, fwd_u)
    d_v = torch.where(dv_dir < 0, bwd_v, fwd_v)
    if direction.dim() == 3:
        return d_u + d_v
    return torch.stack([d_u, d_v], dim=1)


def jacobian_paper(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The diagonal of Dg as printed in Section 2.2, for a tied flow r.

    dg_i/dr_i = sum_j x_j max(0, 1 - |v_i + r_i - v_j|) * s_j with
    s_j = 0 if |u_i + r_i - u_j| >= 1, 1 if u_i + r_i >= u_j, else -1.
    This differentiates the column factor only, with the sign of
    d max(0, 1 - |t|)/dt flipped; at r = 0 it equals x (Dg(0; x) = diag(x)),
    which the true derivative does not (Readings table, point 9). Kept to redo the
    paper's figures, not because it is right.

    Returns
    -------
    (B, H, W) the printed dg_i/dr_i.
    """
    if r.shape != x.shape:
        raise ValueError(f"the paper's Dg is for a tied flow of shape {tuple(x.shape)}")
    x00, x01, x10, x11, a, b = _corners(x, r, r)
    # Neighbour j = (v0 + p, u0 + q): the column distance t = u + r - u_j is a - q,
    # so s_j is +1 for q = 0 (t = a in [0, 1)) and, for q = 1 (t = a - 1 in [-1, 0)),
    # -1 when a > 0 and 0 when a = 0 (|t| >= 1).
    s1 = torch.where(a > 0, -torch.ones_like(a), torch.zeros_like(a))
    return (1 - b) * (x00 + s1 * x01) + b * (x10 + s1 * x11)
