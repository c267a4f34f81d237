"""The registry of network variants: one registration per variant of the paper.

A :class:`Variant` names its architecture (a key of
:data:`flowbound.networks.architectures.ARCHS`) and its training objective as
``"module:factory"``, imported only when the variant is trained, so reading
the registry (``flowbound --help``) loads no attack or solver. Settings come
from ``profile["variants"][name]``; the objectives are in
:mod:`flowbound.training.objectives` and :mod:`flowbound.training.sdp`.

To add a variant: write its loss factory, add one ``register`` line here, and
its settings to the profiles (CONTRIBUTING.md, "A network variant").

Used in: Introduction (evaluation table), Sections 3-4 (f_at, f_fro, ...).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flowbound.registry import Registry

__all__ = ["VARIANTS", "Variant", "register"]

LossFn = Callable[..., Any]  # loss(model, x, y) -> a scalar tensor


@dataclass(frozen=True)
class Variant:
    """A named way of obtaining a network (the paper's f_nt, f_rd, ...).

    ``make_loss(settings)`` (a callable, or ``"module:factory"``) returns the training objective
    ``loss(model, x, y)`` for this variant's profile settings (the dict
    ``profile["variants"][name]``, also part of the cache key); None means
    the network is used as initialised (f_rd). A loss object may have an
    ``on_epoch_start(model, epoch, x, y)`` method (the stAdv pool of f_at).
    Bump ``version`` when the variant's code changes. ``make_stacked_loss`` (same
    forms) gives the objective for M networks of this variant at once
    (:mod:`flowbound.training.stacking`; an objective that draws random numbers draws them per
    member, see ``training_losses.at_pgd_stacked`` and ``at_stacked``); None: the
    variant trains one network at a time.
    """

    name: str
    description: str
    arch: str = "one_hidden"
    make_loss: str | Callable[[dict[str, Any]], LossFn] | None = None
    version: int = 1
    make_stacked_loss: str | Callable[[dict[str, Any]], LossFn] | None = None

    def loss_factory(self) -> Callable[[dict[str, Any]], LossFn] | None:
        """``make_loss`` as a callable (a ``"module:factory"`` string is imported now)."""
        return _imported(self.make_loss)

    def stacked_loss_factory(self) -> Callable[[dict[str, Any]], LossFn] | None:
        """``make_stacked_loss`` as a callable (None: the variant does not stack)."""
        return _imported(self.make_stacked_loss)


def _imported(factory):
    if factory is None or callable(factory):
        return factory
    module, _, attr = factory.partition(":")
    return getattr(importlib.import_module(module), attr)


#: The registry of training variants, by name.
VARIANTS: Registry[Variant] = Registry("variant")


def register(variant: Variant) -> Variant:
    """Add a variant to :data:`VARIANTS` (names are unique)."""
    return VARIANTS.add(variant)


#: Where the objectives live (imported only when a variant trains): one module each
#: for the plain objectives, SDP-NN and training against the per-digit certificate.
_OBJ, _SDP, _CERT = (
    "flowbound.training.objectives",
    "flowbound.training.sdp",
    "flowbound.training.certified",
)

register(
    Variant(
        "nt",
        "normally trained with cross-entropy (f_nt)",
        make_loss=f"{_OBJ}:nt",
        make_stacked_loss=f"{_OBJ}:nt_stacked",
    )
)
register(Variant("rd", "randomly initialised, not trained (f_rd, Section 3.2)"))
register(
    Variant(
        "fro",
        "hinge + Frobenius-norm regulariser (f_fro)",
        make_loss=f"{_OBJ}:fro",
        make_stacked_loss=f"{_OBJ}:fro_stacked",
    )
)
register(
    Variant(
        "spe",
        "hinge + spectral-norm regulariser (f_spe)",
        make_loss=f"{_OBJ}:spe",
        make_stacked_loss=f"{_OBJ}:spe_stacked",
    )
)
register(
    Variant(
        "stn",
        "hinge, spatial transformer in front (f_stn)",
        arch="stn",
        make_loss=f"{_OBJ}:stn",
    )
)
register(
    Variant(
        "at",
        "cross-entropy + stAdv adversarial training from a pool (f_at, appendix 6.8)",
        make_loss=f"{_OBJ}:StAdvPoolLoss",
        make_stacked_loss=f"{_OBJ}:at_stacked",
        version=2,  # 2: stAdv optimises in float64
    )
)
register(
    Variant(
        "at_pgd",
        "PGD adversarial training (Madry et al.; the f_at of Sections 3-4)",
        make_loss=f"{_OBJ}:at_pgd",
        make_stacked_loss=f"{_OBJ}:at_pgd_stacked",
    )
)
register(
    Variant(
        "sdp",
        "hinge + dual SDP bound regulariser with trainable duals (f_sdp, SDP-NN)",
        make_loss=f"{_SDP}:SDPDualLoss",
        make_stacked_loss=f"{_SDP}:sdp_stacked",
    )
)
register(
    Variant(
        "cert",
        "trained against the per-digit flow certificate (f_cert, beyond the paper)",
        make_loss=f"{_CERT}:CertLoss",
        # 2: the surrogate is the certificate with the kink setting (kink); 3: with
        # kink, slope and kink terms are also bounded jointly (kink=False is unchanged)
        version=3,
    )
)
register(
    Variant(
        "cert_full",
        "trained against the per-digit flow certificate on full flows (f_cert_full, beyond "
        "the paper)",
        make_loss=f"{_CERT}:CertLoss",
    )
)
# Linear classifiers f(x) = V x (appendix 6.3-6.5, Figures 8 and 11).
register(Variant("lin_rd", "linear, randomly initialised", arch="linear"))
register(
    Variant(
        "lin_nt",
        "linear, cross-entropy",
        arch="linear",
        make_loss=f"{_OBJ}:nt",
        make_stacked_loss=f"{_OBJ}:nt_stacked",
    )
)
register(
    Variant(
        "lin_fro",
        "linear, hinge + lambda ||V||_F",
        arch="linear",
        make_loss=f"{_OBJ}:lin_fro",
        make_stacked_loss=f"{_OBJ}:lin_fro_stacked",
    )
)
