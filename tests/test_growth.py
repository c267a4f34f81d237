"""The growth verdict: synthetic curves of known shape are classified correctly."""

from __future__ import annotations

import numpy as np
import pytest

from flowbound.book.experiments.impossibility import growth_shape, rounds_to

EPS = np.linspace(0, 7.84, 9)
CURVES = {
    "exponential": [
        lambda e: 0.2 * np.expm1(0.6 * e),
        lambda e: 3 * np.expm1(0.25 * e),
        lambda e: np.exp(0.8 * e) - 1,
    ],
    "power law": [lambda e: 2 * e**1.5, lambda e: 0.7 * e**0.5, lambda e: e**2.5],
    "saturating": [
        lambda e: 5 * (1 - np.exp(-e / 1.5)),
        lambda e: 10 * e**2 / (4 + e**2),
        lambda e: 3 * np.tanh(e / 2),
    ],
}


@pytest.mark.parametrize("noise", [0.0, 0.02])
@pytest.mark.parametrize("shape", list(CURVES))
def test_growth_shape_classifies_synthetic_curves(shape, noise):
    rng = np.random.default_rng(0)
    for f in CURVES[shape]:
        y = f(EPS) * np.exp(noise * rng.standard_normal(len(EPS)))
        assert growth_shape(EPS, y)["shape"] == shape


def test_growth_shape_needs_four_points():
    assert growth_shape(np.array([0.0, 1, 2]), np.array([0.0, 1, 4]))["shape"] == "undetermined"


def test_rounds_to_does_not_call_a_flat_run_converged():
    assert np.isnan(rounds_to(np.array([1.0, 1.0, 1.0])))
    assert np.isnan(rounds_to(np.array([1.0, 0.5, 0.9])))
    assert rounds_to(np.array([0.0, 0.5, 1.0, 1.0])) == 2
