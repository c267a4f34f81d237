"""Training against the per-digit flow certificate: the ``cert`` variant (f_cert).

Beyond the paper. The loss mixes the clean cross-entropy with the
cross-entropy of the certified worst-case logits, as interval and linear-bound
training do for pixel noise (Gowal et al., 2018; Zhang et al., 2020):

    (1 - kappa) CE(f(x), y) + kappa CE(-m(x), y),

where m_j(x) is :func:`flowbound.certificates.local.certified_margins` (the lower
bound of f_y - f_j over the threat set at the training budget, m_y = 0),
computed with ``grad=True``: the same code as the certificate, on the
network's own parameters, differentiable. The budget and kappa ramp up
linearly over the first ``ramp_epochs`` epochs, from eps_train / ramp_epochs
and kappa / ramp_epochs. The certified term uses the first ``cert_batch``
images of each batch. The trained network is certified afterwards by the
ordinary float64 certificate, independently of this surrogate.

Settings (``profile["variants"]["cert"]``): eps, kappa, ramp_epochs,
cert_batch, modes, threat, kink (true: the certificate's own relaxation, the
kink in the ellipsoid; false: one chord per pixel, the cheaper first level of
its cascade), and optionally:

- deeper ("crown", the default, or "interval": how a deeper network's later
  layers are bounded, :func:`certified_margins`; CROWN-IBP trains with "interval");
- adv_steps (default 0): with n > 0 the first term is the cross-entropy at the
  flows ``flow_apgd`` finds in n steps at the current budget instead of the clean
  one, (1 - kappa) CE(f(x_adv), y) + kappa CE(-m(x), y), as MTL-IBP mixes
  (De Palma et al., 2024);
- decay_epochs (default none) and decay_factor (default 0.1): the learning rate is
  multiplied by decay_factor from each of those (1-based) epochs on;
- init ("default" or "ibp", read by the architecture: Shi et al.'s 2021
  initialisation of the hidden layer, :func:`flowbound.networks.architectures.initialised`).

Used in: Beyond the paper: certifying individual digits (f_cert).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flowbound.attacks.flow_apgd import flow_apgd
from flowbound.certificates.local import DEEPER, certified_margins
from flowbound.checks import check_int, check_number
from flowbound.networks.architectures import INITS
from flowbound.threat.sets import THREAT_SETS
from flowbound.training.fit import step_decay

__all__ = ["CertLoss", "robust_cross_entropy"]


def robust_cross_entropy(margins: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CE of the worst-case logits z_j = -m_j (z_y = 0): log(1 + sum_{j != y} e^{-m_j})."""
    worst = -margins.masked_fill(torch.isinf(margins), 0.0)
    worst = worst.scatter(1, y.view(-1, 1), 0.0)
    return F.cross_entropy(worst, y)


#: The optional settings and their defaults (module notes).
OPTIONAL: dict[str, Any] = {
    "deeper": "crown",
    "adv_steps": 0,
    "decay_epochs": [],
    "decay_factor": 0.1,
    "init": "default",
}


def _checked_settings(settings: Any) -> dict[str, Any]:
    """The settings of f_cert's loss, each checked (the profile schema's rules)."""
    keys = ("eps", "kappa", "ramp_epochs", "cert_batch", "modes", "threat", "kink")
    if not isinstance(settings, dict):
        raise TypeError(f"settings must be a dict with keys {', '.join(keys)}, got {settings!r}")
    missing = [k for k in keys if k not in settings]
    unknown = sorted(set(settings) - set(keys) - set(OPTIONAL))
    if missing or unknown:
        raise ValueError(
            f"settings must have the keys {', '.join(keys)} (and optionally "
            f"{', '.join(OPTIONAL)}); missing: {', '.join(missing) or 'none'}, unknown: "
            f"{', '.join(unknown) or 'none'}"
        )
    s = dict(settings)
    s["eps"] = check_number("settings['eps']", s["eps"], low=0.0, low_open=True)
    s["kappa"] = check_number("settings['kappa']", s["kappa"], low=0.0, high=1.0)
    s["ramp_epochs"] = check_int("settings['ramp_epochs']", s["ramp_epochs"])
    s["cert_batch"] = check_int("settings['cert_batch']", s["cert_batch"])
    if s["modes"] is not None:
        s["modes"] = check_int("settings['modes']", s["modes"], low=0)
    if not isinstance(s["kink"], bool):
        raise TypeError(f"settings['kink'] must be true or false, got {s['kink']!r}")
    if s["threat"] not in THREAT_SETS:
        raise ValueError(
            f"settings['threat'] must be one of {', '.join(THREAT_SETS)}, got {s['threat']!r}"
        )
    s = {**OPTIONAL, **s}
    if s["deeper"] not in DEEPER:
        raise ValueError(
            f"settings['deeper'] must be one of {', '.join(DEEPER)}, got {s['deeper']!r}"
        )
    if s["init"] not in INITS:
        raise ValueError(f"settings['init'] must be one of {', '.join(INITS)}, got {s['init']!r}")
    s["adv_steps"] = check_int("settings['adv_steps']", s["adv_steps"], low=0)
    s["decay_factor"] = check_number(
        "settings['decay_factor']", s["decay_factor"], low=0.0, high=1.0, low_open=True
    )
    if not isinstance(s["decay_epochs"], list | tuple):
        raise TypeError(
            f"settings['decay_epochs'] must be a list of epoch numbers, got {s['decay_epochs']!r}"
        )
    s["decay_epochs"] = [check_int("settings['decay_epochs'][i]", e) for e in s["decay_epochs"]]
    return s


class CertLoss:
    """(1 - kappa) CE + kappa CE of the certified worst-case logits, eps and kappa ramped.

    ``settings`` are checked when the loss is made; the training plan (``epochs``,
    ``batch_size``) when it is known: here, or when :func:`flowbound.training.fit.fit`
    starts (:meth:`on_fit_start`). A ramp longer than the training, or a certified
    batch larger than the batch, is a ValueError (it would never reach the budget,
    or silently certify fewer images)."""

    def __init__(
        self,
        settings: dict[str, Any],
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.s = _checked_settings(settings)
        self.epoch = 0
        self._draws = 0
        self._decay = step_decay(self.s["decay_epochs"], self.s["decay_factor"])
        if epochs is not None or batch_size is not None:
            self.on_fit_start(epochs=epochs, batch_size=batch_size)

    def on_fit_start(self, *, epochs: int | None, batch_size: int | None) -> None:
        """Refuse a plan this loss cannot follow (called by ``fit`` before training)."""
        late = [e for e in self.s["decay_epochs"] if epochs is not None and e > epochs]
        if late:
            raise ValueError(
                f"settings['decay_epochs'] {late} lie past the {epochs} training epochs: the "
                f"learning rate would never decay there; drop them or train longer"
            )
        if epochs is not None and self.s["ramp_epochs"] > check_int("epochs", epochs):
            raise ValueError(
                f"settings['ramp_epochs'] = {self.s['ramp_epochs']} is more than the "
                f"{epochs} training epochs: the budget would never reach eps; lower "
                f"ramp_epochs or train longer"
            )
        if batch_size is not None and self.s["cert_batch"] > check_int("batch_size", batch_size):
            raise ValueError(
                f"settings['cert_batch'] = {self.s['cert_batch']} is more than the batch "
                f"size {batch_size}: only {batch_size} images per batch could be certified; "
                f"lower cert_batch or raise batch_size"
            )

    def on_epoch_start(self, model: nn.Module, epoch: int, x: torch.Tensor, y: torch.Tensor):
        self.epoch = epoch

    def lr_scale(self, epoch: int) -> float:
        """The learning rate's multiplier in (0-based) ``epoch`` (``decay_epochs``)."""
        return self._decay(epoch)

    def schedule(self) -> tuple[float, float]:
        """(eps, kappa) for the current epoch."""
        frac = min(1.0, (self.epoch + 1) / self.s["ramp_epochs"])
        return frac * self.s["eps"], frac * self.s["kappa"]

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        eps, kappa = self.schedule()
        if self.s["adv_steps"]:
            x = self._attacked(model, x, y, eps)
        clean = F.cross_entropy(model(x), y)
        b = self.s["cert_batch"]
        margins = certified_margins(
            model,
            x[:b],
            y[:b],
            eps,
            threat=self.s["threat"],
            modes=self.s["modes"],
            grad=True,
            kink=self.s["kink"],
            deeper=self.s["deeper"],
        )
        return (1 - kappa) * clean + kappa * robust_cross_entropy(margins, y[:b])

    def _attacked(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float):
        """The images warped by the flows flow_apgd finds within eps in ``adv_steps``
        steps (one untargeted run from a random start, a new seed each batch); the
        network in eval mode while it searches, the images detached."""
        was = model.training
        model.eval()
        try:
            found = flow_apgd(
                model, x.detach(), y, eps=eps, threat=self.s["threat"],
                steps=self.s["adv_steps"], restarts=1, targets=0, seed=self._draws,
            )  # fmt: skip
        finally:
            model.train(was)
        self._draws += 1
        return found.images.detach()
