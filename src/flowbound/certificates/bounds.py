"""Upper bounds on the adversarial loss (Section 4.1, appendix 6.5, 6.8).

The SDP of Section 4.1: max tr(Z P) s.t. diag(Z) <= 1, Z PSD, with
P = [[0, A], [A^T, 0]] and A = diag(v) W diag(lambda) (Readings table, point 13). It
relaxes max over sign vectors of z^T P z = 2 s^T A t. Any vector c gives the
certified upper bound sum(c) + n * max(0, lambda_max(P - diag(c))) (weak
duality), whatever produced c; :func:`certify` evaluates it in float64.

The fast solver (:func:`sdp_bound`) is the mixing method, a Burer-Monteiro
factorisation Z = U U^T with unit rows, U = [S; T], updated block by block:
T <- rownorm(A^T S), S <- rownorm(A T), each an exact maximisation over its
block, then extrapolated past the previous block (T <- rownorm(T' + beta (T' - T)),
beta = ``momentum``), which cuts the sweeps to a certificate 2-7x
(benchmarks/RESULTS.md).
Its dual vector c_i = u_i . (P U)_i sums to the primal value (U has unit rows,
so the value is feasible whatever produced U), and the certified gap is
n * max(0, lambda_max(P - diag(c))).

Used in: Possibility results (Figures 5, 11), the sdp variant.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch

from flowbound.checks import check_int, check_number, finite_float64
from flowbound.threat.geometry import aabb_lambda, m_inv_norm

__all__ = [
    "SDPBound",
    "certify",
    "certify_cholesky",
    "frobenius_bound",
    "linear_bound",
    "sdp_adversarial_bound",
    "sdp_bound",
    "sdp_bound_cvxpy",
    "sdp_matrix",
    "spectral_bound",
]


def sdp_matrix(w: torch.Tensor, v: torch.Tensor, lam: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A = diag(v) W diag(lambda): (h, d), or (B, h, d) for v of shape (B, h). Float64."""
    w = torch.as_tensor(w, dtype=torch.float64)
    v = torch.as_tensor(v, dtype=torch.float64)
    lam = torch.tensor(np.array(lam, dtype=np.float64))  # copy: cached lambda is read-only
    return v.unsqueeze(-1) * w * lam


def _p_matrix(a: np.ndarray) -> np.ndarray:
    h, d = a.shape
    p = np.zeros((h + d, h + d))
    p[:h, h:] = a
    p[h:, :h] = a.T
    return p


def _dual_inputs(a, c) -> tuple[np.ndarray, np.ndarray]:
    """A (h, d) and c (h + d,) as finite float64 arrays, or a clear error."""
    a = finite_float64("A", a, ndims=(2,))
    c = finite_float64("c", c, ndims=(1,))
    if len(c) != sum(a.shape):
        raise ValueError(
            f"c must have h + d = {sum(a.shape)} entries for A {a.shape}, got {len(c)}"
        )
    return a, c


def _finite_bound(value: float, what: str) -> float:
    """Fail closed: a certificate that is not a finite number is an error, never a bound."""
    if not math.isfinite(value):
        raise FloatingPointError(f"{what} came out as {value}: no certificate")
    return value


def certify(a: torch.Tensor | np.ndarray, c: torch.Tensor | np.ndarray) -> float:
    """sum(c) + n * max(0, lambda_max(P - diag(c))) in float64: an upper bound on the SDP."""
    a, c = _dual_inputs(a, c)
    p = _p_matrix(a)
    top = float(np.linalg.eigvalsh(p - np.diag(c))[-1])
    _finite_bound(top, "lambda_max(P - diag(c))")
    return _finite_bound(float(c.sum() + len(c) * max(0.0, top)), "the dual bound")


_UNIT_ROUNDOFF = np.finfo(np.float64).eps / 2


def certify_cholesky(a: np.ndarray, c: np.ndarray, delta: float) -> float | None:
    """sum(c) + n * max(0, delta) if a float64 Cholesky proves P - diag(c) < delta I, else None.

    Cholesky of B - sigma I, B = diag(c) + delta I - P, succeeds in floating
    point only if B is positive definite, once sigma covers the rounding of
    the factorisation: sigma = 2 gamma_(n+1) tr(B) (Rump, 2006, with a factor 2
    to spare; gamma_k = k u / (1 - k u)). Several times cheaper than the
    eigenvalues :func:`certify` computes, and as rigorous.
    """
    a, c = _dual_inputs(a, c)
    delta = check_number("delta", delta)
    n = len(c)
    b = -_p_matrix(a)
    diag = c + delta
    k = (n + 1) * _UNIT_ROUNDOFF
    sigma = 2 * k / (1 - k) * float(np.clip(diag, 0, None).sum()) + 1e-280
    if not math.isfinite(sigma):
        return None  # the rounding bound overflowed: prove nothing
    b[np.diag_indices(n)] = diag - sigma
    try:
        factor = scipy.linalg.cholesky(b, lower=True, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    if not np.isfinite(np.diag(factor)).all():  # a factor with NaN or inf proves nothing
        return None
    return _finite_bound(float(c.sum() + n * max(0.0, delta)), "the dual bound")


class SDPBound(NamedTuple):
    """Per instance (B,): certified ``upper``, feasible ``lower``, relative ``gap``,
    the dual vectors ``c`` (B, n), iterations, and the wall time in seconds."""

    upper: np.ndarray
    lower: np.ndarray
    gap: np.ndarray
    c: np.ndarray
    iterations: np.ndarray
    seconds: float


def _rownorm(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-300)


def _extrapolated(new: torch.Tensor, old: torch.Tensor, beta: float) -> torch.Tensor:
    """A block's exact update ``new`` pushed past ``old`` by ``beta``, rows renormalised."""
    return _rownorm(new + beta * (new - old)) if beta else new


def sdp_bound(
    a: torch.Tensor,
    *,
    tol: float = 1e-4,
    rank: int | None = None,
    max_iter: int = 5000,
    check_every: int = 10,
    momentum: float = 0.7,
    first_check: int = 20,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> SDPBound:
    """Certified SDP value for A (h, d) or a batch (B, h, d), by the mixing method.

    Iterates until every instance's certified relative gap (upper - lower) /
    upper is at most ``tol`` or ``max_iter`` sweeps. Every ``check_every``
    sweeps from sweep ``first_check`` on (with momentum, full-size instances
    certify at 20-30 sweeps, so earlier checks are wasted Cholesky factorisations),
    one float64 Cholesky (:func:`certify_cholesky`) tests whether the
    current c already certifies the gap; an instance never certified that way
    gets the eigenvalue bound (:func:`certify`) of its last c. ``rank``
    defaults to ceil(sqrt(2 n)) + 1, above which the factorised problem has
    no spurious local optima (Barvinok-Pataki; Boumal et al., 2016).
    ``momentum`` (beta in [0, 1), 0: the plain mixing method) extrapolates each
    block update past the previous one; the certificate does not depend on it.
    """
    start = time.perf_counter()
    where = a.device if isinstance(a, torch.Tensor) else torch.device("cpu")
    a = torch.from_numpy(finite_float64("A", a, ndims=(2, 3)))
    tol = check_number("tol", tol, low=0.0, high=1.0, low_open=True, high_open=True)
    max_iter = check_int("max_iter", max_iter)
    check_every = check_int("check_every", check_every)
    first_check = check_int("first_check", first_check)
    beta = check_number("momentum", momentum, low=0.0, high=1.0, high_open=True)
    if rank is not None:
        rank = check_int("rank", rank)
    single = a.dim() == 2
    a = a.unsqueeze(0) if single else a
    dev = torch.device(device) if device is not None else where
    a = a.to(dev)
    b, h, d = a.shape
    n = h + d
    k = rank or int(np.ceil(np.sqrt(2 * n))) + 1
    gen = torch.Generator().manual_seed(seed)
    s = _rownorm(torch.randn(b, h, k, generator=gen, dtype=torch.float64)).to(dev)
    t = _rownorm(torch.randn(b, d, k, generator=gen, dtype=torch.float64)).to(dev)
    upper = np.full(b, np.inf)
    lower = np.zeros(b)
    cs = np.zeros((b, n))
    iters = np.zeros(b, dtype=int)
    active = torch.ones(b, dtype=torch.bool)
    last_c = np.zeros((b, n))
    for it in range(1, max_iter + 1):
        idx = active.nonzero().flatten().to(dev)
        aa = a[idx]
        t_new = _extrapolated(_rownorm(aa.transpose(1, 2) @ s[idx]), t[idx], beta)
        t[idx] = t_new
        at = aa @ t_new
        s[idx] = _extrapolated(_rownorm(at), s[idx], beta)
        if (it % check_every or it < first_check) and it != max_iter:
            continue
        ast = aa.transpose(1, 2) @ s[idx]
        c_s = (s[idx] * at).sum(-1)
        c_t = (t[idx] * ast).sum(-1)
        c = torch.cat([c_s, c_t], 1).cpu().numpy()
        for row, inst in enumerate(idx.cpu().tolist()):
            a_np = a[inst].cpu().numpy()
            lo = float(c[row].sum())  # = tr(Z P) for Z = U U^T, feasible
            lower[inst] = max(lower[inst], lo)
            last_c[inst], iters[inst] = c[row], it
            # Is the gap already <= tol? Prove lambda_max(P - diag(c)) < delta for the
            # delta at which sum(c) + n delta is within tol of sum(c) (one Cholesky).
            if lo > 0:
                delta = 0.99 * tol * lo / (n * (1 - tol))
                up = certify_cholesky(a_np, c[row], delta)
            else:
                up = certify(a_np, c[row])
            if up is not None and up < upper[inst]:
                upper[inst], cs[inst] = up, c[row]
            if up is not None and (upper[inst] - lower[inst]) <= tol * abs(upper[inst]):
                active[inst] = False
        if not active.any():
            break
    for inst in np.nonzero(~np.isfinite(upper))[0]:  # never certified at tol: eigenvalues
        upper[inst], cs[inst] = certify(a[inst].cpu().numpy(), last_c[inst]), last_c[inst]
    below = upper < lower - 1e-9 * np.abs(lower)  # lower is feasible: the SDP is >= it
    if not (np.isfinite(upper).all() and np.isfinite(lower).all()) or below.any():
        raise FloatingPointError(  # fail closed: never hand out a broken certificate
            f"sdp_bound produced upper {upper} and lower {lower}: no certificate"
        )
    gap = (upper - lower) / np.abs(upper)
    out = SDPBound(upper, lower, gap, cs, iters, time.perf_counter() - start)
    if single:
        return SDPBound(
            out.upper[0], out.lower[0], out.gap[0], out.c[0], out.iterations[0], out.seconds
        )
    return out


def sdp_bound_cvxpy(a: np.ndarray, *, solver: str = "SCS", eps: float = 1e-6) -> float:
    """The SDP of Section 4.1 solved by cvxpy (the reference; small n only)."""
    import cvxpy as cp

    p = _p_matrix(np.asarray(a, dtype=np.float64))
    n = len(p)
    z = cp.Variable((n, n), PSD=True)
    prob = cp.Problem(cp.Maximize(cp.trace(z @ p)), [cp.diag(z) <= 1])
    kwargs = {"eps": eps} if solver == "SCS" else {}
    prob.solve(solver=solver, **kwargs)
    return float(prob.value)


def _domain_constant(domain: str) -> float:
    # Each partial of a bilinear warp is a convex combination of neighbour
    # differences: |.| <= 1 for pixels in [0, 1], <= 2 in [-1, 1]; a tied
    # flow adds two partials (Readings table, point 17).
    if domain == "unit":
        return 2.0
    if domain == "symmetric":
        return 4.0
    raise ValueError(
        f"domain must be 'unit' ([0, 1] pixels) or 'symmetric' ([-1, 1]), got {domain!r}"
    )


def spectral_bound(
    w, v, eps: float, *, form: str = "sound", domain: str = "unit", side: int = 28
) -> float | np.ndarray:
    """Spectral-norm upper bound on l_adv for f = v^T relu(W x); v (h,) gives a float,
    a batch of heads (B, h) an array (B,).

    ``form="printed"``: eps ||W||_2 ||v||_2, as in appendix 6.8.
    ``form="sound"``: (D / 2) eps ||W||_2 ||v||_2 ||M^{-1}||_2, D the bound on
    |dg_i / dr_i| for ``domain`` (2 for [0, 1] images), 1/2 from
    l_adv = (f(g) - f(x)) / 2, ||r||_2 <= ||M^{-1}||_2 eps (Readings table, point 12).
    """
    return _norm_bound(w, v, eps, 2, form, domain, side)


def frobenius_bound(
    w, v, eps: float, *, form: str = "sound", domain: str = "unit", side: int = 28
) -> float | np.ndarray:
    """As :func:`spectral_bound` with ||W||_F >= ||W||_2 (appendix 6.8)."""
    return _norm_bound(w, v, eps, "fro", form, domain, side)


def _norm_bound(w, v, eps, order, form, domain, side) -> float | np.ndarray:
    w = finite_float64("W", w, ndims=(2,))
    v = finite_float64("v", v, ndims=(1, 2))
    eps = check_number("eps", eps, low=0.0)
    if v.shape[-1] != w.shape[0]:
        raise ValueError(f"v must have one entry per row of W ({w.shape[0]}), got {v.shape[-1]}")
    if form == "sound" and side * side != w.shape[1]:
        raise ValueError(f"W has {w.shape[1]} columns but side = {side} means {side * side} pixels")
    base = eps * np.linalg.norm(w, ord=order) * np.linalg.norm(v, axis=-1)
    if form == "sound":
        base = _domain_constant(domain) / 2 * base * m_inv_norm(side)
    elif form != "printed":
        raise ValueError(f"form must be 'printed' or 'sound', got {form!r}")
    return float(base) if v.ndim == 1 else base


def linear_bound(v, eps: float, *, domain: str = "unit", side: int = 28) -> float | np.ndarray:
    """Upper bound on l_adv for a linear f = v^T x (appendix 6.5, Eq. 16):
    (D / 2) eps ||v * lambda||_1, since |r_i| <= eps lambda_i (Prop. 2) and
    |dg_i / dr_i| <= D; v (d,) gives a float, (B, d) an array (B,)."""
    v = finite_float64("v", v, ndims=(1, 2))
    eps = check_number("eps", eps, low=0.0)
    if v.shape[-1] != side * side:
        raise ValueError(f"v has {v.shape[-1]} entries but side = {side} means {side * side}")
    out = _domain_constant(domain) / 2 * eps * np.abs(v * aabb_lambda(side)).sum(-1)
    return float(out) if v.ndim == 1 else out


def sdp_adversarial_bound(sdp_upper: float, eps: float, *, domain: str = "unit") -> float:
    """Upper bound on l_adv = (f(g(r; x)) - f(x)) / 2 from a certified SDP value.

    (1/2) int_0^1 grad f^T Dg r dz with relu' in [0, 1] (relaxed to [-1, 1]),
    |Dg_ii| <= D (``domain``) and |r_i| <= eps lambda_i (Prop. 2) is at most
    (1/2) D eps max_{s,t} s^T A t <= (1/2) D eps SDP / 2, since
    max z^T P z = 2 max s^T A t. So l_adv <= D eps SDP / 4: eps SDP / 2 for
    [0, 1] images. The paper's Section 4.1 writes l_adv <= eps max z^T P z
    with its l_adv the whole decrease (no 1/2) and D = 2 absorbed: that is
    exactly 2 l_adv <= eps SDP here, with no factor missing (Readings table,
    point 17).
    """
    sdp_upper = check_number("sdp_upper", sdp_upper, low=0.0)
    eps = check_number("eps", eps, low=0.0)
    return _domain_constant(domain) / 4 * eps * sdp_upper
