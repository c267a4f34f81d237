"""The paper's training variants (appendix 6.8), registered into the model registry.

- ``fro``: hinge + lambda (||W||_F + ||V||_F)
- ``spe``: hinge + lambda (||W||_2 + ||V||_2), spectral norms by power iteration
- ``stn``: hinge, with a spatial transformer network in front of the classifier
- ``at``: cross-entropy + lambda_r * cross-entropy on stAdv examples from a pool
  refreshed every k epochs (the appendix's f_at)
- ``at_pgd``: Madry et al.'s PGD adversarial training (the f_at of Sections 3-4)
- ``sdp``: hinge + lambda * mean over class pairs of the dual SDP bound on the
  decrease at ``eps`` (SDP-NN of Raghunathan et al., 2018, with this paper's
  matrix P of Eq. 9 / appendix 6.7)

The hinge loss is the multi-class hinge of Weston and Watkins as in
``torch.nn.functional.multi_margin_loss``: (1/K) sum_{j != y} max(0, 1 - z_y + z_j).
The paper writes ||v||_2 for the second layer of a binary network; with ten
classes V is a matrix, so ``fro`` uses ||V||_F and ``spe`` ||V||_2.
Settings come from ``profile["variants"][name]``.

Used in: Introduction (evaluation table), Sections 3-4 (f_at, f_fro, ...).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .attacks import pgd, stadv
from .bounds import sdp_bound, sdp_matrix
from .eigs import top_eigenpairs
from .geometry import aabb_lambda
from .models import ARCHS, OneHidden, Variant, cross_entropy, register

__all__ = ["SDPDualLoss", "STNClassifier", "dual_sdp_bounds", "hinge", "spectral_norm_estimate"]


def hinge(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Multi-class hinge (Weston-Watkins), mean over the batch."""
    return F.multi_margin_loss(scores, y, margin=1.0)


class STNClassifier(nn.Module):
    """A spatial transformer (Jaderberg et al., 2015) in front of a OneHidden classifier.

    The localisation network has three layers (784 -> h -> h -> 6, ReLU) and
    starts at the identity transform; the classifier sees the transformed
    image. A bound computed from ``classifier`` alone covers the classifier
    applied to the STN's output, not the whole pipeline.
    """

    def __init__(self, hidden: int = 500, stn_hidden: int = 100) -> None:
        super().__init__()
        self.localisation = nn.Sequential(
            nn.Linear(784, stn_hidden),
            nn.ReLU(),
            nn.Linear(stn_hidden, stn_hidden),
            nn.ReLU(),
            nn.Linear(stn_hidden, 6),
        )
        last = self.localisation[-1]
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
        self.classifier = OneHidden(784, hidden, 10)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The STN's output images (B, 28, 28)."""
        img = x.reshape(-1, 1, 28, 28)
        theta = self.localisation(img.flatten(1)).view(-1, 2, 3)
        grid = F.affine_grid(theta, list(img.shape), align_corners=False)
        return F.grid_sample(img, grid, align_corners=False)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores (B, 10) of the classifier on the transformed images."""
        return self.classifier(self.transform(x))


ARCHS["stn"] = lambda hidden, settings: STNClassifier(hidden, settings.get("stn_hidden", 100))


def spectral_norm_estimate(
    w: torch.Tensor, state: dict[str, torch.Tensor], key: str, iters: int = 1
) -> torch.Tensor:
    """sigma_max(w) by warm-started power iteration, differentiable in w.

    ``state[key]`` keeps the right singular vector between calls, so one
    iteration per training step tracks the slowly changing top singular pair.
    """
    with torch.no_grad():
        v = state.get(key)
        if v is None:
            v = torch.randn(w.shape[1], generator=torch.Generator().manual_seed(0)).to(w)
        for _ in range(iters):
            u = F.normalize(w @ v, dim=0)
            v = F.normalize(w.T @ u, dim=0)
        state[key] = v
    return u @ w @ v


def _fro(settings: dict[str, Any]):
    lam = settings["lambda"]

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        reg = model.W.weight.norm() + model.V.weight.norm()
        return hinge(model(x), y) + lam * reg

    return loss


def _spe(settings: dict[str, Any]):
    lam, state = settings["lambda"], {}

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        reg = spectral_norm_estimate(model.W.weight, state, "W") + spectral_norm_estimate(
            model.V.weight, state, "V"
        )
        return hinge(model(x), y) + lam * reg

    return loss


def _stn(settings: dict[str, Any]):
    return lambda model, x, y: hinge(model(x), y)


class _StAdvPoolLoss:
    """CE + lambda_r * CE on a pool of stAdv examples refreshed every k epochs."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.s = settings
        self.pool_x: torch.Tensor | None = None
        self.pool_y: torch.Tensor | None = None
        self.gen = torch.Generator().manual_seed(settings.get("seed", 0))

    def on_epoch_start(self, model: nn.Module, epoch: int, x: torch.Tensor, y: torch.Tensor):
        if epoch % self.s["pool_every"]:
            return
        dev = next(model.parameters()).device
        idx = torch.randperm(len(x), generator=self.gen)[: self.s["pool_size"]]
        for p in model.parameters():
            p.requires_grad_(False)
        xs, chunk = [], self.s.get("pool_batch", 1000)
        for k in tqdm(
            range(0, len(idx), chunk), desc=f"stAdv pool (epoch {epoch + 1})", leave=False
        ):
            part = idx[k : k + chunk]
            res = stadv(
                model,
                x[part].to(dev),
                y[part].to(dev),
                tau=self.s["tau"],
                steps=self.s["pool_steps"],
            )
            xs.append(res.images.cpu())
        for p in model.parameters():
            p.requires_grad_(True)
        self.pool_x, self.pool_y = torch.cat(xs), y[idx]

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k = torch.randint(len(self.pool_x), (len(x),), generator=self.gen)
        adv = self.pool_x[k].to(x.device)
        return cross_entropy(model, x, y) + self.s["lambda_r"] * cross_entropy(
            model, adv, self.pool_y[k].to(x.device)
        )


def _at_pgd(settings: dict[str, Any]):
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        adv = pgd(
            model,
            x,
            y,
            eps=settings["eps"],
            alpha=settings["alpha"],
            steps=settings["steps"],
            seed=int(torch.randint(1 << 30, (1,))),
        )
        return cross_entropy(model, adv.images, y)

    return loss


register(Variant("fro", "hinge + Frobenius-norm regulariser (f_fro)", make_loss=_fro))
register(Variant("spe", "hinge + spectral-norm regulariser (f_spe)", make_loss=_spe))
register(Variant("stn", "hinge, spatial transformer in front (f_stn)", arch="stn", make_loss=_stn))
register(
    Variant(
        "at",
        "cross-entropy + stAdv adversarial training from a pool (f_at, appendix 6.8)",
        make_loss=_StAdvPoolLoss,
        version=2,  # 2: stAdv optimises in float64
    )
)
register(
    Variant(
        "at_pgd",
        "PGD adversarial training (Madry et al.; the f_at of Sections 3-4)",
        make_loss=_at_pgd,
    )
)


def dual_sdp_bounds(
    w: torch.Tensor, vdiff: torch.Tensor, lam: torch.Tensor, c: torch.Tensor, u: torch.Tensor
) -> torch.Tensor:
    """sum(c) + n * max(0, u^T (P - diag(c)) u) per pair, differentiable in W, v, c.

    ``vdiff`` (B, h) holds v = V_i - V_j, so A = diag(v) W diag(lambda) (appendix
    6.7); ``u`` (B, h + d) is the (detached) top eigenvector of P - diag(c).
    With u the exact top eigenvector this is the dual bound of Readings table, point 13
    and its gradient is that of lambda_max (Hellmann-Feynman, u u^T).
    """
    h = w.shape[0]
    s, t = u[:, :h], u[:, h:]
    quad = 2 * ((vdiff * s) * ((lam * t) @ w.T)).sum(1) - (c * u * u).sum(1)
    return c.sum(1) + u.shape[1] * torch.relu(quad)


class SDPDualLoss:
    """f_sdp: hinge + lambda * eps * mean_{i<j} dual SDP bound (appendix 6.8, item 6).

    Following SDP-NN (Raghunathan et al., 2018), each class pair (i, j) has a
    trainable dual vector c_ij, optimised by the same Adam as the weights
    (:meth:`extra_parameters`); eps * bound is the certified decrease of
    f_i - f_j at eps for [0, 1] images (:mod:`flowbound.certify`). The top
    eigenvector of P_ij - diag(c_ij) comes from ``lanczos_steps`` warm-started
    Krylov steps per batch (no eigendecomposition). At each epoch start the
    duals are reset to the mixing method's (:func:`flowbound.bounds.sdp_bound`)
    if those give a smaller bound, so c tracks the moving weights.
    """

    def __init__(self, settings: dict[str, Any]) -> None:
        self.s = settings
        self.c: torch.Tensor | None = None
        self.u: torch.Tensor | None = None
        self.lam: torch.Tensor | None = None
        self.pairs: list[tuple[int, int]] = []

    def _vdiff(self, model: nn.Module) -> torch.Tensor:
        vmat = model.V.weight
        return torch.stack([vmat[i] - vmat[j] for i, j in self.pairs])

    def _setup(self, model: nn.Module) -> None:
        if self.c is not None:
            return
        w = model.W.weight
        k = model.V.weight.shape[0]
        self.pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
        n = w.shape[0] + w.shape[1]
        self.lam = torch.tensor(
            np.array(aabb_lambda(int(round(w.shape[1] ** 0.5)))), dtype=w.dtype
        ).to(w.device)
        self.c = torch.zeros(len(self.pairs), n, dtype=w.dtype, device=w.device, requires_grad=True)
        gen = torch.Generator().manual_seed(self.s.get("seed", 0))
        self.u = torch.randn(len(self.pairs), n, generator=gen, dtype=w.dtype).to(w.device)

    def extra_parameters(self, model: nn.Module) -> list[torch.Tensor]:
        """The dual vectors c (pairs, h + d), trained with the weights."""
        self._setup(model)
        return [self.c]

    def _operator(self, model: nn.Module):
        w, vdiff, lam, c = model.W.weight.detach(), self._vdiff(model).detach(), self.lam, self.c
        h = w.shape[0]

        def matvec(u: torch.Tensor) -> torch.Tensor:
            s, t = u[:, :h], u[:, h:]
            top = vdiff * ((lam * t) @ w.T)
            bottom = lam * ((vdiff * s) @ w)
            return torch.cat([top, bottom], 1) - c.detach() * u

        return matvec

    def bounds(self, model: nn.Module, steps: int | None = None) -> torch.Tensor:
        """The current dual bounds per pair (differentiable); updates the warm start."""
        self._setup(model)
        _, self.u = top_eigenpairs(
            self._operator(model), self.u, steps=steps or self.s["lanczos_steps"]
        )
        return dual_sdp_bounds(model.W.weight, self._vdiff(model), self.lam, self.c, self.u)

    def on_epoch_start(self, model: nn.Module, epoch: int, x: torch.Tensor, y: torch.Tensor):
        self._setup(model)
        with torch.no_grad():
            w = model.W.weight.detach().cpu()
            a = sdp_matrix(w, self._vdiff(model).detach().cpu(), self.lam.cpu().numpy())
            fresh = sdp_bound(a, tol=self.s["refresh_tol"], seed=epoch)
            c_new = torch.as_tensor(fresh.c, dtype=self.c.dtype).to(self.c.device)
            # compare with well-converged eigenvectors (one long Krylov run each)
            current = self.bounds(model, steps=60).detach()
            old = self.c.detach().clone()
            self.c.copy_(c_new)
            renewed = self.bounds(model, steps=60).detach()
            keep = renewed > current
            self.c[keep] = old[keep]

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        reg = self.s["eps"] * self.bounds(model).mean()
        return hinge(model(x), y) + self.s["lambda"] * reg


register(
    Variant(
        "sdp",
        "hinge + dual SDP bound regulariser with trainable duals (f_sdp, SDP-NN)",
        make_loss=SDPDualLoss,
    )
)


def _lin_fro(settings: dict[str, Any]):
    lam = settings["lambda"]
    return lambda model, x, y: hinge(model(x), y) + lam * model.V.weight.norm()


# Linear classifiers f(x) = V x (appendix 6.3-6.5, Figures 8 and 11).
register(Variant("lin_rd", "linear, randomly initialised", arch="linear"))
register(
    Variant("lin_nt", "linear, cross-entropy", arch="linear", make_loss=lambda s: cross_entropy)
)
register(Variant("lin_fro", "linear, hinge + lambda ||V||_F", arch="linear", make_loss=_lin_fro))
