"""Training against the per-digit flow certificate: the ``cert`` variant (f_cert).

Beyond the paper. The loss mixes the clean cross-entropy with the
cross-entropy of the certified worst-case logits, as interval and linear-bound
training do for pixel noise (Gowal et al., 2018; Zhang et al., 2020):

    (1 - kappa) CE(f(x), y) + kappa CE(-m(x), y),

where m_j(x) is :func:`flowbound.local_bounds.certified_margins` (the lower
bound of f_y - f_j over the threat set at the training budget, m_y = 0),
computed with ``grad=True``: the same code as the certificate, on the
network's own parameters, differentiable. The budget and kappa ramp up
linearly over the first ``ramp_epochs`` epochs, from eps_train / ramp_epochs
and kappa / ramp_epochs. The certified term uses the first ``cert_batch``
images of each batch. The trained network is certified afterwards by the
ordinary float64 certificate, independently of this surrogate.

Settings (``profile["variants"]["cert"]``): eps, kappa, ramp_epochs,
cert_batch, modes, threat.

Used in: Beyond the paper: certifying individual digits (f_cert).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .local_bounds import certified_margins

__all__ = ["CertLoss", "robust_cross_entropy"]


def robust_cross_entropy(margins: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CE of the worst-case logits z_j = -m_j (z_y = 0): log(1 + sum_{j != y} e^{-m_j})."""
    worst = -margins.masked_fill(torch.isinf(margins), 0.0)
    worst = worst.scatter(1, y.view(-1, 1), 0.0)
    return F.cross_entropy(worst, y)


class CertLoss:
    """(1 - kappa) CE + kappa CE of the certified worst-case logits, eps and kappa ramped."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.s = settings
        self.epoch = 0

    def on_epoch_start(self, model: nn.Module, epoch: int, x: torch.Tensor, y: torch.Tensor):
        self.epoch = epoch

    def schedule(self) -> tuple[float, float]:
        """(eps, kappa) for the current epoch."""
        frac = min(1.0, (self.epoch + 1) / self.s["ramp_epochs"])
        return frac * self.s["eps"], frac * self.s["kappa"]

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        clean = F.cross_entropy(model(x), y)
        eps, kappa = self.schedule()
        b = self.s["cert_batch"]
        margins = certified_margins(
            model,
            x[:b],
            y[:b],
            eps,
            threat=self.s["threat"],
            modes=self.s["modes"],
            grad=True,
        )
        return (1 - kappa) * clean + kappa * robust_cross_entropy(margins, y[:b])
