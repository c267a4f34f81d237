"""Figure 12's brackets for some networks, timed: the chapter's own computation.

Runs ``flowbound.book.experiments.certified_accuracy`` (every certificate of
``local.kinds`` on the test digits, ``flow_apgd`` on tied and full flows on the
first ``local.attack.images``) for the networks named, each from the cache where
it is there, and prints the seconds per part and the bracket per network, threat
set and eps (attack-robust minus certified accuracy on the attacked digits), with
the largest eps up to which it stays within 2 points. The results land in the
cache exactly as the chapter would store them (``local.variants`` is not part of
their key), so a run on a GPU can seed a CPU build.

    python benchmarks/bracket.py --variants nt sdp cert --json bracket.json
"""

from __future__ import annotations

import argparse
import json
import time

from flowbound.book import experiments as ex
from flowbound.book.profiles import load_profile
from flowbound.book.tables import table_rows
from flowbound.device import default_device, device_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["nt", "sdp", "cert"])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--json", help="write the brackets and seconds here")
    args = parser.parse_args()
    prof = load_profile(args.profile)
    prof["local"]["variants"] = list(args.variants)
    dev = default_device()
    print(device_text(dev))
    start = time.perf_counter()
    d = ex.certified_accuracy(prof)
    total = time.perf_counter() - start
    for net, sec in d.seconds.items():
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in sec.items())
        print(f"f_{net}: {parts}")
    print(f"total {total:.1f} s (including training or loading the networks)")
    header, rows = ex.bracket_table(d)
    print(table_rows(header, rows))
    header, rows = ex.local_table(d)
    print(table_rows(header, rows))
    broken = {n: v for n, v in d.violations.items()}
    print(f"certified cases broken: {broken} of {d.checked}")
    if args.json:
        out = {
            "device": str(dev),
            "seconds": d.seconds,
            "total": total,
            "eps": d.eps.tolist(),
            "bracket": {n: {t: b.tolist() for t, b in v.items()} for n, v in d.bracket.items()},
            "attack": {n: v.tolist() for n, v in d.attack.items()},
            "attack_full": {n: v.tolist() for n, v in d.attack_full.items()},
            "accuracy": {
                n: {k: v.tolist() for k, v in acc.items()} for n, acc in d.accuracy.items()
            },
            "violations": d.violations,
            "checked": d.checked,
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
