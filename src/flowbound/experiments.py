"""One function per figure or table: computes (and caches) what a chapter shows.

Each function takes a profile (name or dict) and returns plain data; the
drawing lives in :mod:`flowbound.plots`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from .attacks import pgd, stadv
from .cache import cached
from .data import load_mnist
from .geometry import aabb_lambda, flow_norm, l_diff, l_diff_matrix, m_inv, mtm, mtm_eigh
from .loss import l_adv_exact, l_adv_midpoint
from .models import binary_heads, get_model
from .profiles import load_profile
from .warp import jacobian_paper, jacobian_true, warp

__all__ = [
    "evaluation_table",
    "figure1",
    "geometry_summary",
    "jacobians_at_zero",
    "midpoint_convergence",
    "prop1_check",
    "random_ellipsoid_flows",
    "warp_demo",
]

#: Bump when an experiment's code changes what it returns.
EXPERIMENT_CODE_VERSION = 2


def _profile(profile: str | dict[str, Any]) -> dict[str, Any]:
    return load_profile(profile) if isinstance(profile, str) else profile


def random_ellipsoid_flows(n: int, side: int, eps: float, seed: int) -> torch.Tensor:
    """n tied flows (n, side, side) with ||M r|| = eps, r = eps M^{-1} s / ||s||, s Gaussian."""
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((n, side * side))
    s *= eps / np.linalg.norm(s, axis=1, keepdims=True)
    return torch.from_numpy(s @ m_inv(side)).reshape(n, side, side)


def warp_demo(profile: str | dict[str, Any]) -> dict[str, Any]:
    """Eq. (1) on a real test digit with a smooth (du, dv) flow and its tied version."""
    p = _profile(profile)["background"]
    x, y = load_mnist("test")
    img = x[p["digit_index"]].double().unsqueeze(0)
    rng = np.random.default_rng(p["seed"])
    noise = gaussian_filter(rng.standard_normal((2, 28, 28)), p["flow_smoothness"], axes=(1, 2))
    flow = torch.from_numpy(noise * p["flow_amplitude"] / np.abs(noise).max()).unsqueeze(0)
    tied = flow.mean(1)
    return {
        "image": img[0].numpy(),
        "label": int(y[p["digit_index"]]),
        "flow": flow[0].numpy(),
        "warped": warp(img, flow)[0].numpy(),
        "tied_flow": tied[0].numpy(),
        "warped_tied": warp(img, tied)[0].numpy(),
        "l_diff": float(l_diff(flow[0], full=True)),
        "l_diff_tied": float(l_diff(tied[0])),
        "flow_norm_tied": float(flow_norm(tied[0])),
        "max_pixel_change": float((warp(img, flow) - img).abs().max()),
    }


def prop1_check(profile: str | dict[str, Any], side: int = 28) -> dict[str, float]:
    """Largest relative gap between Eq. (2) and Prop. 1 over random tied flows.

    Also checks the (du, dv) generalisation l_diff^2 = ||M du||^2 + ||M dv||^2.
    """
    p = _profile(profile)["background"]
    rng = np.random.default_rng(p["seed"])
    r = rng.standard_normal((p["prop1_trials"], side, side))
    eq2, prop1 = l_diff(r), l_diff_matrix(r)
    full = rng.standard_normal((p["prop1_trials"], 2, side, side))
    split = np.sqrt(flow_norm(full[:, 0]) ** 2 + flow_norm(full[:, 1]) ** 2)
    return {
        "trials": p["prop1_trials"],
        "max_rel_gap_tied": float(np.max(np.abs(eq2 - prop1) / prop1)),
        "max_rel_gap_full": float(np.max(np.abs(l_diff(full, full=True) - split) / split)),
    }


def geometry_summary(side: int = 28) -> dict[str, Any]:
    """Spectrum and diagonal of M^T M, and the lambda map of Prop. 2."""
    w, _ = mtm_eigh(side)
    diag = np.diag(mtm(side))
    lam = aabb_lambda(side)
    return {
        "side": side,
        "eig_min": float(w[0]),
        "eig_max": float(w[-1]),
        "diag_min": float(diag.min()),
        "diag_max": float(diag.max()),
        "lambda_min": float(lam.min()),
        "lambda_max": float(lam.max()),
        "lambda_map": lam.reshape(side, side),
    }


def jacobians_at_zero(profile: str | dict[str, Any]) -> dict[str, np.ndarray]:
    """Dg(0; x) for the Background digit: as printed (= x) and exact."""
    p = _profile(profile)["background"]
    img = load_mnist("test")[0][p["digit_index"]].double().unsqueeze(0)
    zero = torch.zeros_like(img)
    return {
        "image": img[0].numpy(),
        "paper": jacobian_paper(img, zero)[0].numpy(),
        "true": jacobian_true(img, zero)[0].numpy(),
    }


def _runner_up(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        scores = model(x).clone()
    scores[torch.arange(len(y)), y] = -torch.inf
    return scores.argmax(1)


def midpoint_convergence(profile: str | dict[str, Any]) -> dict[str, Any]:
    """Exact l_adv vs its midpoint estimates (Eq. 4, 7) with both Jacobians.

    For the first ``midpoint_images`` test images, f is the binary head
    (true class) - (runner-up class) of f_nt (Section 3 width), and r is a
    random tied flow on the ellipsoid ||M r|| = ``midpoint_eps``. Returns the
    mean absolute error of each estimate per n, relative to mean |l_adv|.
    """
    prof = _profile(profile)
    p = prof["background"]
    trained = get_model("nt", prof, section=3)
    config = {
        "experiment": "midpoint_convergence",
        "model": trained.config,
        "background": p,
        "code": EXPERIMENT_CODE_VERSION,
    }

    def compute() -> tuple[dict[str, Any], dict[str, Any]]:
        model = trained.model.double().cpu()
        x, y = load_mnist("test")
        x, y = x[: p["midpoint_images"]].double(), y[: p["midpoint_images"]]
        j = _runner_up(model, x, y)
        r = random_ellipsoid_flows(len(x), 28, p["midpoint_eps"], p["seed"])

        f = binary_heads(model, y, j)
        exact = l_adv_exact(f, x, r)
        rows = {"n": [], "true": [], "paper": []}
        for n in p["midpoint_n"]:
            rows["n"].append(n)
            for jac in ("true", "paper"):
                est = l_adv_midpoint(f, x, r, n, jacobian=jac)
                rows[jac].append(float((est - exact).abs().mean()))
        scale = float(exact.abs().mean())
        value = {
            "n": torch.tensor(rows["n"]),
            "abs_err_true": torch.tensor(rows["true"]),
            "abs_err_paper": torch.tensor(rows["paper"]),
            "mean_abs_exact": torch.tensor(scale),
        }
        return value, {"images": len(x)}

    value, meta = cached("experiments", config, compute)
    out: dict[str, Any] = {k: v.numpy() for k, v in value.items()}
    out["mean_abs_exact"] = float(out["mean_abs_exact"])
    out["images"] = meta["images"]
    out["eps"] = p["midpoint_eps"]
    return out


def _frozen(model: torch.nn.Module) -> torch.nn.Module:
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()


def figure1(profile: str | dict[str, Any]) -> dict[str, Any]:
    """Figure 1: a test digit, its PGD (L_inf) and stAdv versions against f_nt, the flow.

    The digit is the first test image that f_nt classifies correctly and that
    both attacks fool (PGD at ``pgd_eps``; stAdv at ``stadv_tau``).
    """
    prof = _profile(profile)
    p = prof["intro"]
    trained = get_model("nt", prof, section=4)
    config = {
        "experiment": "figure1",
        "model": trained.config,
        "intro": p,
        "code": EXPERIMENT_CODE_VERSION,
    }

    def compute() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        model = _frozen(trained.model)
        dev = next(model.parameters()).device
        x, y = load_mnist("test")
        x, y = x[:64].to(dev), y[:64].to(dev)
        pg = pgd(model, x, y, eps=p["pgd_eps"], alpha=p["pgd_alpha"], steps=p["pgd_steps"])
        st = stadv(model, x, y, tau=p["stadv_tau"], steps=p["stadv_steps"])
        with torch.no_grad():
            clean = model(x).argmax(1)
        ok = ((clean == y) & pg.success & st.success).nonzero().flatten()
        k = int(ok[0]) if len(ok) else 0
        with torch.no_grad():
            labels = [int(model(z[k : k + 1]).argmax(1)) for z in (x, pg.images, st.images)]
        value = {
            "benign": x[k].cpu(),
            "pgd": pg.images[k].cpu(),
            "stadv": st.images[k].cpu(),
            "flow": st.flows[k].cpu(),
        }
        meta = {
            "index": k,
            "label": int(y[k]),
            "pred_benign": labels[0],
            "pred_pgd": labels[1],
            "pred_stadv": labels[2],
            "linf_pgd": float((pg.images[k] - x[k]).abs().max()),
            "linf_stadv": float((st.images[k] - x[k]).abs().max()),
            "l_diff": float(st.l_diff[k]),
            "both_succeeded": bool(len(ok)),
        }
        return value, meta

    value, meta = cached("experiments", config, compute)
    return {**{k: v.numpy() for k, v in value.items()}, **meta, **p}


def evaluation_table(profile: str | dict[str, Any], *, section: int = 4) -> list[dict[str, Any]]:
    """Clean accuracy and stAdv results at ``stadv_tau`` for every variant.

    stAdv runs on the first ``eval_images`` test images against the whole
    network (the STN included). ``success`` counts, among the images the
    network classifies correctly, those that stAdv makes misclassified;
    ``adv_accuracy`` is the fraction of all images still classified correctly.
    """
    prof = _profile(profile)
    p = prof["intro"]
    rows = []
    for name in p["eval_variants"]:
        trained = get_model(name, prof, section=section)
        config = {
            "experiment": "stadv_eval",
            "model": trained.config,
            "tau": p["stadv_tau"],
            "steps": p["eval_steps"],
            "images": p["eval_images"],
            "code": EXPERIMENT_CODE_VERSION,
        }

        def compute(trained=trained) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            model = _frozen(trained.model)
            dev = next(model.parameters()).device
            x, y = load_mnist("test")
            x, y = x[: p["eval_images"]].to(dev), y[: p["eval_images"]].to(dev)
            with torch.no_grad():
                scores = model(x)
                correct = scores.argmax(1) == y
                top2 = scores.topk(2, dim=1).values
            res = stadv(model, x, y, tau=p["stadv_tau"], steps=p["eval_steps"])
            value = {
                "correct": correct.cpu(),
                "success": res.success.cpu(),
                "l_diff": res.l_diff.cpu(),
                "margin": (top2[:, 0] - top2[:, 1]).cpu(),
            }
            return value, {}

        value, _ = cached("experiments", config, compute)
        correct, success = value["correct"], value["success"]
        rows.append(
            {
                "variant": name,
                "hidden": trained.config["hidden"],
                "seed": trained.config["seed"],
                "clean_accuracy": trained.test_accuracy,
                "stadv_success": float((success & correct).sum() / correct.sum().clamp_min(1)),
                "stadv_accuracy": float((correct & ~success).float().mean()),
                "mean_l_diff": float(value["l_diff"][correct & success].mean())
                if bool((correct & success).any())
                else float("nan"),
                "train_seconds": trained.train_seconds,
                "images": len(correct),
                "median_margin": float(value["margin"][correct].median())
                if bool(correct.any())
                else float("nan"),
            }
        )
    return rows
