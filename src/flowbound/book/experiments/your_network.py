"""Beyond the paper: certifying your own network (a CNN with biases beside f_nt).

The per-digit certificate reads any chain of supported layers
(:mod:`flowbound.networks.chain`); this experiment trains the profile's small CNN
(``own``: two strided convolutions, a dense hidden layer, biases everywhere), then
certifies it and f_nt on the same test digits, on tied and on full flows, beside
``flow_apgd`` at Figure 12's settings: the bracket per threat set and eps, the
certified digits the attack breaks (must be 0), and the seconds per digit.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from flowbound.book.glue import count_noun, decay_text
from flowbound.book.trained import get_model
from flowbound.certificates.local import CASCADE, certified
from flowbound.data import load_mnist
from flowbound.device import default_device
from flowbound.networks.chain import image_model
from flowbound.stats import rate_interval
from flowbound.threat.sets import FULL, TIED
from flowbound.training.fit import StepDecayed, accuracy, cross_entropy, fit

from ._common import FIRST_VERSION, cached_experiment, frozen
from ._common import profile_dict as _profile
from .certify_digits import attack_robust

__all__ = [
    "own_cnn",
    "own_network",
    "own_network_summary",
    "own_network_table",
    "trained_own_cnn",
]

#: The experiment's code version (in its cache key).
#: own_network 2: the certificate's third level (each neuron's own slopes); 3: and its
#: fourth (those slopes stepped); 4: the third alone again (the code ran the third and
#: fourth under 2 after the fourth joined the cascade; a fresh number keeps neither
#: cache entry).
VERSIONS = {"own_network": FIRST_VERSION + 3}

THREATS = (TIED, FULL)


def own_cnn(channels: list[int], kernel: int, hidden: int, classes: int = 10) -> nn.Sequential:
    """The profile's CNN for 28 x 28 digits: two convolutions with stride 2 (``kernel`` x
    ``kernel``, padding 1, ``channels`` = [c1, c2]), a dense hidden layer of ``hidden``
    neurons and the scores, every layer with a bias, ReLU between."""
    c1, c2 = channels
    side = (28 + 2 - kernel) // 2 + 1
    side = (side + 2 - kernel) // 2 + 1
    return nn.Sequential(
        nn.Conv2d(1, c1, kernel, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, kernel, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(c2 * side * side, hidden),
        nn.ReLU(),
        nn.Linear(hidden, classes),
    )


def trained_own_cnn(prof: dict[str, Any], device: torch.device) -> tuple[nn.Sequential, float]:
    """The profile's CNN (:func:`own_cnn`, settings ``own``) trained with cross-entropy on
    the profile's training images (Adam at ``own.lr``, times ``own.decay_factor`` from
    each of ``own.decay_epochs`` on), and the seconds training took."""
    p, subset = prof["own"], prof["train"]["train_subset"]
    x, y = load_mnist("train")
    if subset is not None:
        x, y = x[:subset], y[:subset]
    torch.manual_seed(p["seed"])
    cnn = own_cnn(p["channels"], p["kernel"], p["hidden"]).to(device)
    start = time.perf_counter()
    loss = StepDecayed(cross_entropy, p["decay_epochs"], p["decay_factor"])
    fit(image_model(cnn), loss, x, y, epochs=p["epochs"], batch_size=p["batch_size"],
        lr=p["lr"], seed=p["seed"], desc="CNN")  # fmt: skip
    return cnn, time.perf_counter() - start


def own_network(profile: str | dict[str, Any]) -> dict[str, Any]:
    """The CNN and f_nt side by side (module notes): per network its clean test
    accuracy and parameter count, and per threat set (E,) curves of certified and
    attack-robust accuracy on the first ``own.images`` test digits (the certificate's
    first two levels, and its third on the digits the attack and those leave open, as
    Figure 12's brackets), the bracket's digit counts, the certified digits the attack
    breaks, and seconds per digit certifying (the attack not counted)."""
    prof = _profile(profile)
    p, a = prof["own"], prof["local"]["attack"]
    eps = [float(e) for e in p["eps"]]
    nt = get_model("nt", prof, section=4)
    config = {"own": p, "attack": a, "modes": prof["local"]["modes"], "nt": nt.config,
              "train_subset": prof["train"]["train_subset"]}  # fmt: skip

    def compute() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        dev = default_device()
        cnn, train_s = trained_own_cnn(prof, dev)
        xt, yt = load_mnist("test")
        clean = {"cnn": accuracy(image_model(cnn), xt.to(dev), yt.to(dev))}
        clean["nt"] = float(nt.test_accuracy)
        xt, yt = xt[: p["images"]].double().to(dev), yt[: p["images"]].to(dev)
        nets = {"cnn": frozen(cnn).double().eval(), "nt": frozen(nt.model).to(dev).double()}
        value: dict[str, torch.Tensor] = {}
        seconds: dict[str, float] = {}
        for name, net in nets.items():
            for t in THREATS:
                start = time.perf_counter()
                modes = prof["local"]["modes"]
                ok = certified(net, xt, yt, eps, threat=t, modes=modes, levels=CASCADE[:2])
                spent = time.perf_counter() - start
                robust = attack_robust(net, xt, yt, eps, a, t)
                start = time.perf_counter()
                for row, e in enumerate(eps):  # the third level where the attack left them open
                    open_ = np.nonzero(robust[row] & ~ok[row])[0]
                    if e > 0 and len(open_):
                        idx = torch.from_numpy(open_).to(xt.device)
                        more = certified(
                            net, xt[idx], yt[idx], [e], threat=t, modes=modes, levels=CASCADE[2:3]
                        )
                        ok[row, open_] |= more[0]
                seconds[f"{name}_{t.name}"] = spent + time.perf_counter() - start
                value[f"{name}_certified_{t.name}"] = torch.from_numpy(ok)
                value[f"{name}_robust_{t.name}"] = torch.from_numpy(robust)
        params = {n: sum(q.numel() for q in m.parameters()) for n, m in nets.items()}
        meta = {"seconds": seconds, "clean": clean, "params": params, "train_s": train_s}
        return value, meta

    value, meta = cached_experiment("own_network", VERSIONS, config, compute)
    n = int(p["images"])
    out: dict[str, Any] = {"eps": np.asarray(eps), "images": n, "nets": {}}
    for name in ("cnn", "nt"):
        per: dict[str, Any] = {"clean": meta["clean"][name], "params": meta["params"][name]}
        for t in THREATS:
            ok = np.asarray(value[f"{name}_certified_{t.name}"])
            robust = np.asarray(value[f"{name}_robust_{t.name}"])
            per[t.name] = {
                "certified": ok.mean(1),
                "robust": robust.mean(1),
                "certified_ci": [rate_interval(c) for c in ok],
                "robust_ci": [rate_interval(r) for r in robust],
                "bracket_digits": robust.sum(1) - ok.sum(1),
                "broken": int((ok & ~robust).sum()),
                "per_digit_s": meta["seconds"][f"{name}_{t.name}"] / max(n, 1),
            }
        out["nets"][name] = per
    out["train_s"] = meta["train_s"]
    out["shape"] = p

    out["report_eps"] = float(p["report_eps"])
    return out


_LABEL = {"cnn": "CNN (biases)", "nt": "$f_{\\text{nt}}$"}


def own_network_table(d: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per network and threat set: certified / attack-robust accuracy at each eps."""
    header = ["network", "flows"] + [f"eps {e:g}" for e in d["eps"]]
    rows = []
    for name, per in d["nets"].items():
        for t in THREATS:
            c, r = per[t.name]["certified"], per[t.name]["robust"]
            cells = [f"{ci:.3f} / {ri:.3f}" for ci, ri in zip(c, r, strict=True)]
            rows.append([_LABEL[name], t.name, *cells])
    return header, rows


def own_network_summary(d: dict[str, Any]) -> dict[str, Any]:
    """The numbers the section's prose reads, at the profile's ``own.report_eps`` where
    one eps is named; each rate as text with its 95% Wilson interval over the digits."""
    at = d["report_eps"]
    i = list(d["eps"]).index(at)
    cnn, nt = d["nets"]["cnn"], d["nets"]["nt"]
    out: dict[str, Any] = {
        "own_images": d["images"],
        "own_cnn_clean": cnn["clean"],
        "own_nt_clean": nt["clean"],
        "own_cnn_params": f"{cnn['params']:,}",
        "own_nt_params": f"{nt['params']:,}",
        "own_at": f"{at:g}",
        "own_train_s": d["train_s"],
        "own_cnn_shape": _shape_text(d["shape"]),
        "own_train_plan": _plan_text(d["shape"]),
        "own_broken": count_noun(
            sum(per[t.name]["broken"] for per in (cnn, nt) for t in THREATS), "certified digit"
        ),
    }
    for name, per in (("cnn", cnn), ("nt", nt)):
        for t in THREATS:
            s = per[t.name]
            out[f"own_{name}_{t.name}_cert"] = s["certified_ci"][i].text()
            out[f"own_{name}_{t.name}_robust"] = s["robust_ci"][i].text()
            out[f"own_{name}_{t.name}_gap"] = float(s["robust"][i] - s["certified"][i])
            out[f"own_{name}_{t.name}_s"] = s["per_digit_s"]
    cnn_s = sum(cnn[t.name]["per_digit_s"] for t in THREATS)
    nt_s = sum(nt[t.name]["per_digit_s"] for t in THREATS)
    out["own_ratio"] = cnn_s / max(nt_s, 1e-12)
    return out


def _shape_text(p: dict[str, Any]) -> str:
    """The CNN's layers in words, from the profile's ``own`` settings."""
    c1, c2 = p["channels"]
    k = p["kernel"]
    return (
        f"convolutions of {c1} and {c2} channels, {k} x {k}, stride 2, then "
        f"{p['hidden']} hidden neurons"
    )


def _plan_text(p: dict[str, Any]) -> str:
    """The CNN's training plan in words: epochs and the learning rate's decays."""
    plan = f"{count_noun(p['epochs'], 'epoch')} at a learning rate of {p['lr']:g}"
    decay = decay_text(p["decay_epochs"], p["decay_factor"])
    return f"{plan}, {decay}" if decay else plan
