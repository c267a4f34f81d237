"""The training objectives of the paper's variants (appendix 6.8), one factory each.

Each factory takes the variant's profile settings and returns
``loss(model, x, y)``; :mod:`flowbound.zoo` names them. SDP-NN lives in
:mod:`flowbound.sdp_training`.

- ``fro``: hinge + lambda (||W||_F + ||V||_F)
- ``spe``: hinge + lambda (||W||_2 + ||V||_2), spectral norms by power iteration
- ``stn``: hinge, with a spatial transformer network in front of the classifier
- ``at``: cross-entropy + lambda_r * cross-entropy on stAdv examples from a pool
  refreshed every k epochs (the appendix's f_at)
- ``at_pgd``: Madry et al.'s PGD adversarial training (the f_at of Sections 3-4)
- ``lin_fro``: hinge + lambda ||V||_F for a linear network

The hinge loss is the multi-class hinge of Weston and Watkins as in
``torch.nn.functional.multi_margin_loss``: (1/K) sum_{j != y} max(0, 1 - z_y + z_j).
The paper writes ||v||_2 for the second layer of a binary network; with ten
classes V is a matrix, so ``fro`` uses ||V||_F and ``spe`` ||V||_2.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attacks import pgd, stadv
from .models import cross_entropy
from .nets import weights
from .progress import bar as progress_bar

__all__ = [
    "StAdvPoolLoss",
    "at_pgd",
    "fro",
    "hinge",
    "lin_fro",
    "nt",
    "spe",
    "spectral_norm_estimate",
    "stn",
]


def hinge(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Multi-class hinge (Weston-Watkins), mean over the batch."""
    return F.multi_margin_loss(scores, y, margin=1.0)


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


def fro(settings: dict[str, Any]):
    lam = settings["lambda"]

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w, v = weights(model)
        reg = w.norm() + v.norm()
        return hinge(model(x), y) + lam * reg

    return loss


def spe(settings: dict[str, Any]):
    lam, state = settings["lambda"], {}

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w, v = weights(model)
        reg = spectral_norm_estimate(w, state, "W") + spectral_norm_estimate(v, state, "V")
        return hinge(model(x), y) + lam * reg

    return loss


def stn(settings: dict[str, Any]):
    return lambda model, x, y: hinge(model(x), y)


class StAdvPoolLoss:
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
        for k in progress_bar(
            range(0, len(idx), chunk), desc=f"stAdv pool (epoch {epoch + 1})", unit="chunk"
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


def at_pgd(settings: dict[str, Any]):
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


def lin_fro(settings: dict[str, Any]):
    lam = settings["lambda"]
    return lambda model, x, y: hinge(model(x), y) + lam * weights(model)[1].norm()


def nt(settings: dict[str, Any]):
    """Plain cross-entropy (f_nt)."""
    return cross_entropy
