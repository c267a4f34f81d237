"""SDP-NN training (Raghunathan et al., 2018) with this paper's matrix P (the ``sdp`` variant).

f_sdp minimises hinge + lambda * eps * mean over class pairs of the dual SDP
bound on the decrease at eps (appendix 6.8, item 6; Eq. 9 / appendix 6.7).

Used in: the ``sdp`` variant (:mod:`flowbound.training.zoo`), Possibility results.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from flowbound.certificates.bounds import sdp_bound, sdp_matrix
from flowbound.certificates.eigs import top_eigenpairs
from flowbound.networks.view import binary_weights, unordered_pairs, weights
from flowbound.threat.geometry import aabb_lambda
from flowbound.training.objectives import hinge, hinge_stacked

__all__ = ["SDPDualLoss", "dual_sdp_bounds", "sdp_stacked"]


def dual_sdp_bounds(
    w: torch.Tensor, vdiff: torch.Tensor, lam: torch.Tensor, c: torch.Tensor, u: torch.Tensor
) -> torch.Tensor:
    """sum(c) + n * max(0, u^T (P - diag(c)) u) per pair, differentiable in W, v, c.

    ``vdiff`` (B, h) holds v = V_i - V_j, so A = diag(v) W diag(lambda) (appendix
    6.7); ``u`` (B, h + d) is the (detached) top eigenvector of P - diag(c).
    With u the exact top eigenvector this is the dual bound of Readings table, point 13
    and its gradient is that of lambda_max (Hellmann-Feynman, u u^T). Stacked networks
    (:mod:`flowbound.training.stacking`) add a leading member axis to every argument but ``lam``.
    """
    h = w.shape[-2]
    s, t = u[..., :h], u[..., h:]
    quad = 2 * ((vdiff * s) * ((lam * t) @ w.transpose(-1, -2))).sum(-1) - (c * u * u).sum(-1)
    return c.sum(-1) + u.shape[-1] * torch.relu(quad)


def _dual_matvec(w: torch.Tensor, vdiff: torch.Tensor, lam: torch.Tensor, c: torch.Tensor):
    """u -> (P - diag(c)) u for every pair (the same shapes as :func:`dual_sdp_bounds`'s
    arguments, detached), never forming P."""
    h = w.shape[-2]

    def matvec(u: torch.Tensor) -> torch.Tensor:
        s, t = u[..., :h], u[..., h:]
        top = vdiff * ((lam * t) @ w.transpose(-1, -2))
        bottom = lam * ((vdiff * s) @ w)
        return torch.cat([top, bottom], -1) - c * u

    return matvec


def _mixing_duals(w, vdiff, lam, settings: dict[str, Any], epoch: int) -> torch.Tensor:
    """One network's duals (pairs, h + d) from the plain mixing method on its own
    weights, checked every 50 sweeps: the duals (and so the weights) f_sdp was trained
    with before the solver's momentum (the cached networks stay what a rebuild trains)."""
    a = sdp_matrix(w.detach().cpu(), vdiff.detach().cpu(), lam.cpu().numpy())
    fresh = sdp_bound(a, tol=settings["refresh_tol"], seed=epoch, check_every=50, momentum=0.0)
    return torch.as_tensor(fresh.c, dtype=lam.dtype)


class _PairDuals:
    """The trainable duals of f_sdp's class pairs, for one network or a stack: ``c``,
    the Lanczos warm starts ``u``, the box ``lam`` and the ``pairs``, set up on first
    use by the subclass's ``_setup``; ``bounds(net, steps)`` the dual bounds."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.s = settings
        self.c: torch.Tensor | None = None
        self.u: torch.Tensor | None = None
        self.lam: torch.Tensor | None = None
        self.pairs: list[tuple[int, int]] = []

    def extra_parameters(self, net) -> list[torch.Tensor]:
        """The dual vectors c, trained with the weights."""
        self._setup(net)
        return [self.c]

    def _keep_tighter(self, net, c_new: torch.Tensor) -> None:
        """Take the duals ``c_new`` for the pairs where they give a smaller bound,
        compared with well-converged eigenvectors (one long Krylov run each)."""
        current = self.bounds(net, steps=60).detach().reshape(-1)
        old = self.c.detach().clone()
        self.c.copy_(c_new.to(self.c))
        renewed = self.bounds(net, steps=60).detach().reshape(-1)
        keep = renewed > current
        self.c[keep] = old[keep]


class SDPDualLoss(_PairDuals):
    """f_sdp: hinge + lambda * eps * mean_{i<j} dual SDP bound (appendix 6.8, item 6).

    Following SDP-NN (Raghunathan et al., 2018), each class pair (i, j) has a
    trainable dual vector c_ij, optimised by the same Adam as the weights
    (:meth:`extra_parameters`); eps * bound is the certified decrease of
    f_i - f_j at eps for [0, 1] images (:mod:`flowbound.certificates.registry`). The top
    eigenvector of P_ij - diag(c_ij) comes from ``lanczos_steps`` warm-started
    Krylov steps per batch (no eigendecomposition). At each epoch start the
    duals are reset to the mixing method's (:func:`flowbound.certificates.bounds.sdp_bound`)
    if those give a smaller bound, so c tracks the moving weights.
    """

    def _vdiff(self, model: nn.Module) -> torch.Tensor:
        return binary_weights(weights(model)[1], self.pairs)

    def _setup(self, model: nn.Module) -> None:
        if self.c is not None:
            return
        w, vmat = weights(model)
        self.pairs = unordered_pairs(vmat.shape[0])
        n = w.shape[0] + w.shape[1]
        self.lam = torch.tensor(
            np.array(aabb_lambda(int(round(w.shape[1] ** 0.5)))), dtype=w.dtype
        ).to(w.device)
        self.c = torch.zeros(len(self.pairs), n, dtype=w.dtype, device=w.device, requires_grad=True)
        gen = torch.Generator().manual_seed(self.s.get("seed", 0))
        self.u = torch.randn(len(self.pairs), n, generator=gen, dtype=w.dtype).to(w.device)

    def _operator(self, model: nn.Module):
        w, vdiff = weights(model)[0].detach(), self._vdiff(model).detach()
        return _dual_matvec(w, vdiff, self.lam, self.c.detach())

    def bounds(self, model: nn.Module, steps: int | None = None) -> torch.Tensor:
        """The current dual bounds per pair (differentiable); updates the warm start."""
        self._setup(model)
        _, self.u = top_eigenpairs(
            self._operator(model), self.u, steps=steps or self.s["lanczos_steps"]
        )
        return dual_sdp_bounds(weights(model)[0], self._vdiff(model), self.lam, self.c, self.u)

    def on_epoch_start(self, model: nn.Module, epoch: int, x: torch.Tensor, y: torch.Tensor):
        self._setup(model)
        with torch.no_grad():
            fresh = _mixing_duals(weights(model)[0], self._vdiff(model), self.lam, self.s, epoch)
            self._keep_tighter(model, fresh)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        reg = self.s["eps"] * self.bounds(model).mean()
        return hinge(model(x), y) + self.s["lambda"] * reg


class _SDPDualStacked(_PairDuals):
    """:class:`SDPDualLoss` for a stacked model (:mod:`flowbound.training.stacking`): the duals of
    every member's class pairs in one parameter (M * pairs, h + d), member-major, their
    top eigenvectors by one batched Lanczos run (rows are independent), each member's
    epoch-start refresh from its own weights. Member m's duals, warm starts and bounds
    are those of f_sdp trained alone (the warm start is seeded by the settings' seed, the
    same for every member, as for a network trained alone)."""

    def _vdiff(self, net) -> torch.Tensor:  # (M, pairs, h): V_i - V_j per member
        return binary_weights(net.V, self.pairs)

    def _setup(self, net) -> None:
        if self.c is not None:
            return
        m, h, d = net.W.shape
        self.pairs = unordered_pairs(net.V.shape[1])
        n, dtype, dev = h + d, net.W.dtype, net.W.device
        side = int(round(d**0.5))
        self.lam = torch.tensor(np.array(aabb_lambda(side)), dtype=dtype).to(dev)
        self.c = torch.zeros(m * len(self.pairs), n, dtype=dtype, device=dev, requires_grad=True)
        gen = torch.Generator().manual_seed(self.s.get("seed", 0))
        u = torch.randn(len(self.pairs), n, generator=gen, dtype=dtype)
        self.u = u.repeat(m, 1).to(dev)

    def _per_member(self, t: torch.Tensor) -> torch.Tensor:  # (M * pairs, n) -> (M, pairs, n)
        return t.view(-1, len(self.pairs), t.shape[-1])

    def _operator(self, net):
        w, vdiff = net.W.detach(), self._vdiff(net).detach()
        matvec = _dual_matvec(w, vdiff, self.lam, self._per_member(self.c.detach()))
        return lambda u: matvec(self._per_member(u)).reshape(u.shape)  # Lanczos: 2-D rows

    def bounds(self, net, steps: int | None = None) -> torch.Tensor:
        """(M, pairs) dual bounds, differentiable in W, V and c (:func:`dual_sdp_bounds`)."""
        self._setup(net)
        _, self.u = top_eigenpairs(
            self._operator(net), self.u, steps=steps or self.s["lanczos_steps"]
        )
        c, u = self._per_member(self.c), self._per_member(self.u)
        return dual_sdp_bounds(net.W, self._vdiff(net), self.lam, c, u)

    def on_stack_start(self, seeds) -> None:
        pass  # the duals' warm start is seeded by the settings, not by the training seed

    def on_epoch_start(self, net, epoch: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """Each member's duals reset to the mixing method's where those give a smaller
        bound, as :meth:`SDPDualLoss.on_epoch_start` does for a network alone."""
        self._setup(net)
        with torch.no_grad():
            vdiff = self._vdiff(net)
            fresh = [
                _mixing_duals(w, vd, self.lam, self.s, epoch)
                for w, vd in zip(net.W, vdiff, strict=True)
            ]
            self._keep_tighter(net, torch.cat(fresh))

    def __call__(self, net, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        reg = self.s["eps"] * self.bounds(net).mean(1)
        return hinge_stacked(net(x), y) + self.s["lambda"] * reg


def sdp_stacked(settings: dict[str, Any]):
    """:class:`SDPDualLoss` (f_sdp) for a stacked model."""
    return _SDPDualStacked(settings)
