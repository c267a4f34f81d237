"""Does depth or a convolution buy certified robustness against flows? The frontier of
clean against certified accuracy for CNNs trained against the certificate, beside f_cert.

Each setting trains the profile's CNN shape (:func:`own_cnn`, biases everywhere) with
f_cert's loss (:class:`~flowbound.training.certified.CertLoss`, the profile's
``variants.cert`` with the setting's changes and ``deeper="interval"``: the layers after
the first bounded by intervals from the first layer's ellipsoid bounds while training)
on the first 55,000 training images, and judges it on the next ``--valid`` (never the
test set): clean accuracy on all 5,000, and the share certified on tied flows by the
book's float64 certificate (CROWN back-substitution through every layer, every level
of the cascade) at ``--eps``. Each setting writes its JSON as it finishes.

    python benchmarks/certified_cnn.py --only c4_k03 c8_k03 --valid 500 --out cnn_sweep/
    python benchmarks/certified_cnn.py --merge cnn_sweep/ --machine "this 2-core CPU"

``--merge`` adds a finished run's JSONs to the book's record
(``flowbound/records/certified_cnn.json``, which the certifying chapter reads as the
frontier of clean against certified accuracy per architecture), each with the machine
that ran it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from cert_sweep import LEVELS_BEFORE_SPLIT, TRAIN  # the same split as f_cert's search

#: Changes per setting: channels/kernel/hidden/epochs of the CNN, the rest to the loss.
SETTINGS: dict[str, dict] = {
    "c4_k03": {"channels": [4, 8], "kappa": 0.3},
    "c4_k05": {"channels": [4, 8], "kappa": 0.5},
    "c8_k03": {"channels": [8, 16], "kappa": 0.3},
    "c4_k01": {"channels": [4, 8], "kappa": 0.1},
    "c8_k01": {"channels": [8, 16], "kappa": 0.1},
}


def one(name: str, out: Path, eps: list[float], valid: int) -> None:
    from flowbound.book.experiments.your_network import own_cnn
    from flowbound.book.profiles import load_profile
    from flowbound.certificates.local import CASCADE_NAMES, certified
    from flowbound.data import load_mnist
    from flowbound.networks.chain import image_model
    from flowbound.training.certified import CertLoss
    from flowbound.training.fit import accuracy, fit

    prof = load_profile("paper")
    change = dict(SETTINGS[name])
    shape = {k: change.pop(k, prof["own"][k]) for k in ("channels", "kernel", "hidden")}
    epochs = change.pop("epochs", prof["train"]["epochs"])
    settings = {**prof["variants"]["cert"], "deeper": "interval", "decay_epochs": [8], **change}
    x, y = load_mnist("train")
    torch.manual_seed(0)
    cnn = own_cnn(shape["channels"], shape["kernel"], shape["hidden"])
    start = time.perf_counter()
    fit(image_model(cnn), CertLoss(settings), x[:TRAIN], y[:TRAIN], epochs=epochs,
        batch_size=prof["train"]["batch_size"], lr=prof["train"]["lr"], seed=0,
        desc=name)  # fmt: skip
    seconds = time.perf_counter() - start
    cnn = cnn.double().eval()
    xv, yv = x[TRAIN:].double(), y[TRAIN:]
    start = time.perf_counter()
    ok = certified(cnn, xv[:valid], yv[:valid], eps, modes=prof["local"]["modes"])
    result = {
        "setting": SETTINGS[name],
        "shape": shape,
        "loss": {k: settings[k] for k in ("eps", "kappa", "kink", "deeper", "decay_epochs")},
        "params": sum(p.numel() for p in cnn.parameters()),
        "train_seconds": seconds,
        "certify_seconds_per_digit": (time.perf_counter() - start) / valid,
        "valid_accuracy": accuracy(image_model(cnn), xv, yv),
        "certified_digits": valid,
        "certified": {f"{e:g}": float(v) for e, v in zip(eps, ok.mean(1), strict=True)},
        "levels": list(CASCADE_NAMES),
        "torch": torch.__version__,
    }
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    print(name, json.dumps(result), flush=True)


RECORD = Path(__file__).resolve().parents[1] / "src/flowbound/records/certified_cnn.json"


def merged(out: Path, machine: str) -> None:
    """Add every setting's JSON in ``out`` to :data:`RECORD` (replacing a setting of the
    same name), with ``machine``; a JSON written before ``levels`` was recorded was
    certified by every level of the cascade then (``LEVELS_BEFORE_SPLIT``)."""
    rec = json.loads(RECORD.read_text())
    names = []
    for f in sorted(out.glob("*.json")):
        r = json.loads(f.read_text())
        keep = ("setting", "shape", "loss", "params", "valid_accuracy", "certified_digits")
        rec["settings"][f.stem] = {k: r[k] for k in keep} | {
            "certified": r["certified"],
            "levels": r.get("levels", LEVELS_BEFORE_SPLIT),
            "train_seconds": r["train_seconds"],
            "certify_seconds_per_digit": r["certify_seconds_per_digit"],
            "machine": machine,
            "torch": r["torch"],
        }
        names.append(f.stem)
    rec["what"].append(f"benchmarks/certified_cnn.py --only {' '.join(names)}")
    RECORD.write_text(json.dumps(rec, indent=1) + "\n")
    print(f"added {len(names)} settings to {RECORD}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--eps", type=float, nargs="+", default=[0.7, 1.0, 1.5])
    parser.add_argument("--valid", type=int, default=500, help="validation digits certified")
    parser.add_argument("--out", default="cnn_sweep")
    parser.add_argument("--merge", metavar="DIR", help="add DIR's results to the record")
    parser.add_argument("--machine", help="with --merge: the machine that ran them")
    args = parser.parse_args()
    if args.merge:
        if not args.machine:
            parser.error("--merge needs --machine: say which machine ran the settings")
        merged(Path(args.merge), args.machine)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        one(name, out, args.eps, args.valid)


if __name__ == "__main__":
    main()
