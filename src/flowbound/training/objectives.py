"""The training objectives of the paper's variants (appendix 6.8), one factory each.

Each factory takes the variant's profile settings and returns
``loss(model, x, y)``; :mod:`flowbound.training.zoo` names them. SDP-NN lives in
:mod:`flowbound.training.sdp`.

- ``fro``: hinge + lambda (||W||_F + ||V||_F)
- ``spe``: hinge + lambda (||W||_2 + ||V||_2), spectral norms by power iteration
- ``stn``: hinge, with a spatial transformer network in front of the classifier
- ``at``: cross-entropy + lambda_r * cross-entropy on stAdv examples from a pool
  refreshed every k epochs (the appendix's f_at)
- ``at_pgd``: Madry et al.'s PGD adversarial training (the f_at of Sections 3-4)
- ``lin_fro``: hinge + lambda ||V||_F for a linear network

The objectives of f_nt, f_fro, f_spe, f_at, f_at_pgd and the linear networks (and f_sdp's,
in :mod:`flowbound.training.sdp`) also come stacked
(``*_stacked``): the same loss for M
networks at once (:class:`flowbound.training.stacking.Stacked`, scores (M, B, K)), returning
each member's loss (M,), for training the seeds of a variant together on a GPU.

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

from flowbound.attacks.pgd import pgd
from flowbound.attacks.stadv import stadv
from flowbound.networks.view import weights
from flowbound.progress import bar as progress_bar
from flowbound.training.fit import cross_entropy

__all__ = [
    "StAdvPoolLoss",
    "at_pgd",
    "at_pgd_stacked",
    "at_stacked",
    "fro",
    "hinge",
    "fro_stacked",
    "hinge_stacked",
    "lin_fro",
    "lin_fro_stacked",
    "nt",
    "nt_stacked",
    "spe",
    "spe_stacked",
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


# --- stacked forms: M networks at once, scores (M, B, K); each returns (M,) ----------


def _per_member(per_image: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return per_image.view(y.shape).mean(1)


def hinge_stacked(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """:func:`hinge` of each member: (M, B, K) scores, (M, B) labels -> (M,)."""
    per = F.multi_margin_loss(scores.flatten(0, 1), y.flatten(), margin=1.0, reduction="none")
    return _per_member(per, y)


def _cross_entropy_stacked(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _per_member(F.cross_entropy(scores.flatten(0, 1), y.flatten(), reduction="none"), y)


def _norms(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


def nt_stacked(settings: dict[str, Any]):
    """:func:`nt` for a stacked model."""
    return lambda net, x, y: _cross_entropy_stacked(net(x), y)


def fro_stacked(settings: dict[str, Any]):
    """:func:`fro` for a stacked model."""
    lam = settings["lambda"]
    return lambda net, x, y: hinge_stacked(net(x), y) + lam * (_norms(net.W) + _norms(net.V))


def spectral_norms_stacked(
    w: torch.Tensor, state: dict[str, torch.Tensor], key: str
) -> torch.Tensor:
    """:func:`spectral_norm_estimate` (one iteration) of every w[m]: (M, a, b) -> (M,);
    each member starts from the vector a network trained alone starts from."""
    with torch.no_grad():
        v = state.get(key)
        if v is None:
            v0 = torch.randn(w.shape[2], generator=torch.Generator().manual_seed(0)).to(w)
            v = v0.expand(w.shape[0], -1).clone()
        u = F.normalize(torch.bmm(w, v[:, :, None])[..., 0], dim=1)
        v = F.normalize(torch.bmm(w.transpose(1, 2), u[:, :, None])[..., 0], dim=1)
        state[key] = v
    return (u * torch.bmm(w, v[:, :, None])[..., 0]).sum(1)


def spe_stacked(settings: dict[str, Any]):
    """:func:`spe` for a stacked model (one power-iteration state per member)."""
    lam, state = settings["lambda"], {}

    def loss(net, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        reg = spectral_norms_stacked(net.W, state, "W") + spectral_norms_stacked(net.V, state, "V")
        return hinge_stacked(net(x), y) + lam * reg

    return loss


def lin_fro_stacked(settings: dict[str, Any]):
    """:func:`lin_fro` for a stacked model."""
    lam = settings["lambda"]
    return lambda net, x, y: hinge_stacked(net(x), y) + lam * _norms(net.V)


def pgd_stacked(
    net, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int, seeds
) -> torch.Tensor:
    """:func:`flowbound.attacks.pgd.pgd` on [0, 1] images for every member at once: x (M, B,
    H, W), member m's random start drawn from ``seeds[m]`` exactly as ``pgd`` draws it,
    each member's gradient its own (the loss is a sum over members)."""
    x = x.detach()
    noise = [
        (torch.rand(x.shape[1:], generator=torch.Generator().manual_seed(s), dtype=x.dtype) * 2 - 1)
        * eps
        for s in seeds
    ]
    adv = (x + torch.stack(noise).to(x.device)).clamp(0.0, 1.0)
    for _ in range(steps):
        adv.requires_grad_(True)
        with torch.enable_grad():
            scores = net(adv)
            loss = F.cross_entropy(scores.flatten(0, 1), y.flatten(), reduction="sum")
            (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + alpha * grad.sign()
        adv = torch.minimum(torch.maximum(adv, x - eps), x + eps).clamp(0.0, 1.0)
    return adv.detach()


class _AtPgdStacked:
    """:func:`at_pgd` for a stacked model: each member draws its PGD seeds from its own
    generator, seeded as ``fit`` seeds the global one for a network trained alone."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.s = settings
        self.gens: list[torch.Generator] | None = None

    def on_stack_start(self, seeds) -> None:
        self.gens = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def __call__(self, net, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.gens is None:
            raise RuntimeError("at_pgd_stacked needs fit_stacked's seeds (on_stack_start)")
        seeds = [int(torch.randint(1 << 30, (1,), generator=g)) for g in self.gens]
        adv = pgd_stacked(
            net, x, y, eps=self.s["eps"], alpha=self.s["alpha"], steps=self.s["steps"], seeds=seeds
        )
        return _cross_entropy_stacked(net(adv), y)


def at_pgd_stacked(settings: dict[str, Any]):
    """:func:`at_pgd` for a stacked model."""
    return _AtPgdStacked(settings)


class _StAdvPoolStacked:
    """:class:`StAdvPoolLoss` for a stacked model: one pool (and one generator, seeded as
    for a network trained alone) per member, refreshed from that member's weights."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.s = settings
        self.pools: list[StAdvPoolLoss] | None = None

    def on_stack_start(self, seeds) -> None:
        self.pools = [StAdvPoolLoss(self.s) for _ in seeds]

    def on_epoch_start(self, net, epoch: int, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.pools is None:
            raise RuntimeError("at_stacked needs fit_stacked's seeds (on_stack_start)")
        for m, pool in enumerate(self.pools):
            pool.on_epoch_start(net.member(m), epoch, x, y)

    def __call__(self, net, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        advs, labels = [], []
        for pool in self.pools:
            k = torch.randint(len(pool.pool_x), (x.shape[1],), generator=pool.gen)
            advs.append(pool.pool_x[k])
            labels.append(pool.pool_y[k])
        adv = torch.stack(advs).to(x.device)
        adv_y = torch.stack(labels).to(x.device)
        return _cross_entropy_stacked(net(x), y) + self.s["lambda_r"] * _cross_entropy_stacked(
            net(adv), adv_y
        )


def at_stacked(settings: dict[str, Any]):
    """:class:`StAdvPoolLoss` (f_at) for a stacked model."""
    return _StAdvPoolStacked(settings)
