"""Impossibility chapters (Section 3, appendix 6.4): Figures 2, 3, 4, 8, 9, 10 and beyond."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from flowbound.book.trained import get_model
from flowbound.certificates.impossibility import (
    algorithm1,
    algorithm2,
    all_pairs,
    gradient_search,
    loss_ceiling,
    prop3_first_order,
    theorem1_bound,
    theorem2_bound,
)
from flowbound.threat.geometry import aabb_lambda, m_inv_tensor
from flowbound.threat.loss import JACOBIAN_TITLES
from flowbound.threat.sets import FULL, TIED

from ._common import FIRST_VERSION, cached_experiment
from ._common import profile_dict as _profile

__all__ = [
    "CONVERGENCE_NETWORKS",
    "GROWTH_MODELS",
    "LowerBoundSummary",
    "convergence_curves",
    "convergence_summary",
    "figure2_summary",
    "figure2_table",
    "figure8_table",
    "linear_lower_bounds",
    "lower_bound_summary",
    "beyond_the_paper",
    "beyond_the_paper_summary",
    "beyond_the_paper_table",
    "growth_beyond",
    "growth_beyond_summary",
    "impossibility_setup_summary",
    "growth_shape",
    "lower_bounds",
    "pairs_of",
    "rounds_to",
]


#: In the cache key of every result that starts from Theorem 1 or 2 with the
#: exact Jacobian: results from before the one-sided linearisation are stale.
_LINEARISATION = "one-sided"

#: Each experiment's code version (in its cache key): bump one when its results change.
VERSIONS = {"lower_bounds": FIRST_VERSION, "growth_beyond": FIRST_VERSION, "beyond": FIRST_VERSION}


def pairs_of(p: dict[str, Any]) -> list[tuple[int, int]]:
    """The class pairs searched: ``"all"`` 90 ordered pairs, or the first k of
    (0, 1), (1, 2), ..., (9, 0), then the rest of all_pairs()."""
    ring = [(i, (i + 1) % 10) for i in range(10)]
    rest = [q for q in all_pairs() if q not in ring]
    k = p["pairs"]
    return ring + rest if k == "all" else (ring + rest)[: int(k)]


def _algorithm_options(p: dict[str, Any]) -> dict[str, Any]:
    """The options of Algorithms 1 and 2 that the profile sets."""
    return {k: p[k] for k in ("n", "max_iter", "max_inner")}


def _grid(pairs: list[tuple[int, int]], eps: list[float]) -> tuple[list, list[float]]:
    """Every (pair, eps) as one row of a batched run: pairs vary fastest."""
    return [q for _ in eps for q in pairs], [e for e in eps for _ in pairs]


def _settings(p: dict[str, Any]) -> dict[str, Any]:
    return {"eps": p["eps"], "pairs": p["pairs"], **_algorithm_options(p)}


def lower_bounds(
    profile: str | dict[str, Any], network: str, jacobian: str, *, linear: bool = False
) -> dict[str, Any]:
    """Theorem 1 and Algorithm 1 (or 2 for ``linear``) for every (eps, pair), cached.

    Returns arrays over eps (E) and pairs (P): ``exact`` / ``estimate`` of the
    algorithm, ``thm_exact`` / ``thm_linear`` of the theorem, and per eps the
    best pair's ``x`` (E, 28, 28), ``r`` (E, 28, 28), ``pair`` (E, 2) and
    ``exact_history`` / ``estimate_history`` (E, T).
    """
    prof = _profile(profile)
    p = prof["impossibility"]
    trained = get_model(network, prof, section=3)
    config = {
        "model": trained.config,
        "jacobian": jacobian,
        "linear": linear,
        "settings": _settings(p),
        "linearisation": _LINEARISATION,
    }

    def compute() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        model = trained.model.cpu()
        pairs, eps = pairs_of(p), p["eps"]
        rows, budgets = _grid(pairs, eps)
        thm = (theorem2_bound if linear else theorem1_bound)(
            model, rows, budgets, jacobian=jacobian
        )
        alg = (algorithm2 if linear else algorithm1)(
            model,
            rows,
            budgets,
            jacobian=jacobian,
            **_algorithm_options(p),
        )
        shape = (len(eps), len(pairs))
        best = alg.exact.reshape(shape).argmax(1)
        idx = torch.arange(len(eps)) * len(pairs) + best
        value = {
            "eps": torch.tensor(eps, dtype=torch.float64),
            "exact": alg.exact.reshape(shape),
            "estimate": alg.estimate.reshape(shape),
            "thm_exact": thm.exact.reshape(shape),
            "thm_linear": thm.estimate.reshape(shape),
            "x": alg.x[idx],
            "r": alg.r[idx],
            "pair": torch.tensor([rows[int(k)] for k in idx]),
            "exact_history": alg.exact_history[:, idx].T.contiguous(),
            "estimate_history": alg.estimate_history[:, idx].T.contiguous(),
        }
        return value, {"pairs": [list(q) for q in pairs]}

    value, meta = cached_experiment("lower_bounds", VERSIONS, config, compute, as_numpy=False)
    out = {k: v.numpy() for k, v in value.items()}
    out["pairs"] = meta["pairs"]
    out["network"], out["jacobian"] = network, jacobian
    return out


#: The curve shapes :func:`growth_shape` chooses between: y(eps) with parameters.
GROWTH_MODELS: dict[str, tuple[Any, list[float], tuple[list[float], list[float]]]] = {
    # a (exp(b eps) - 1): exponential growth from 0
    "exponential": (
        lambda e, a, b: a * np.expm1(b * e),
        [1.0, 0.5],
        ([1e-12, 1e-6], [np.inf, 50.0]),
    ),
    # a eps^p
    "power law": (lambda e, a, p: a * e**p, [1.0, 1.0], ([1e-12, 1e-3], [np.inf, 20.0])),
    # c eps^p / (s^p + eps^p): a power law at small eps, a plateau c at large eps
    "saturating": (
        lambda e, c, s, p: c * e**p / (s**p + e**p),
        [1.0, 1.0, 1.0],
        ([1e-12, 1e-6, 1e-3], [np.inf, np.inf, 20.0]),
    ),
}


def growth_shape(eps: np.ndarray, values: np.ndarray) -> dict[str, Any]:
    """Which shape describes how a bound grows with eps (eps > 0, values > 0).

    Fits each of :data:`GROWTH_MODELS` to log y by least squares (relative
    errors: the values span orders of magnitude) from several starts and
    chooses by AIC (n log(RSS / n) + 2k), so the three-parameter saturating
    curve must earn its extra parameter. Returns ``shape`` (a key of the
    models, or NaN-valued "undetermined" with fewer than 4 points), and per
    model its ``aic`` and fitted ``params``.
    """
    from scipy.optimize import least_squares

    eps, values = np.asarray(eps, dtype=float), np.asarray(values, dtype=float)
    keep = (eps > 0) & (values > 0) & np.isfinite(values)
    e, ly = eps[keep], np.log(values[keep])
    out: dict[str, Any] = {"aic": {}, "params": {}, "points": int(keep.sum())}
    if keep.sum() < 4:
        out["shape"] = "undetermined"
        return out
    scale = float(np.exp(ly.max()))
    span = float(e.max())
    for name, (fn, guess, (lo, hi)) in GROWTH_MODELS.items():
        best = None
        for a0 in (0.1, 1.0):
            for b0 in (0.3, 1.0, 3.0):
                x0 = np.array(guess, dtype=float)
                x0[0] = a0 * scale
                if name == "exponential":
                    x0[1] = b0 / span
                elif name == "power law":
                    x0[1] = b0
                else:
                    x0[1], x0[2] = b0 * span, 1.0 + b0 / 3

                def resid(theta, fn=fn):
                    model = fn(e, *theta)
                    return np.log(np.maximum(model, 1e-300)) - ly

                x0 = np.clip(x0, np.array(lo) * 1.0001, np.minimum(hi, 1e300))
                try:
                    fit = least_squares(resid, x0, bounds=(lo, hi))
                except ValueError:
                    continue
                if best is None or fit.cost < best.cost:
                    best = fit
        rss = max(2 * float(best.cost), 1e-300)
        n, k = len(e), len(guess)
        out["aic"][name] = n * np.log(rss / n) + 2 * k
        out["params"][name] = [float(t) for t in best.x]
    out["shape"] = min(out["aic"], key=out["aic"].get)
    return out


def growth_beyond(profile: str | dict[str, Any], network: str) -> dict[str, Any]:
    """Beyond the paper: Algorithm 1 (exact Jacobian) on the eps grid ``beyond_eps``,
    which runs far past the paper's 7.84, beside the network's loss ceiling
    (:func:`~flowbound.certificates.impossibility.loss_ceiling`) for the same pairs.

    Returns ``eps`` (E,), ``exact`` (E,) Algorithm 1's best exact l_adv over
    the pairs at each eps, ``best`` its running maximum (the lower bound at
    eps: the supremum cannot fall as eps grows, while a local method can),
    ``ceiling`` (the largest ceiling over those pairs) and the
    :func:`growth_shape` of ``best`` on this grid.
    """
    prof = _profile(profile)
    p = prof["impossibility"]
    trained = get_model(network, prof, section=3)
    config = {
        "model": trained.config,
        "eps": p["beyond_eps"],
        "settings": {k: p[k] for k in ("pairs", "n", "max_iter", "max_inner")},
    }

    def compute() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        model = trained.model.cpu()
        pairs, eps = pairs_of(p), p["beyond_eps"]
        rows, budgets = _grid(pairs, eps)
        alg = algorithm1(model, rows, budgets, jacobian="true", **_algorithm_options(p))
        value = {
            "exact": alg.exact.reshape(len(eps), len(pairs)).amax(1),
            "ceiling": loss_ceiling(model, pairs).amax(),
        }
        return value, {}

    value, _ = cached_experiment("growth_beyond", VERSIONS, config, compute, as_numpy=False)
    eps = np.asarray(p["beyond_eps"], dtype=float)
    exact = value["exact"].numpy()
    # A flow within a smaller budget is within every larger one, so the best
    # value found at any eps' <= eps is a lower bound at eps too.
    best = np.maximum.accumulate(exact)
    return {
        "network": network,
        "eps": eps,
        "exact": exact,
        "best": best,
        "ceiling": float(value["ceiling"]),
        "shape": growth_shape(eps, best)["shape"],
    }


def rounds_to(history: np.ndarray, fraction: float = 0.99) -> float:
    """First round at which ``history`` has gained ``fraction`` of its total gain (Figure 4).

    NaN when the run never rises above its start: it did not converge at
    round 0, it never improved, and a median of rounds must not count it.
    """
    history = np.asarray(history, dtype=float)
    gain = history.max() - history[0]
    if not gain > 0:
        return float("nan")
    target = history[0] + fraction * gain
    return int(np.argmax(history >= target))


def beyond_the_paper(profile: str | dict[str, Any], network: str = "nt") -> dict[str, Any]:
    """Gradient search from Algorithm 1's pairs and from random starts; Prop. 3 test.

    At eps = ``sample_eps`` (exact Jacobian): (a) Algorithm 1's exact value,
    (b) projected gradient ascent on the exact l_adv from its output, (c) the
    same from ``search_restarts`` random starts, (d) the same from (a) with
    independent (du, dv) flows at the same l_diff budget (Proposition 3 says
    tied flows reach the extremes). Values are best over the searched pairs.
    """
    prof = _profile(profile)
    p = prof["impossibility"]
    trained = get_model(network, prof, section=3)
    config = {
        "linearisation": _LINEARISATION,
        "model": trained.config,
        "settings": _settings(p),
        "eps": p["sample_eps"],
        "steps": p["search_steps"],
        "restarts": p["search_restarts"],
    }

    def compute() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        model = trained.model.cpu()
        pairs, eps = pairs_of(p), p["sample_eps"]
        alg = algorithm1(
            model,
            pairs,
            eps,
            jacobian="true",
            **_algorithm_options(p),
        )
        steps = p["search_steps"]
        from_alg = gradient_search(model, pairs, eps, alg.x, alg.r, steps=steps)
        gen = torch.Generator().manual_seed(p["seed"])
        restarts = []
        mi = m_inv_tensor(28)
        for _ in range(p["search_restarts"]):
            x0 = torch.rand(len(pairs), 28, 28, generator=gen, dtype=torch.float64) * 2 - 1
            s = torch.randn(len(pairs), 784, generator=gen, dtype=torch.float64)
            r0 = (eps * s / s.norm(dim=1, keepdim=True) @ mi).reshape(-1, 28, 28)
            restarts.append(gradient_search(model, pairs, eps, x0, r0, steps=steps).exact)
        full0 = torch.stack([alg.r, alg.r], 1)  # joint norm sqrt(2) eps = same l_diff
        untied = gradient_search(model, pairs, eps * 2**0.5, alg.x, full0, steps=steps, tied=False)
        value = {
            "algorithm1": alg.exact,
            "search_from_alg1": from_alg.exact,
            "search_random": torch.stack(restarts).amax(0),
            "untied_from_alg1": untied.exact,
        }
        return value, {"pairs": [list(q) for q in pairs]}

    value, meta = cached_experiment("beyond", VERSIONS, config, compute, as_numpy=False)
    out = {k: float(v.max()) for k, v in value.items()}
    out["eps"] = p["sample_eps"]
    out["l_diff"] = p["sample_eps"] * 2**0.5
    out["pairs"] = len(meta["pairs"])
    return out


KEPT_PAIR_RATIO = 1.01  # below it, Algorithm 1 ended at Theorem 1's pair (or next to it)


@dataclass(frozen=True)
class LowerBoundSummary:
    """Figure 2's data and what the chapter and the report read from it.

    ``data[net][jac]``: :func:`lower_bounds`; ``beyond[net]``: :func:`growth_beyond`;
    per (net, jac): ``shape`` on the paper's grid (AIC), ``final`` = (Algorithm 1,
    Theorem 1) exact values at the last eps, ``estimates`` = (Algorithm 1's
    estimate, Theorem 1's linearised value) there (the paper's own comparison).
    """

    data: dict[str, dict[str, dict[str, Any]]]
    beyond: dict[str, dict[str, Any]]
    shape: dict[tuple[str, str], str]
    final: dict[tuple[str, str], tuple[float, float]]
    estimates: dict[tuple[str, str], tuple[float, float]]

    def ratio(self, net: str, jac: str) -> float:
        """Algorithm 1 over Theorem 1 at the last eps (NaN where Theorem 1's value <= 0)."""
        alg, thm = self.final[net, jac]
        return alg / thm if thm > 0 else float("nan")

    def beyond_theorem1(self, jac: str, at_least: float = KEPT_PAIR_RATIO) -> dict[str, float]:
        """The networks on which Algorithm 1 ends at ``at_least`` times Theorem 1's value
        or more with Jacobian ``jac`` (ratios at the last eps; NaN ratios never count).

        With Dg as printed the search optimises another quantity and usually ends at
        Theorem 1's own pair (ratio 1), but not on every trained network, so prose
        and verdicts count networks instead of assuming either."""
        ratios = {net: self.ratio(net, j) for net, j in self.final if j == jac}
        return {net: r for net, r in ratios.items() if r >= at_least}


def lower_bound_summary(profile: str | dict[str, Any]) -> LowerBoundSummary:
    """:class:`LowerBoundSummary` for the profile's Section-3 networks, both Jacobians."""
    prof = _profile(profile)
    nets = prof["impossibility"]["networks"]
    data = {net: {jac: lower_bounds(prof, net, jac) for jac in ("paper", "true")} for net in nets}
    shape, final, estimates = {}, {}, {}
    for net, by_jac in data.items():
        for jac, d in by_jac.items():
            best = d["exact"].max(1)
            shape[net, jac] = growth_shape(d["eps"], best)["shape"]
            final[net, jac] = (float(best[-1]), float(d["thm_exact"].max(1)[-1]))
            estimates[net, jac] = (
                float(d["estimate"].max(1)[-1]),
                float(d["thm_linear"].max(1)[-1]),
            )
    beyond = {net: growth_beyond(prof, net) for net in nets}
    return LowerBoundSummary(data, beyond, shape, final, estimates)


def figure2_table(s: LowerBoundSummary, eps_last: float) -> tuple[list[str], list[list[str]]]:
    """Figure 2's table: per network and Jacobian, Theorem 1 and Algorithm 1 at the last
    eps, their ratio (exact values and the paper's estimates), the shape, the ceiling."""
    rows = []
    for (net, jac), (alg, thm) in s.final.items():
        est, lin = s.estimates[net, jac]
        ratio = f"{alg / thm:.1f}" if thm > 0 else "none (Theorem 1's value <= 0)"
        rows.append(
            [
                f"`{net}`",
                JACOBIAN_TITLES[jac],
                f"{thm:.3g}",
                f"{alg:.3g}",
                ratio,
                f"{est / lin:.1f}",
                s.shape[net, jac],
                f"{s.beyond[net]['ceiling']:.3g}",
            ]
        )
    header = [
        "network",
        "Jacobian",
        f"Theorem 1 at eps = {eps_last}",
        "Algorithm 1",
        "ratio (exact values)",
        "ratio (estimates, the paper's)",
        "shape on the grid (AIC)",
        "ceiling",
    ]
    return header, rows


def figure2_summary(s: LowerBoundSummary) -> dict[str, Any]:
    """What the Figure 2 prose cites (names as glued in the chapter)."""
    out: dict[str, Any] = {}
    for (net, jac), (alg, thm) in s.final.items():
        out[f"alg_{net}_{jac}"] = alg
        out[f"thm_{net}_{jac}"] = thm
        out[f"ratio_{net}_{jac}"] = s.ratio(net, jac)
    drops = [
        f"{net} ({JACOBIAN_TITLES[jac]})"
        for net, by_jac in s.data.items()
        for jac, d in by_jac.items()
        if np.any(np.diff(d["exact"].max(1)) < -1e-9)
    ]
    out["drops"] = ", ".join(drops) if drops else "none of the networks"
    nets = list(s.data)
    higher = s.beyond_theorem1("paper")
    out["printed_n"] = len(nets)
    out["printed_kept"] = sum(s.ratio(net, "paper") < KEPT_PAIR_RATIO for net in nets)
    out["printed_higher"] = (
        ", ".join(f"{net} ({r:.2f}x)" for net, r in higher.items()) if higher else "none"
    )
    out["shapes_true"] = ", ".join(f"{net} {s.shape[net, 'true']}" for net in s.data)
    if "nt" in s.beyond:
        out["nt_ceiling"] = s.beyond["nt"]["ceiling"]
        out["nt_share"] = 100 * s.final["nt", "true"][0] / s.beyond["nt"]["ceiling"]
    return out


#: The networks and order of Figure 4's convergence curves.
CONVERGENCE_NETWORKS = ("nt", "rd", "at")


def convergence_curves(s: LowerBoundSummary, profile: str | dict[str, Any]) -> list[dict]:
    """Figure 4's curves: Algorithm 1's exact value and estimate per round, per network
    in :data:`CONVERGENCE_NETWORKS`, eps in ``convergence_eps`` and Jacobian."""
    p = _profile(profile)["impossibility"]
    curves = []
    for net in [n for n in CONVERGENCE_NETWORKS if n in s.data]:
        for e in p["convergence_eps"]:
            k = int(np.argmin(np.abs(np.array(p["eps"]) - e)))
            for jac in ("paper", "true"):
                d = s.data[net][jac]
                curves.append(
                    {
                        "net": net,
                        "label": f"{net}, eps = {p['eps'][k]}",
                        "jacobian": jac,
                        "exact": d["exact_history"][k],
                        "estimate": d["estimate_history"][k],
                    }
                )
    return curves


def convergence_summary(curves: list[dict]) -> dict[str, Any]:
    """Figure 4's numbers: with Dg as printed, how many runs end below their start; with
    the exact Jacobian, rounds to 99% of the gain (median, max) over the runs that improve."""
    printed = [c for c in curves if c["jacobian"] == "paper"]
    rounds = [rounds_to(c["exact"]) for c in curves if c["jacobian"] == "true"]
    improving = [r for r in rounds if np.isfinite(r)]
    nan = float("nan")
    return {
        "printed_falls": sum(c["exact"][-1] < c["exact"][0] for c in printed),
        "printed_total": len(printed),
        "printed_worst": float(min(c["exact"][-1] for c in printed)) if printed else nan,
        "printed_est_best": float(max(c["estimate"][-1] for c in printed)) if printed else nan,
        "rounds_median": float(np.median(improving)) if improving else nan,
        "rounds_max": float(max(improving)) if improving else nan,
        "rounds_flat": len(rounds) - len(improving),
        "rounds_runs": len(rounds),
        "rounds_nets": ", ".join(dict.fromkeys(c["net"] for c in curves)),
    }


def linear_lower_bounds(profile: str | dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Figure 8's data: :func:`lower_bounds` (Theorem 2, Algorithm 2) per linear network
    and Jacobian."""
    prof = _profile(profile)
    return {
        net: {jac: lower_bounds(prof, net, jac, linear=True) for jac in ("paper", "true")}
        for net in prof["impossibility"]["linear_networks"]
    }


def figure8_table(
    data: dict[str, dict[str, dict[str, Any]]], accuracy: dict[str, float], eps_last: float
) -> tuple[list[str], list[list[str]], dict[str, float]]:
    """Figure 8's table (network, test accuracy, Jacobian, Theorem 2 and Algorithm 2 at the
    last eps, shape by AIC) and the values the prose cites (``lin_alg_*``, ``lin_thm_*``)."""
    rows, cited = [], {}
    for net, by_jac in data.items():
        for jac, d in by_jac.items():
            best, thm = d["exact"].max(1), d["thm_exact"].max(1)
            shape = growth_shape(d["eps"], best)["shape"]
            rows.append(
                [
                    f"`{net}`",
                    f"{accuracy[net]:.4f}",
                    JACOBIAN_TITLES[jac],
                    f"{thm[-1]:.3g}",
                    f"{best[-1]:.3g}",
                    shape,
                ]
            )
            cited[f"lin_alg_{net}_{jac}"] = float(best[-1])
            cited[f"lin_thm_{net}_{jac}"] = float(thm[-1])
    header = [
        "network",
        "test accuracy",
        "Jacobian",
        f"Theorem 2 at eps = {eps_last}",
        "Algorithm 2",
        "shape on the grid (AIC)",
    ]
    return header, rows, cited


# --- what the Impossibility chapter glues: one dict per section, names as in its prose ---


def impossibility_setup_summary(profile: str | dict[str, Any]) -> dict[str, Any]:
    """The search's settings (pairs, midpoint points, iterations, the largest eps) and the
    largest pixel move the box admits at Section 3's and Section 4's largest eps."""
    prof = _profile(profile)
    p = prof["impossibility"]
    lam_max = float(aabb_lambda(28).max())
    eps_sec4 = max(prof["possibility"]["eps"])
    return {
        "profile": prof["name"],
        "n_pairs": len(pairs_of(p)),
        "n_mid": p["n"],
        "max_iter": p["max_iter"],
        "eps_max": max(p["eps"]),
        "lam_max": lam_max,
        "px_max": lam_max * max(p["eps"]),
        "eps_sec4": eps_sec4,
        "px_sec4": lam_max * eps_sec4,
    }


def growth_beyond_summary(beyond: dict[str, dict[str, Any]], eps_paper: float) -> dict[str, Any]:
    """f_nt's best lower bound at the far end of :func:`growth_beyond`'s grid, Algorithm
    1's own value there, every network's fitted shape, the gain over the paper's largest
    eps ``eps_paper``, where Algorithm 1 peaks and the share of the ceiling reached."""
    b = beyond["nt"]
    k = int(np.argmin(np.abs(b["eps"] - eps_paper)))
    return {
        "far_eps": float(b["eps"][-1]),
        "far_nt": float(b["best"][-1]),
        "far_nt_alg": float(b["exact"][-1]),
        "far_shapes": ", ".join(f"{n} {d['shape']}" for n, d in beyond.items()),
        "far_gain": float(b["best"][-1] / b["best"][k]),
        "far_peak_eps": float(b["eps"][int(np.argmax(b["exact"]))]),
        "far_ceiling_share": float(100 * b["best"][-1] / b["ceiling"]),
    }


def beyond_the_paper_summary(profile: str | dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The searches beyond Algorithm 1 (``b`` from :func:`beyond_the_paper`), Proposition
    3's first-order gain of untied over tied flows on f_nt's pairs at ``sample_eps``,
    and the verdicts on Proposition 3 and on the search."""
    prof = _profile(profile)
    p = prof["impossibility"]
    out: dict[str, Any] = {
        f"b_{key}": b[key]
        for key in ("algorithm1", "search_from_alg1", "search_random", "untied_from_alg1")
    }
    out |= {"b_eps": b["eps"], "b_l_diff": b["l_diff"]}
    model = get_model("nt", prof, section=3).model.cpu()
    fo = prop3_first_order(model, pairs_of(p), p["sample_eps"])
    fo_gain = (fo[FULL.name] / fo[TIED.name]).numpy() - 1
    untied_gain = b["untied_from_alg1"] / b["search_from_alg1"] - 1
    out |= {
        "fo_gain_median": 100 * float(np.median(fo_gain)),
        "fo_gain_max": 100 * float(fo_gain.max()),
        "fo_pairs": len(fo_gain),
        "b_untied_gain": 100 * untied_gain,
        "prop3_verdict": "untied flows reach a larger exact loss than tied ones, so "
        "Proposition 3 does not hold beyond its linearisation"
        if untied_gain > 1e-3
        else "untied flows reach no larger exact loss than tied ones here, as Proposition 3 says",
        "search_verdict": "improves on it"
        if b["search_from_alg1"] > b["algorithm1"] * 1.001
        else "does not improve on it",
    }
    return out


def beyond_the_paper_table(b: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The best exact l_adv on f_nt per method: Algorithm 1, gradient ascent from its
    pairs and from random starts, and untied flows at the same l_diff."""
    return ["method (f_nt, exact values)", "best l_adv"], [
        ["Algorithm 1 (exact Jacobian)", f"{b['algorithm1']:.4g}"],
        ["gradient ascent from Algorithm 1's pairs", f"{b['search_from_alg1']:.4g}"],
        ["gradient ascent from random starts", f"{b['search_random']:.4g}"],
        ["as row 2, independent (du, dv) at the same l_diff", f"{b['untied_from_alg1']:.4g}"],
    ]
