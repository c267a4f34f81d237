"""The two registries (variants, bounds): unique names, clear errors for unknown ones."""

from __future__ import annotations

from dataclasses import replace

import pytest

from flowbound.certificates import registry as certify
from flowbound.registry import Registry
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
