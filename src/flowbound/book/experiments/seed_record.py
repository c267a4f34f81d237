"""Beyond the paper: f_cert's seeds under the library's whole certificate (as recorded)."""

from __future__ import annotations

from typing import Any

from flowbound.book.glue import count_noun
from flowbound.certificates.local import CASCADE_NAMES
from flowbound.threat.sets import TIED

from ._common import record

__all__ = ["cert_seeds", "cert_seeds_summary"]


def cert_seeds(variant: str = "cert") -> tuple[list[str], list[list[str]], dict[str, Any]]:
    """The adopted recipe's seeds as recorded (``flowbound/records/cert_seeds.json``,
    written by ``benchmarks/cert_settings.py --merge``): each seed trained on the whole
    training set and certified on all 10,000 test digits by
    :func:`~flowbound.certificates.local.certified`, every level of the cascade on every
    digit (Figure 12 runs the first two on every digit). A table (seed, clean accuracy,
    certified per threat set and eps, the machine) and the record's rows for
    ``variant``. Read, not recomputed: about 15 minutes per seed on a 2-core CPU."""
    rec = record("cert_seeds.json")
    runs = [r for r in rec["runs"].values() if r["variant"] == variant]
    if not runs:
        raise ValueError(f"cert_seeds: the record has no seed of variant {variant!r}")
    runs.sort(key=lambda r: r["seed"])
    cols = [(t, e) for r in runs for t, v in r["certified"].items() for e in v]
    cols = list(dict.fromkeys(cols))
    header = ["seed", "clean accuracy", *[f"{t}, eps = {e}" for t, e in cols], "machine"]
    rows = []
    for r in runs:
        cells = [
            f"{r['certified'][t][e]:.3f}" if e in r["certified"].get(t, {}) else "-"
            for t, e in cols
        ]
        rows.append([str(r["seed"]), f"{r['clean']:.4f}", *cells, r["machine"]])
    return header, rows, {"runs": runs, "columns": cols}


def cert_seeds_summary(seeds: dict[str, Any], threat: str = TIED.name) -> dict[str, Any]:
    """Glue: the certificate's levels the seeds were certified at (``seeds_levels``),
    the number of seeds and, over them, the range of the clean accuracy, of
    the minutes each took to certify on ``threat``'s flows, and of the certified share
    at each recorded eps of ``threat`` (keys ``seeds_<eps>``, e.g. ``seeds_1``,
    ``seeds_15``), as "0.855" when every seed agrees to three decimals and
    "0.853-0.858" otherwise."""
    runs = seeds["runs"]
    minutes = [r["certify_seconds"][threat] / 60 for r in runs if threat in r["certify_seconds"]]
    now = list(CASCADE_NAMES)
    levels = {tuple(r["levels"]) for r in runs}
    if levels == {tuple(now)}:
        levels_text = "every level the cascade has"
    else:
        named = "; ".join(_and(list(v)) for v in sorted(levels))
        levels_text = f"the levels the cascade had then: {named} (today's: {_and(now)})"
    out = {
        "seeds_levels": levels_text,
        "seeds_n": count_noun(len(runs), "seed"),
        "seeds_clean": _spread([r["clean"] for r in runs], 4),
        "seeds_minutes": _spread(minutes, 0) if minutes else "-",
    }
    for t, e in seeds["columns"]:
        if t != threat:
            continue
        values = [r["certified"][t][e] for r in runs if e in r["certified"].get(t, {})]
        out[f"seeds_{e.replace('.', '')}"] = _spread(values, 3)
        out[f"seeds_{e.replace('.', '')}_n"] = count_noun(len(values), "seed")
    return out


def _and(names: list[str]) -> str:
    """Level names as prose: "chord, kinked and sloped"."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _spread(values: list[float], digits: int) -> str:
    """The range of ``values`` in words: one number where they agree to ``digits``."""
    lo, hi = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return lo if lo == hi else f"{lo}-{hi}"
