"""Several networks of one variant trained as one stacked model (a GPU's training path).

A one-hidden-layer network on batches of 128 is bound on a GPU by the cost of each
step (Python, kernel launches), not by arithmetic, so the seeds of a variant train
together: W (M, h, d) and V (M, K, h) hold M members, each step runs one batched
product per layer for all of them, and each member reads its own batches (the data
order its seed gives, exactly as :func:`flowbound.training.fit.fit` draws it). The loss is
the sum of the members' losses, so each member's gradient is its own, and Adam acts
element by element: a member's weights are those it would get trained alone, up to
the rounding of batched products (tested). On a 2-core CPU the batched products are
slower than separate ones (measured in ``benchmarks/RESULTS.md``), so stacking is the
default on CUDA only (:func:`stacks_training`).

Variants stack where their objective has a stacked form (``Variant.make_stacked_loss``):
f_nt, f_fro, f_spe, the linear ones, f_at_pgd (each member's PGD starts drawn from
its own generator, seeded as ``fit`` seeds the global one; a loss with
``on_stack_start(seeds)`` gets the members' seeds), f_at (one stAdv pool per member,
refreshed by ``on_epoch_start`` as ``fit`` refreshes it) and f_sdp (every member's duals
in one parameter, their eigenvectors by one batched Lanczos run). f_cert's certificate
and the STN train one by one.

Used in: :func:`flowbound.book.trained.get_model` (on a cache miss).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from torch import nn

from flowbound.checks import SettingError, check_int, check_training_plan, check_training_set
from flowbound.networks.architectures import Linear, OneHidden
from flowbound.networks.view import weights
from flowbound.training.fit import run_epochs

__all__ = ["Stacked", "fit_stacked", "stacks_training"]

StackedLossFn = Callable[["Stacked", torch.Tensor, torch.Tensor], torch.Tensor]


def stacks_training(device: torch.device) -> bool:
    """Whether :func:`~flowbound.book.trained.get_model` trains the seeds of a variant
    together: ``$FLOWBOUND_STACK`` (``1`` or ``0``) when set, else on CUDA only."""
    flag = os.environ.get("FLOWBOUND_STACK")
    if flag is None or flag == "":
        return device.type == "cuda"
    if flag not in ("0", "1"):
        raise SettingError(
            f"FLOWBOUND_STACK must be 1 (train a variant's seeds together) or 0 (one by one), "
            f"or unset (together on CUDA only), got {flag!r}"
        )
    return flag == "1"


class Stacked(nn.Module):
    """M networks f_m(x) = V_m relu(W_m x) (or V_m x) as stacked parameters.

    Built from M modules of one project architecture with equal shapes
    (``models.OneHidden`` or ``models.Linear``); :meth:`write_back` copies the trained
    weights into them."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) == 0:
            raise ValueError("members must hold at least one network")
        kinds = {type(m) for m in members}
        if len(kinds) != 1 or next(iter(kinds)) not in (OneHidden, Linear):
            names = ", ".join(sorted(k.__name__ for k in kinds))
            raise TypeError(f"members must all be OneHidden or all Linear networks, got {names}")
        shapes = {tuple(p.shape for p in m.parameters()) for m in members}
        if len(shapes) != 1:
            raise ValueError(f"members must have equal shapes, got {sorted(shapes)}")
        with torch.no_grad():
            layers = [weights(m) for m in members]  # (W or None, V) of each member
            v = torch.stack([lv for _, lv in layers]).clone()
            w = None if kinds == {Linear} else torch.stack([lw for lw, _ in layers]).clone()
        self.W = None if w is None else nn.Parameter(w)
        self.V = nn.Parameter(v)

    @property
    def members(self) -> int:
        return self.V.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores (M, B, K) for images (M, B, H, W) or vectors (M, B, d): member m on x[m]."""
        z = x.flatten(2)
        if self.W is not None:
            z = torch.relu(torch.bmm(z, self.W.transpose(1, 2)))
        return torch.bmm(z, self.V.transpose(1, 2))

    @torch.no_grad()
    def member(self, m: int) -> nn.Module:
        """A copy of member ``m`` as an ordinary network (``OneHidden`` or ``Linear``), in
        the stack's dtype and on its device, with gradients off (f_at's stAdv pool)."""
        k, h = self.V.shape[1:]
        net = Linear(h, k) if self.W is None else OneHidden(self.W.shape[2], h, k)
        net = net.to(self.V.device, self.V.dtype)
        self.write_back_one(m, net)
        for p in net.parameters():
            p.requires_grad_(False)
        return net.eval()

    @torch.no_grad()
    def write_back_one(self, m: int, net: nn.Module) -> None:
        """Copy member ``m``'s weights into ``net``."""
        w, v = weights(net)
        if self.W is not None:
            w.copy_(self.W[m])
        v.copy_(self.V[m])

    @torch.no_grad()
    def write_back(self, members: Sequence[nn.Module]) -> None:
        """Copy member m's weights into ``members[m]``."""
        if len(members) != self.members:
            raise ValueError(f"expected {self.members} members, got {len(members)}")
        for m, net in enumerate(members):
            self.write_back_one(m, net)


def fit_stacked(
    net: Stacked,
    loss: StackedLossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seeds: Sequence[int],
    epochs: int,
    batch_size: int,
    lr: float,
    desc: str = "train (stacked)",
    progress: bool = True,
) -> Stacked:
    """:func:`flowbound.training.fit.fit` for every member at once: member m draws its batches
    from ``torch.Generator().manual_seed(seeds[m])`` as ``fit`` does (a loss's
    ``on_stack_start(seeds)``, ``extra_parameters(net)`` and ``on_epoch_start(net, epoch,
    x, y)`` are used as ``fit`` uses its hooks), ``loss`` returns
    the sum of the members' losses (each their batch mean), one Adam over the stacked
    parameters. Checked first: the plan (integers >= 1, lr > 0), the data (finite
    examples of the members' input size, labels among their classes, at least one).
    The loss is checked once per epoch on the device (no host sync per step);
    a NaN or inf raises :class:`~flowbound.training.fit.TrainingError` naming the member, epoch
    and batch where it first appeared."""
    epochs, batch_size, lr = check_training_plan(epochs, batch_size, lr)
    inputs = (net.V if net.W is None else net.W).shape[2]
    check_training_set(x, y, inputs=inputs, classes=net.V.shape[1])
    seeds = [check_int("seeds", s, low=0) for s in seeds]
    if len(seeds) != net.members:
        raise ValueError(f"seeds must give one seed per member ({net.members}), got {len(seeds)}")
    dev = net.V.device
    start = getattr(loss, "on_stack_start", None)
    if start is not None:  # a loss that draws random numbers seeds one generator per member
        start(seeds)
    gens = [torch.Generator().manual_seed(s) for s in seeds]

    def bad_loss(bad: torch.Tensor, epoch: int) -> str | None:
        if not bool((bad >= 0).any()):
            return None
        m = int(torch.nonzero(bad >= 0)[0])
        return (
            f"the loss of member {m} (seed {seeds[m]}) became inf or nan at epoch {epoch}, "
            f"batch {int(bad[m]) + 1}"
        )

    return run_epochs(
        net, loss, x, y,
        orders=lambda: torch.stack([torch.randperm(len(x), generator=g) for g in gens]).to(dev),
        watch=((net.members,), net.V.dtype), bad_loss=bad_loss,
        epochs=epochs, batch_size=batch_size, lr=lr, desc=desc, progress=progress,
    )  # fmt: skip
