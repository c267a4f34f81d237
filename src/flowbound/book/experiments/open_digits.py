"""Beyond the paper: branch and bound on the digits Figure 12 leaves open (its table)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from flowbound.book.glue import count_noun
from flowbound.certificates import local
from flowbound.certificates.branch import Branching, branched
from flowbound.certificates.registry import bound
from flowbound.data import load_mnist
from flowbound.device import default_device

from ._common import FIRST_VERSION, cached_experiment, frozen
from ._common import profile_dict as _profile
from .certify_digits import cached_run, certified_on_attacked, open_on_attacked, run_key

__all__ = [
    "branch_bracket",
    "branch_summary",
    "branch_table",
    "level_yield",
    "level_yield_summary",
    "level_yield_table",
]

#: The experiment's code version (in its cache key): bump it when its results change.
VERSIONS = {"branch_bracket": FIRST_VERSION}


def branch_bracket(profile: str | dict[str, Any]) -> dict[str, Any]:
    """Branch and bound (:mod:`flowbound.certificates.branch`) on one network's attacked
    digits that Figure 12 leaves open, neither broken nor certified by any certificate
    of the threat set, as its bracket counts them (``local.branch``: the network, the eps per threat
    set, the level, eigenvectors and branching), each (threat set, eps) at once: the
    digits open before, those it certifies, the bracket before and after, and the
    seconds per open digit. Reads Figure 12's cached run (computed first if absent)."""
    prof = _profile(profile)
    p, b = prof["local"], prof["local"]["branch"]
    grid = [float(e) for e in p["eps"]]
    for threat, eps in b["eps"].items():
        if eps and f"local_{threat}" not in p["kinds"]:
            raise ValueError(
                f"local.branch.eps.{threat} needs the local_{threat} certificate in "
                f"local.kinds (Figure 12's run on {threat} flows), got {p['kinds']}"
            )
        off = [e for e in eps if float(e) not in grid]
        if off:
            raise ValueError(
                f"local.branch.eps.{threat} must be budgets on local.eps (Figure 12's grid, "
                f"where the attack ran), got {off} not in {grid}"
            )
    trained, value = cached_run(prof, b["variant"])
    run = run_key(trained, prof)
    x, y = load_mnist("test")
    n = min(p["attack"]["images"], len(x))
    branching = Branching(b["depth"], b["leaves"], b["steps"])
    config = {"run": run, "branch": b}

    def compute() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        dev = default_device()
        model = frozen(trained.model).to(dev).double()
        xd, yd = x[:n].double().to(dev), y[:n].to(dev)
        out, seconds = {}, {}
        for threat, eps in b["eps"].items():
            left = open_on_attacked(value, p["kinds"], threat, n)
            for e in eps:
                r = grid.index(float(e))
                open_ = np.nonzero(left[r])[0]
                idx = torch.from_numpy(open_).to(dev)
                start = time.perf_counter()
                got = branched(
                    model, xd[idx], yd[idx], [float(e)], threat=threat, modes=b["modes"],
                    level=local.LEVELS[b["level"]], branching=branching, classifier_only=True,
                )[0]  # fmt: skip
                key = f"{threat}_{float(e):g}"
                seconds[key] = time.perf_counter() - start
                closed = np.zeros(n, dtype=bool)
                closed[open_[got]] = True
                out[f"open_{key}"] = torch.from_numpy(left[r])
                out[f"closed_{key}"] = torch.from_numpy(closed)
        return out, {"seconds": seconds}

    found, meta = cached_experiment("branch_bracket", VERSIONS, config, compute)
    rows = []
    for threat, eps in b["eps"].items():
        for e in eps:
            key = f"{threat}_{float(e):g}"
            opened = int(np.asarray(found[f"open_{key}"]).sum())
            closed = int(np.asarray(found[f"closed_{key}"]).sum())
            rows.append({
                "threat": threat, "eps": float(e), "open": opened, "closed": closed,
                "before": opened / n, "after": (opened - closed) / n,
                "seconds_per_digit": meta["seconds"][key] / max(opened, 1),
            })  # fmt: skip
    return {"variant": b["variant"], "images": n, "branch": dict(b), "rows": rows}


def branch_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per (threat set, eps): the digits open before, those branch and bound certified,
    the bracket before and after, and the seconds per open digit."""
    header = ["flows", "eps", "open", "certified by branch and bound", "bracket before",
              "after", "s per open digit"]  # fmt: skip
    rows = [
        [
            r["threat"],
            f"{r['eps']:g}",
            str(r["open"]),
            str(r["closed"]),
            f"{r['before']:.3f}",
            f"{r['after']:.3f}",
            f"{r['seconds_per_digit']:.1f}",
        ]  # fmt: skip
        for r in result["rows"]
    ]
    return header, rows


def branch_summary(result: dict[str, Any]) -> dict[str, Any]:
    """Glue for the chapter: the network, the branching, and in words how many of the
    open (digit, eps) cases branch and bound certified."""
    b = result["branch"]
    opened = sum(r["open"] for r in result["rows"])
    closed = sum(r["closed"] for r in result["rows"])
    if opened == 0:
        text = "found no case left open at these budgets"
    elif opened == 1:
        text = f"{'certified' if closed else 'did not certify'} the one case left open"
    elif closed == 0:
        text = f"certified none of the {count_noun(opened, 'case')} left open"
    elif closed == opened:
        text = f"certified all {count_noun(opened, 'case')} left open"
    else:
        text = f"certified {closed} of the {count_noun(opened, 'case')} left open"
    modes = "every eigenvector" if b["modes"] is None else f"{b['modes']} eigenvectors"
    where = "; ".join(
        f"{t} flows at {', '.join(f'{float(e):g}' for e in eps)}"
        for t, eps in b["eps"].items()
        if eps
    )
    return {
        "branch_net": f"f_{result['variant']}",
        "branch_text": text,
        "branch_where": where or "no budget",
        "branch_depth": b["depth"],
        "branch_leaves": b["leaves"],
        "branch_steps": b["steps"],
        "branch_level": f"{b['level']} level, {modes}",
    }


#: What decides an attacked digit, in the cascade's order (:func:`level_yield`).
DECIDERS = ("first", "refined", "branched", "broken", "open")


def level_yield(profile: str | dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """What decides each attacked digit of ``result``'s network (:func:`branch_bracket`),
    per threat set and eps > 0 of Figure 12's grid, each digit counted once, by the
    first that decides it: ``first``, certified by a certificate of the threat set at
    the levels every digit gets (the first two levels, and the global bounds on tied
    flows); ``refined``, by the refinement on the open digits (the later levels, the
    exact ellipsoid); ``branched``, by branch and bound (None where it did not run);
    ``broken``, misclassified or broken by the attack; ``open``, none of these. The
    five add up to the attacked digits."""
    prof = _profile(profile)
    p = prof["local"]
    _, value = cached_run(prof, result["variant"])
    n = result["images"]
    grid = [float(e) for e in p["eps"]]
    closed = {(r["threat"], r["eps"]): r["closed"] for r in result["rows"]}
    rows = []
    for threat in dict.fromkeys(bound(k).threat for k in p["kinds"]):
        if f"local_{threat}" not in p["kinds"]:
            continue  # a threat set only global bounds cover: no per-digit levels
        first = certified_on_attacked(value, p["kinds"], threat, n, refined=False)
        best = certified_on_attacked(value, p["kinds"], threat, n)
        left = open_on_attacked(value, p["kinds"], threat, n)
        broken = ~left & ~best
        for r, e in enumerate(grid):
            if e == 0:
                continue
            branched_ = closed.get((threat, e))
            rows.append({
                "threat": threat, "eps": e, "first": int(first[r].sum()),
                "refined": int((best[r] & ~first[r]).sum()), "branched": branched_,
                "broken": int(broken[r].sum()),
                "open": int(left[r].sum()) - (branched_ or 0),
            })  # fmt: skip
    return {"variant": result["variant"], "images": n, "rows": rows}


def level_yield_table(y: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Rows of :func:`level_yield` where some digit is certified (past them every
    level certifies none): digits decided by each level, in the cascade's order."""
    header = ["flows", "eps", "first two levels", "refinement", "branch and bound",
              "broken by the attack", "open"]  # fmt: skip
    rows = [
        [r["threat"], f"{r['eps']:g}"] + [("-" if r[k] is None else str(r[k])) for k in DECIDERS]
        for r in y["rows"]
        if r["first"] + r["refined"] + (r["branched"] or 0) > 0
    ]
    return header, rows


def level_yield_summary(y: dict[str, Any]) -> dict[str, Any]:
    """Glue: summed over the grid's (eps, threat set) cases, the certified cases each
    level adds, in words."""
    total = {k: sum(r[k] or 0 for r in y["rows"]) for k in DECIDERS}
    certified = total["first"] + total["refined"] + total["branched"]
    later = total["refined"] + total["branched"]
    if certified == 0:
        text = "no case is certified at any level"
    elif later == 0:
        text = f"the first two levels certify all {_cases(certified)}"
    else:
        text = (
            f"of the {_cases(certified, 'certified case')} the first two levels certify "
            f"{total['first']:,}, the refinement adds {total['refined']:,} and branch "
            f"and bound {total['branched']:,}"
        )
    return {
        "yield_net": f"f_{y['variant']}",
        "yield_text": text,
        "yield_open": f"{_cases(total['open'])} {'stays' if total['open'] == 1 else 'stay'} open",
        "yield_cases": f"{len(y['rows']) * y['images']:,}",
    }


def _cases(n: int, noun: str = "case") -> str:
    """A count of cases in prose: words up to twelve, thousands separated from 13 on."""
    return count_noun(n, noun) if n < 13 else f"{n:,} {noun}s"
