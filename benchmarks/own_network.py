"""Seconds per digit and peak memory of the per-digit certificate on the profile's CNN
beside f_nt, in one run, as a ratio.

The CNN is the paper profile's ``own`` network (two strided convolutions, a dense
layer, biases everywhere), trained here with cross-entropy for ``own.epochs``; f_nt
is the cached paper network. Both are certified on the first ``--images`` test
digits over the profile's ``own.eps`` grid, on tied and full flows (the cascade of
:func:`flowbound.certificates.local.certified`, float64); the peak resident memory of
the process is read after each network (ru_maxrss: it only grows, so the CNN, run
first, sets it unless f_nt needs more).

    python benchmarks/own_network.py --images 1000
    python benchmarks/own_network.py --images 1000 --eps 0.3 --threats tied   # the peak
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from flowbound.book.experiments.your_network import trained_own_cnn
from flowbound.book.profiles import load_profile
from flowbound.book.trained import get_model
from flowbound.certificates.local import certified
from flowbound.data import load_mnist
from flowbound.networks.chain import image_model
from flowbound.training.fit import accuracy


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--eps", type=float, nargs="+", help="default: the profile's own.eps")
    parser.add_argument("--threats", nargs="+", default=["tied", "full"], choices=["tied", "full"])
    args = parser.parse_args()
    prof = load_profile(args.profile)
    p, modes = prof["own"], prof["local"]["modes"]
    eps = args.eps or p["eps"]
    cnn, _ = trained_own_cnn(prof, torch.device("cpu"))
    xt, yt = load_mnist("test")
    print(f"CNN clean accuracy {accuracy(image_model(cnn), xt, yt):.4f}")
    nt = get_model("nt", args.profile, section=4, progress=False).model.cpu()
    xt, yt = xt[: args.images].double(), yt[: args.images]
    rows, per = [], {}
    for name, net in (("CNN", cnn.double().eval()), ("f_nt", nt.double())):
        for threat in args.threats:
            start = time.perf_counter()
            ok = certified(net, xt, yt, eps, threat=threat, modes=modes, progress=True)
            s = (time.perf_counter() - start) / args.images
            per[name, threat] = s
            shares = " / ".join(f"{v:.3f}" for v in ok.mean(1))
            rows.append(f"| {name} | {threat} | {s:.3f} | {_peak_gib():.2f} | {shares} |")
    print(f"{args.images} digits, eps {eps}, modes {modes}, {torch.get_num_threads()} threads")
    print("| network | flows | s per digit (whole grid) | peak RSS so far (GiB) | certified |")
    print("|---|---|---:|---:|---|")
    print("\n".join(rows))
    for threat in args.threats:
        print(f"{threat}: CNN / f_nt = {per['CNN', threat] / per['f_nt', threat]:.1f}x")


if __name__ == "__main__":
    main()
