"""Certified 0/1 adversarial loss of a multi-class network (Figure 5, appendix 6.7).

For a test input x of class y and another class i, let f = f_y - f_i
(v = V_y - V_i). A flow can flip y to i only if it lowers f by more than the
margin m_i(x) = f_y(x) - f_i(x). The largest possible decrease is
2 sup l_adv of the reversed pair (l_adv carries the 1/2 of Section 2.2), and
P^{iy}, P^{yi} give the same SDP value (flip the sign of s), so one bound per
unordered pair serves both directions. x is certified at eps when it is
classified correctly and m_i(x) > Delta_{iy}(eps) for every i != y, where
Delta is the bound on the decrease:

- ``"sdp"``: Delta = 2 * (D / 4) eps SDP(A^{iy}) = eps SDP for [0, 1] images
  (D = 2), A = diag(V_y - V_i) W diag(lambda);
- ``"spectral"`` / ``"frobenius"`` (sound): Delta = D eps ||W|| ||v|| ||M^{-1}||_2;
- ``"spectral_printed"`` / ``"frobenius_printed"``: Delta = eps ||W|| ||v||, the
  appendix's formulas read as bounds on the decrease (they drop D, 1/2 and
  ||M^{-1}||_2, Readings table, point 12), shown for comparison only;
- ``"linear"``: for f = v^T x, Delta = D eps ||v * lambda||_1 (Eq. 16 with the 1/2).

Every Delta is linear in eps, so it is computed once at eps = 1.

Used in: Possibility results (Figures 5, 11).
"""

from __future__ import annotations

import numpy as np
import torch

from .bounds import sdp_adversarial_bound, sdp_bound, sdp_matrix
from .geometry import aabb_lambda, mtm_eigh

__all__ = ["KINDS", "certified_fraction", "decrease_bounds", "margins"]

KINDS = ("sdp", "spectral", "frobenius", "spectral_printed", "frobenius_printed", "linear")
_D = 2.0  # |dg_i / dr_i| <= 2 for [0, 1] images and tied flows (Readings table, point 17)


def _layers(model: torch.nn.Module):
    net = getattr(model, "classifier", model)  # the STN's classifier: see the module notes
    w = net.W.weight.detach().double().cpu() if hasattr(net, "W") else None
    return w, net.V.weight.detach().double().cpu()


def decrease_bounds(model: torch.nn.Module, kind: str, *, side: int = 28, tol: float = 1e-4):
    """Delta at eps = 1 for every class pair: a symmetric (K, K) array (0 on the diagonal)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    w, vmat = _layers(model)
    k = len(vmat)
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    lam = aabb_lambda(side)
    m_inv_norm = 1.0 / np.sqrt(mtm_eigh(side)[0][0])
    out = np.zeros((k, k))
    if kind == "linear" or w is None:
        if kind != "linear":
            raise ValueError("a linear network has only the 'linear' bound")
        vals = [_D * np.abs((vmat[i] - vmat[j]).numpy() * lam).sum() for i, j in pairs]
    elif kind == "sdp":
        a = torch.stack([sdp_matrix(w, vmat[i] - vmat[j], lam) for i, j in pairs])
        res = sdp_bound(a, tol=tol)
        vals = [2 * sdp_adversarial_bound(u, 1.0, domain="unit") for u in res.upper]
    else:
        order = 2 if kind.startswith("spectral") else "fro"
        wn = np.linalg.norm(w.numpy(), ord=order)
        scale = 1.0 if kind.endswith("printed") else _D * m_inv_norm
        vals = [scale * wn * np.linalg.norm((vmat[i] - vmat[j]).numpy()) for i, j in pairs]
    for (i, j), val in zip(pairs, vals, strict=True):
        out[i, j] = out[j, i] = val
    return out


@torch.no_grad()
def margins(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """m_i(x) = f_y(x) - f_i(x) for every class i (N, K); the classifier's view for an STN."""
    net = getattr(model, "classifier", None)
    if net is not None:
        x = model.transform(x)  # certify the classifier on the STN's output
    else:
        net = model
    scores = net(x.to(next(net.parameters()).device)).double().cpu()
    return (scores.gather(1, y.view(-1, 1).cpu()) - scores).numpy()


def certified_fraction(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps,
    kind: str = "sdp",
    *,
    side: int = 28,
    delta: np.ndarray | None = None,
    tol: float = 1e-4,
) -> np.ndarray:
    """The 0/1 adversarial loss at each eps: the fraction of (x, y) that are
    misclassified or not certified (Figure 5). ``delta`` reuses bounds from
    :func:`decrease_bounds` (computed here otherwise)."""
    if delta is None:
        delta = decrease_bounds(model, kind, side=side, tol=tol)
    m = margins(model, x, y)
    yy = y.cpu().numpy()
    need = delta[yy]  # (N, K): Delta_{y, i} per image
    m = m.copy()
    m[np.arange(len(yy)), yy] = np.inf  # the true class itself never flips
    correct = (m > 0).all(1)
    eps = np.atleast_1d(np.asarray(eps, dtype=np.float64))
    safe = [(correct & (m > e * need).all(1)).mean() for e in eps]
    return 1.0 - np.asarray(safe)
