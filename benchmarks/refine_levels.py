"""Figure 12's refinement with and without the cascade's fourth level, one run.

Figure 12 certifies every digit with the cascade's first two levels and refines the
attacked digits the attack leaves open with the later ones (``local.sloped_bracket``,
``local.refine_bracket``). This runs that refinement twice on the same open digits of
the same cached run (``benchmarks/bracket.py`` or a build stores it): with the third
level alone (each neuron's own slopes, the refinement before the fourth level) and
with the third and fourth (those slopes stepped, ``DESCENT``; ``--steps``: the
fourth level's steps, several for a frontier of bracket against seconds), and prints
per network, threat set and eps the bracket of each, the seconds of each and their
ratio to the third level's. ``--where``: the refinements that run the fourth level
(``all``; ``modes``: the first, with ``local.modes`` eigenvectors, only; ``exact``:
the exact ellipsoid's only), the others keeping the third level alone. ``--split``:
the fourth level's split of the flow's sign at that many pixels per open margin (0:
the slopes stepped alone, ``DESCENT``; the cascade's ``SPLIT`` splits at
``SPLIT_PIXELS``), several for a frontier.

    python benchmarks/refine_levels.py --variants nt
    python benchmarks/refine_levels.py --steps 1 3 6 10 --where all modes exact
    python benchmarks/refine_levels.py --where exact --split 0 2 4 6 8
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from flowbound.book.experiments import certify_digits as cd
from flowbound.book.profiles import load_profile
from flowbound.certificates import ellipsoid as ell
from flowbound.certificates.local import DESCENT, SLOPED
from flowbound.certificates.registry import _local, bound
from flowbound.data import load_mnist
from flowbound.device import default_device, device_text

#: Where the fourth level runs: (in the refinement with the profile's eigenvectors, in
#: the exact ellipsoid's).
WHERE = {"none": (False, False), "all": (True, True), "modes": (True, False),
         "exact": (False, True)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["nt"])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--json", help="write the brackets and seconds here")
    parser.add_argument("--steps", nargs="+", type=int, default=[ell.DESCENT_STEPS])
    parser.add_argument("--where", nargs="+", default=["all"], choices=list(WHERE))
    parser.add_argument("--split", nargs="+", type=int, default=[0])
    args = parser.parse_args()
    ways = [("third level", 0, "none", 0)]
    ways += [
        (f"fourth ({w}), {k} steps" + (f", split {s}" if s else ""), k, w, s)
        for w in args.where
        for k in args.steps
        for s in args.split
    ]
    prof = load_profile(args.profile)
    p = prof["local"]
    eps = [float(e) for e in p["eps"]]
    x, y = load_mnist("test")
    n = min(p["attack"]["images"], len(x))
    dev = default_device()
    print(device_text(dev))
    rows = []
    for variant in args.variants:
        trained, value = cd.cached_run(prof, variant)  # computed here if it is not there
        model = cd.frozen(trained.model).to(dev).double()
        xd, yd = x[:n].double().to(dev), y[:n].to(dev)
        for kind in p["kinds"]:
            b = bound(kind)
            if b.refine is None:
                continue
            robust = np.asarray(value[f"attack_{b.threat}"])
            row = {"variant": variant, "kind": kind, "eps": eps}
            for way, steps, where, split in ways:
                ell.DESCENT_STEPS = steps
                fourth = (SLOPED, DESCENT._replace(split=split))
                at_modes, at_exact = (fourth if on else (SLOPED,) for on in WHERE[where])
                refine = _local(b.threat, at_modes, exact=at_exact)
                start = time.perf_counter()
                ok = cd._refined(model, xd, yd, eps, kind, value, p, refine)
                row[way] = {
                    "seconds": round(time.perf_counter() - start, 1),
                    "bracket": [round(float(v), 4) for v in (robust.mean(1) - ok.mean(1))],
                }
            base = max(row["third level"]["seconds"], 1e-9)
            for way, *_ in ways[1:]:
                row[way]["ratio"] = round(row[way]["seconds"] / base, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
