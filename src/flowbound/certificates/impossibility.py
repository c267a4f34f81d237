"""Lower-bound attacks of Section 3 and appendix 6.4: Theorems 1-2, Algorithms 1-2.

A binary network comes from a K-class one as v = V_i - V_j (Readings table, point 15):
f(x) = v^T relu(W x) (one hidden layer) or f(x) = v^T x (linear). Every
function is batched over class pairs, works in float64, and lets the caller
pick the Jacobian of the warp: ``"paper"`` (Dg as printed, Dg(0; x) = diag(x))
or ``"true"`` (the exact one). Inputs live in the box ||x||_inf <= 1 and
flows in the ellipsoid ||M r|| <= eps (tied flows, Sections 2-4).

What counts as a lower bound (Readings table, point 11): the value of the network at
the returned pair, l_adv = (f(g(r_*; x_*)) - f(x_*)) / 2, computed exactly.
The linearised value (Theorems) and the midpoint estimate (Eq. 7, 13) are
returned beside it as ``estimate``, labelled as estimates.

Readings (Readings table, points 7 and 10): Eq. (6) and (8) print W diag(v) where
W^T diag(v) fits the shapes; "W has rank d" cannot hold for W of shape
(h, d) with h < d, so x_* = pi_inf(W^+ 1) with the pseudo-inverse, which
makes every hidden unit active when W has full row rank.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from flowbound.networks.view import ordered_pairs, pair_layers
from flowbound.threat.geometry import m_inv_tensor
from flowbound.threat.loss import JACOBIANS
from flowbound.threat.sets import FULL, TIED
from flowbound.threat.warp import jacobian_one_sided, warp

__all__ = [
    "LowerBound",
    "algorithm1",
    "all_pairs",
    "algorithm2",
    "gradient_search",
    "loss_ceiling",
    "prop3_first_order",
    "theorem1_bound",
    "theorem2_bound",
]


class LowerBound(NamedTuple):
    """Per class pair (B of them): x_* (B, s, s), r_* (B, s, s), the exact l_adv (B,),
    the estimate the method optimises (B,), and per-iteration histories (iters, B)."""

    x: torch.Tensor
    r: torch.Tensor
    exact: torch.Tensor
    estimate: torch.Tensor
    exact_history: torch.Tensor
    estimate_history: torch.Tensor


def _score(w, v, z):
    """f_b(z_b) for rows z (m * B, s, s), row k * B + b scored with pair b."""
    flat = z.reshape(len(z), -1)
    vv = v[torch.arange(len(z)) % len(v)]
    return (vv * (torch.relu(flat @ w.T) if w is not None else flat)).sum(1)


def _exact(w, v, x, r):
    return (_score(w, v, warp(x, r)) - _score(w, v, x)) / 2


def _grad_g(w, v, z):
    """d f_b / d z at rows z (m * B, s, s): W^T (v * relu'(W z)) or v."""
    flat = z.reshape(len(z), -1)
    vv = v[torch.arange(len(z)) % len(v)]
    if w is None:
        return vv.reshape(z.shape)
    return (((flat @ w.T) > 0).double() * vv @ w).reshape(z.shape)


def _best_flow(c, eps, side):
    """argmax c^T r over ||M r|| <= eps: eps M^{-1} pi_2(M^{-1} c) (Eq. 6, 8, 12, 14).

    ``eps`` is a (B,) tensor, one budget per row. ``c`` is (B, s, s) for tied
    flows, or (B, 2, s, s) for full flows under the joint constraint
    sqrt(||M du||^2 + ||M dv||^2) <= eps. Returns r (shape of c) and
    ||M^{-1} c|| (B,), so that the maximum is eps times it.
    """
    mi = m_inv_tensor(side)
    comps = 2 if c.dim() == 4 else 1
    u = c.reshape(len(c), comps, -1) @ mi
    norm = u.flatten(1).norm(dim=1)
    scale = (eps / norm.clamp_min(1e-300)).view(-1, 1, 1)
    r = (scale * u) @ mi
    return r.reshape(c.shape), norm


def _eps(eps, rows):
    """A (rows,) float64 tensor from a number or one budget per row."""
    e = torch.as_tensor(eps, dtype=torch.float64).flatten()
    if e.numel() == 1:
        return e.expand(rows).clone()
    if e.numel() != rows:
        raise ValueError(f"eps must be one number or one per class pair ({rows}), got {e.numel()}")
    return e


def _midpoints(r, n):
    z = (2 * torch.arange(1, n + 1, dtype=r.dtype) - 1) / (2 * n)
    return (z.view(n, 1, 1, 1) * r.unsqueeze(0)).reshape(n * len(r), *r.shape[1:])


def _rep(x, n):
    return x.unsqueeze(0).expand(n, *x.shape).reshape(n * len(x), *x.shape[1:])


def _coefficients(w, v, x, r, n, jacobian):
    """c = (1/n) sum_i Dg(r_i; x) * grad f(g(r_i; x)), the direction of Eq. (8), (14)."""
    zr, xs = _midpoints(r, n), _rep(x, n)
    dg = JACOBIANS[jacobian](xs, zr)
    c = dg * _grad_g(w, v, warp(xs, zr))
    return c.reshape(n, *x.shape).mean(0)


def _estimate(w, v, x, r, n, jacobian):
    """The midpoint estimate of l_adv (Eq. 7, 13), with the 1/2 of Section 2.2."""
    return (_coefficients(w, v, x, r, n, jacobian) * r).flatten(1).sum(1) / 2


def _sign_step(w, v, x, r, n, jacobian, max_inner):
    """Lines 5-7: x <- sign(alpha), relu pattern fixed, repeated until x settles."""
    for _ in range(max_inner):
        zr, xs = _midpoints(r, n), _rep(x, n)
        gg = _grad_g(w, v, warp(xs, zr)).detach()  # relu pattern from the current x
        xv = x.clone().requires_grad_(True)
        with torch.enable_grad():
            dg = JACOBIANS[jacobian](_rep(xv, n), zr)  # linear in x
            (alpha,) = torch.autograd.grad((dg * gg * _rep(r, n)).sum(), xv)
        new = torch.where(alpha != 0, torch.sign(alpha), x)
        if torch.equal(new, x):
            break
        x = new
    return x


def _run(w, v, x, r, eps, n, jacobian, max_iter, max_inner, tol):
    side = x.shape[-1]
    best_x, best_r = x.clone(), r.clone()
    best = _exact(w, v, x, r)
    exact_hist, est_hist = [best.clone()], [_estimate(w, v, x, r, n, jacobian)]
    for _ in range(max_iter):
        x = _sign_step(w, v, x, r, n, jacobian, max_inner)
        r_new, _ = _best_flow(_coefficients(w, v, x, r, n, jacobian), eps, side)
        moved = (r_new - r).flatten(1).norm(dim=1).max()
        r = r_new
        ex = _exact(w, v, x, r)
        exact_hist.append(ex)
        est_hist.append(_estimate(w, v, x, r, n, jacobian))
        better = ex > best
        best_x[better], best_r[better], best[better] = x[better], r[better], ex[better]
        if float(moved) <= tol * max(float(eps.max()), 1e-12):
            break
    return LowerBound(
        best_x,
        best_r,
        best,
        _estimate(w, v, best_x, best_r, n, jacobian),
        torch.stack(exact_hist),
        torch.stack(est_hist),
    )


def _pi_inf(z):
    return z / z.abs().amax(dim=-1, keepdim=True).clamp_min(1e-300)


def _dg0(x, jacobian):
    return JACOBIANS[jacobian](x, torch.zeros_like(x))


def _linearised_flow(c_of, eps, side, max_sign_iter=50, start=None):
    """argmax of the one-sided linearisation over ||M r|| <= eps, by a fixed point in signs.

    ``c_of(direction)`` gives the coefficients c with the directional
    derivative of l_adv at r = 0 along r equal to c(sign r)^T r (one-sided
    Jacobian). From the right derivative, alternate r <- eps M^{-1} pi_2(M^{-1} c)
    and c <- c(sign r) until the sign pattern stops changing; returns the
    visited r with the largest directional derivative and that value, which
    is the true first-order term of l_adv along r (times 1/2 in c).
    """
    direction = torch.ones_like(c_of(None)) if start is None else start
    best_r, best_val = None, None
    for _ in range(max_sign_iter):
        r, _ = _best_flow(c_of(direction), eps, side)
        new = torch.where(r != 0, torch.sign(r), direction)
        val = (c_of(new) * r).flatten(1).sum(1)
        if best_r is None:
            best_r, best_val = r.clone(), val.clone()
        else:
            better = val > best_val
            best_r[better], best_val[better] = r[better], val[better]
        if torch.equal(new, direction):
            break
        direction = new
    return best_r, best_val


def _theorem_pair(w, v, x, eps, jacobian) -> LowerBound:
    """Eq. (6) / (12): the best flow for the linearisation at x, its value and the exact one.

    The linearised l~_adv = (1/2) grad f(x)^T Dg(0; x) r (W = None: f linear).
    With ``jacobian="paper"`` Dg(0; x) = diag(x) and r_* is Eq. (6) in closed
    form. With ``"true"`` the warp has no derivative at 0, only one-sided
    ones (:func:`~flowbound.threat.warp.jacobian_one_sided`): r_* maximises the
    directional derivative, by a fixed point in the sign pattern of r, and
    ``estimate`` is that directional derivative, the first-order term of the
    exact l_adv along r_*.
    """
    grad = _grad_g(w, v, x)
    if jacobian == "paper":
        r, norm = _best_flow(_dg0(x, jacobian) * grad, eps, x.shape[-1])
        lin = eps * norm / 2
    else:

        def c_of(direction):
            d = torch.ones_like(x) if direction is None else direction
            return jacobian_one_sided(x, d) * grad / 2

        r, lin = _linearised_flow(c_of, eps, x.shape[-1])
    ex = _exact(w, v, x, r)
    return LowerBound(x, r, ex, lin, ex.unsqueeze(0), lin.unsqueeze(0))


def theorem1_bound(model, pairs, eps, *, side=28, jacobian="paper") -> LowerBound:
    """Theorem 1 for f = (V_i - V_j)^T relu(W x): x_* = pi_inf(W^+ 1), r_* by Eq. (6).

    ``estimate`` is the linearised l~_adv = (1/2) grad sigma^T diag(v) W Dg(0; x_*) r_*
    (with the exact Jacobian: the one-sided directional derivative along r_*);
    ``exact`` the network's value at (x_*, r_*).
    """
    w, v = pair_layers(model, pairs)
    eps = _eps(eps, len(pairs))
    x0 = _pi_inf(torch.linalg.pinv(w) @ torch.ones(w.shape[0], dtype=torch.float64))
    x = x0.reshape(1, side, side).expand(len(pairs), side, side).clone()
    return _theorem_pair(w, v, x, eps, jacobian)


def algorithm1(
    model, pairs, eps, *, n=16, side=28, jacobian="paper", max_iter=30, max_inner=5, tol=1e-6
) -> LowerBound:
    """Algorithm 1 from Theorem 1's pair: alternate x <- sign(alpha) and Eq. (8).

    Returns, per pair, the visited pair of largest exact l_adv (the start
    included, so it never falls below Theorem 1's exact value).
    """
    start = theorem1_bound(model, pairs, eps, side=side, jacobian=jacobian)
    w, v = pair_layers(model, pairs)
    eps = _eps(eps, len(pairs))
    return _run(w, v, start.x, start.r, eps, n, jacobian, max_iter, max_inner, tol)


def theorem2_bound(model, pairs, eps, *, side=28, jacobian="paper") -> LowerBound:
    """Theorem 2 for f = (V_i - V_j)^T x: x_* = pi_inf(v*), r_* by Eq. (12).

    v* is the top eigenvector of diag(v) M^{-2} diag(v) (with the exact
    Jacobian, of G^T diag(v) M^{-2} diag(v) G, G the linear map from x to the
    right derivative at 0: a heuristic choice of x, since the linearisation
    itself is one-sided and r_* is then found as in :func:`theorem1_bound`).
    """
    _, v = pair_layers(model, pairs)
    eps = _eps(eps, len(pairs))
    mi = m_inv_tensor(side)
    d = side * side
    if jacobian == "paper":
        g = torch.eye(d, dtype=torch.float64)
    else:
        basis = torch.eye(d, dtype=torch.float64).reshape(d, side, side)
        g = _dg0(basis, jacobian).reshape(d, d).T  # column k: Dg(0; e_k)
    xs = []
    for vb in v:
        a = mi @ (vb.unsqueeze(1) * g)
        _, vecs = torch.linalg.eigh(a.T @ a)
        xs.append(_pi_inf(vecs[:, -1]))
    x = torch.stack(xs).reshape(len(pairs), side, side)
    return _theorem_pair(None, v, x, eps, jacobian)


def algorithm2(
    model, pairs, eps, *, n=16, side=28, jacobian="paper", max_iter=30, max_inner=5, tol=1e-6
) -> LowerBound:
    """Algorithm 2 from Theorem 2's pair: alternate x <- sign(alpha) and Eq. (14)."""
    start = theorem2_bound(model, pairs, eps, side=side, jacobian=jacobian)
    _, v = pair_layers(model, pairs)
    eps = _eps(eps, len(pairs))
    return _run(None, v, start.x, start.r, eps, n, jacobian, max_iter, max_inner, tol)


def all_pairs(classes: int = 10) -> list[tuple[int, int]]:
    """The K (K - 1) ordered class pairs (i, j), i != j
    (:func:`flowbound.networks.view.ordered_pairs`)."""
    return ordered_pairs(classes)


def gradient_search(
    model, pairs, eps, x0, r0, *, steps=200, lr=0.05, tied=True, side=28, x_range=(-1.0, 1.0)
) -> LowerBound:
    """Beyond the paper: projected gradient ascent on the exact l_adv over (x, r).

    x stays in ``x_range`` (Section 3's [-1, 1]^d by default; (0, 1) for
    images as certified in Section 4); r = M^{-1} s with ||s|| <= eps (the ellipsoid as a
    ball), tied (B, s, s) or, with ``tied=False``, full (B, 2, s, s) flows with
    sqrt(||M du||^2 + ||M dv||^2) <= eps (Proposition 3's constraint). Adam on
    (x, s), projected after every step (the start too); returns the best pair visited.
    """
    w, v = pair_layers(model, pairs)
    eps = _eps(eps, len(pairs))
    mi = m_inv_tensor(side)
    m = torch.linalg.inv(mi)
    comps = 1 if tied else 2
    s0 = (r0.reshape(len(r0), comps, -1) @ m).reshape(len(r0), -1)
    # a start outside the threat set or the pixel range is projected first: what is
    # recorded is always a feasible pair (inside starts are left bit for bit as given)
    s0 = s0 * torch.clamp(
        eps.unsqueeze(1) / s0.norm(dim=1, keepdim=True).clamp_min(1e-300), max=1.0
    )
    x0 = x0.clamp(*x_range)
    x = x0.clone().requires_grad_(True)
    s = s0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x, s], lr=lr)

    def flow(sv):
        r = (sv.reshape(len(sv), comps, -1) @ mi).reshape(len(sv), comps, side, side)
        return r[:, 0] if tied else r

    best = _exact(w, v, x0, flow(s0)).detach()
    best_x, best_r = x0.clone(), flow(s0).detach().clone()
    hist = [best.clone()]
    for _ in range(steps):
        with torch.enable_grad():
            val = _exact(w, v, x, flow(s))
            opt.zero_grad()
            (-val.sum()).backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(*x_range)
            norm = s.norm(dim=1, keepdim=True)
            s.mul_(torch.clamp(eps.unsqueeze(1) / norm.clamp_min(1e-300), max=1.0))
            val = _exact(w, v, x, flow(s))
            better = val > best
            best[better], best_x[better], best_r[better] = val[better], x[better], flow(s)[better]
            hist.append(val.clone())
    return LowerBound(best_x, best_r, best, best, torch.stack(hist), torch.stack(hist))


def prop3_first_order(model, pairs, eps, *, side=28) -> dict[str, torch.Tensor]:
    """Proposition 3 at first order with the exact (one-sided) Jacobian, per pair.

    At Theorem 1's x_*, the largest directional derivative of l_adv at r = 0
    over tied flows ||M r|| <= eps, and over full flows (du, dv) at the same
    l_diff, sqrt(||M du||^2 + ||M dv||^2) <= sqrt(2) eps, each by the sign
    fixed point of the theorems. For fixed signs the full-flow optimum is
    sqrt(2) eps sqrt(||M^{-1} c_u||^2 + ||M^{-1} c_v||^2) >= eps ||M^{-1}(c_u + c_v)||,
    with equality only when c_u = c_v: Proposition 3 holds when the u and v
    partials agree (as with the printed Dg(0; x) = diag(x) on both axes), not
    with the warp's real ones. Returns ``tied`` and ``full`` (B,).
    """
    w, v = pair_layers(model, pairs)
    eps = _eps(eps, len(pairs))
    x0 = _pi_inf(torch.linalg.pinv(w) @ torch.ones(w.shape[0], dtype=torch.float64))
    x = x0.reshape(1, side, side).expand(len(pairs), side, side).clone()
    grad = _grad_g(w, v, x)

    def tied(direction):
        d = torch.ones_like(x) if direction is None else direction
        return jacobian_one_sided(x, d) * grad / 2

    def full(direction):
        d = torch.ones(len(x), 2, side, side, dtype=x.dtype) if direction is None else direction
        return jacobian_one_sided(x, d) * grad.unsqueeze(1) / 2

    r_tied, val_tied = _linearised_flow(tied, eps, side)
    _, val_full = _linearised_flow(full, eps * 2**0.5, side)
    # a tied flow is a full flow at the same l_diff: start there too, keep the best
    pattern = torch.where(r_tied < 0, -1.0, 1.0).to(x.dtype)
    _, val_from_tied = _linearised_flow(
        full, eps * 2**0.5, side, start=torch.stack([pattern] * 2, 1)
    )
    val_full = torch.maximum(torch.maximum(val_full, val_from_tied), val_tied)
    return {TIED.name: val_tied, FULL.name: val_full}


def loss_ceiling(model, pairs, *, x_range=(-1.0, 1.0)) -> torch.Tensor:
    """An upper bound on l_adv over every x in the box and every flow, per pair (B,).

    Warped pixels stay in the box (bilinear weights are convex, samples
    outside read 0, which lies in it), so each hidden unit relu(W_h z) ranges
    over [0, max_z W_h z] for z in the box and two such values differ by at
    most max_z relu(W_h z) - min_z relu(W_h z). Hence
    2 l_adv <= sum_h |v_h| (max_z relu(W_h z) - min_z relu(W_h z)), which is
    sum_h |v_h| ||W_h||_1 on [-1, 1] (the book's "Readings we had to choose",
    point 18); for f linear, 2 l_adv <= sum_i |v_i| (hi - lo). No eps enters:
    the exact loss cannot grow without bound.
    """
    lo, hi = x_range
    w, v = pair_layers(model, pairs)
    if w is None:
        return v.abs().sum(1) * (hi - lo) / 2
    top = (w.clamp_min(0) * hi + w.clamp_max(0) * lo).sum(1).clamp_min(0)
    bottom = (w.clamp_min(0) * lo + w.clamp_max(0) * hi).sum(1).clamp_min(0)
    return (v.abs() * (top - bottom)).sum(1) / 2
