"""Introduction chapter (Section 1): Figure 1 and the evaluation of the model zoo."""

from __future__ import annotations

from typing import Any

import torch

from flowbound.attacks.registry import attack
from flowbound.attacks.stadv import flow_loss
from flowbound.book.trained import TrainedModel, get_model
from flowbound.data import load_mnist
from flowbound.stats import Interval, rate_interval

from ._common import FIRST_VERSION, cached_experiment
from ._common import frozen as _frozen
from ._common import profile_dict as _profile

__all__ = [
    "STADV_SUCCESS_NAMES",
    "evaluation_summary",
    "evaluation_table",
    "figure1",
    "figure1_summary",
    "training_settings_summary",
    "stadv_evaluation",
    "stadv_rates",
]


#: Part of every cache key holding stAdv results: the precision stAdv optimises
#: in (float32 runs stopped early at small tau; see flowbound.attacks.stadv.stadv).
_STADV_PRECISION = "float64"

#: Each experiment's code version (in its cache key): bump one when its results change.
VERSIONS = {"figure1": FIRST_VERSION, "stadv_eval": FIRST_VERSION}


def figure1(profile: str | dict[str, Any]) -> dict[str, Any]:
    """Figure 1: a test digit, its PGD (L_inf) and stAdv versions against f_nt, the flow.

    The digit is the first test image that f_nt classifies correctly and that
    both attacks fool (PGD at ``pgd_eps``; stAdv at ``stadv_tau``).
    """
    prof = _profile(profile)
    p = prof["intro"]
    trained = get_model("nt", prof, section=4)
    config = {
        "stadv": _STADV_PRECISION,
        "model": trained.config,
        "intro": p,
    }

    def compute() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        model = _frozen(trained.model)
        dev = next(model.parameters()).device
        x, y = load_mnist("test")
        x, y = x[:64].to(dev), y[:64].to(dev)
        pg = attack("pgd").run(
            model, x, y, p["pgd_eps"], 0, alpha=p["pgd_alpha"], steps=p["pgd_steps"]
        )
        st = attack("stadv").run(model, x, y, p["stadv_tau"], 0, steps=p["stadv_steps"])
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

    value, meta = cached_experiment("figure1", VERSIONS, config, compute, as_numpy=False)
    return {**{k: v.numpy() for k, v in value.items()}, **meta, **p}


def stadv_evaluation(
    trained: TrainedModel, *, tau: float, images: int, steps: int, border: str = "zero"
) -> dict[str, torch.Tensor]:
    """Untargeted stAdv at ``tau`` on the first ``images`` test images against the
    whole network (the STN included), cached per (network, tau, images, steps, border).

    Returns per image: ``correct`` (clean prediction right), ``success`` (some
    iterate fooled it), ``success_final`` (the last L-BFGS iterate fooled it),
    ``l_diff`` of the returned flow and the clean top-2 logit ``margin``.
    ``border`` is the flow loss's border rule (:func:`~flowbound.attacks.stadv.flow_loss`).
    """
    config = {
        "stadv": _STADV_PRECISION,
        "model": trained.config,
        "tau": tau,
        "steps": steps,
        "images": images,
        "border": border,
        "outputs": ["success", "success_final"],
    }

    def compute() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        model = _frozen(trained.model)
        dev = next(model.parameters()).device
        x, y = load_mnist("test")
        x, y = x[:images].to(dev), y[:images].to(dev)
        with torch.no_grad():
            scores = model(x)
            correct = scores.argmax(1) == y
            top2 = scores.topk(2, dim=1).values
        res = attack("stadv").run(model, x, y, tau, 0, steps=steps, border=border, progress=True)
        value = {
            "correct": correct.cpu(),
            "success": res.success.cpu(),
            "success_final": res.success_final.cpu(),
            "l_diff": res.l_diff.cpu(),
            "margin": (top2[:, 0] - top2[:, 1]).cpu(),
        }
        return value, {}

    return cached_experiment("stadv_eval", VERSIONS, config, compute, as_numpy=False)[0]


#: A returned flow with l_diff below this counts as the zero flow (evaluation_table).
ZERO_FLOW_L_DIFF = 1e-3

#: The two stAdv success definitions, as the book names them.
STADV_SUCCESS_NAMES = {
    "success": "success when any iterate fools",
    "success_final": "success of the last iterate",
}


def stadv_rates(value: dict[str, torch.Tensor]) -> dict[str, Interval]:
    """Rates of one :func:`stadv_evaluation` with their Wilson intervals.

    ``success`` / ``success_final``: among the correctly classified images,
    the fraction fooled by some iterate / by the last iterate;
    ``accuracy`` / ``accuracy_final``: the fraction of all images still
    classified correctly under each definition.
    """
    correct = value["correct"].numpy()
    out = {}
    for key in ("success", "success_final"):
        fooled = value[key].numpy()
        out[key] = rate_interval(fooled, correct)
        out[key.replace("success", "accuracy")] = rate_interval(correct & ~fooled)
    return out


def evaluation_table(profile: str | dict[str, Any], *, section: int = 4) -> list[dict[str, Any]]:
    """Clean accuracy and stAdv results at ``stadv_tau`` for every variant.

    stAdv (untargeted, zero-filled flow-loss border) runs on the first
    ``eval_images`` test images against the whole network (the STN included).
    The rates of :func:`stadv_rates` come with their Wilson intervals, under
    both success definitions (any iterate / last iterate).
    """
    prof = _profile(profile)
    p = prof["intro"]
    rows = []
    for name in p["eval_variants"]:
        trained = get_model(name, prof, section=section)
        value = stadv_evaluation(
            trained, tau=p["stadv_tau"], images=p["eval_images"], steps=p["eval_steps"]
        )
        correct, success = value["correct"], value["success"]
        rows.append(
            {
                "variant": name,
                "hidden": trained.config["hidden"],
                "seed": trained.config["seed"],
                "clean_accuracy": trained.test_accuracy,
                **{f"stadv_{k}": v for k, v in stadv_rates(value).items()},
                "mean_l_diff": float(value["l_diff"][correct & success].mean())
                if bool((correct & success).any())
                else float("nan"),
                "train_seconds": trained.train_seconds,
                "images": len(correct),
                "median_margin": float(value["margin"][correct].median())
                if bool(correct.any())
                else float("nan"),
                # the attack stayed at (numerically) zero flow on these correct images
                "zero_flow": rate_interval(
                    (value["l_diff"] < ZERO_FLOW_L_DIFF).numpy(), correct.numpy()
                ),
            }
        )
    return rows


# --- what the Introduction glues: one dict per section, names as in its prose ---

#: The training settings the Introduction cites, as (variant, key) of ``variants``.
_CITED_SETTINGS = (
    ("fro", "lambda"), ("spe", "lambda"), ("stn", "stn_hidden"), ("at", "lambda_r"),
    ("at", "tau"), ("at", "pool_every"), ("at", "pool_size"), ("at_pgd", "eps"),
    ("at_pgd", "steps"), ("at_pgd", "alpha"),
)  # fmt: skip


def training_settings_summary(profile: str | dict[str, Any]) -> dict[str, Any]:
    """The profile's name and the variants' training settings the prose cites
    (``<variant>_<key>``)."""
    prof = _profile(profile)
    out: dict[str, Any] = {"profile": prof["name"]}
    for name, key in _CITED_SETTINGS:
        out[f"{name}_{key}"] = prof["variants"][name][key]
    return out


def figure1_summary(f1: dict[str, Any]) -> dict[str, Any]:
    """Figure 1's digit and attacks (``f1`` from :func:`figure1`) as the prose cites them
    (``f1_<key>``), and the ratio of stAdv's L_flow to l_diff for its flow."""
    out = {
        f"f1_{key}": f1[key]
        for key in ("index", "label", "pred_benign", "pred_pgd", "pred_stadv", "linf_pgd",
                    "linf_stadv", "l_diff", "pgd_eps", "stadv_tau")
    }  # fmt: skip
    flow = torch.from_numpy(f1["flow"]).double().unsqueeze(0)
    ratio = flow_loss(flow, form="stadv", delta=0.0) / flow_loss(flow, form="paper", delta=0.0)
    out["lflow_over_ldiff"] = float(ratio)
    return out


def evaluation_summary(
    profile: str | dict[str, Any], rows: list[dict[str, Any]], f1: dict[str, Any]
) -> dict[str, Any]:
    """The evaluation table's numbers per variant in percent (``rows`` from
    :func:`evaluation_table`), its sizes, the zero-flow threshold, the cost of a
    uniform half-pixel shift under both border rules, and the success definition the
    claims use."""
    out: dict[str, Any] = {}
    for r in rows:
        v = r["variant"]
        out[f"acc_{v}"] = 100 * r["clean_accuracy"]
        out[f"succ_{v}"] = 100 * r["stadv_success"].value
        out[f"succ_final_{v}"] = 100 * r["stadv_success_final"].value
        out[f"margin_{v}"] = r["median_margin"]
        out[f"zero_flow_{v}"] = 100 * r["zero_flow"].value
    out |= {
        "eval_images": rows[0]["images"],
        "eval_tau": f1["stadv_tau"],
        "zero_flow_ldiff": ZERO_FLOW_L_DIFF,
    }
    shift = torch.full((1, 2, 28, 28), 0.5, dtype=torch.float64)
    for border in ("zero", "symmetric"):
        out[f"shift_cost_{border}"] = float(flow_loss(shift, border=border))
    claim = _profile(profile)["possibility"]["claim_success"]
    out["claim_definition"] = STADV_SUCCESS_NAMES[claim]
    return out
