"""Every attack behind one call: a registry with what each attack can do.

:data:`ATTACKS` lists the attacks by name, each behind ``Attack.run(model, x, y,
budget, seed, **options) -> AttackResult`` (``options``: the attack's own settings,
e.g. ``steps``; defaults are the ones the generic tests use), with the budget read
in ``threat`` (a registered threat set's name, ``"pixels"`` for an l_inf ball on
the pixels, ``"penalty"`` for no hard budget: stAdv's tau weighs its flow loss) and
whether an image's result is independent of the rest of the batch. Every attack
returns an :class:`~flowbound.attacks.result.AttackResult` (its own subclass, with
its own fields). The book's experiments call the attacks through this registry; the
generic tests (``tests/test_attacks.py`` and ``tests/test_bad_input.py``: success
checked by a forward pass, inputs left alone, the pixel domain, the budget and the
flow shape of the threat set, batch independence where claimed, empty batches, bad
input) run over it, so an attack added with :func:`register_attack` is tested without
editing them (CONTRIBUTING.md, "An attack"). :func:`flow_apgd_attack` registers
flow_apgd on any threat set.

Used in: the book's experiments (Figures 1, 6, 12), the generic attack tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from flowbound.attacks.result import AttackResult
from flowbound.registry import Registry
from flowbound.threat.sets import FULL, THREAT_SETS, TIED, ThreatSet

__all__ = [
    "ATTACKS",
    "BUDGETS",
    "Attack",
    "AttackResult",
    "attack",
    "flow_apgd_attack",
    "register_attack",
]

#: What an attack's budget may bound besides a registered threat set of flows.
BUDGETS = ("pixels", "penalty")

RunFn = Callable[..., AttackResult]


@dataclass(frozen=True)
class Attack:
    """An attack by name: ``run(model, x, y, budget, seed, **options)`` on [0, 1] images,
    with the budget read in ``threat`` (a name in :data:`THREAT_SETS` or
    :data:`BUDGETS`); ``batch_independent`` when an image's result does not depend on
    the rest of the batch (to rounding; random draws may depend on its place in the
    batch: the first m images of a batch get the results they get attacked alone)."""

    name: str
    run: RunFn
    threat: str
    batch_independent: bool

    def __post_init__(self) -> None:
        known = (*THREAT_SETS, *BUDGETS)
        if self.threat not in known:
            raise ValueError(f"threat must be one of {', '.join(known)}, got {self.threat!r}")
        if not callable(self.run):
            raise TypeError(f"attack {self.name!r}: run must be callable, got {self.run!r}")


#: The registry of attacks, by name.
ATTACKS: Registry[Attack] = Registry("attack")


def register_attack(a: Attack) -> Attack:
    """Add an attack to :data:`ATTACKS` (names are unique)."""
    return ATTACKS.add(a)


def attack(name: str) -> Attack:
    """The registered attack ``name``, or an error listing the registered ones."""
    return ATTACKS.named(name)


def _stadv(model: nn.Module, x: torch.Tensor, y: torch.Tensor, budget: float, seed: int, **kw):
    from flowbound.attacks.stadv import stadv  # deterministic: no seed

    return stadv(model, x, y, tau=budget, **{"steps": 30, **kw})


def _pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, budget: float, seed: int, **kw):
    from flowbound.attacks.pgd import pgd

    return pgd(model, x, y, eps=budget, seed=seed, **{"alpha": budget / 4, "steps": 20, **kw})


def _flow_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, budget: float, seed: int, **kw):
    from flowbound.attacks.pgd import flow_pgd

    return flow_pgd(model, x, y, eps=budget, seed=seed, **{"steps": 30, **kw})


def flow_apgd_attack(threat: ThreatSet) -> Attack:
    """flow_apgd on ``threat`` as an :class:`Attack` named ``flow_apgd_<threat>``
    (defaults: 25 steps, 2 targeted runs)."""

    def run(model, x, y, budget: float, seed: int, **kw):
        from flowbound.attacks.flow_apgd import flow_apgd

        return flow_apgd(
            model, x, y, eps=budget, threat=threat, seed=seed, **{"steps": 25, "targets": 2, **kw}
        )

    return Attack(f"flow_apgd_{threat.name}", run, threat.name, batch_independent=True)


register_attack(Attack("stadv", _stadv, "penalty", batch_independent=True))
register_attack(Attack("pgd", _pgd, "pixels", batch_independent=True))
# flow_pgd's Adam divides each gradient entry by its running size, so round-off in
# near-zero entries (other batch sizes run other BLAS kernels) grows into visible
# differences: it does not claim batch independence
register_attack(Attack("flow_pgd", _flow_pgd, TIED.name, batch_independent=False))
for _threat in (TIED, FULL):
    register_attack(flow_apgd_attack(_threat))  # its random starts are drawn per image
