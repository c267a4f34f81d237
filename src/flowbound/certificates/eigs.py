"""Top eigenpairs of many symmetric matrices by warm-started Lanczos (Rayleigh-Ritz).

Training f_sdp needs lambda_max(P - diag(c)) and its eigenvector for 45
class pairs at every step. A full eigendecomposition of each 1284 x 1284
matrix costs ~0.1 s; the top eigenvector changes little between steps, so a
few Krylov steps from the previous one are enough. Only matrix-vector
products are used, so the matrices are never formed.

Used in: the ``sdp`` variant (:mod:`flowbound.training.sdp`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["top_eigenpairs"]


def top_eigenpairs(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    *,
    steps: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest (algebraic) Ritz value and vector of B symmetric operators.

    ``matvec`` maps (B, n) to (B, n); ``start`` (B, n) is the warm start.
    Builds the Krylov basis [u, Ku, ..., K^(steps-1) u] with full
    re-orthogonalisation and returns (values (B,), unit vectors (B, n)) of the
    top Ritz pair. Ritz values never exceed lambda_max (Cauchy interlacing),
    so this is a lower estimate: fine for a training regulariser, never used
    to certify (certificates use :func:`flowbound.certificates.bounds.certify`).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    with torch.no_grad():
        q = start / start.norm(dim=1, keepdim=True).clamp_min(1e-30)
        basis, images = [q], []
        for k in range(steps):
            kq = matvec(basis[k])
            images.append(kq)
            if k == steps - 1:
                break
            w = kq
            for _ in range(2):  # twice is enough (Kahan-Parlett)
                for b in basis:
                    w = w - (w * b).sum(1, keepdim=True) * b
            norm = w.norm(dim=1, keepdim=True)
            if bool((norm < 1e-12).all()):  # invariant subspace found for every operator
                break
            basis.append(w / norm.clamp_min(1e-30))
        qmat = torch.stack(basis[: len(images)], 2)  # (B, n, k)
        kmat = torch.stack(images, 2)
        small = qmat.transpose(1, 2) @ kmat
        small = (small + small.transpose(1, 2)) / 2
        vals, vecs = torch.linalg.eigh(small)
        top = (qmat @ vecs[:, :, -1:]).squeeze(2)
        return vals[:, -1], top / top.norm(dim=1, keepdim=True)
