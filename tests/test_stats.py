"""Intervals for rates and seed spreads, and the verdicts built on them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from flowbound.stats import (
    UNDETERMINED,
    Interval,
    rate_interval,
    seed_difference,
    verdict_with_interval,
    wilson_interval,
)


def test_wilson_interval_on_known_binomial_cases():
    # Textbook values (Newcombe 1998, Table I: 95% Wilson intervals).
    lo, hi = wilson_interval(5, 10)[1:]
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10)[1:] == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(81, 263)[1:] == pytest.approx((0.2553, 0.3662), abs=1e-4)
    # Width shrinks like 1 / sqrt(n): 100x the trials, about a tenth of the width.
    w1 = np.subtract(*wilson_interval(30, 100)[2:0:-1])
    w2 = np.subtract(*wilson_interval(3000, 10000)[2:0:-1])
    assert w1 / w2 == pytest.approx(10, rel=0.02)


def test_wilson_interval_covers_about_95_percent_exactly():
    """Exact coverage from the binomial pmf, independent of any sampling."""
    for p, n in ((0.3, 100), (0.05, 200), (0.9, 1000)):
        cover = sum(
            st.binom.pmf(k, n, p)
            for k in range(n + 1)
            if wilson_interval(k, n).lo <= p <= wilson_interval(k, n).hi
        )
        assert 0.92 <= cover <= 0.98


def test_wilson_interval_rejects_nonsense_and_handles_no_trials():
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(-1, 2)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_rate_interval_counts_among_a_mask():
    hits = np.array([1, 1, 0, 1, 0], dtype=bool)
    among = np.array([1, 1, 1, 0, 0], dtype=bool)
    assert rate_interval(hits, among).value == pytest.approx(2 / 3)
    assert rate_interval(hits).value == pytest.approx(3 / 5)


def test_seed_difference_uses_the_larger_of_spread_and_binomial_noise():
    d = np.array([-0.10, -0.12, -0.08])
    tiny = np.full(3, 1e-6)
    iv = seed_difference(d, tiny)
    t = st.t.ppf(0.975, 2)
    assert iv.value == pytest.approx(-0.10)
    assert iv.hi - iv.value == pytest.approx(t * d.std(ddof=1) / math.sqrt(3))
    # seeds that agree exactly still carry their binomial noise, which is shared
    # (the same test images for every seed) and so is not divided by sqrt(k)
    same = seed_difference(np.full(3, -0.1), np.full(3, 0.03))
    assert same.hi - same.value == pytest.approx(1.959964 * 0.03, rel=1e-5)
    one = seed_difference(np.array([-0.1]), np.array([0.02]))
    assert one.hi - one.value == pytest.approx(1.959964 * 0.02, rel=1e-5)


def test_verdicts_need_the_interval_past_zero():
    assert verdict_with_interval(Interval(-0.10, -0.14, -0.06), -0.05, higher=False) == "reproduced"
    assert (
        verdict_with_interval(Interval(-0.10, -0.30, 0.10), -0.05, higher=False) == "not reproduced"
    )
    assert verdict_with_interval(Interval(-0.03, -0.05, -0.01), -0.05, higher=False) == (
        "partly reproduced"
    )
    assert verdict_with_interval(Interval(0.05, 0.01, 0.09), 0.04) == "reproduced"
    assert verdict_with_interval(Interval(0.05, -0.01, 0.11), 0.04) == "not reproduced"
    assert verdict_with_interval(Interval(float("nan"), 0, 1), 0.04) == UNDETERMINED
