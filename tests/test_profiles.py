"""Profiles are plain data; paper holds the paper's widths, smoke is smaller."""

from __future__ import annotations

import pytest

from flowbound.book.profiles import PROFILES, load_profile


def test_profiles_load_and_have_the_same_keys():
    smoke, paper = (load_profile(n) for n in PROFILES)
    assert smoke.keys() == paper.keys()
    assert smoke["train"].keys() == paper["train"].keys()
    assert smoke["background"].keys() == paper["background"].keys()


def test_paper_profile_uses_the_papers_settings():
    paper = load_profile("paper")
    assert paper["hidden"] == {"section3": 512, "section4": 500}  # Readings table, point 16
    assert paper["train"]["train_subset"] is None and paper["eval"]["test_subset"] is None


def test_smoke_is_smaller_than_paper():
    smoke, paper = load_profile("smoke"), load_profile("paper")
    assert smoke["hidden"]["section3"] < paper["hidden"]["section3"]
    assert smoke["train"]["epochs"] <= paper["train"]["epochs"]


def test_a_loaded_profile_is_a_fresh_copy():
    load_profile("paper")["hidden"]["section3"] = 1
    assert load_profile("paper")["hidden"]["section3"] == 512


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown profile 'full'; choose one of smoke, paper"):
        load_profile("full")


def test_every_profile_draws_every_figure():
    """Figures 3, 9 and 10 show nt, rd and at: a profile without one breaks the book."""
    for name in PROFILES:
        nets = load_profile(name)["impossibility"]["networks"]
        assert {"nt", "rd", "at"} <= set(nets), name


def test_the_branch_level_a_profile_may_name_is_one_the_certificate_has():
    from flowbound.book.profiles import SCHEMA
    from flowbound.certificates.local import LEVELS

    rule = SCHEMA["local.branch.level"]
    assert all(rule(name) is None for name in LEVELS)
    assert rule("exact") is not None
