"""f_cert's settings: train with one change to the profile's ``variants.cert`` and certify.

Each trial trains f_cert (or ``--variant cert_full``; cached like any network) and
reports its clean accuracy, training seconds and certified accuracy (float64
certificate, ``certified``: every level of the cascade on every digit, 200
eigenvectors) on the whole test set, on tied flows at eps 0.7, 1.0, 1.5 and on full
flows at 0.3, 0.5, 1.0. The test set judges the chosen recipe (its seeds); settings
are searched on a validation split with ``benchmarks/cert_sweep.py``.

    python benchmarks/cert_settings.py '[{"seed": 1}, {"kappa": 0.3}, {"eps": 1.5}]'
    python benchmarks/cert_settings.py '[{}]' --variant cert_full
    python benchmarks/cert_settings.py '[{"seed": 0}]' --threats tied > seeds.jsonl

``--merge seeds.jsonl --machine "this 2-core CPU"`` adds the printed rows of trials
that change the seed only (the adopted recipe's seeds) to the book's record
(``flowbound/records/cert_seeds.json``, which the chapter reads), each with the
machine that ran it, replacing a row of the same variant and seed.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from cert_sweep import EPS_OF, LEVELS_BEFORE_SPLIT

from flowbound.book.profiles import load_profile
from flowbound.book.trained import get_model
from flowbound.certificates.local import CASCADE_NAMES, certified
from flowbound.data import load_mnist

RECORD = Path(__file__).resolve().parents[1] / "src/flowbound/records/cert_seeds.json"


def merged(rows: Path, machine: str) -> None:
    """Add the seed-only trials printed in ``rows`` (one JSON object per line; other
    lines are skipped) to :data:`RECORD`, each with ``machine``."""
    rec = json.loads(RECORD.read_text()) if RECORD.exists() else {"runs": {}}
    added = []
    for line in rows.read_text().splitlines():
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if set(r["change"]) != {"seed"}:
            continue  # a recipe change: the search's, not the adopted recipe's seeds
        seed = r["change"]["seed"]
        certified_ = {
            t: {f"{e:g}": r[f"{t}_{e:g}"] for e in eps}
            for t, eps in EPS_OF.items()
            if f"{t}_seconds" in r
        }
        rec["runs"][f"{r['variant']}_seed{seed}"] = {
            "variant": r["variant"],
            "seed": seed,
            "clean": r["clean"],
            "certified": certified_,
            "train_seconds": r["train_seconds"],
            "certify_seconds": {t: r[f"{t}_seconds"] for t in certified_},
            "levels": r.get("levels", LEVELS_BEFORE_SPLIT),
            "machine": machine,
            "merged": time.strftime("%Y-%m-%d"),
        }
        added.append(f"{r['variant']} seed {seed}")
    rec["runs"] = dict(sorted(rec["runs"].items()))
    rec["certificate"] = (
        "flowbound.certificates.local.certified, 200 eigenvectors, at each run's levels"
    )
    RECORD.write_text(json.dumps(rec, indent=1) + "\n")
    print(f"added {', '.join(added) or 'nothing'} to {RECORD}")


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
    parser.add_argument("--merge", metavar="FILE", help="add FILE's seed rows to the record")
    parser.add_argument("--machine", help="with --merge: the machine that ran them")
    args = parser.parse_args()
    if args.merge:
        if not args.machine:
            parser.error("--merge needs --machine: say which machine ran the trials")
        merged(Path(args.merge), args.machine)
        return
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
            "levels": list(CASCADE_NAMES),
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
