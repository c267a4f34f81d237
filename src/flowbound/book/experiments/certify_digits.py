"""Beyond the paper: certifying individual digits (Figure 12, its table, the report row)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from flowbound.attacks.registry import attack
from flowbound.book.glue import count_noun, count_word, decay_text
from flowbound.book.trained import get_model
from flowbound.certificates import ellipsoid as ell
from flowbound.certificates.local import CASCADE, SPLIT_PIXELS, certified
from flowbound.certificates.registry import bound, certified_digits
from flowbound.data import load_mnist
from flowbound.device import default_device
from flowbound.networks.chain import image_model, is_own
from flowbound.networks.view import classifier_input, view
from flowbound.progress import bar as progress_bar
from flowbound.stats import rate_interval
from flowbound.threat.geometry import aabb_lambda, flow_norm
from flowbound.threat.sets import FULL, TIED, ThreatSet
from flowbound.training.certified import OPTIONAL

from ._common import FIRST_VERSION, cached_experiment, frozen, record
from ._common import profile_dict as _profile
from .deltas import decrease_of
from .intro import stadv_evaluation, stadv_rates

__all__ = [
    "at_eps",
    "attack_robust",
    "bracket_sides",
    "bracket_table",
    "cached_run",
    "cert_comparison",
    "cert_comparison_summary",
    "cert_comparison_table",
    "cert_search",
    "cert_search_summary",
    "certified_accuracy",
    "certified_on_attacked",
    "CertifiedAccuracy",
    "closer_side",
    "example_text",
    "figure12_summary",
    "known_text",
    "known_within",
    "largest_eps",
    "local_summary",
    "local_table",
    "run_key",
    "open_on_attacked",
    "sides_summary",
]

#: Each experiment's code version (in its cache key): bump one when its results change.
#: certified_accuracy 3: the certificate keeps the kink, flow_apgd on both threat sets;
#: 4 (and bracket_sides 2): the kinked level bounds the slope and kink terms jointly too;
#: 5: the refinement on the attacked digits left open; 6: the cascade's third level
#: (each neuron's own slopes) on the attacked digits left open; 7: and its fourth
#: (those slopes stepped); 8: the fourth with the exact ellipsoid only; 9: the fourth
#: splits the flow's sign for the margins it leaves open.
VERSIONS = {"certified_accuracy": FIRST_VERSION + 7, "bracket_sides": FIRST_VERSION + 1}

#: Profile keys that do not change one network's results (adding a network or a
#: report eps recomputes nothing).
_NOT_IN_KEY = ("variants", "report_eps", "branch")

#: The threat sets Figure 12 attacks, each with the certificates that cover it
#: (``Bound.threat``), and the CertifiedAccuracy field of each attack's curve.
THREATS = (TIED, FULL)
_ATTACK_FIELD = {TIED.name: "attack", FULL.name: "attack_full"}


@dataclass(frozen=True)
class CertifiedAccuracy:
    """Figure 12's data (:func:`certified_accuracy`), per network name.

    ``eps`` (E,) the grid; ``kinds`` the certificates; ``images`` digits certified,
    ``attack_images`` the first of them attacked. ``accuracy[network][certificate]``
    (E,) certified accuracy; ``attack[network]`` / ``attack_full[network]`` (E,) the
    accuracy that survives flow_apgd on tied / full flows, ``attack_ci`` /
    ``attack_full_ci`` (E, 2) their 95% intervals; ``certified_attacked[network][threat]``
    and ``bracket[network][threat]`` (E,) the tightest certificate of a threat set on the
    attacked digits and the attack-robust minus certified accuracy there, and
    ``bracket_digits[network][threat]`` (E,) the same as a count of attacked digits
    (exact, for comparisons); ``violations[network][certificate]`` certified (digit,
    eps) cases with eps > 0 that the attack on the certificate's threat set broke (must
    be 0) among ``checked`` (eps = 0 is left out: there certified means classified
    correctly and nothing is attacked); ``refined[network][certificate]`` (digit, eps)
    cases that the certificate's ``refine`` level added on the attacked digits (counted in
    the bracket and the soundness check, not in ``accuracy``); ``seconds`` per part."""

    eps: np.ndarray
    kinds: list[str]
    images: int
    attack_images: int
    accuracy: dict[str, dict[str, np.ndarray]]
    attack: dict[str, np.ndarray]
    attack_ci: dict[str, np.ndarray]
    attack_full: dict[str, np.ndarray]
    attack_full_ci: dict[str, np.ndarray]
    certified_attacked: dict[str, dict[str, np.ndarray]]
    bracket: dict[str, dict[str, np.ndarray]]
    bracket_digits: dict[str, dict[str, np.ndarray]]
    violations: dict[str, dict[str, int]]
    checked: dict[str, dict[str, int]]
    refined: dict[str, dict[str, int]]
    seconds: dict[str, dict[str, float]]

    def only(self, names: tuple[str, ...] | list[str]) -> CertifiedAccuracy:
        """The same data for the networks ``names`` only (in that order)."""
        per_network = (
            "accuracy", "attack", "attack_ci", "attack_full", "attack_full_ci",
            "certified_attacked", "bracket", "bracket_digits", "violations", "checked",
            "seconds", "refined",
        )  # fmt: skip
        return replace(self, **{f: {n: getattr(self, f)[n] for n in names} for f in per_network})


def _apgd(model, x, y, eps: float, a: dict[str, Any], threat: ThreatSet = TIED):
    """``flow_apgd`` at the profile's attack settings ``a`` (``local.attack``): the
    search in ``search_dtype``, what it finds checked in the model's dtype (float64)."""
    return attack(f"flow_apgd_{threat.name}").run(
        model, x, y, eps, a["seed"], steps=a["steps"], restarts=a["restarts"],
        targets=a["targets"], search_dtype=getattr(torch, a["search_dtype"]),
    )  # fmt: skip


def attack_robust(model, x, y, eps_list, a: dict[str, Any], threat: ThreatSet) -> np.ndarray:
    """(E, A) bool: classified correctly and not broken by ``flow_apgd`` at each eps on
    ``threat``; the classifier of an STN is attacked on the STN's output (what the
    certificates cover). The threat sets grow with eps, so a digit broken at one eps is
    broken at every larger one (its flow stays feasible) and is not attacked again."""
    if is_own(model):
        net, x = classifier_input(model, x)
    else:  # any other network: the images in the shape its first layer reads
        net = image_model(model)
    with torch.no_grad():
        correct = (net(x).argmax(1) == y).cpu().numpy()
    out = np.zeros((len(eps_list), len(x)), dtype=bool)
    broken = ~correct
    order = np.argsort(eps_list, kind="stable")
    bar = progress_bar(total=len(order), desc=f"flow_apgd ({threat.name})", unit="eps")
    for row in order:
        eps = eps_list[row]
        rows = np.nonzero(~broken)[0]
        if eps > 0 and len(rows):
            idx = torch.from_numpy(rows).to(x.device)
            res = _apgd(net, x[idx], y[idx], eps, a, threat)
            broken[rows[res.success.cpu().numpy()]] = True
        out[row] = ~broken
        bar.update(1)
    bar.close()
    return out


def run_key(trained, prof: dict[str, Any]) -> dict[str, Any]:
    """The cache key of one network's :func:`certified_accuracy` run."""
    return {
        "model": trained.config,
        "local": {k: v for k, v in prof["local"].items() if k not in _NOT_IN_KEY},
        "tol": prof["possibility"]["tol"],
    }


def certified_accuracy(profile: str | dict[str, Any]) -> CertifiedAccuracy:
    """Figure 12: certified accuracy against eps, per Section-4 network and certificate
    (the profile's ``local.kinds``: global ones read Figure 5's way, per-digit ones per
    image), and the accuracy that survives ``flow_apgd`` on tied and on full flows on
    the first ``attack.images`` digits (an upper bound on the truth), with the count of
    certified digits that the attack on a certificate's own threat set breaks (must be
    0), the bracket per threat set (attack-robust minus certified accuracy, on the
    attacked digits, the tightest certificate of that threat set per digit), and the
    seconds each certificate took (a global one's Delta is shared with Figure 5,
    :func:`~.deltas.decrease_of`: its seconds count the SDPs only where this
    experiment solved them first).
    """
    prof = _profile(profile)
    p = prof["local"]
    eps = [float(e) for e in p["eps"]]
    x, y = load_mnist("test")
    if p["images"] is not None:
        x, y = x[: p["images"]], y[: p["images"]]
    kinds = list(p["kinds"])
    for kind in kinds:
        bound(kind)  # an unknown name fails here, before any work
    out: dict[str, Any] = {"eps": np.asarray(eps), "kinds": kinds, "images": len(x)}
    for key in ("accuracy", "attack", "attack_ci", "attack_full", "attack_full_ci"):
        out[key] = {}
    for key in (
        "certified_attacked", "bracket", "bracket_digits", "violations", "checked", "seconds",
        "refined",
    ):  # fmt: skip
        out[key] = {}
    attacked = min(p["attack"]["images"], len(x))
    for name in p["variants"]:
        trained = get_model(name, prof, section=4)
        config = run_key(trained, prof)

        def compute(trained=trained) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            dev = default_device()  # certificates stay float64 wherever they run
            model = frozen(trained.model).to(dev).double()
            xd, y_dev = x.double().to(dev), y.to(dev)
            value, seconds = {}, {}
            for kind in kinds:
                start = time.perf_counter()
                delta = None
                if not bound(kind).local:
                    delta = decrease_of(trained, kind, prof["possibility"]["tol"])
                ok = certified_digits(
                    model, xd, y_dev, eps, kind, delta=delta, modes=p["modes"],
                    classifier_only=True,  # an STN: its classifier on its output, as stated
                )  # fmt: skip
                value[f"certified_{kind}"] = torch.from_numpy(ok)
                value[kind] = torch.from_numpy(ok.mean(1).astype(np.float64))
                seconds[kind] = time.perf_counter() - start
            a = p["attack"]
            for t in THREATS:
                start = time.perf_counter()
                robust = attack_robust(model, xd[:attacked], y_dev[:attacked], eps, a, t)
                value[f"attack_{t.name}"] = torch.from_numpy(robust)
                seconds[f"attack_{t.name}"] = time.perf_counter() - start
            for kind in kinds:  # the dearer certificate on the attacked digits left open
                if bound(kind).refine is not None:
                    start = time.perf_counter()
                    value[f"refined_{kind}"] = torch.from_numpy(
                        _refined(model, xd[:attacked], y_dev[:attacked], eps, kind, value, p)
                    )
                    seconds[f"refine_{kind}"] = time.perf_counter() - start
            return value, {"seconds": seconds, "attack_images": attacked}

        value, meta = cached_experiment("certified_accuracy", VERSIONS, config, compute)
        n = meta["attack_images"]
        out["accuracy"][name] = {k: value[k] for k in kinds}
        for threat, key in _ATTACK_FIELD.items():
            robust = value[f"attack_{threat}"]
            out[key][name] = robust.mean(1)
            out[f"{key}_ci"][name] = np.array([rate_interval(r)[1:] for r in robust])
            best = certified_on_attacked(value, kinds, threat, n)
            out["certified_attacked"].setdefault(name, {})[threat] = best.mean(1)
            out["bracket"].setdefault(name, {})[threat] = robust.mean(1) - best.mean(1)
            count = robust.sum(1).astype(np.int64) - best.sum(1).astype(np.int64)
            out["bracket_digits"].setdefault(name, {})[threat] = count
        hit = np.asarray(eps) > 0  # at eps = 0 nothing is attacked
        cert = {k: _on_attacked(value, k, n)[hit] for k in kinds}
        out["refined"][name] = {
            k: int((_on_attacked(value, k, n) & ~value[f"certified_{k}"][:, :n]).sum())
            for k in kinds
        }
        out["violations"][name] = {
            k: int((c & ~np.asarray(value[f"attack_{bound(k).threat}"])[hit]).sum())
            for k, c in cert.items()
        }
        out["checked"][name] = {k: int(c.sum()) for k, c in cert.items()}
        out["seconds"][name] = meta["seconds"]
    out["attack_images"] = attacked
    return CertifiedAccuracy(**out)


def cached_run(profile: str | dict[str, Any], variant: str) -> tuple[Any, dict[str, Any]]:
    """One network's Figure 12 run as cached (computed first if absent): the trained
    network and the run's arrays (``attack_<threat>``, ``certified_<kind>``,
    ``refined_<kind>``: (E, digits) per eps of ``local.eps``)."""
    prof = _profile(profile)
    certified_accuracy({**prof, "local": {**prof["local"], "variants": [variant]}})
    trained = get_model(variant, prof, section=4)

    def missing() -> None:
        raise RuntimeError(f"Figure 12's cached run of {variant} is missing")

    value, _ = cached_experiment("certified_accuracy", VERSIONS, run_key(trained, prof), missing)
    return trained, value


def certified_on_attacked(
    value: dict[str, Any], kinds, threat: str, n: int, refined: bool = True
) -> np.ndarray:
    """(E, n) the attacked digits certified by any of ``kinds`` that covers ``threat``
    (refined where it was, unless ``refined=False``: the levels every digit gets), as
    Figure 12's bracket counts them."""
    best = np.zeros_like(np.asarray(value[f"attack_{threat}"]), dtype=bool)
    for k in kinds:
        if bound(k).threat == threat:
            best = best | _on_attacked(value, k, n, refined)
    return best


def open_on_attacked(value: dict[str, Any], kinds, threat: str, n: int) -> np.ndarray:
    """(E, n) the attacked digits left open on ``threat``: unbroken by the attack and
    certified by none of ``kinds`` (the bracket, in digits)."""
    robust = np.asarray(value[f"attack_{threat}"], dtype=bool)
    return robust & ~certified_on_attacked(value, kinds, threat, n)


def _on_attacked(value: dict[str, Any], kind: str, n: int, refined: bool = True) -> np.ndarray:
    """(E, n) the certificate ``kind`` on the attacked digits: refined where it was
    (with ``refined``)."""
    more = value.get(f"refined_{kind}") if refined else None
    return np.asarray(more if more is not None else value[f"certified_{kind}"][:, :n])


def _refined(
    model, x, y, eps: list[float], kind: str, value, p: dict[str, Any], refine=None
) -> np.ndarray:
    """(E, A) bool: ``kind`` on the attacked digits, and its ``refine`` certificate on
    those the attack leaves open (classified correctly, neither certified nor broken):
    at every eps > 0 where they are at most ``local.sloped_bracket`` of the digits with
    the profile's ``modes``, then where those still open are at most
    ``local.refine_bracket`` with every eigenvector (the exact ellipsoid): the dearer
    levels run where the truth is nearly known, on few digits. ``refine``: another
    certificate in place of ``kind``'s own (``benchmarks/refine_levels.py``)."""
    b = bound(kind)
    refine = b.refine if refine is None else refine
    ok = np.array(value[f"certified_{kind}"][:, : len(x)])  # tensors, or arrays if cached
    robust = np.asarray(value[f"attack_{b.threat}"])
    steps = ((p["modes"], p["sloped_bracket"]), (None, p["refine_bracket"]))
    for row, e in enumerate(eps):
        for modes, share in steps:
            open_ = np.nonzero(robust[row] & ~ok[row])[0]
            if e == 0 or len(open_) == 0 or len(open_) > share * len(x):
                continue
            idx = torch.from_numpy(open_).to(x.device)
            more = refine(model, x[idx], y[idx], [e], modes=modes, classifier_only=True)
            ok[row, open_] |= np.asarray(more, dtype=bool)[0]
    return ok


def bracket_sides(profile: str | dict[str, Any]) -> dict[str, Any]:
    """Which side of the bracket was loose, measured on one network (``local.sides``,
    tied flows, the attacked digits): at each ``sides.eps``, the share certified by
    the certificate before this chapter kept the kink (one chord per pixel,
    ``certified(kink=False)``) and now, and the share that survives ``flow_pgd`` (the
    former attack, at its settings) and ``flow_apgd`` (Figure 12's attack). Also one
    digit (``sides.example_digit``) read in pixels (Readings table, point 19): the
    largest grid eps certifying it, the uniform shift and the single-pixel move that
    budget admits, and the largest displacement of the flow that first breaks it."""
    prof = _profile(profile)
    p, s = prof["local"], prof["local"]["sides"]
    trained = get_model(s["variant"], prof, section=4)
    x_test, y_test = load_mnist("test")
    n = min(p["attack"]["images"], len(x_test))
    grid = [float(e) for e in p["eps"]]
    config = {
        "model": trained.config,
        "sides": s,
        "attack": p["attack"],
        "modes": p["modes"],
        "images": n,
        "grid": grid,
    }

    def compute() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        dev = default_device()
        model = frozen(trained.model).to(dev).double()
        x, y = x_test[:n].double().to(dev), y_test[:n].to(dev)
        eps = [float(e) for e in s["eps"]]
        value = {
            f"cert_{k}": torch.from_numpy(
                certified(
                    model,
                    x,
                    y,
                    eps,
                    modes=p["modes"],
                    levels=levels,
                    progress=True,
                    classifier_only=True,
                )  # fmt: skip
            )
            for k, levels in (("before", CASCADE[:1]), ("now", CASCADE[:2]))
        }
        with torch.no_grad():
            correct = model(x).argmax(1) == y
        attacks = {
            "pgd": lambda e: attack("flow_pgd").run(
                model, x, y, e, s["seed"], steps=s["steps"], restarts=s["restarts"], lr=s["lr"],
            ),
            "apgd": lambda e: _apgd(model, x, y, e, p["attack"]),
        }  # fmt: skip
        for key, run in attacks.items():
            value[key] = torch.stack([(correct & ~run(e).success).cpu() for e in eps])
        i = s["example_digit"]
        one = certified(
            model, x[i : i + 1], y[i : i + 1], grid, modes=p["modes"], classifier_only=True,
            levels=CASCADE[:2],
        )[:, 0]  # fmt: skip
        value["example_certified"] = torch.from_numpy(one)
        broken = {"eps": float("nan"), "largest_move": float("nan")}
        for e in grid:
            if e == 0:
                continue
            res = _apgd(model, x[i : i + 1], y[i : i + 1], e, p["attack"])
            if bool(res.success[0]):
                broken = {"eps": e, "largest_move": float(res.flows.abs().max())}
                break
        return value, {"broken": broken}

    value, meta = cached_experiment("bracket_sides", VERSIONS, config, compute)
    eps = np.asarray(s["eps"], dtype=np.float64)
    out = {k: np.asarray(v).mean(1) for k, v in value.items() if k != "example_certified"}
    side = x_test.shape[-1]
    certified_at = [e for e, ok in zip(grid, value["example_certified"], strict=True) if ok]
    largest = max(certified_at) if certified_at else 0.0
    lam_max = float(np.max(aabb_lambda(side)))
    shift_cost = float(flow_norm(np.ones((side, side))))  # ||M 1||: a uniform shift by 1 px
    out.update(
        eps=eps,
        images=n,
        variant=s["variant"],
        bracket_before=out["pgd"] - out["cert_before"],
        bracket_now=out["apgd"] - out["cert_now"],
        certificate_side=out["cert_now"] - out["cert_before"],
        attack_side=out["pgd"] - out["apgd"],
        example={
            "digit": s["example_digit"],
            "label": int(y_test[s["example_digit"]]),
            "largest_certified": largest,
            "certified_somewhere": bool(certified_at),
            "shift_cost": shift_cost,
            "lam_max": lam_max,
            "uniform_shift": largest / shift_cost,
            "one_pixel": largest * lam_max,
            "broken_eps": meta["broken"]["eps"],
            "broken_move": meta["broken"]["largest_move"],
        },
    )
    return out


def largest_eps(eps: np.ndarray, acc: np.ndarray, level: float) -> float:
    """The largest eps on the grid up to which the accuracy stays >= level (0 if none)."""
    ok = np.asarray(acc) >= level
    if not ok[0]:
        return 0.0
    bad = np.nonzero(~ok)[0]
    last = (bad[0] - 1) if len(bad) else len(ok) - 1
    return float(eps[last])


def known_within(eps: np.ndarray, digits: np.ndarray, n: int, points: int = 2) -> float:
    """The largest eps on the grid up to which the bracket, ``digits`` of ``n`` attacked
    digits (counts: :attr:`CertifiedAccuracy.bracket_digits`), stays within ``points``
    percentage points (100 digits <= points n, in integers: a bracket of exactly 20 of
    1,000 is within 2 points); 0 if not even at the first eps."""
    ok = 100 * np.asarray(digits, dtype=np.int64) <= points * int(n)
    return largest_eps(eps, ok.astype(np.float64), 1.0)


def local_summary(d: CertifiedAccuracy) -> dict[str, Any]:
    """Per network: the largest eps certifying 50% and 90% under each certificate and
    surviving each attack, the largest bracket on tied flows (attack-robust minus
    certified accuracy on the attacked digits) over the eps where the attack leaves at
    least half of them, with its eps, and per threat set the largest eps up to which
    the bracket is within 2 points (``known``)."""
    rows = {}
    for name, acc in d.accuracy.items():
        attack = {"attack": d.attack[name], "attack_full": d.attack_full[name]}
        gap = d.bracket[name][TIED.name]
        where = attack["attack"] >= 0.5
        worst = int(np.argmax(np.where(where, gap, -np.inf))) if where.any() else 0
        curves = acc | attack
        rows[name] = {
            "eps50": {k: largest_eps(d.eps, a, 0.5) for k, a in curves.items()},
            "eps90": {k: largest_eps(d.eps, a, 0.9) for k, a in curves.items()},
            "max_gap": float(gap[worst]) if where.any() else float("nan"),
            "max_gap_eps": float(d.eps[worst]),
            "known": {
                t: known_within(d.eps, b, d.attack_images)
                for t, b in d.bracket_digits[name].items()
            },
        }
    return rows


def at_eps(d: CertifiedAccuracy, curve: np.ndarray, eps: float) -> float:
    """The value of a curve of :func:`certified_accuracy` at a grid eps (an error off it)."""
    hit = np.nonzero(np.isclose(d.eps, eps))[0]
    if not len(hit):
        raise ValueError(f"eps = {eps} is not on the grid {d.eps.tolist()}")
    return float(np.asarray(curve)[hit[0]])


def local_table(d: CertifiedAccuracy) -> tuple[list[str], list[list[str]]]:
    """Figure 12's table: per network the largest eps certifying 50% / 90% of the test
    digits under each certificate, the same for the attack on each threat set, and the
    largest tied-flow bracket."""
    summary = local_summary(d)
    kinds = [*d.kinds, "attack", "attack_full"]
    labels = [*d.kinds, "attack (tied)", "attack (full)"]
    header = ["network", *[f"{k}: 50% / 90%" for k in labels], "largest bracket (at eps)"]
    rows = []
    for name, s in summary.items():
        cells = [f"{s['eps50'][k]:g} / {s['eps90'][k]:g}" for k in kinds]
        gap = f"{s['max_gap']:.3f} ({s['max_gap_eps']:g})" if np.isfinite(s["max_gap"]) else "-"
        rows.append([f"`{name}`", *cells, gap])
    return header, rows


def bracket_table(d: CertifiedAccuracy) -> tuple[list[str], list[list[str]]]:
    """The bracket per network and threat set at every eps > 0 of the grid: attack-robust
    minus certified accuracy on the attacked digits, and the largest eps up to which it
    stays within 2 points."""
    summary = local_summary(d)
    shown = [i for i, e in enumerate(d.eps) if e > 0]
    header = ["network", "flows", *[f"{d.eps[i]:g}" for i in shown], "within 0.02 up to"]
    rows = []
    for name, brackets in d.bracket.items():
        for threat, b in brackets.items():
            cells = [f"{b[i]:.3f}" for i in shown]
            rows.append([f"`{name}`", threat, *cells, f"{summary[name]['known'][threat]:g}"])
    return header, rows


def cert_search(
    threat: str = TIED.name,
) -> tuple[list[str], list[list[str]], dict[str, Any]]:
    """The certified-training settings search as recorded (``flowbound/records/
    cert_sweep.json``, written by ``benchmarks/cert_sweep.py``: each setting trained on
    the first 55,000 training images and judged on the last 5,000, never on the test
    set), for the settings trained on ``threat``'s flows: a table of the settings, the
    machine that ran each, and their validation numbers, and the record (``adopted``:
    the setting each certified variant of the profile uses). Read, not recomputed: the
    build trains only the adopted recipes."""
    rec = record("cert_sweep.json")
    chosen = {n: r for n, r in rec["settings"].items() if r["threat"] == threat}
    if not chosen:
        raise ValueError(f"cert_search: no setting in the record trains on {threat!r} flows")
    eps = list(next(iter(chosen.values()))["certified"])
    header = ["setting", "changes", "machine", "valid accuracy"]
    header += [f"certified, eps = {e}" for e in eps]
    adopted = set(rec["adopted"].values())
    rows = []
    for name, r in chosen.items():
        change = ", ".join(f"{k} {v}" for k, v in r["setting"].items() if k != "threat")
        mark = " (adopted)" if name in adopted else ""
        cells = [f"{r['certified'][e]:.3f}" for e in eps]
        rows.append([f"`{name}`{mark}", change, r["machine"], f"{r['valid_accuracy']:.4f}", *cells])
    return header, rows, rec


def cert_comparison(
    profile: str | dict[str, Any],
    d: CertifiedAccuracy,
    names: tuple[str, ...] = ("nt", "sdp", "cert"),
):
    """f_cert against f_nt and f_sdp: clean accuracy, training seconds, certified accuracy
    (tied flows) at every eps of Figure 12 (from ``d``, :func:`certified_accuracy`), and
    stAdv success at the claim tau (any iterate and last iterate, among correctly
    classified digits, 95% intervals)."""
    prof = _profile(profile)
    q, p = prof["intro"], prof["possibility"]
    out: dict[str, Any] = {"eps": d.eps, "tau": p["claim_tau"], "rows": {}}
    for name in names:
        trained = get_model(name, prof, section=4)
        rates = stadv_rates(
            stadv_evaluation(
                trained, tau=p["claim_tau"], images=q["eval_images"], steps=q["eval_steps"]
            )
        )
        out["rows"][name] = {
            "accuracy": trained.test_accuracy,
            "train_seconds": trained.train_seconds,
            "certified": d.accuracy[name]["local_tied"] if name in d.accuracy else None,
            "stadv": rates["success"],
            "stadv_final": rates["success_final"],
        }
    return out


# --- what the Certifying chapter glues: one dict per section, names as in its prose ---


def figure12_summary(profile: str | dict[str, Any], d: CertifiedAccuracy) -> dict[str, Any]:
    """Figure 12's numbers the chapter cites (``d`` from :func:`certified_accuracy`):
    sizes and settings, f_nt's certified and attack-robust accuracy at eps 0.1, 0.2,
    0.4 and 0.7 on both threat sets and under the SDP at 0.05 and 0.1, the eps where
    the attacks leave half, the largest bracket, the soundness count and, per network,
    up to which eps the truth is known within 2 points (``known``)."""
    prof = _profile(profile)
    p = prof["local"]
    summary = local_summary(d)
    nt = d.accuracy["nt"]
    out: dict[str, Any] = {
        "profile": prof["name"],
        "n_images": d.images,
        "n_attack": d.attack_images,
        "eps_max": float(d.eps[-1]),
        "nt_attack_last": float(d.attack["nt"][-1]),
        "modes": p["modes"],
        "modes_text": _modes_text(p["modes"]),
        "fig12_bounds": bounds_text(d.kinds),
    }
    for key in ("steps", "restarts", "targets", "search_dtype"):
        out[f"attack_{key}"] = p["attack"][key]
    for e in (0.1, 0.2, 0.4, 0.7):
        key = f"{e:g}".replace(".", "")
        out[f"nt_tied_{key}"] = at_eps(d, nt["local_tied"], e)
        out[f"nt_full_{key}"] = at_eps(d, nt["local_full"], e)
        out[f"nt_attack_{key}"] = at_eps(d, d.attack["nt"], e)
        out[f"nt_attack_full_{key}"] = at_eps(d, d.attack_full["nt"], e)
    out |= {
        "nt_sdp_005": at_eps(d, nt["sdp"], 0.05),
        "nt_sdp_01": at_eps(d, nt["sdp"], 0.1),
        "nt_half_attack": summary["nt"]["eps50"]["attack"],
        "nt_half_attack_full": summary["nt"]["eps50"]["attack_full"],
        "nt_gap": summary["nt"]["max_gap"],
        "nt_gap_eps": summary["nt"]["max_gap_eps"],
        "nt_gap_text": (
            f"is {summary['nt']['max_gap']:.3f} (at eps = {summary['nt']['max_gap_eps']:g})"
            if np.isfinite(summary["nt"]["max_gap"])
            else "is not defined: the attack leaves fewer than half of the digits at every eps"
        ),
        "violations": sum(sum(v.values()) for v in d.violations.values()),
        "checked": sum(sum(v.values()) for v in d.checked.values()),
        "n_checked_eps": int((d.eps > 0).sum()),
        "refine_bracket": p["refine_bracket"],
        "sloped_bracket": p["sloped_bracket"],
        "descent_rate": ell.DESCENT_RATE,
        "descent_steps": ell.DESCENT_STEPS,
        "split_pixels": count_word(SPLIT_PIXELS),
        "n_refined": sum(sum(v.values()) for v in d.refined.values()),
        "known": "; ".join(
            f"f_{name}: {known_text(s['known'][TIED.name])} for {TIED.label} and "
            f"{known_text(s['known'][FULL.name])} for {FULL.label}"
            for name, s in summary.items()
        ),
    }
    return out


def _modes_text(modes: int | None) -> str:
    """How many eigenvectors of M^T M a certificate keeps, as prose."""
    return "all the" if modes is None else f"the {modes} smoothest"


def bounds_text(kinds: list[str]) -> str:
    """The certificates of a figure as a caption lists them (their registered labels)."""
    labels = [bound(k).label for k in kinds]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def known_text(eps: float) -> str:
    """How far the truth is known within 2 points, as prose: "up to eps = 0.3", or "at
    no eps > 0 of the grid" when only the unattacked eps = 0 qualifies."""
    return f"up to eps = {eps:g}" if eps > 0 else "at no eps > 0 of the grid"


def sides_summary(
    profile: str | dict[str, Any], d: CertifiedAccuracy, sides: dict[str, Any]
) -> dict[str, Any]:
    """The "which side was loose" paragraph (``sides`` from :func:`bracket_sides`): the
    brackets before and now and what each side closed, per eps, which side was loose,
    and the example digit read in pixels (Readings table, point 19)."""
    s = _profile(profile)["local"]["sides"]

    def at(values, signed: bool = False) -> str:
        form = "+.3f" if signed else ".3f"
        return ", ".join(f"{v:{form}} at {e:g}" for e, v in zip(sides["eps"], values, strict=True))

    closed = (float(sides["certificate_side"].sum()), float(sides["attack_side"].sum()))
    e_ = sides["example"]
    broken = (
        f"The attack first breaks it at eps = {e_['broken_eps']:g}, with a tied flow that "
        f"moves one pixel by at most {e_['broken_move']:.2f} px along each axis "
        f"({math.sqrt(2) * e_['broken_move']:.2f} px diagonally)."
        if not np.isnan(e_["broken_eps"])  # broken somewhere on the grid
        else f"The attack breaks it nowhere on the grid (up to eps = {d.eps[-1]:g})."
    )
    return {
        "sides_n": sides["images"],
        "sides_net": f"f_{sides['variant']}",
        "sides_steps": s["steps"],
        "sides_restarts": s["restarts"],
        "sides_before": at(sides["bracket_before"]),
        "sides_now": at(sides["bracket_now"]),
        "sides_cert": at(sides["certificate_side"] + 0.0, signed=True),
        # attack_side is what the new attack took off the robust share: its change is minus
        # that (0.0 - x, so that no change reads +0.000, not -0.000)
        "sides_attack": at(0.0 - sides["attack_side"], signed=True),
        "loose_side": closer_side(*closed),
        "ex_digit": e_["digit"],
        "ex_label": e_["label"],
        "ex_eps": e_["largest_certified"],
        "ex_shift": e_["uniform_shift"],
        "ex_pixel": e_["one_pixel"],
        "ex_broken": broken,
        "ex_text": example_text(e_, f"f_{sides['variant']}"),
        "shift_cost": e_["shift_cost"],
        "lam_max": e_["lam_max"],
    }


def example_text(e_: dict[str, Any], net: str) -> str:
    """The example digit of :func:`bracket_sides` read in pixels, for every case: certified
    up to some eps > 0 (what that budget admits, per axis and diagonally: a tied flow
    moves both coordinates of a pixel by r_i), certified only at eps = 0, or not even
    classified correctly."""
    head = f"Test digit {e_['digit']} (a {e_['label']})"
    if e_["largest_certified"] > 0:
        shift, pixel = e_["uniform_shift"], e_["one_pixel"]
        return (
            f"{head} is certified on {net} up to eps = {e_['largest_certified']:g} on the "
            f"grid: every tied flow of that budget leaves it a {e_['label']}, yet the budget "
            f"admits a uniform shift of only {shift:.3f} px along each axis "
            f"({math.sqrt(2) * shift:.3f} px diagonally), while a single pixel may move up "
            f"to {pixel:.3f} px along each axis."
        )
    if e_["certified_somewhere"]:
        return f"{head} is classified correctly by {net} but certified at no eps > 0 of the grid."
    return f"{head} is misclassified by {net}, so it is certified nowhere."


def closer_side(certificate: float, attack: float) -> str:
    """Which side closed more of the bracket, summed over the budgets (each side's
    closing: the certificate's gain in certified share, the attack's drop in robust
    share; either may be negative), as the sentence's subject and verb."""
    if certificate > attack:
        return "the certificate closed more of the bracket than the attack"
    if attack > certificate:
        return "the attack closed more of the bracket than the certificate"
    return "the certificate and the attack closed the same share of the bracket"


def cert_search_summary(profile: str | dict[str, Any], search: dict[str, Any]) -> dict[str, Any]:
    """What the chapter cites of the certified-training settings search (``search`` from
    :func:`cert_search`): the chord and kinked settings' validation numbers, each
    adopted setting's, whether the profile's f_cert and f_cert_full are the adopted
    settings, and the full-flow search's frontier in words (``full_frontier_text``)."""
    out: dict[str, Any] = {}
    runs = search["settings"]
    for key in ("chord", "kinked"):
        r = runs[key]
        out[f"{key}_1"] = r["certified"]["1"]
        out[f"{key}_15"] = r["certified"]["1.5"]
        out[f"{key}_acc"] = r["valid_accuracy"]
        out[f"{key}_machine"] = r["machine"]
    prof = _profile(profile)
    variants = prof["variants"]
    for variant, adopted in search["adopted"].items():
        r = runs[adopted]
        tag = r["threat"]
        out[f"adopted_{tag}_name"] = adopted
        out[f"adopted_{tag}_acc"] = r["valid_accuracy"]
        out[f"adopted_{tag}_machine"] = r["machine"]
        if r["train_seconds"] is not None:
            out[f"adopted_{tag}_train_min"] = round(r["train_seconds"] / 60)
        for e, v in r["certified"].items():
            out[f"adopted_{tag}_{e.replace('.', '')}"] = v
        settings = variants[variant]
        same = all(
            (prof["hidden"].get(k[7:]) if k.startswith("hidden.") else settings.get(k)) == v
            for k, v in r["setting"].items()
            if not k.startswith("train.")
        )
        out[f"adopted_{tag}_text"] = (
            f"the adopted setting ({adopted})"
            if same
            else f"not the adopted setting ({adopted}): this profile changes it"
        )
    out["full_frontier_text"] = _frontier_text(runs, FULL.name)
    if "adopted_full_acc" in out:
        gap = out["adopted_tied_acc"] - out["adopted_full_acc"]
        side = "below" if gap > 0 else "above"
        out["full_clean_gap_text"] = (
            f"{100 * abs(gap):.1f} points {side}" if abs(gap) >= 5e-4 else "the same as"
        )
    return out


def _frontier_text(runs: dict[str, Any], threat: str, clean: float = 0.95) -> str:
    """The search's frontier on ``threat``'s flows in words: over the settings trained on
    them, the most certified at the largest recorded eps, and the most among those with a
    validation clean accuracy of at least ``clean``."""
    mine = {n: r for n, r in runs.items() if r["threat"] == threat}
    if not mine:
        return f"no setting was trained on {threat} flows"
    at = max(next(iter(mine.values()))["certified"], key=float)

    def best(names):
        n = max(names, key=lambda k: mine[k]["certified"][at])
        return n, mine[n]

    name, r = best(mine)
    text = (
        f"over the {count_noun(len(mine), 'setting')} trained on {threat} flows, the most "
        f"certified at eps = {at} is {r['certified'][at]:.3f} ({name}, clean "
        f"{r['valid_accuracy']:.4f})"
    )
    good = [n for n, v in mine.items() if v["valid_accuracy"] >= clean]
    if not good:
        return text + f"; none reaches a clean accuracy of {clean:g}"
    if name in good:
        return text + f", at a clean accuracy of at least {clean:g}"
    name, r = best(good)
    return text + (
        f"; among those with a clean accuracy of at least {clean:g}, "
        f"{r['certified'][at]:.3f} ({name}, clean {r['valid_accuracy']:.4f})"
    )


#: The eps at which the chapter compares f_cert with f_nt and f_sdp (those on the grid).
_CERT_EPS = (0.2, 0.4, 0.7, 1.0, 1.5)


def cert_comparison_summary(
    profile: str | dict[str, Any], d: CertifiedAccuracy, cmp: dict[str, Any]
) -> dict[str, Any]:
    """f_cert's recipe and results as the chapter cites them (``cmp`` from
    :func:`cert_comparison`): its training settings, clean accuracy, training time,
    certified accuracy at the eps of :data:`_CERT_EPS` on the grid, and the largest eps
    certifying half."""
    prof = _profile(profile)
    settings = prof["variants"]["cert"]
    recipe = {**OPTIONAL, **settings}  # the optional settings as CertLoss reads them
    cert = cmp["rows"]["cert"]
    out: dict[str, Any] = {
        "cert_ramp": settings["ramp_epochs"],
        "cert_ramp_text": count_noun(settings["ramp_epochs"], "epoch"),
        "cert_n_seeds": count_noun(len(prof["possibility"]["seeds"]), "training seed"),
        "cert_shape": _shape(get_model("cert", prof, section=4).model),
        "cert_eps": settings["eps"],
        "cert_kappa": settings["kappa"],
        "cert_decay_text": "the learning rate "
        + (decay_text(recipe["decay_epochs"], recipe["decay_factor"]) or "held constant"),
        "cert_batch": settings["cert_batch"],
        "cert_batch_text": count_noun(settings["cert_batch"], "digit"),
        "cert_modes": settings["modes"],
        "cert_modes_text": _modes_text(settings["modes"]),
        "cert_relaxation": "the kink in the ellipsoid (the certificate itself)"
        if settings["kink"]
        else "one chord per pixel (the first level of the certificate's cascade)",
        "cmp_tau": cmp["tau"],
        "cert_acc": cert["accuracy"],
        "cert_train_s": cert["train_seconds"],
    }
    for e in (e for e in _CERT_EPS if e in cmp["eps"].tolist()):
        out[f"cert_at_{e:g}".replace(".", "")] = at_eps(d, cert["certified"], e)
    out["cert_half"] = largest_eps(d.eps, cert["certified"], 0.5)
    full = d.accuracy["cert"][f"local_{FULL.name}"]  # f_cert against full flows
    near = d.eps[d.eps <= 0.5 + 1e-12].max()  # eps 0.5, or the grid's nearest below
    out["cert_fullflows_eps"] = float(near)
    out["cert_fullflows_at"] = at_eps(d, full, near)
    out["cert_fullflows_at_1"] = at_eps(d, full, 1.0)
    return out


def _shape(model: torch.nn.Module) -> str:
    """A one-hidden-layer network's shape as inputs-hidden-classes ("784-500-10")."""
    w = view(model).w
    return f"{w.shape[1]}-{w.shape[0]}-{view(model).classes}"


def cert_comparison_table(
    d: CertifiedAccuracy, cmp: dict[str, Any]
) -> tuple[list[str], list[list[str]]]:
    """f_cert beside f_nt and f_sdp: clean accuracy, training seconds, certified accuracy
    at the eps of :data:`_CERT_EPS` on the grid, stAdv's success (any / last iterate)."""
    shown = [e for e in _CERT_EPS if e in cmp["eps"].tolist()]
    rows = [
        [f"`{name}`", f"{r['accuracy']:.4f}", f"{r['train_seconds']:.0f}",
         *[f"{at_eps(d, r['certified'], e):.3f}" for e in shown],
         r["stadv"].text(), r["stadv_final"].text()]
        for name, r in cmp["rows"].items()
    ]  # fmt: skip
    header = ["network", "clean accuracy", "training (s)",
              *[f"certified, eps = {e:g}" for e in shown],
              f"stAdv success, tau = {cmp['tau']:g} (any iterate)", "(last iterate)"]  # fmt: skip
    return header, rows
