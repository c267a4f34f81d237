"""Beyond the paper: CNNs trained against the certificate, as recorded (the frontier).

Whether depth and convolutions buy certified robustness against flows: each CNN of
``flowbound/records/certified_cnn.json`` (written by ``benchmarks/certified_cnn.py
--merge``) was trained with f_cert's loss on the first 55,000 training images and
judged on the last 5,000, beside f_cert's adopted recipe on the same split
(``cert_sweep.json``). Read, not recomputed: 17-33 minutes per CNN on a 2-core CPU.
"""

from __future__ import annotations

from typing import Any

from flowbound.book.glue import count_noun
from flowbound.book.profiles import load_profile
from flowbound.stats import Interval, wilson_interval

from ._common import record

__all__ = ["certified_cnns", "certified_cnns_summary"]

#: The settings search's validation digits (``cert_sweep.json``'s split: the last 5,000
#: training images), over which f_cert's recorded shares were measured.
_VALID = 5_000


def _interval(share: float, n: int) -> Interval:
    """The Wilson interval of a recorded share of ``n`` digits."""
    return wilson_interval(round(share * n), n)


def certified_cnns() -> tuple[list[str], list[list[str]], dict[str, Any]]:
    """The recorded CNNs and f_cert's adopted tied recipe on the same validation split:
    a table (network, parameters, clean accuracy, certified share with its 95% Wilson
    interval at each recorded eps, the certificate's levels, the machine) and the data
    (``points``: per CNN its name, clean accuracy, parameters and intervals; ``cert``:
    f_cert's name, clean accuracy and intervals over the 5,000 validation digits)."""
    rec, search = record("certified_cnn.json"), record("cert_sweep.json")
    if not rec["settings"]:
        raise ValueError("certified_cnns: the record holds no CNN")
    eps = list(next(iter(rec["settings"].values()))["certified"])
    points = []
    for name, r in rec["settings"].items():
        shape = r["shape"]
        points.append(
            {
                "name": name,
                "label": (
                    f"CNN {'/'.join(map(str, shape['channels']))} channels, "
                    f"kappa {r['loss']['kappa']:g}"
                ),
                "clean": r["valid_accuracy"],
                "params": r["params"],
                "levels": r["levels"],
                "machine": r["machine"],
                "certified": {e: _interval(r["certified"][e], r["certified_digits"]) for e in eps},
                "digits": r["certified_digits"],
            }
        )
    adopted = search["adopted"]["cert"]
    ref = search["settings"][adopted]
    valid = _VALID
    hidden = ref["setting"].get("hidden.section4", load_profile("paper")["hidden"]["section4"])
    cert = {
        "name": adopted,
        "clean": ref["valid_accuracy"],
        "certified": {e: _interval(ref["certified"][e], valid) for e in eps},
        "digits": valid,
        "machine": ref["machine"],
    }
    header = ["network (validation split)", "parameters", "clean accuracy"]
    header += [f"certified, eps = {e}" for e in eps]
    header += ["certified digits", "levels", "machine"]
    rows = [
        [
            p["label"],
            f"{p['params']:,}",
            f"{p['clean']:.4f}",
            *[p["certified"][e].text() for e in eps],
            str(p["digits"]),
            ", ".join(p["levels"]),
            p["machine"],
        ]
        for p in points
    ]
    rows.append(
        [
            f"f_cert (`{adopted}`, no biases)",
            f"{784 * hidden + hidden * 10:,}",
            f"{cert['clean']:.4f}",
            *[cert["certified"][e].text() for e in eps],
            str(valid),
            "the settings search's",
            cert["machine"],
        ]
    )
    return header, rows, {"eps": eps, "points": points, "cert": cert}


def certified_cnns_summary(
    data: dict[str, Any], *, clean: float = 0.97, at: str = "1"
) -> dict[str, Any]:
    """Glue: how many CNNs, the best at eps ``at`` (its share with interval and clean
    accuracy), f_cert's, ``cnn_verdict``: whether any CNN reaches clean accuracy
    ``clean`` while certifying more than f_cert at ``at`` beyond its interval,
    ``cnn_conclusion``: what that says of depth and convolutions, and
    ``cnn_clean_text``: the best CNN's clean accuracy against f_cert's; sentences true
    for every value of the record."""
    points, cert = data["points"], data["cert"]
    best = max(points, key=lambda p: p["certified"][at].value)
    top_clean = max(points, key=lambda p: p["clean"])
    ref = cert["certified"][at].value
    wins = [p for p in points if p["clean"] >= clean and p["certified"][at].lo > ref]
    if wins:
        w = max(wins, key=lambda p: p["certified"][at].value)
        verdict = (
            f"{w['label']} does: clean {w['clean']:.4f}, certified "
            f"{w['certified'][at].text()} at eps = {at} against f_cert's {ref:.3f}"
        )
    else:
        iv = best["certified"][at]
        where = (
            "inside its interval"
            if iv.lo <= ref <= iv.hi
            else ("above its interval" if ref > iv.hi else "below its interval")
        )
        reached = sum(p["clean"] >= clean for p in points)
        verdict = (
            f"none of the {count_noun(len(points), 'CNN')} does: "
            + (
                f"none reaches a clean accuracy of {clean:g} (the highest is "
                f"{top_clean['clean']:.4f}, {top_clean['label']})"
                if reached == 0
                else f"{count_noun(reached, 'reaches', 'reach')} a clean accuracy of "
                f"{clean:g} without certifying more than f_cert beyond its interval"
            )
            + f", and the best at eps = {at}, {best['label']}, certifies "
            f"{iv.text()} with f_cert's {ref:.3f} {where}"
        )
    iv = best["certified"][at]
    if wins:
        conclusion = "At this training budget a CNN buys certified robustness on this threat model"
    elif iv.lo > ref:
        conclusion = (
            "The best CNN certifies more than f_cert beyond its interval, but not at the "
            "clean accuracy asked for"
        )
    elif ref > iv.hi:
        conclusion = "At this training budget the CNNs certify less than f_cert"
    else:
        conclusion = (
            "At this training budget the convolutions and the extra layer buy no certified "
            "robustness that the measurement can show"
        )
    gap = best["clean"] - cert["clean"]
    side = "above" if gap > 0 else "below"
    clean_text = f"{100 * abs(gap):.1f} points {side}" if abs(gap) >= 5e-4 else "the same as"
    return {
        "cnn_conclusion": conclusion,
        "cnn_clean_text": clean_text,
        "cnn_n": count_noun(len(points), "CNN"),
        "cnn_best": best["label"],
        "cnn_best_at": best["certified"][at].text(),
        "cnn_best_clean": best["clean"],
        "cnn_cert_at": ref,
        "cnn_cert_clean": cert["clean"],
        "cnn_target_clean": f"{clean:g}",
        "cnn_verdict": verdict,
    }
