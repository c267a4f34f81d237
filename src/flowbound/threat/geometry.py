"""Neighbour matrices, M^T M, M, M^{-1}, lambda and l_diff (Prop. 1, 2; Eq. 2, 3).

Pixels are numbered row-major, i = row * side + col. A neighbour matrix
M^(k) has as row i the one-hot code of pixel i's neighbour in direction k,
and a zero row where that neighbour is missing (zero-fill borders,
Readings table, point 3): a missing neighbour counts as flow 0. With that
convention M^T M = sum_k (I - M^(k))^T (I - M^(k)) is positive definite, and
M is its symmetric square root. Everything is float64 numpy, cached per side.

Constraint convention (Readings table, point 4): the budget eps bounds ||M r||_2
(Eq. 3); for a tied flow l_diff(r) = sqrt(2) ||M r||_2 (Prop. 1).

Used in: Background, and every attack and bound (M^{-1}, lambda).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.sparse as sp
import torch

__all__ = [
    "aabb_lambda",
    "flow_norm",
    "l_diff",
    "l_diff_matrix",
    "m_inv",
    "m_inv_norm",
    "m_inv_tensor",
    "m_sqrt",
    "mtm",
    "mtm_eigh",
    "neighbour_matrices",
]

_DIRECTIONS = {"t": (-1, 0), "b": (1, 0), "l": (0, -1), "r": (0, 1)}


def _check_side(side: int) -> int:
    if not isinstance(side, (int, np.integer)) or side < 2:
        raise ValueError(f"side must be an integer >= 2, got {side!r}")
    return int(side)


@lru_cache(maxsize=8)
def neighbour_matrices(side: int) -> dict[str, sp.csr_matrix]:
    """M^(t), M^(b), M^(l), M^(r) as sparse (side^2, side^2) 0/1 matrices."""
    side = _check_side(side)
    d = side * side
    rows, cols = np.divmod(np.arange(d), side)
    out = {}
    for name, (dr, dc) in _DIRECTIONS.items():
        nr, nc = rows + dr, cols + dc
        ok = (nr >= 0) & (nr < side) & (nc >= 0) & (nc < side)
        i = np.arange(d)[ok]
        j = (nr * side + nc)[ok]
        out[name] = sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(d, d))
    return out


@lru_cache(maxsize=8)
def _mtm_sparse(side: int) -> sp.csr_matrix:
    eye = sp.identity(side * side, format="csr")
    total = sp.csr_matrix((side * side, side * side))
    for mk in neighbour_matrices(side).values():
        diff = eye - mk
        total = total + diff.T @ diff
    return total.tocsr()


def mtm(side: int, *, sparse: bool = False) -> np.ndarray | sp.csr_matrix:
    """M^T M = sum_k (I - M^(k))^T (I - M^(k)) (Prop. 1), dense or sparse."""
    m = _mtm_sparse(_check_side(side))
    return m.copy() if sparse else m.toarray()


@lru_cache(maxsize=8)
def mtm_eigh(side: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and orthonormal eigenvectors of M^T M."""
    w, q = np.linalg.eigh(mtm(side))
    w.setflags(write=False)
    q.setflags(write=False)
    return w, q


@lru_cache(maxsize=8)
def _m_power(side: int, power: float) -> np.ndarray:
    w, q = mtm_eigh(side)
    out = (q * w**power) @ q.T
    out = (out + out.T) / 2
    out.setflags(write=False)
    return out


def m_sqrt(side: int) -> np.ndarray:
    """M, the symmetric positive definite square root of M^T M."""
    return _m_power(_check_side(side), 0.5)


def m_inv(side: int) -> np.ndarray:
    """M^{-1} = (M^T M)^{-1/2}."""
    return _m_power(_check_side(side), -0.5)


def m_inv_tensor(
    side: int, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """M^{-1} as a (side^2, side^2) torch tensor (a fresh copy) in ``dtype`` on ``device``."""
    return torch.from_numpy(m_inv(side).copy()).to(device=device, dtype=dtype)


def m_inv_norm(side: int) -> float:
    """||M^{-1}||_2 = 1 / sqrt(lambda_min(M^T M)): the largest ||r||_2 per unit ||M r||_2."""
    return float(1.0 / np.sqrt(mtm_eigh(_check_side(side))[0][0]))


@lru_cache(maxsize=8)
def _lambda(side: int) -> np.ndarray:
    lam = np.sqrt(np.diag(_m_power(side, -1.0)))
    lam.setflags(write=False)
    return lam


def aabb_lambda(side: int) -> np.ndarray:
    """lambda with lambda_i^2 = ((M^T M)^{-1})_ii (Prop. 2), shape (side^2,).

    max r_i over ||M r|| <= eps equals eps * lambda_i, so the box
    [-eps lambda_i, eps lambda_i] is the tight axis-aligned bounding box of
    the ellipsoid and of all its mirror images diag(s) r, ||s||_inf <= 1.
    """
    return _lambda(_check_side(side))


def _flat(r: torch.Tensor | np.ndarray) -> tuple[np.ndarray, int]:
    a = r.detach().cpu().numpy() if isinstance(r, torch.Tensor) else np.asarray(r)
    a = a.astype(np.float64)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"flow must end in two equal image axes (side, side), got {a.shape}")
    side = a.shape[-1]
    return a.reshape(*a.shape[:-2], side * side), side


def flow_norm(r: torch.Tensor | np.ndarray) -> np.ndarray:
    """||M r||_2 per flow (the Eq. 3 budget), for tied flows (..., side, side)."""
    a, side = _flat(r)
    return np.sqrt(np.einsum("...i,ij,...j->...", a, mtm(side), a))


def l_diff(r: torch.Tensor | np.ndarray, *, full: bool = False) -> np.ndarray:
    """l_diff by Eq. (2): sqrt of the sum over pixels and their 4 neighbours.

    ``r`` is a tied flow (..., side, side), or with ``full=True`` a flow
    (..., 2, side, side) holding (du, dv). The flag is explicit because a
    batch of two tied flows has the same shape as one full flow. Missing
    neighbours count as flow 0 (zero-fill, as in Prop. 1).
    """
    a = r.detach().cpu().numpy() if isinstance(r, torch.Tensor) else np.asarray(r)
    a = a.astype(np.float64)
    if full and (a.ndim < 3 or a.shape[-3] != 2):
        raise ValueError(f"a full flow has shape (..., 2, side, side), got {a.shape}")
    comps = [a[..., 0, :, :], a[..., 1, :, :]] if full else [a, a]
    total = 0.0
    for c in comps:
        pad = np.zeros(c.shape[:-2] + (c.shape[-2] + 2, c.shape[-1] + 2))
        pad[..., 1:-1, 1:-1] = c
        for dr, dc in _DIRECTIONS.values():
            nb = pad[..., 1 + dr : pad.shape[-2] - 1 + dr, 1 + dc : pad.shape[-1] - 1 + dc]
            total = total + ((c - nb) ** 2).sum(axis=(-2, -1))
    return np.sqrt(total)


def l_diff_matrix(r: torch.Tensor | np.ndarray) -> np.ndarray:
    """l_diff by Prop. 1: sqrt(2 r^T M^T M r) for a tied flow (..., side, side)."""
    return np.sqrt(2.0) * flow_norm(r)
