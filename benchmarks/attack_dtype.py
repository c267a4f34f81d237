"""Figure 12's flow attack searching in float64 against float32, side by side.

The chapter's attack (``flowbound.book.experiments.certify_digits.attack_robust``: every
eps of ``local.eps`` in order, a digit broken at one eps not attacked again) on the
first ``local.attack.images`` test digits of the networks named, tied and full
flows, once with ``flow_apgd``'s search in float64 and once in float32 (what it finds
checked in float64), in one run on this machine's default device. Prints per network
and threat set the seconds of each, the ratio, the attack-robust accuracy per eps of
both, and the (digit, eps) cases on which they disagree.

    python benchmarks/attack_dtype.py --variants nt cert
"""

from __future__ import annotations

import argparse
import time

import torch

from flowbound.book.experiments._common import frozen
from flowbound.book.experiments.certify_digits import attack_robust
from flowbound.book.profiles import load_profile
from flowbound.book.trained import get_model
from flowbound.data import load_mnist
from flowbound.device import default_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["nt"])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--images", type=int, default=None, help="default: local.attack.images")
    args = parser.parse_args()
    prof = load_profile(args.profile)
    p = prof["local"]
    eps = [float(e) for e in p["eps"]]
    n = args.images or p["attack"]["images"]
    dev = default_device()
    x, y = load_mnist("test")
    x, y = x[:n].double().to(dev), y[:n].to(dev)
    print(f"{dev}, {torch.get_num_threads()} threads, {n} digits, eps {eps}")
    for name in args.variants:
        model = frozen(get_model(name, prof, section=4, progress=False).model).to(dev).double()
        for threat in ("tied", "full"):
            seconds, robust = {}, {}
            for dtype in ("float64", "float32"):
                a = p["attack"] | {"search_dtype": dtype}
                start = time.perf_counter()
                robust[dtype] = attack_robust(model, x, y, eps, a, threat)
                seconds[dtype] = time.perf_counter() - start
            ratio = seconds["float64"] / seconds["float32"]
            differ = int((robust["float64"] != robust["float32"]).sum())
            print(
                f"f_{name} {threat}: float64 {seconds['float64']:.1f} s, float32 "
                f"{seconds['float32']:.1f} s ({ratio:.2f}x); (digit, eps) cases that differ: "
                f"{differ} of {robust['float64'].size}"
            )
            for dtype, r in robust.items():
                print(f"  robust ({dtype}): " + " ".join(f"{v:.3f}" for v in r.mean(1)))


if __name__ == "__main__":
    main()
