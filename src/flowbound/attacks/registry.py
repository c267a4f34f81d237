"""One interface to every attack: a result type and a registry with capability flags.

Each attack keeps its own function and result (``attacks.stadv``, ``attacks.pgd``,
``attacks.flow_pgd``, ``flow_apgd.flow_apgd``: their extra fields are what the
chapters read). :data:`ATTACKS` lists them behind one call, ``Attack.run(model, x,
y, budget, seed) -> AttackResult``, with what each can do: the threat set its budget
bounds, whether an image's result is independent of the rest of the batch, whether it
runs targeted. The generic tests (``tests/test_attacks.py``: success checked by a
forward pass, the pixel domain and the budget respected, batch independence where
claimed, empty batches) run over this list, so an attack added with
:func:`register_attack` is tested without editing them (CONTRIBUTING.md, "An attack").

Used in: the generic attack tests; a library user who wants any attack by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from flowbound.registry import Registry

__all__ = ["ATTACKS", "THREAT_SETS", "Attack", "AttackResult", "attack", "register_attack"]

#: What an attack's budget bounds: ``pixels`` an l_inf ball, ``tied`` / ``full`` the
#: flow sets of Figure 12 (||M r|| <= eps; (du, dv) with l_diff <= sqrt(2) eps),
#: ``penalty`` no hard budget (stAdv's tau weighs the flow loss).
THREAT_SETS = ("pixels", "tied", "full", "penalty")


@dataclass(frozen=True)
class AttackResult:
    """Any attack's outcome: ``images`` (B, H, W) and ``success`` (B,) (misclassified,
    checked by a forward pass), ``flows`` (B, H, W) tied or (B, 2, H, W), None for a
    pixel attack, and the attack's own fields in ``extras`` (``budget``, ``margins``,
    ``l_diff``, ...)."""

    images: torch.Tensor
    success: torch.Tensor
    flows: torch.Tensor | None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def of(cls, result: Any) -> AttackResult:
        """The common view of an attack's own result (a NamedTuple with ``images`` and
        ``success``; ``flows`` and the rest optional); anything else is a TypeError."""
        if not (isinstance(result, tuple) and hasattr(result, "_asdict")):
            raise TypeError(
                f"AttackResult.of reads an attack's NamedTuple result, got {type(result).__name__}"
            )
        fields = result._asdict()
        missing = [k for k in ("images", "success") if k not in fields]
        if missing:
            raise TypeError(
                f"AttackResult.of: {type(result).__name__} has no field "
                f"{' or '.join(map(repr, missing))} (an attack's result needs images and success)"
            )
        images, success = fields.pop("images"), fields.pop("success")
        return cls(images, success, fields.pop("flows", None), fields)


RunFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, float, int], AttackResult]


@dataclass(frozen=True)
class Attack:
    """An attack by name: ``run(model, x, y, budget, seed)`` on [0, 1] images, with the
    budget read in ``threat`` (:data:`THREAT_SETS`); ``batch_independent`` when an
    image's result does not depend on the rest of the batch (to rounding; random draws
    may depend on its place in the batch: the first m images of a batch get the results
    they get attacked alone as a batch of m);
    ``targeted`` when the function can also run targeted; ``label`` for figures."""

    name: str
    label: str
    run: RunFn
    threat: str
    batch_independent: bool
    targeted: bool = False

    def __post_init__(self) -> None:
        if self.threat not in THREAT_SETS:
            raise ValueError(f"threat must be one of {', '.join(THREAT_SETS)}, got {self.threat!r}")


#: The registry of attacks, by name.
ATTACKS: Registry[Attack] = Registry("attack")


def register_attack(a: Attack) -> Attack:
    """Add an attack to :data:`ATTACKS` (names are unique)."""
    return ATTACKS.add(a)


def attack(name: str) -> Attack:
    """The registered attack ``name``, or an error listing the registered ones."""
    return ATTACKS.named(name)


def _stadv(model, x, y, budget, seed):
    from flowbound.attacks.stadv import stadv

    return AttackResult.of(stadv(model, x, y, tau=budget, steps=30))


def _pgd(model, x, y, budget, seed):
    from flowbound.attacks.pgd import pgd

    return AttackResult.of(pgd(model, x, y, eps=budget, alpha=budget / 4, steps=20, seed=seed))


def _flow_pgd(model, x, y, budget, seed):
    from flowbound.attacks.pgd import flow_pgd

    return AttackResult.of(flow_pgd(model, x, y, eps=budget, steps=30, seed=seed))


def _flow_apgd(threat: str) -> RunFn:
    def run(model, x, y, budget, seed):
        from flowbound.attacks.flow_apgd import flow_apgd

        res = flow_apgd(model, x, y, eps=budget, threat=threat, steps=25, targets=2, seed=seed)
        return AttackResult.of(res)

    return run


register_attack(
    Attack("stadv", "stAdv (Xiao et al.)", _stadv, "penalty", batch_independent=True, targeted=True)
)
# flow_pgd's Adam divides each gradient entry by its running size, so round-off in
# near-zero entries (other batch sizes run other BLAS kernels) grows into visible
# differences: it does not claim batch independence
register_attack(Attack("pgd", "PGD (l_inf)", _pgd, "pixels", batch_independent=True))
register_attack(Attack("flow_pgd", "flow PGD, tied", _flow_pgd, "tied", batch_independent=False))
for _threat in ("tied", "full"):
    register_attack(
        Attack(
            f"flow_apgd_{_threat}",
            f"flow_apgd, {_threat} flows",
            _flow_apgd(_threat),
            _threat,
            batch_independent=True,  # its random starts are drawn per image
        )
    )
