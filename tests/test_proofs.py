"""The appendix's numerical checks hold (and would catch a broken proposition)."""

from __future__ import annotations

from flowbound.book.experiments.proofs import (
    jacobian_constant,
    proof_rows,
    prop1_error,
    prop2_check,
    sdp_sandwich,
)


def test_proposition_1_and_2_hold_on_random_flows():
    assert prop1_error(side=8, n=50) < 1e-12
    p2 = prop2_check(side=8, n=50)
    assert p2["ratio"] <= 1 + 1e-12  # never outside the box
    assert abs(p2["norm"] - 1.0) < 1e-9 and abs(p2["attained"] - 1.0) < 1e-9  # attained


def test_the_constant_d_is_2_on_unit_images_and_4_on_symmetric_ones():
    worst = jacobian_constant(side=8, n=64)
    assert 1.5 < worst["[0, 1]"] <= 2 + 1e-12
    assert 3.0 < worst["[-1, 1]"] <= 4 + 1e-12


def test_the_sdp_sits_between_brute_force_and_the_spectral_bound():
    s = sdp_sandwich()
    assert s["brute"] <= s["lower"] + 1e-9 <= s["upper"] + 2e-9
    assert s["upper"] <= s["spectral"] + 1e-9
    assert s["upper"] / s["brute"] < 1.783  # Grothendieck's constant


def test_the_appendix_table_has_one_row_per_check():
    rows = proof_rows(side=6)
    assert [r[0] for r in rows][:2] == ["Proposition 1", "Proposition 2"] and len(rows) == 4
