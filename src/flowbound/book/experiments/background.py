"""Background chapter (Section 2): Eq. (1), Prop. 1-2, Eq. (4) with both Jacobians."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from flowbound.book.trained import get_model
from flowbound.data import load_mnist
from flowbound.networks.architectures import binary_heads
from flowbound.threat.geometry import (
    aabb_lambda,
    flow_norm,
    l_diff,
    l_diff_matrix,
    m_inv,
    mtm,
    mtm_eigh,
)
from flowbound.threat.loss import l_adv_exact, l_adv_midpoint
from flowbound.threat.warp import jacobian_paper, jacobian_true, warp

from ._common import FIRST_VERSION, cached_experiment
from ._common import profile_dict as _profile

__all__ = [
    "geometry_summary",
    "jacobians_at_zero",
    "midpoint_convergence",
    "prop1_check",
    "random_ellipsoid_flows",
    "warp_demo",
]

#: Each experiment's code version (in its cache key): bump one when its results change.
VERSIONS = {"midpoint_convergence": FIRST_VERSION}


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
        "lambda_corner": float(lam.reshape(side, side)[0, 0]),
        "lambda_centre": float(lam.reshape(side, side)[side // 2, side // 2]),
        # distance to the nearest edge of the pixels where lambda is smallest / largest
        "argmin_edge_distance": int(_edge_distance(side)[int(lam.argmin())]),
        "argmax_edge_distance": int(_edge_distance(side)[int(lam.argmax())]),
    }


def _edge_distance(side: int) -> np.ndarray:
    """Per pixel (flattened), the number of pixels between it and the nearest edge."""
    i = np.arange(side)
    d = np.minimum(i, side - 1 - i)
    return np.minimum.outer(d, d).ravel()


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
        "model": trained.config,
        "background": p,
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

    value, meta = cached_experiment(
        "midpoint_convergence", VERSIONS, config, compute, as_numpy=False
    )
    out: dict[str, Any] = {k: v.numpy() for k, v in value.items()}
    out["mean_abs_exact"] = float(out["mean_abs_exact"])
    out["images"] = meta["images"]
    out["eps"] = p["midpoint_eps"]
    return out
