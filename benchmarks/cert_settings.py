"""f_cert's settings: train with one change to the profile's ``variants.cert`` and certify.

Each trial trains f_cert (or ``--variant cert_full``; cached like any network) and
reports its clean accuracy, training seconds and certified accuracy (float64
certificate, 200 eigenvectors) on the whole test set, on tied flows at eps 0.7,
1.0, 1.5 and on full flows at 0.3, 0.5, 1.0. The test set judges the chosen recipe
(its seeds); settings are searched on a validation split with
``benchmarks/cert_sweep.py``.

    python benchmarks/cert_settings.py '[{"seed": 1}, {"kappa": 0.3}, {"eps": 1.5}]'
    python benchmarks/cert_settings.py '[{}]' --variant cert_full
    python benchmarks/cert_settings.py '[{"seed": 0}]' --threats tied
"""

from __future__ import annotations

import argparse
import copy
import json
import time

from cert_sweep import EPS_OF

from flowbound.book.profiles import load_profile
from flowbound.book.trained import get_model
from flowbound.certificates.local import certified
from flowbound.data import load_mnist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trials", nargs="?", default="[{}]", help="a JSON list of changes")
    parser.add_argument("--variant", default="cert", choices=["cert", "cert_full"])
    parser.add_argument(
        "--threats",
        nargs="+",
        default=list(EPS_OF),
        choices=list(EPS_OF),
        help="the threat sets to certify on (default: both)",
    )
    args = parser.parse_args()
    trials = json.loads(args.trials)
    base = load_profile("paper")
    x, y = load_mnist("test")
    for trial in trials:
        prof = copy.deepcopy(base)
        change = dict(trial)
        prof["train"]["seed"] = change.pop("seed", prof["train"]["seed"])
        prof["variants"][args.variant].update(change)
        trained = get_model(args.variant, prof, section=4)
        model = trained.model.cpu().double().eval()
        row = {
            "variant": args.variant,
            "change": trial,
            "clean": trained.test_accuracy,
            "train_seconds": round(trained.train_seconds, 1),
        }
        for threat in args.threats:
            eps = EPS_OF[threat]
            start = time.perf_counter()
            ok = certified(model, x.double(), y, eps, threat=threat)
            row |= {f"{threat}_{e:g}": float(ok[k].mean()) for k, e in enumerate(eps)}
            row[f"{threat}_seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
