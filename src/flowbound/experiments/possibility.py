"""Possibility chapter (Section 4, appendix 6.5, 6.7): Figures 5, 7 and 11."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..cache import cached
from ..certify import certified_fraction, decrease_bounds
from ..data import load_mnist
from ..geometry import aabb_lambda, mtm
from ..models import get_model
from ._common import EXPERIMENT_CODE_VERSION
from ._common import profile_dict as _profile
from .intro import stadv_evaluation

__all__ = ["aabb_illustration", "stadv_vs_tau", "zero_one_losses"]


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
