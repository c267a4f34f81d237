"""Step 2 of the per-digit certificate: the flow terms' values over the threat set.

For rows c (the weights of hidden neurons, or the last step's coefficients) the
slope term sup (c a)^T r and the kink term sup (c b)^T |r| (its positive and
negative parts), each the smaller of the ellipsoid value eps ||M^{-1} c||_2 and
the box value eps sum_i |c_i| lambda_i. |r| stays in the ellipsoid: M^T M has no
positive entry off its diagonal, so ||M |r| || <= ||M r||. When both terms take
ellipsoid values (the cascade's kinked level) they are also bounded together: over
every sign pattern s of r, sup (a + s b)^T r = eps ||M^{-1}(a + s b)||, and since
G = (M^T M)^{-1} is entrywise >= 0, (a + s b)^T G (a + s b) <= a G a + 2 b^T |G a| +
b G b; the smaller of that and the sum of the two separate values is used. With
``"slopes"`` (the cascade's third level) each row also takes its own slopes: a
kink part that works against the bound, -q^T |r| with q >= 0, is at most
-q^T (s r) for any s in [-1, 1], which moves it into the slope term (u = a - q s:
per pixel a slope between the two one-sided chords); s = sign(G a), where the slope
term alone puts the flow, and the smaller value is used; with ``"descent"`` (the
fourth level) s then takes a few steps towards the sign of the bound's own
maximiser, each row keeping its smallest value. The ellipsoid value is
computed from the smoothest eigenvectors of M^T M (the rest bounded by the next
eigenvalue), over the pixels where the warp can change the digit only, and for
the neurons the box value leaves unstable only.

Used in: :mod:`flowbound.certificates.local`, :mod:`flowbound.certificates.propagation`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from flowbound.certificates.pixels import PixelBounds
from flowbound.threat.geometry import mtm_eigh
from flowbound.threat.sets import ThreatSet, threat_set

__all__ = ["ELLIPSOID_TERMS", "FlowTerms", "support"]


#: The flow terms whose ellipsoid value a certificate computes (the others take their
#: box value): every subset is sound; fewer are cheaper and looser.
ELLIPSOID_TERMS = frozenset({"linear", "kink", "slopes", "descent"})

#: With ``"descent"``: the steps each row's own slopes take after s = sign(G a), and the
#: share of the way each goes towards the sign of the bound's maximiser (measured on
#: f_nt: a constant 0.2 did better than 0.1, 0.15, 0.45 and than 2 / (t + 3),
#: 1 / (t + 2), 0.5^(t+1); more steps keep paying, at about the third level's cost each).
DESCENT_STEPS = 3
DESCENT_RATE = 0.2


#: Above this share of the hidden neurons left to bound in a chunk, the ellipsoid value
#: is computed for all of them (gathering their weights would cost more than it saves).
_GATHER_SHARE = 0.6


class _Values(NamedTuple):
    """Per row c: the flow term's value sup c^T (a flow) (``linear``), and the kink
    term's sup (c b)^T |flow| split by sign: ``up`` for the part that raises c^T g
    (the positive entries of c b), ``down`` for the part that lowers it (the negative
    ones). Each (N, rows)."""

    linear: torch.Tensor
    up: torch.Tensor | None
    down: torch.Tensor


class FlowTerms:
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
        threat: str | ThreatSet,
        side: int,
        device,
        modes: int | None,
        dtype,
        ellipsoid: frozenset[str] = ELLIPSOID_TERMS,
    ) -> None:
        threat = threat_set(threat)
        # the terms whose ellipsoid value is computed (none for a box: its value alone)
        self.ellipsoid = ellipsoid if threat.ellipsoid else frozenset()
        mu, q = mtm_eigh(side)
        d = side * side
        k = d if modes is None or modes >= d else int(modes)
        self.scale = threat.radius(eps)
        weight = 1.0 / mu[:k] - (1.0 / mu[k] if k < d else 0.0)
        q_pad = np.zeros((d + 1, k))  # row d: the padding pixel (zero)
        q_pad[:d] = q[:, :k] * np.sqrt(weight)
        self.q = torch.from_numpy(q_pad).to(device, dtype)
        self.tail = float(1.0 / mu[k]) if k < d else 0.0
        self.lam = torch.from_numpy(threat.pixel_scale(side)).to(device, dtype)

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
        joint = lin and kin  # the slope and kink terms also bounded together
        chosen = joint and "slopes" in self.ellipsoid
        cross = [torch.zeros_like(sq[0]) for _ in range(2)]  # up, down
        # per side: (Q^T u squared, u squared, b^T |G u|) of its own slopes u
        chosen_parts = [[torch.zeros_like(sq[0]) for _ in range(3)] for _ in range(2)]
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
            slopes_on = [_on_support(sl[s : s + chunk], i)[:, :, None] for sl in slopes]
            projs = [torch.bmm((so * qi).transpose(1, 2), ws) for so in slopes_on]  # (b, k, m)
            parts = [sum(pr.square().sum(1) for pr in projs)]
            prods = [_on_support(kb[s : s + chunk], i)[:, :, None] * ws for kb in kinks]
            for sign in (1, -1):
                parts.append(
                    sum(torch.bmm(qt, (sign * p).clamp(min=0)).square().sum(1) for p in prods)
                )
            if joint:  # b^T |G a| per axis, G a = tail a + Q Q^T a on the support
                gs = [
                    self.tail * so * ws + torch.bmm(qi, pr)
                    for so, pr in zip(slopes_on, projs, strict=True)
                ]
                ga = [g.abs() for g in gs]
                if chosen:  # each side's own slopes where the kink is against it
                    for j, sign in enumerate((1, -1)):
                        part = self._chosen(slopes_on, ws, prods, gs, sign, qi, qt)
                        for acc, value in zip(chosen_parts[j], part, strict=True):
                            if cols is None:
                                acc[s : s + chunk] += value
                            else:
                                pad = value.new_zeros(len(value), w.shape[0] + 1)
                                acc[s : s + chunk] += pad.scatter_(1, cols, value)[:, :-1]
                for sign in (1, -1):
                    parts.append(
                        sum(
                            ((sign * p).clamp(min=0) * g).sum(1)
                            for p, g in zip(prods, ga, strict=True)
                        )
                    )
            for t, part in zip(top + (cross if joint else []), parts, strict=True):
                if isinstance(part, int):
                    continue  # a term left to its box value
                if cols is None:
                    t[s : s + chunk] += part  # a decided neuron stays at inf: the box value
                else:  # scatter back; padding columns (index h) fall off the end
                    pad = part.new_zeros(len(part), w.shape[0] + 1)
                    t[s : s + chunk] += pad.scatter_(1, cols, part)[:, :-1]
        values = [self._finish(t, q, b) for t, q, b in zip(top, sq, box, strict=True)]
        if joint:
            for j in (1, 2):  # up and down: min of the separate and the joint value
                together = self._joint(top[0], sq[0], top[j], sq[j], cross[j - 1])
                values[j] = torch.minimum(values[j], together - values[0])
                if chosen:
                    top_u, sq_u, cross_u = chosen_parts[j - 1]
                    own = self._joint(top_u, sq_u, top[j], sq[j], cross_u)
                    values[j] = torch.minimum(values[j], own - values[0])
        return _Values(*values)

    def _chosen(self, slopes_on, ws, prods, gs, sign, qi, qt):
        """One side's flow terms with each row's own slopes (``sign`` 1: the sup of c^T g,
        -1: of -c^T g): :meth:`_own_slopes` with the slope rows a = slope * w, the
        side's own kink parts (sign c b)_+ and the parts against it (-sign c b)_+."""
        axes = [
            (so * ws, (sign * p).clamp(min=0), (-sign * p).clamp(min=0))
            for so, p in zip(slopes_on, prods, strict=True)
        ]
        return self._own_slopes(axes, gs, qi, qt)

    def _own_slopes(self, axes, gs, qi, qt):
        """Rows' flow terms with their own slopes: per axis (a, b, q), each (b, s, m) over
        the support: slope rows a, the kink parts b >= 0 with the bound and q >= 0
        against it, and ``gs`` = G a. A kink part against the bound, -q^T |r|, is at
        most -q^T (s r) for any s in [-1, 1], which moves it into the slope term:
        u = a - q s (the chords' slopes a - b and a + b are its ends). s = sign(G a),
        where the slope term alone would put the flow; with ``"descent"``,
        :data:`DESCENT_STEPS` more steps s <- (1 - t) s + t sign(r) (t =
        :data:`DESCENT_RATE`) towards the sign of the joint bound's maximiser r = G (u +
        b sign(G u)): the squared bound is convex in s and -q r its gradient's
        direction, so each step is a sign-gradient step; every s in [-1, 1] gives a
        sound bound, and each row keeps the smallest. Returns (Q^T u
        squared, u squared, b^T |G u|) summed over the axes, each (b, m), for
        :meth:`_joint` with the own kink parts b."""
        s = [torch.sign(g) for g in gs]
        steps = DESCENT_STEPS if "descent" in self.ellipsoid else 0
        sq_b = sum(b.square().sum(1) for _, b, _ in axes)
        best = None
        for t in range(steps + 1):
            top = sq = cross = 0
            g_us = []
            for (a, b, q), st in zip(axes, s, strict=True):
                u = a - q * st
                proj = torch.bmm(qt, u)  # (b, k, m)
                top = top + proj.square().sum(1)
                sq = sq + u.square().sum(1)
                gu = self.tail * u + torch.bmm(qi, proj)
                g_us.append(gu)
                cross = cross + (b * gu.abs()).sum(1)
            if steps == 0:
                return top, sq, cross
            value = self._joint(top, sq, 0, sq_b, cross)  # Q^T b: the same for every s
            if best is None:
                best = [value, top, sq, cross]
            else:
                better = value < best[0]
                best = [
                    torch.where(better, new, old)
                    for new, old in zip((value, top, sq, cross), best, strict=True)
                ]
            if t == steps:
                break
            for j, ((_, b, _), gu) in enumerate(zip(axes, g_us, strict=True)):
                kick = b * torch.sign(gu)
                r = gu + self.tail * kick + torch.bmm(qi, torch.bmm(qt, kick))
                s[j] = (1 - DESCENT_RATE) * s[j] + DESCENT_RATE * torch.sign(r)
        return best[1], best[2], best[3]

    def _joint(self, top_a, sq_a, top_b, sq_b, cross) -> torch.Tensor:
        """sup over the threat set of a^T r + b^T |r| (b >= 0) for the rows' slope terms a
        and kink parts b, as one value: scale sqrt(a G a + 2 b^T |G a| + b G b) with
        G = (M^T M)^{-1}, over every sign pattern of r (r_i = s_i |r_i|: (a + s b)^T G
        (a + s b), and G >= 0 entrywise). With ``modes`` = k < d, G = tail I + Q Q^T + R
        with ||R||_2 <= tail (module notes of :class:`FlowTerms`), so the cross term takes
        tail ||a|| ||b|| more; a term at its box value (top inf) leaves it inf."""
        ga = top_a + self.tail * sq_a
        gb = top_b + self.tail * sq_b
        tiny = torch.finfo(sq_a.dtype).tiny  # a finite gradient at 0
        c = cross + self.tail * (sq_a * sq_b + tiny).sqrt()
        total = (ga + 2 * c + gb) * (1 + 1e-12)  # rounding allowance: never too small
        value = self.scale * (total + tiny).sqrt()
        return torch.where(torch.isinf(total), math.inf, value)  # inf, even at eps = 0

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
        joint = lin and kin  # the slope and kink terms also bounded together
        chosen = joint and "slopes" in self.ellipsoid
        cross = torch.zeros_like(sq[0])
        own = [torch.zeros_like(sq[0]) for _ in range(3)]  # Q^T u, u squared, d^T |G u|
        slopes, downs = slopes if lin else [], downs if kin else []
        pad = torch.zeros_like(rho[..., :1])
        rho_pad = torch.cat([rho, pad], -1)
        downs_pad = [torch.cat([dn, pad], -1) for dn in downs]
        for s in range(0, n if (lin or kin) else 0, chunk):
            i = _trimmed(idx[s : s + chunk], self.q.shape[0] - 1)
            at = i[:, None, :].expand(-1, rho.shape[1], -1)
            rs = rho_pad[s : s + chunk].gather(2, at)
            qi = self.q[i]  # (b, s, k)
            gas, signed, axes, g_as = [], [], [], []
            for sl in slopes:
                on = _on_support(sl[s : s + chunk], i)
                proj = torch.bmm(rs, on[:, :, None] * qi)  # (b, R, k): Q^T (rho a)
                top[0][s : s + chunk] += proj.square().sum(-1)
                if joint:  # G a = tail a + Q Q^T a on the support
                    back = self.tail * rs * on[:, None, :] + torch.bmm(proj, qi.transpose(1, 2))
                    gas.append(back.abs())
                    signed.append((rs * on[:, None, :], back))
            for j, dn in enumerate(downs_pad):
                dg = dn[s : s + chunk].gather(2, at)
                top[1][s : s + chunk] += torch.bmm(dg, qi).square().sum(-1)
                if joint:
                    cross[s : s + chunk] += (dg * gas[j]).sum(-1)
                if chosen:  # the slopes of the lower bound's own side (see _own_slopes)
                    a, ga = signed[j]
                    kb = _on_support(_kinks(pb)[j][s : s + chunk], i)[:, None, :]
                    against = (rs * kb).clamp(min=0)
                    axes.append((a.mT, dg.mT, against.mT))  # (b, s, R)
                    g_as.append(ga.mT)
            if chosen and axes:
                part = self._own_slopes(axes, g_as, qi, qi.transpose(1, 2))
                for acc, value in zip(own, part, strict=True):
                    acc[s : s + chunk] += value
        lin_v, down = (self._finish(t, q, b) for t, q, b in zip(top, sq, box, strict=True))
        if joint:  # min of the separate and the joint value
            down = torch.minimum(down, self._joint(top[0], sq[0], top[1], sq[1], cross) - lin_v)
        if chosen:
            mine = self._joint(own[0], own[1], top[1], sq[1], own[2])
            down = torch.minimum(down, mine - lin_v)
        return _Values(lin_v, None, down)


def support(pb: PixelBounds) -> torch.Tensor:
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
