"""Uncertainty of the book's measured rates, and verdicts that respect it.

A rate over test images is a binomial proportion: it gets a Wilson score
interval. A difference between training objectives is measured once per
training seed: its interval is the wider of the one from the spread over
seeds and the one from the binomial noise of the test images they share. A
verdict of "reproduced" or "partly reproduced" needs the interval, not just
the point, on the claimed side.

Used in: Introduction (stAdv table), Possibility results (Figure 6, the
budgeted attack), the Reproduction report.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats as _st

__all__ = [
    "Interval",
    "UNDETERMINED",
    "Z95",
    "rate_interval",
    "seed_difference",
    "verdict_with_interval",
    "wilson_interval",
]

#: The normal quantile of a two-sided 95% interval.
Z95 = 1.959964

#: The verdict when a number is NaN (a profile too small to measure it).
UNDETERMINED = "undetermined at this profile"


class Interval(NamedTuple):
    """A point estimate with a two-sided interval [lo, hi] (95% unless stated)."""

    value: float
    lo: float
    hi: float

    def se(self) -> float:
        """The standard error a 95% interval implies: its half width / z."""
        return (self.hi - self.lo) / (2 * Z95)

    def text(self, digits: int = 3, *, signed: bool = False) -> str:
        """``0.123 [0.101, 0.147]`` (``signed``: ``+0.123 [...]``)."""
        f = f"{{:{'+' if signed else ''}.{digits}f}}"
        return f"{f.format(self.value)} [{f.format(self.lo)}, {f.format(self.hi)}]"


def wilson_interval(k: int, n: int, *, z: float = Z95) -> Interval:
    """Wilson score interval for k successes out of n trials (95% at the default z).

    n = 0 gives NaN throughout (no trials, no rate).
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k = {k}, n = {n}")
    if n == 0:
        nan = float("nan")
        return Interval(nan, nan, nan)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def rate_interval(hits: np.ndarray, among: np.ndarray | None = None) -> Interval:
    """The Wilson interval of the rate of ``hits`` (booleans), among ``among`` if given."""
    hits = np.asarray(hits, dtype=bool)
    mask = np.ones_like(hits) if among is None else np.asarray(among, dtype=bool)
    return wilson_interval(int((hits & mask).sum()), int(mask.sum()))


def seed_difference(diffs: np.ndarray, binomial_se: np.ndarray, *, level: float = 0.95) -> Interval:
    """Mean over seeds of a difference of rates, with its interval.

    ``diffs`` (k,) is the difference measured with each seed's networks and
    ``binomial_se`` (k,) its binomial standard error at that seed. The half
    width is the larger of the t interval from the spread over seeds
    (t_{k-1} sd / sqrt(k), for k >= 2) and the normal interval of one seed's
    binomial noise (z sqrt(mean(se^2))): every seed is evaluated on the same
    test images, so that noise is shared and does not average out over
    seeds. Neither a lucky agreement of three seeds nor a single seed hides
    the noise.
    """
    d = np.asarray(diffs, dtype=float)
    se = np.asarray(binomial_se, dtype=float)
    if d.ndim != 1 or d.shape != se.shape or len(d) == 0:
        raise ValueError(f"need equal-length 1-D diffs and se, got {d.shape}, {se.shape}")
    k = len(d)
    z = float(_st.norm.ppf(0.5 + level / 2))
    half = z * math.sqrt(float(np.mean(se**2)))  # shared test images: not divided by k
    if k >= 2:
        t = float(_st.t.ppf(0.5 + level / 2, k - 1))
        half = max(half, t * float(np.std(d, ddof=1)) / math.sqrt(k))
    mean = float(d.mean())
    return Interval(mean, mean - half, mean + half)


def verdict_with_interval(
    interval: Interval, full: float, *, higher: bool = True, null: float = 0.0
) -> str:
    """A claim's verdict from a measured interval.

    "reproduced": the point is at or past ``full`` and the whole interval is
    past ``null``; "partly reproduced": the whole interval is past ``null``
    (the right sign, beyond the noise); "not reproduced" otherwise; NaN is
    undetermined. ``higher=False`` when the claimed effect is a decrease.
    """
    if not all(np.isfinite(v) for v in interval):
        return UNDETERMINED
    sign = 1 if higher else -1
    beyond_noise = sign * (interval.lo if higher else interval.hi) > sign * null
    if beyond_noise and sign * interval.value >= sign * full:
        return "reproduced"
    if beyond_noise:
        return "partly reproduced"
    return "not reproduced"
