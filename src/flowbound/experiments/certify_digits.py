"""Beyond the paper: certifying individual digits (Figure 12, its table, the report row)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ..attacks import flow_pgd
from ..certify import bound, certified_fraction
from ..data import load_mnist
from ..device import default_device
from ..models import get_model
from ..nets import classifier_input
from ..stats import rate_interval
from ._common import FIRST_VERSION, cached_experiment, frozen
from ._common import profile_dict as _profile
from .intro import stadv_evaluation, stadv_rates
from .possibility import decrease_of

__all__ = [
    "at_eps",
    "cert_comparison",
    "certified_accuracy",
    "largest_eps",
    "local_summary",
    "local_table",
]

#: Each experiment's code version (in its cache key): bump one when its results change.
VERSIONS = {"certified_accuracy": FIRST_VERSION}

#: Profile keys that do not change one network's results (adding a network or a
#: report eps recomputes nothing).
_NOT_IN_KEY = ("variants", "report_eps")


def _attack_robust(model, x, y, eps_list, a: dict[str, Any]) -> np.ndarray:
    """(E, A) bool: classified correctly and not broken by flow_pgd at each eps; the
    classifier of an STN is attacked on the STN's output (what the certificates cover)."""
    net, x = classifier_input(model, x)
    with torch.no_grad():
        correct = (net(x).argmax(1) == y).cpu().numpy()
    out = np.zeros((len(eps_list), len(x)), dtype=bool)
    for row, eps in enumerate(eps_list):
        if eps == 0:
            out[row] = correct
            continue
        res = flow_pgd(
            net,
            x,
            y,
            eps=eps,
            steps=a["steps"],
            lr=a["lr"],
            restarts=a["restarts"],
            seed=a["seed"],
        )
        out[row] = correct & ~res.success.cpu().numpy()
    return out


def certified_accuracy(profile: str | dict[str, Any]) -> dict[str, Any]:
    """Figure 12: certified accuracy against eps, per Section-4 network and certificate
    (the profile's ``local.kinds``: global ones read Figure 5's way, per-digit ones per
    image), and the accuracy that survives ``flow_pgd`` on the first ``attack.images``
    digits (an upper bound on the truth), with the count of certified digits that the
    attack breaks (must be 0) and the seconds each certificate took (a global one's
    Delta is shared with Figure 5, :func:`~.possibility.decrease_of`: its seconds count
    the SDPs only where this experiment solved them first).
    """
    prof = _profile(profile)
    p = prof["local"]
    eps = [float(e) for e in p["eps"]]
    x, y = load_mnist("test")
    if p["images"] is not None:
        x, y = x[: p["images"]], y[: p["images"]]
    kinds = list(p["kinds"])
    for kind in kinds:
        bound(kind)  # an unknown name fails here, before any work
    out: dict[str, Any] = {"eps": np.asarray(eps), "kinds": kinds, "images": len(x)}
    out.update(accuracy={}, attack={}, attack_ci={}, violations={}, seconds={}, checked={})
    for name in p["variants"]:
        trained = get_model(name, prof, section=4)
        config = {
            "model": trained.config,
            "local": {k: v for k, v in p.items() if k not in _NOT_IN_KEY},
            "tol": prof["possibility"]["tol"],
        }

        def compute(trained=trained) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            dev = default_device()  # certificates stay float64 wherever they run
            model = frozen(trained.model).to(dev).double()
            xd, y_dev = x.double().to(dev), y.to(dev)
            value, seconds = {}, {}
            for kind in kinds:
                start = time.perf_counter()
                if bound(kind).local:
                    ok = bound(kind).certify(model, xd, y_dev, eps, modes=p["modes"])
                    value[f"certified_{kind}"] = torch.from_numpy(ok)
                    acc = ok.mean(1)
                else:
                    delta = decrease_of(trained, kind, prof["possibility"]["tol"])
                    acc = 1.0 - certified_fraction(model, xd, y, eps, kind, delta=delta)
                seconds[kind] = time.perf_counter() - start
                value[kind] = torch.from_numpy(np.asarray(acc, dtype=np.float64))
            a = p["attack"]
            n = min(a["images"], len(x))
            value["attack"] = torch.from_numpy(_attack_robust(model, xd[:n], y_dev[:n], eps, a))
            return value, {"seconds": seconds, "attack_images": n}

        value, meta = cached_experiment("certified_accuracy", VERSIONS, config, compute)
        robust = value["attack"]
        n = meta["attack_images"]
        out["accuracy"][name] = {k: value[k] for k in kinds}
        out["attack"][name] = robust.mean(1)
        out["attack_ci"][name] = np.array([rate_interval(r)[1:] for r in robust])
        out["violations"][name] = {
            k: int((value[f"certified_{k}"][:, :n] & ~robust).sum())
            for k in kinds
            if f"certified_{k}" in value
        }
        out["checked"][name] = {
            k: int(value[f"certified_{k}"][:, :n].sum()) for k in kinds if f"certified_{k}" in value
        }
        out["seconds"][name] = meta["seconds"]
    out["attack_images"] = n
    return out


def largest_eps(eps: np.ndarray, acc: np.ndarray, level: float) -> float:
    """The largest eps on the grid up to which the accuracy stays >= level (0 if none)."""
    ok = np.asarray(acc) >= level
    if not ok[0]:
        return 0.0
    bad = np.nonzero(~ok)[0]
    last = (bad[0] - 1) if len(bad) else len(ok) - 1
    return float(eps[last])


def local_summary(d: dict[str, Any], kind: str = "local_tied") -> dict[str, Any]:
    """Per network: the largest eps certifying 50% and 90% under each certificate and the
    attack, and the largest gap (attack-robust minus certified by ``kind``) over the eps
    where the attack-robust accuracy is >= 0.5, with the eps where it occurs."""
    rows = {}
    for name, acc in d["accuracy"].items():
        attack = d["attack"][name]
        gap = attack - acc[kind]
        where = attack >= 0.5
        worst = int(np.argmax(np.where(where, gap, -np.inf))) if where.any() else 0
        rows[name] = {
            "eps50": {k: largest_eps(d["eps"], a, 0.5) for k, a in acc.items()}
            | {"attack": largest_eps(d["eps"], attack, 0.5)},
            "eps90": {k: largest_eps(d["eps"], a, 0.9) for k, a in acc.items()}
            | {"attack": largest_eps(d["eps"], attack, 0.9)},
            "max_gap": float(gap[worst]) if where.any() else float("nan"),
            "max_gap_eps": float(d["eps"][worst]),
        }
    return rows


def at_eps(d: dict[str, Any], curve: np.ndarray, eps: float) -> float:
    """The value of a curve of :func:`certified_accuracy` at a grid eps (an error off it)."""
    hit = np.nonzero(np.isclose(d["eps"], eps))[0]
    if not len(hit):
        raise ValueError(f"eps = {eps} is not on the grid {d['eps'].tolist()}")
    return float(np.asarray(curve)[hit[0]])


def local_table(d: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Figure 12's table: per network the largest eps certifying 50% / 90% of the test
    digits under each certificate, the same for the attack, and the largest gap."""
    summary = local_summary(d)
    kinds = [*d["kinds"], "attack"]
    header = ["network", *[f"{k}: 50% / 90%" for k in kinds], "largest gap (at eps)"]
    rows = []
    for name, s in summary.items():
        cells = [f"{s['eps50'][k]:g} / {s['eps90'][k]:g}" for k in kinds]
        gap = f"{s['max_gap']:.3f} ({s['max_gap_eps']:g})" if np.isfinite(s["max_gap"]) else "-"
        rows.append([f"`{name}`", *cells, gap])
    return header, rows


def cert_comparison(
    profile: str | dict[str, Any],
    d: dict[str, Any],
    names: tuple[str, ...] = ("nt", "sdp", "cert"),
):
    """f_cert against f_nt and f_sdp: clean accuracy, training seconds, certified accuracy
    (tied flows) at every eps of Figure 12 (from ``d``, :func:`certified_accuracy`), and
    stAdv success at the claim tau (any iterate and last iterate, among correctly
    classified digits, 95% intervals)."""
    prof = _profile(profile)
    q, p = prof["intro"], prof["possibility"]
    out: dict[str, Any] = {"eps": d["eps"], "tau": p["claim_tau"], "rows": {}}
    for name in names:
        trained = get_model(name, prof, section=4)
        rates = stadv_rates(
            stadv_evaluation(
                trained, tau=p["claim_tau"], images=q["eval_images"], steps=q["eval_steps"]
            )
        )
        out["rows"][name] = {
            "accuracy": trained.test_accuracy,
            "train_seconds": trained.train_seconds,
            "certified": d["accuracy"][name]["local_tied"] if name in d["accuracy"] else None,
            "stadv": rates["success"],
            "stadv_final": rates["success_final"],
        }
    return out
