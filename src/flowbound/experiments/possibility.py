"""Possibility chapter (Section 4, appendix 6.5, 6.7): Figures 5, 6, 7, 11, checks beyond it."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from ..attacks import flow_pgd
from ..bounds import sdp_adversarial_bound, sdp_bound, sdp_matrix
from ..cache import cached
from ..certify import certified_fraction, decrease_bounds
from ..data import load_mnist
from ..geometry import aabb_lambda, mtm
from ..impossibility import all_pairs, gradient_search
from ..models import get_model
from ._common import EXPERIMENT_CODE_VERSION
from ._common import profile_dict as _profile
from .intro import stadv_evaluation

__all__ = [
    "aabb_illustration",
    "attack_vs_certificate",
    "budget_attack",
    "sdp_robustness_claim",
    "sdp_tightness_claim",
    "stadv_vs_tau",
    "zero_one_losses",
]


def zero_one_losses(profile: str | dict[str, Any], *, linear: bool = False) -> dict[str, Any]:
    """Certified 0/1 adversarial loss against eps per variant and bound (Figures 5, 11).

    One-hidden-layer variants (Section 4 width) under ``kinds``; with ``linear``
    the linear variants under the linear bound (appendix 6.5). Returns
    {variant: {kind: loss array over eps}} plus ``eps`` and the mean pairwise
    decrease bound at eps = 1 per (variant, kind).
    """
    prof = _profile(profile)
    p = prof["possibility"]
    names = p["linear_variants"] if linear else p["variants"]
    kinds = ["linear"] if linear else p["kinds"]
    x, y = load_mnist("test")
    if p["test_images"] is not None:
        x, y = x[: p["test_images"]], y[: p["test_images"]]
    out: dict[str, Any] = {"eps": np.asarray(p["eps"]), "losses": {}, "mean_delta": {}}
    for name in names:
        trained = get_model(name, prof, section=4)
        config = {
            "experiment": "zero_one",
            "model": trained.config,
            "kinds": kinds,
            "eps": p["eps"],
            "images": p["test_images"],
            "tol": p["tol"],
            "code": EXPERIMENT_CODE_VERSION,
        }

        def compute(trained=trained) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            model = trained.model.cpu()
            value, meta = {}, {}
            for kind in kinds:
                d = decrease_bounds(model, kind, tol=p["tol"])
                loss = certified_fraction(model, x, y, p["eps"], kind, delta=d)
                value[kind] = torch.from_numpy(loss)
                meta[kind] = float(d[~np.eye(len(d), dtype=bool)].mean())
            return value, meta

        value, meta = cached("experiments", config, compute)
        out["losses"][name] = {k: v.numpy() for k, v in value.items()}
        out["mean_delta"][name] = meta
    return out


def aabb_illustration(profile: str | dict[str, Any]) -> dict[str, Any]:
    """Figure 7 from computed values: the ellipsoid ||M r|| <= eps seen on two
    neighbouring pixels (its projection), the region of diag(s) r with
    ||s||_inf <= 1, and their axis-aligned box [-eps lambda, eps lambda]."""
    p = _profile(profile)["possibility"]
    side = 28
    (r1, c1), (r2, c2) = p["fig7_pixels"]
    i, j = r1 * side + c1, r2 * side + c2
    eps = p["fig7_eps"]
    inv = np.linalg.inv(mtm(side))
    block = inv[np.ix_([i, j], [i, j])]  # covariance-like block of the projection
    chol = np.linalg.cholesky(block)
    theta = np.linspace(0, 2 * np.pi, 721)
    ellipse = eps * chol @ np.stack([np.cos(theta), np.sin(theta)])
    lam = aabb_lambda(side)[[i, j]]
    # diag(s) r, |s| <= 1: all (a, b) with |a| <= |y1|, |b| <= |y2| for some y in the ellipse.
    a_grid = np.linspace(-eps * lam[0], eps * lam[0], 401)
    b_max = np.array(
        [np.abs(ellipse[1][np.abs(ellipse[0]) >= abs(a) - 1e-12]).max() for a in a_grid]
    )
    return {
        "ellipse": ellipse,
        "mirror": ellipse * np.array([[1.0], [-1.0]]),
        "lambda": lam,
        "eps": eps,
        "a_grid": a_grid,
        "b_max": b_max,
        "pixels": p["fig7_pixels"],
        "extent": eps * np.sqrt(np.diag(block)),
    }


def stadv_vs_tau(profile: str | dict[str, Any]) -> dict[str, Any]:
    """Figure 6: stAdv success rate (among correctly classified images) and accuracy
    under stAdv against tau, per variant, on the first ``eval_images`` test images
    (tau = infinity: no attack, the clean accuracy). Each (variant, tau) run is
    :func:`~flowbound.experiments.intro.stadv_evaluation`, shared with the
    Introduction's table."""
    prof = _profile(profile)
    p, q = prof["possibility"], prof["intro"]
    out: dict[str, Any] = {
        "taus": np.asarray(p["taus"]),
        "success": {},
        "accuracy": {},
        "clean": {},
    }
    for name in p["variants"]:
        trained = get_model(name, prof, section=4)
        succ, acc = [], []
        for tau in p["taus"]:
            v = stadv_evaluation(trained, tau=tau, images=q["eval_images"], steps=q["eval_steps"])
            correct, ok = v["correct"], v["success"]
            succ.append(float((ok & correct).sum() / correct.sum().clamp_min(1)))
            acc.append(float((correct & ~ok).float().mean()))
        out["success"][name] = np.asarray(succ)
        out["accuracy"][name] = np.asarray(acc)
        out["clean"][name] = float(correct.float().mean())
    return out


def attack_vs_certificate(profile: str | dict[str, Any]) -> dict[str, Any]:
    """attack <= truth <= certificate, per network, class pair and eps.

    The truth is sup l_adv^{ij}(x, r) over images x in [0, 1]^784 and tied
    flows with ||M r|| <= eps, f = f_i - f_j. The attack is
    :func:`~flowbound.impossibility.gradient_search` over (x, r) with x kept in
    [0, 1], started from a test digit of class j; the certificate is
    eps SDP(A^{ij}) / 2 (:func:`~flowbound.bounds.sdp_adversarial_bound`, D = 2).
    Returns per network arrays (eps, pairs) of both and the attack's x, r of
    the pair with the largest attack value at the largest eps.
    """
    prof = _profile(profile)
    p = prof["possibility"]
    g = p["gap"]
    x_test, y_test = load_mnist("test")
    pairs = all_pairs(10)
    out: dict[str, Any] = {"eps": np.asarray(g["eps"]), "pairs": pairs, "networks": {}}
    for name in p["variants"]:
        trained = get_model(name, prof, section=4)
        config = {
            "experiment": "attack_vs_certificate",
            "dtype": "float64",
            "model": trained.config,
            "gap": g,
            "tol": p["tol"],
            "code": EXPERIMENT_CODE_VERSION,
        }

        def compute(trained=trained) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            model = copy.deepcopy(trained.model).cpu().double()
            net = getattr(model, "classifier", model)
            w = net.W.weight.detach()
            vm = net.V.weight.detach()
            # q^ij = q^ji (flip the sign of s): one SDP per unordered pair serves both
            unordered = sorted({(min(i, j), max(i, j)) for i, j in pairs})
            a = torch.stack([sdp_matrix(w, vm[i] - vm[j], aabb_lambda(28)) for i, j in unordered])
            value = dict(zip(unordered, sdp_bound(a, tol=p["tol"]).upper, strict=True))
            sdp = [value[min(i, j), max(i, j)] for i, j in pairs]
            # a start digit of class j for the pair (i, j): move it towards i
            first = {int(c): int((y_test == c).nonzero()[0]) for c in range(10)}
            x0 = torch.stack([x_test[first[j]] for _, j in pairs]).double()
            attack, cert, best_x, best_r = [], [], [], []
            for eps in g["eps"]:
                gen = torch.Generator().manual_seed(g["seed"])
                r0 = 1e-3 * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
                found = gradient_search(
                    net, pairs, eps, x0, r0, steps=g["steps"], lr=g["lr"], x_range=(0.0, 1.0)
                )
                attack.append(found.exact)
                cert.append(
                    torch.tensor([sdp_adversarial_bound(u, eps) for u in sdp], dtype=torch.float64)
                )
                k = int(found.exact.argmax())
                best_x.append(found.x[k])
                best_r.append(found.r[k])
            value = {
                "attack": torch.stack(attack),
                "certificate": torch.stack(cert),
                "x": torch.stack(best_x),
                "r": torch.stack(best_r),
            }
            return value, {}

        value, _ = cached("experiments", config, compute)
        out["networks"][name] = {k: v.numpy() for k, v in value.items()}
    return out


def sdp_tightness_claim(res: dict[str, Any], eps_small: float = 0.01) -> dict[str, Any]:
    """Section 4.2's "the SDP bound is slightly tighter under f_sdp", from
    :func:`zero_one_losses`: mean decrease bounds at eps = 1 of f_sdp (and nt)
    per bound, whether the SDP is the smallest, and the certified fractions
    (best bound per network) at the grid eps nearest ``eps_small``."""
    md, eps = res["mean_delta"], np.asarray(res["eps"])
    k = int(np.argmin(np.abs(eps - eps_small)))
    cert = {n: 1 - min(float(by[kind][k]) for kind in by) for n, by in res["losses"].items()}
    others = {n: c for n, c in cert.items() if n != "sdp"}
    own = md["sdp"]
    return {
        "own": own,
        "tighter": bool(own["sdp"] < min(own["spectral"], own["frobenius"])),
        "shrink_vs_nt": md["nt"]["sdp"] / own["sdp"],
        "nt_sdp": md["nt"]["sdp"],
        "eps_small": float(eps[k]),
        "certified": cert,
        "best_other": max(others, key=others.get),
        "sdp_over_spectral": {n: d["sdp"] / d["spectral"] for n, d in md.items()},
    }


def sdp_robustness_claim(
    f6: dict[str, Any], tau: float = 0.05, budget: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Section 4.2's "about 0.1 lower attack success and 0.08 higher adversarial
    accuracy for f_sdp", from :func:`stadv_vs_tau` at ``tau`` (or the largest
    tau if absent): f_sdp's values, the other objectives' mean, and ranks; the
    same success difference at the smallest tau, and, given
    :func:`budget_attack`, the difference under the budgeted attack per eps."""
    taus = list(f6["taus"])
    k = taus.index(tau) if tau in taus else len(taus) - 1
    succ = {n: float(v[k]) for n, v in f6["success"].items()}
    acc = {n: float(v[k]) for n, v in f6["accuracy"].items()}
    others = [n for n in succ if n != "sdp"]
    mean_s = float(np.mean([succ[n] for n in others]))
    mean_a = float(np.mean([acc[n] for n in others]))
    out = {
        "tau": float(taus[k]),
        "success": succ,
        "accuracy": acc,
        "others_success": mean_s,
        "others_accuracy": mean_a,
        "success_diff": succ["sdp"] - mean_s,
        "accuracy_diff": acc["sdp"] - mean_a,
        "rank_success": 1 + sum(succ[n] < succ["sdp"] for n in others),
        "rank_accuracy": 1 + sum(acc[n] > acc["sdp"] for n in others),
        "count": len(succ),
        "tau_small": float(taus[0]),
        "success_small": float(f6["success"]["sdp"][0]),
        "success_small_diff": float(
            f6["success"]["sdp"][0] - np.mean([f6["success"][n][0] for n in others])
        ),
        "accuracy_small": float(f6["accuracy"]["sdp"][0]),
        "accuracy_small_diff": float(
            f6["accuracy"]["sdp"][0] - np.mean([f6["accuracy"][n][0] for n in others])
        ),
    }
    if budget is not None:
        b = budget["success"]
        out["budget_eps"] = [float(e) for e in budget["eps"]]
        out["budget_diff"] = [
            float(b["sdp"][k] - np.mean([b[n][k] for n in b if n != "sdp"]))
            for k in range(len(budget["eps"]))
        ]
    return out


def budget_attack(profile: str | dict[str, Any]) -> dict[str, Any]:
    """Beyond the paper: success of a flow attack with a hard budget ||M r|| <= eps
    (:func:`~flowbound.attacks.flow_pgd`) per variant, among correctly classified
    test images. Scale-free, unlike stAdv's fixed tau (Figure 6)."""
    prof = _profile(profile)
    p = prof["possibility"]
    g = p["budget_attack"]
    x, y = load_mnist("test")
    x, y = x[: g["images"]], y[: g["images"]]
    out: dict[str, Any] = {"eps": np.asarray(g["eps"]), "success": {}}
    for name in p["variants"]:
        trained = get_model(name, prof, section=4)
        config = {
            "experiment": "budget_attack",
            "model": trained.config,
            "settings": g,
            "code": EXPERIMENT_CODE_VERSION,
        }

        def compute(trained=trained) -> tuple[torch.Tensor, dict[str, Any]]:
            model = trained.model.cpu()
            with torch.no_grad():
                correct = model(x).argmax(1) == y
            rates = []
            for eps in g["eps"]:
                res = flow_pgd(model, x, y, eps=eps, steps=g["steps"], lr=g["lr"], seed=g["seed"])
                rates.append(float((res.success & correct).sum() / correct.sum().clamp_min(1)))
            return torch.tensor(rates, dtype=torch.float64), {}

        value, _ = cached("experiments", config, compute)
        out["success"][name] = value.numpy()
    return out
