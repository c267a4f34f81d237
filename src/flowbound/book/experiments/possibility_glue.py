"""What the Possibility chapter glues: one dict per section, named as in its prose.

Each function takes results the chapter already computed (cached experiments of
:mod:`.possibility`) and returns the values its sentences cite, ready for
:func:`flowbound.book.glue.glue_all`; the tables it shows come from the ``*_table``
functions here and in :mod:`.possibility`.

Used in: Possibility results.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flowbound.book.glue import count_noun
from flowbound.book.trained import get_model
from flowbound.threat.geometry import aabb_lambda, m_inv_norm

from ._common import profile_dict as _profile
from .intro import STADV_SUCCESS_NAMES
from .possibility import ObjectiveComparison, StAdvVsTau, ranks_over_seeds

__all__ = [
    "beyond_cert_summary",
    "budget_table",
    "figure6_summary",
    "possibility_setup_summary",
    "tightness_summary",
]


def possibility_setup_summary(profile: str | dict[str, Any]) -> dict[str, Any]:
    """f_sdp's training settings and clean accuracy (and f_nt's), and the largest eps
    of Sections 3 and 4 with the largest pixel move the box admits at Section 4's."""
    prof = _profile(profile)
    sdp = prof["variants"]["sdp"]
    eps4 = max(prof["possibility"]["eps"])
    return {
        "profile": prof["name"],
        "sdp_lambda": sdp["lambda"],
        "sdp_eps": sdp["eps"],
        "sdp_lanczos": sdp["lanczos_steps"],
        "sdp_acc": get_model("sdp", prof, section=4).test_accuracy,
        "nt_acc": get_model("nt", prof, section=4).test_accuracy,
        "eps4_max": eps4,
        "px4_max": float(aabb_lambda(28).max()) * eps4,
        "eps3_max": max(prof["impossibility"]["eps"]),
    }


def tightness_summary(claim: dict[str, Any], comparison: ObjectiveComparison) -> dict[str, Any]:
    """Section 4.2's second claim (``claim`` from :func:`.possibility.sdp_tightness_claim`
    over ``comparison``'s seeds) and the box's geometry that explains it: ||lambda||_2 and
    ||M^{-1}||_2 at 28 x 28."""
    lo, hi = claim["sdp_over_spectral_range"]["sdp"]
    ratio = claim["sdp_over_spectral"]
    return {
        "lam_norm": float(np.linalg.norm(aabb_lambda(28))),
        "minv_norm": m_inv_norm(28),
        "n_seeds": len(comparison.seeds),
        "n_seeds_text": count_noun(len(comparison.seeds), "training seed"),
        "sdp_ratio_span": f"{lo:.2f} to {hi:.2f}",
        "sdp_own_sdp": claim["own"]["sdp"],
        "sdp_own_spec": claim["own"]["spectral"],
        "sdp_own_fro": claim["own"]["frobenius"],
        "sdp_own_verdict": f"the SDP is the tightest of the {claim['n_compared']}, as the paper "
        "says"
        if claim["tighter"]
        else "the SDP is not the tightest, so the claim is not reproduced",
        "nt_own_sdp": claim["nt_sdp"],
        "sdp_shrink": claim["shrink_vs_nt"],
        "eps_small": claim["eps_small"],
        "sdp_cert_small": claim["certified"]["sdp"],
        "best_other_name": claim["best_other"],
        "best_other_cert": claim["certified"][claim["best_other"]],
        "sdp_ratio_own": ratio["sdp"],
        "sdp_ratio_min_other": min(v for n, v in ratio.items() if n != "sdp"),
        "sdp_ratio_rank": 1 + sum(v < ratio["sdp"] for v in ratio.values()),
    }


def figure6_summary(
    profile: str | dict[str, Any], f6: StAdvVsTau, rob: dict[str, Any]
) -> dict[str, Any]:
    """Figure 6's claims at the profile's ``claim_tau`` and ``claim_success`` (``f6`` from
    :func:`.possibility.stadv_vs_tau`, ``rob`` from :func:`.possibility.sdp_robustness_claim`):
    the most robust network, f_nt's and f_sdp's rates under both success definitions
    and border rules, f_sdp against the others' mean, its ranks over seeds, and the
    variants whose success falls anywhere as tau falls (none should)."""
    p = _profile(profile)["possibility"]
    definition = p["claim_success"]
    taus = list(f6.taus)
    k = taus.index(p["claim_tau"])
    at_k = {n: float(v[k]) for n, v in f6.rates(definition).items()}
    acc_k = {n: float(v[k]) for n, v in f6.rates(definition.replace("success", "accuracy")).items()}
    best = min(at_k, key=at_k.get)
    sym = f6.symmetric.get("nt")
    ranks = ranks_over_seeds(f6, "success")["sdp"]  # (mean, lowest, highest) x taus
    # a smaller tau only lowers the flow penalty, so success should not fall as tau falls
    falls = [n for n, v in f6.success.items() if np.any(np.diff(v) > 1e-9)]
    others_small = float(np.mean([v[0] for n, v in f6.success.items() if n != "sdp"]))
    return {
        "f6_tau": float(taus[k]),
        "f6_definition": STADV_SUCCESS_NAMES[definition],
        "f6_best": best,
        "f6_best_succ": at_k[best],
        "f6_nt_succ": at_k.get("nt", float("nan")),
        "f6_best_acc_name": max(acc_k, key=acc_k.get),
        "f6_best_acc": max(acc_k.values()),
        "f6_nt_acc": acc_k.get("nt", float("nan")),
        "f6_nt_any": float(f6.success["nt"][k]),
        "f6_nt_last": float(f6.success_final["nt"][k]),
        "f6_nt_sym": float(sym["success"][k]) if sym else float("nan"),
        "f6_nt_sym_last": float(sym["success_final"][k]) if sym else float("nan"),
        "f6_sdp_succ": rob["success"]["sdp"],
        "f6_sdp_acc": rob["accuracy"]["sdp"],
        "f6_others_succ": rob["others_success"],
        "f6_others_acc": rob["others_accuracy"],
        "f6_succ_diff": rob["success_diff"].text(signed=True),
        "f6_acc_diff": rob["accuracy_diff"].text(signed=True),
        "f6_tau_small": rob["tau_small"],
        "f6_sdp_small": rob["success_small"],
        "f6_small_diff": rob["success_small_diff"],
        "f6_sdp_small_any": float(f6.success["sdp"][0]),
        "f6_fallback": "more often" if rob["success_small_diff"] < 0 else "no more often",
        "f6_others_small_any": others_small,
        "f6_sdp_rank": f"it ranks {rob['rank_success']} of {rob['count']} by success "
        f"(1 = most robust) and {rob['rank_accuracy']} of {rob['count']} by accuracy under "
        f"attack (seed means)",
        "f6_sdp_ranks": "; ".join(
            f"{int(m)} (single seeds {int(lo)}-{int(hi)}) at tau = {t:g}"
            for m, lo, hi, t in zip(*ranks, taus, strict=True)
        ),
        "f6_n_variants": len(f6.success),
        "f6_falls": ", ".join(falls) if falls else "no variant",
    }


def budget_table(
    budget: dict[str, Any], rob: dict[str, Any], n_seeds: int
) -> tuple[list[str], list[list[str]]]:
    """The budgeted attack's success per network and eps, and f_sdp minus the others'
    mean over ``n_seeds`` seeds with its 95% interval (``rob["budget_diff"]``)."""
    rows = [[f"`{n}`", *[f"{v:.3f}" for v in succ]] for n, succ in budget["success"].items()]
    rows.append(
        [
            f"f_sdp minus the others' mean ({n_seeds} seeds, 95% interval)",
            *[d.text(signed=True) for d in rob["budget_diff"]],
        ]
    )
    return ["network", *[f"eps = {e:g}" for e in budget["eps"]]], rows


def beyond_cert_summary(profile: str | dict[str, Any], beyond: dict[str, Any]) -> dict[str, Any]:
    """f_cert against f_sdp under stAdv and the budgeted attack (``beyond`` from
    :func:`.possibility.section4_beyond_summary`), and whether the budgeted attack's
    intervals at the smallest budget tell them apart."""
    cert4, sdp4 = beyond["cert"], beyond["sdp"]
    kb = 0  # the smallest budget of the attack
    c_ci, s_ci = cert4["budget"][kb], sdp4["budget"][kb]
    return {
        "b4_cert_eps": _profile(profile)["variants"]["cert"]["eps"],
        "b4_cert_succ": cert4["success"],
        "b4_cert_seeds": cert4["seeds"],
        "b4_cert_range": "{:.3f} to {:.3f}".format(*cert4["success_range"]),
        "b4_sdp_succ": sdp4["success"],
        "b4_sdp_range": "seeds {:.3f} to {:.3f}".format(*sdp4["success_range"]),
        "b4_cert_small": cert4["success_small_any"],
        "b4_sdp_small": sdp4["success_small_any"],
        "b4_eps": cert4["budget_eps"][kb],
        "b4_cert_budget": cert4["budget"][kb].text(),
        "b4_sdp_budget": sdp4["budget"][kb].text(),
        "b4_verdict": "the intervals overlap, so this seed cannot tell the two apart"
        if c_ci.lo <= s_ci.hi and s_ci.lo <= c_ci.hi
        else f"f_cert is fooled {'less' if c_ci.value < s_ci.value else 'more'} often",
    }
