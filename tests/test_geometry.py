"""Neighbour matrices, M^T M, M, lambda and l_diff against brute-force constructions."""

from __future__ import annotations

import numpy as np
import pytest

from flowbound.threat import geometry as geo


def l_diff_brute(du: np.ndarray, dv: np.ndarray) -> float:
    """Eq. (2) with loops: every pixel and its 4 neighbours, a missing one counting as 0."""
    side = du.shape[0]
    total = 0.0
    for c in (du, dv):
        for i in range(side):
            for j in range(side):
                for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                    ni, nj = i + di, j + dj
                    nb = c[ni, nj] if 0 <= ni < side and 0 <= nj < side else 0.0
                    total += (c[i, j] - nb) ** 2
    return float(np.sqrt(total))


def test_neighbour_matrices_are_one_hot_with_zero_rows_at_the_border():
    side = 5
    mats = geo.neighbour_matrices(side)
    for name, m in mats.items():
        dense = m.toarray()
        sums = dense.sum(1)
        assert set(np.unique(dense)) <= {0.0, 1.0}
        assert set(np.unique(sums)) == {0.0, 1.0}
        assert int((sums == 0).sum()) == side, name  # one border row or column
    t, b = mats["t"].toarray(), mats["b"].toarray()
    assert np.array_equal(t, b.T)
    # Pixel (1, 2) = index 7: its top neighbour is (0, 2) = index 2.
    assert t[7, 2] == 1.0 and mats["l"].toarray()[7, 6] == 1.0


def test_prop1_matrix_form_equals_eq2_brute_force():
    rng = np.random.default_rng(0)
    for side in (3, 4, 6):
        r = rng.standard_normal((side, side))
        assert geo.l_diff_matrix(r) == pytest.approx(l_diff_brute(r, r), rel=1e-12)
        assert geo.l_diff(r) == pytest.approx(l_diff_brute(r, r), rel=1e-12)
        full = rng.standard_normal((2, side, side))
        assert geo.l_diff(full, full=True) == pytest.approx(
            l_diff_brute(full[0], full[1]), rel=1e-12
        )


def test_prop1_identity_on_random_28x28_flows():
    r = np.random.default_rng(1).standard_normal((50, 28, 28))
    np.testing.assert_allclose(geo.l_diff(r), geo.l_diff_matrix(r), rtol=1e-12)


def test_mtm_is_the_hessian_of_the_eq2_quadratic():
    """A_ij from second differences of q(r) = l_diff(r)^2 / 4 (exact for a quadratic)."""
    side, d = 4, 16
    q = lambda v: geo.l_diff(v.reshape(side, side)) ** 2 / 4  # noqa: E731
    eye = np.eye(d)
    # With q(r) = r^T A r / 2: q(e_i + e_j) - q(e_i) - q(e_j) = A_ij for i != j,
    # and q(2 e_i) - 2 q(e_i) = A_ii on the diagonal.
    hess = np.array([[q(eye[i] + eye[j]) - q(eye[i]) - q(eye[j]) for j in range(d)]
                     for i in range(d)])  # fmt: skip
    np.testing.assert_allclose(hess, geo.mtm(side), atol=1e-12)


def test_mtm_positive_definite_with_the_known_spectrum_and_diagonal():
    w, q = geo.mtm_eigh(28)
    a = geo.mtm(28)
    assert w[0] > 0
    assert w[0] == pytest.approx(0.0411, abs=1e-4)  # Readings table, point 3
    assert w[-1] == pytest.approx(15.95, abs=1e-2)
    assert np.diag(a).min() == 6 and np.diag(a).max() == 8
    np.testing.assert_allclose(q @ np.diag(w) @ q.T, a, atol=1e-10)
    sparse = geo.mtm(28, sparse=True)
    np.testing.assert_array_equal(sparse.toarray(), a)


def test_m_sqrt_and_m_inv():
    m, mi, a = geo.m_sqrt(10), geo.m_inv(10), geo.mtm(10)
    np.testing.assert_allclose(m, m.T, atol=0)
    np.testing.assert_allclose(m @ m, a, atol=1e-10)
    np.testing.assert_allclose(mi @ m, np.eye(100), atol=1e-10)
    assert np.linalg.eigvalsh(m).min() > 0


def test_lambda_range_on_28x28():
    lam = geo.aabb_lambda(28)
    assert lam.shape == (784,)
    assert lam.min() == pytest.approx(0.487, abs=1e-3)  # Readings table, point 8
    assert lam.max() == pytest.approx(0.594, abs=1e-3)
    np.testing.assert_allclose(lam**2, np.diag(np.linalg.inv(geo.mtm(28))), rtol=1e-10)


@pytest.mark.parametrize("i", [0, 13, 27 * 28 + 5, 14 * 28 + 14])
def test_prop2_maximiser_attains_eps_lambda_and_nothing_beats_it(i):
    side, eps = 28, 0.7
    a_inv = np.linalg.inv(geo.mtm(side))
    lam = geo.aabb_lambda(side)
    r_star = eps * a_inv[:, i] / lam[i]
    assert geo.flow_norm(r_star.reshape(side, side)) == pytest.approx(eps, rel=1e-10)
    assert r_star[i] == pytest.approx(eps * lam[i], rel=1e-10)
    rng = np.random.default_rng(i)
    noise = rng.standard_normal((2000, side * side))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    s = noise.copy()
    s[:1000] = r_star + 0.05 * np.linalg.norm(r_star) * noise[:1000]  # near the maximiser
    r = s / geo.flow_norm(s.reshape(-1, side, side))[:, None] * eps  # on the boundary
    assert r[:, i].max() <= eps * lam[i] * (1 + 1e-12)
    assert r[:, i].max() > 0.9 * eps * lam[i]  # the search did get close


def test_a_batch_of_two_tied_flows_is_not_mistaken_for_one_full_flow():
    r = np.random.default_rng(2).standard_normal((2, 6, 6))
    np.testing.assert_allclose(geo.l_diff(r), [l_diff_brute(r[0], r[0]), l_diff_brute(r[1], r[1])])
    assert geo.l_diff(r, full=True) == pytest.approx(l_diff_brute(r[0], r[1]))


def test_bad_side_and_bad_flow_shapes():
    with pytest.raises(ValueError, match="side must be an integer"):
        geo.mtm(1)
    with pytest.raises(ValueError, match="two equal image axes"):
        geo.flow_norm(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="a full flow has shape"):
        geo.l_diff(np.zeros((3, 4, 4)), full=True)
