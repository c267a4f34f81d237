"""Notation and proofs appendix: numerical checks of Propositions 1-2, Eq. (15) and the SDP."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch

from flowbound.certificates.bounds import sdp_bound, sdp_matrix
from flowbound.networks.architectures import OneHidden
from flowbound.networks.view import binary_weights, view
from flowbound.threat.geometry import aabb_lambda, flow_norm, l_diff, m_inv, mtm
from flowbound.threat.warp import jacobian_true

from .background import random_ellipsoid_flows

__all__ = ["jacobian_constant", "proof_rows", "prop1_error", "prop2_check", "sdp_sandwich"]


def prop1_error(side: int = 28, eps: float = 1.0, n: int = 200, seed: int = 0) -> float:
    """Proposition 1: the largest |l_diff(r) - sqrt(2) ||M r||| over n random tied flows."""
    r = random_ellipsoid_flows(n, side, eps, seed=seed)
    return float(np.abs(l_diff(r) - np.sqrt(2) * flow_norm(r)).max())


def prop2_check(side: int = 28, eps: float = 1.0, n: int = 200, seed: int = 0) -> dict[str, float]:
    """Proposition 2: the largest |r_i| / (eps lambda_i) over n random flows on the
    ellipsoid (<= 1), and the maximiser r = eps (M^T M)^{-1} e_i / lambda_i at the centre
    pixel: its ||M r|| (= eps) and r_i / (eps lambda_i) (= 1)."""
    r = random_ellipsoid_flows(n, side, eps, seed=seed)
    lam = aabb_lambda(side)
    ratio = float((np.abs(r.reshape(n, -1).numpy()) / (eps * lam)).max())
    inv = m_inv(side) @ m_inv(side).T
    i = (side // 2) * side + side // 2
    r_star = eps * inv[:, i] / lam[i]
    return {
        "ratio": ratio,
        "norm": float(np.sqrt(r_star @ mtm(side) @ r_star)),
        "attained": float(r_star[i] / (eps * lam[i])),
    }


def jacobian_constant(side: int = 28, n: int = 64, seed: int = 0) -> dict[str, float]:
    """Eq. (15): the largest |dg_i / dr_i| over n random binary images and tied flows in
    [-1, 1], for images in [0, 1] (bound D = 2) and in [-1, 1] (D = 4)."""
    g = torch.Generator().manual_seed(seed)
    worst = {}
    for name, lo in (("[0, 1]", 0.0), ("[-1, 1]", -1.0)):
        x = lo + (1 - lo) * (torch.rand(n, side, side, generator=g, dtype=torch.float64) > 0.5)
        flows = torch.rand(n, side, side, generator=g, dtype=torch.float64) * 2 - 1
        worst[name] = float(jacobian_true(x, flows).abs().max())
    return worst


def sdp_sandwich(hidden: int = 6, side: int = 3, seed: int = 0) -> dict[str, float]:
    """Section 4.1 on a network small enough for brute force: max over signs of
    2 s^T A t <= the SDP (certified [lower, upper]) <= n lambda_max(P)."""
    torch.manual_seed(seed)
    d = side * side
    net = OneHidden(d, hidden, 2).double()
    w, vm, _ = view(net)
    a = sdp_matrix(w, binary_weights(vm, [(0, 1)])[0], aabb_lambda(side)).numpy()
    brute = max(
        2 * np.array(s) @ a @ np.array(t)
        for s in itertools.product((-1, 1), repeat=hidden)
        for t in itertools.product((-1, 1), repeat=d)
    )
    res = sdp_bound(a, tol=1e-8)
    p_mat = np.block([[np.zeros((hidden, hidden)), a], [a.T, np.zeros((d, d))]])
    spectral = (hidden + d) * np.linalg.eigvalsh(p_mat)[-1]
    return {
        "brute": float(brute),
        "lower": float(res.lower),
        "upper": float(res.upper),
        "spectral": float(spectral),
    }


def proof_rows(side: int = 28, eps: float = 1.0) -> list[list[Any]]:
    """The appendix's table: statement, check, result, one row per check above."""
    p2 = prop2_check(side, eps)
    worst = jacobian_constant(side)
    s = sdp_sandwich()
    return [
        [
            "Proposition 1",
            "l_diff = sqrt(2) ||M r|| (200 random tied flows)",
            f"max error {prop1_error(side, eps):.1e}",
        ],
        [
            "Proposition 2",
            "|r_i| <= eps lambda_i on ||M r|| <= eps, and it is attained",
            f"largest |r_i| / (eps lambda_i) over 200 random flows {p2['ratio']:.3f}; "
            f"maximiser: ||M r|| = {p2['norm']:.6f}, "
            f"r_i / (eps lambda_i) = {p2['attained']:.6f}",
        ],
        [
            "Eq. (15), Section 4.1",
            "|dg_i/dr_i| <= D: 2 on [0, 1], 4 on [-1, 1]",
            f"largest over 64 random binary images and flows: {worst['[0, 1]']:.3f} "
            f"and {worst['[-1, 1]']:.3f}",
        ],
        [
            "Section 4.1 (SDP)",
            "max 2 s^T A t <= SDP <= n lambda_max(P) (6 hidden, 3 x 3)",
            f"{s['brute']:.4f} <= [{s['lower']:.4f}, {s['upper']:.4f}] <= {s['spectral']:.4f}; "
            f"SDP / brute force {s['upper'] / s['brute']:.3f} (Grothendieck: < 1.783)",
        ],
    ]
