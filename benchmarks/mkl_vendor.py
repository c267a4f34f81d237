"""MKL's kernels chosen by CPU features (flowbound.blas) against its default on an AMD CPU.

Runs the same workloads twice, in child processes one after the other: once
plain, once with the library of :mod:`flowbound.blas` preloaded (what the
book's kernels get), and prints seconds, the ratio and whether the results
agree: a float64 and a float32 product (784 x 500, the networks' first
layer), one epoch of training of some variants at the profile's settings,
stAdv on f_nt at one tau, and the per-digit certificate on f_nt.

    python benchmarks/mkl_vendor.py --profile paper
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _gemm(dtype) -> float:
    import torch

    a, w = torch.randn(1000, 784, dtype=dtype), torch.randn(500, 784, dtype=dtype)
    for _ in range(5):
        a @ w.T
    start = time.perf_counter()
    for _ in range(200):
        a @ w.T
    return 2 * 1000 * 784 * 500 * 200 / (time.perf_counter() - start) / 1e9


def _child(args) -> None:
    import torch

    from flowbound.attacks.stadv import stadv
    from flowbound.book.experiments._common import frozen
    from flowbound.book.profiles import load_profile
    from flowbound.book.trained import get_model, variant_settings
    from flowbound.certificates.local import certified
    from flowbound.data import load_mnist
    from flowbound.networks.architectures import build
    from flowbound.training.fit import fit
    from flowbound.training.zoo import VARIANTS

    torch.set_num_threads(args.threads)
    prof = load_profile(args.profile)
    out: dict = {"GFLOP/s float64": _gemm(torch.float64), "GFLOP/s float32": _gemm(torch.float32)}
    xtr, ytr = load_mnist("train")
    t = prof["train"]
    for name in args.train:
        v = VARIANTS[name]
        settings = variant_settings(v, prof)
        model = build(v.arch, prof["hidden"]["section4"], 0, settings)
        start = time.perf_counter()
        fit(model, v.loss_factory()(settings), xtr, ytr, epochs=1, batch_size=t["batch_size"],
            lr=t["lr"], seed=0, progress=False)  # fmt: skip
        out[f"train {name}, 1 epoch"] = time.perf_counter() - start
    net = frozen(get_model("nt", prof, section=4, progress=False).model.cpu())
    x, y = load_mnist("test")
    n = prof["intro"]["eval_images"]
    start = time.perf_counter()
    res = stadv(net, x[:n], y[:n], tau=args.tau, steps=prof["intro"]["eval_steps"])
    out[f"stAdv, tau {args.tau}, {n} images"] = time.perf_counter() - start
    out["stAdv success"] = res.success.tolist()
    xd, yd, net = x[: args.digits].double(), y[: args.digits], net.double()
    local = prof["local"]
    for threat in ("tied", "full"):
        start = time.perf_counter()
        ok = certified(net, xd, yd, local["eps"], threat=threat, modes=local["modes"])
        out[f"certificate {threat}, {args.digits} digits"] = time.perf_counter() - start
        out[f"certified {threat}"] = ok.tolist()
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train", nargs="*", default=["at_pgd", "sdp", "cert"])
    parser.add_argument("--tau", type=float, default=0.0005)
    parser.add_argument("--digits", type=int, default=3000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args)
    from flowbound.blas import reason_not_applied, shim_library

    if (why := reason_not_applied()) is not None:
        raise SystemExit(f"nothing to compare: {why}")
    with tempfile.TemporaryDirectory() as tmp:
        lib = shim_library(Path(tmp))
        if lib is None:
            raise SystemExit("nothing to compare: no C compiler (cc) to build the library")
        runs = []
        for preload in ("", str(lib)):
            env = dict(os.environ, LD_PRELOAD=preload)
            cmd = [sys.executable, __file__, "--child", *sys.argv[1:]]
            done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            runs.append(json.loads(done.stdout.splitlines()[-1]))
    plain, fast = runs
    print("| workload | MKL default | by CPU features | ratio |")
    print("|---|---:|---:|---:|")
    for key, a in plain.items():
        if isinstance(a, list):
            u, v = np.asarray(a), np.asarray(fast[key])
            differ = int((u != v).sum())
            print(f"| {key}: outcomes that differ | | {differ} | |")
        elif key.startswith("GFLOP"):
            print(f"| {key} | {a:.1f} | {fast[key]:.1f} | {fast[key] / a:.2f}x |")
        else:
            print(f"| {key} (s) | {a:.1f} | {fast[key]:.1f} | {a / fast[key]:.2f}x |")


if __name__ == "__main__":
    main()
