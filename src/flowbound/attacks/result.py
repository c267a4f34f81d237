"""What every attack returns: :class:`AttackResult`, which each attack's own result extends.

An attack's result holds the attacked ``images`` (B, H, W), ``success`` (B,) (the
returned image is misclassified, checked by a forward pass) and ``flows`` (the
threat set's shape, or None for a pixel attack); each attack adds its own fields
(``budget``, ``margins``, ``l_diff``, ...), listed by :attr:`AttackResult.extras`.

Used in: every attack, the attack registry and its contract tests.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

__all__ = ["AttackResult"]


@dataclass(frozen=True)
class AttackResult:
    """Any attack's outcome (module notes)."""

    images: torch.Tensor
    success: torch.Tensor
    flows: torch.Tensor | None = None

    @property
    def extras(self) -> dict[str, torch.Tensor]:
        """The attack's own fields, beyond images, success and flows."""
        common = {f.name for f in fields(AttackResult)}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in common}
