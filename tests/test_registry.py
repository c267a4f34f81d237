"""The two registries (variants, bounds): unique names, clear errors for unknown ones."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from flowbound.certificates import registry as certify
from flowbound.registry import Registry
from flowbound.threat.sets import FULL, TIED
from flowbound.training import zoo as zoo


@pytest.mark.parametrize(
    ("registry", "add", "get", "what"),
    [
        (zoo.VARIANTS, zoo.register, zoo.VARIANTS.named, "variant"),
        (certify.BOUNDS, certify.register_bound, certify.bound, "bound"),
    ],
)
def test_a_name_is_registered_once_and_unknown_names_list_the_known(registry, add, get, what):
    first = next(iter(registry.values()))
    with pytest.raises(ValueError, match=f"{what} '{first.name}' is already registered"):
        add(replace(first))
    assert registry[first.name] is first  # the refused copy replaced nothing
    assert get(first.name) is first
    with pytest.raises(ValueError, match=f"unknown {what} 'nope'; choose one of .*{first.name}"):
        get("nope")


def test_a_new_item_is_returned_and_found_by_name():
    reg: Registry = Registry("thing")
    item = zoo.Variant("x", "a test variant")
    assert reg.add(item) is item
    assert list(reg) == ["x"] and reg.named("x") is item


@pytest.mark.parametrize("threat", [TIED.name, FULL.name])
def test_the_refinement_steps_the_slopes_with_the_exact_ellipsoid_on_tied_flows(
    monkeypatch, threat
):
    from flowbound.certificates.local import CASCADE

    asked = []

    def record(model, x, y, eps, *, modes, levels, **kwargs):
        asked.append((modes, levels))
        return []

    monkeypatch.setattr(certify, "local_certified", record)
    b = certify.bound(f"local_{threat}")
    x = torch.zeros(1, 28, 28)
    for modes in (200, None):
        b.refine(None, x, None, [0.5], modes=modes)
    b.certify(None, x, None, [0.5])
    exact = CASCADE[2:] if threat == TIED.name else CASCADE[2:3]
    assert asked == [(200, CASCADE[2:3]), (None, exact), (200, CASCADE[:2])]
