"""f_cert's settings: train with one change to the profile's ``variants.cert`` and certify.

Each trial trains f_cert (cached like any network) and reports its clean
accuracy, training seconds and certified accuracy (tied flows, float64
certificate, 200 eigenvectors) on the whole test set at eps 0.7, 1.0, 1.5. The
test set judges the chosen recipe (its seeds); settings are searched on a
validation split with ``benchmarks/cert_sweep.py``.

    python benchmarks/cert_settings.py '[{"seed": 1}, {"kappa": 0.3}, {"eps": 1.5}]'
"""

from __future__ import annotations

import copy
import json
import sys
import time

from flowbound.book.profiles import load_profile
from flowbound.book.trained import get_model
from flowbound.certificates.local import certified
from flowbound.data import load_mnist

EPS = [0.7, 1.0, 1.5]


def main() -> None:
    trials = json.loads(sys.argv[1]) if len(sys.argv) > 1 else [{}]
    base = load_profile("paper")
    x, y = load_mnist("test")
    for trial in trials:
        prof = copy.deepcopy(base)
        change = dict(trial)
        prof["train"]["seed"] = change.pop("seed", prof["train"]["seed"])
        prof["variants"]["cert"].update(change)
        trained = get_model("cert", prof, section=4)
        start = time.perf_counter()
        ok = certified(trained.model.cpu().double().eval(), x.double(), y, EPS, threat="tied")
        row = {
            "change": trial,
            "clean": trained.test_accuracy,
            "train_seconds": round(trained.train_seconds, 1),
            **{f"certified_{e:g}": float(ok[k].mean()) for k, e in enumerate(EPS)},
            "certify_seconds": round(time.perf_counter() - start, 1),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
