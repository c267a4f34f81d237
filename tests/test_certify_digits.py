"""Figure 12's data: both threat sets attacked, brackets on the attacked digits, sound."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from flowbound import experiments as ex


@pytest.fixture
def local_profile(tiny, mnist_dir):
    p = copy.deepcopy(tiny)
    p["local"].update(variants=["nt"], images=40, eps=[0.0, 0.1, 0.5, 2.0], report_eps=[0.1])
    p["local"]["attack"].update(images=20, steps=10, targets=1)
    p["local"]["sides"].update(eps=[0.1, 0.5], steps=5)
    return p


def test_certified_accuracy_brackets_both_threat_sets_on_the_attacked_digits(local_profile):
    d = ex.certified_accuracy(local_profile)
    assert d.images == 40 and d.attack_images == 20
    for threat, key in (("tied", "attack"), ("full", "attack_full")):
        attack = getattr(d, key)["nt"]
        assert attack.shape == (4,) and np.all(np.diff(attack) <= 0)  # nested threat sets
        cert = d.certified_attacked["nt"][threat]
        np.testing.assert_allclose(d.bracket["nt"][threat], attack - cert)
        assert np.all(d.bracket["nt"][threat] >= 0)  # attack >= certificate, per digit
    assert np.all(d.attack_full["nt"] <= d.attack["nt"])  # full flows contain tied
    assert d.bracket["nt"]["tied"][0] == 0.0  # eps = 0: both are clean accuracy
    assert sum(d.violations["nt"].values()) == 0
    assert d.checked["nt"]["local_full"] > 0  # full-flow certificates were attacked
    header, rows = ex.bracket_table(d)
    assert len(rows) == 2 and len(header) == 2 + 3 + 1
    summary = ex.local_summary(d)["nt"]
    assert set(summary["known"]) == {"tied", "full"}
    assert summary["eps50"]["attack_full"] <= summary["eps50"]["attack"]


def test_known_within_is_the_last_eps_of_a_narrow_bracket_from_zero():
    eps = np.array([0.0, 0.1, 0.2, 0.3])
    assert ex.known_within(eps, np.array([0.0, 0.01, 0.03, 0.0])) == 0.1
    assert ex.known_within(eps, np.zeros(4)) == 0.3
    assert ex.known_within(eps, np.array([0.05, 0.0, 0.0, 0.0])) == 0.0


def test_bracket_sides_measures_both_sides_and_reads_one_digit_in_pixels(local_profile):
    s = ex.bracket_sides(local_profile)
    np.testing.assert_allclose(s["bracket_before"], s["pgd"] - s["cert_before"])
    np.testing.assert_allclose(
        s["bracket_before"] - s["bracket_now"], s["certificate_side"] + s["attack_side"]
    )
    assert np.all(s["cert_now"] >= s["cert_before"] - 1e-12)  # the kink only tightens here
    ex_ = s["example"]
    # Readings table, point 19: a uniform shift costs ||M 1|| = sqrt(4 * 28) per pixel
    assert ex_["shift_cost"] == pytest.approx(np.sqrt(112))
    assert ex_["uniform_shift"] == pytest.approx(ex_["largest_certified"] / np.sqrt(112))
    assert ex_["one_pixel"] >= ex_["uniform_shift"]
