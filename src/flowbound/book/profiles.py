"""Named profiles (``smoke``, ``paper``): plain JSON data, part of every cache key.

A profile is checked when it is loaded (:func:`validate_profile`): a JSON
syntax error, a missing or misspelt key, a wrong type or a value out of
range is a :class:`ProfileError` that names the file and the key, before
anything trains or is cached.

Used in: every chapter (its ``profile`` papermill parameter) and the CLI.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["PROFILES", "ProfileError", "load_profile", "validate_profile", "with_seed"]

#: Profile names, smallest first.
PROFILES: tuple[str, ...] = ("smoke", "paper")


class ProfileError(ValueError):
    """A profile file that cannot be used: names the file and the key."""


def _int(low: int) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= low
        return None if ok else f"an integer >= {low}"

    return check


def _num(low: float, high: float = math.inf, *, open_low: bool = False) -> Callable:
    def check(v: Any) -> str | None:
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (v > low if open_low else v >= low) and v <= high
        bound = f"{'>' if open_low else '>='} {low:g}" + (
            f" and <= {high:g}" if high < math.inf else ""
        )
        return None if ok else f"a finite number {bound}"

    return check


def _optional(rule: Callable) -> Callable:
    return lambda v: None if v is None else (None if rule(v) is None else f"null or {rule(v)}")


def _list(rule: Callable, *, min_len: int = 1) -> Callable:
    def check(v: Any) -> str | None:
        if not isinstance(v, list) or len(v) < min_len or any(rule(x) for x in v):
            return f"a list of at least {min_len} entries, each {rule(None) or 'valid'}"
        return None

    return check


def _choice(*options: Any) -> Callable:
    return lambda v: None if v in options else f"one of {', '.join(map(repr, options))}"


def _string(v: Any) -> str | None:
    return None if isinstance(v, str) and v else "a non-empty string"


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def _name(v: Any) -> str | None:
    return None if isinstance(v, str) and v.isidentifier() else "a variant name"


def _registered(domain: str, *, linear: bool) -> Callable[[Any], str | None]:
    """A rule for a list of names (or one name) in a registry: ``"variant"`` (the
    network variants of ``zoo.VARIANTS``, linear or not as ``linear`` says) or
    ``"bound"`` (the certificates of ``certify.BOUNDS`` that apply to linear or to
    one-hidden-layer networks). An unknown name fails when the profile is loaded,
    not after training."""

    def check(v: Any) -> str | None:
        names = v if isinstance(v, list) else [v]
        known = _known(domain, linear)
        bad = [n for n in names if n not in known]
        if not bad:
            return None
        what = f"{'linear' if linear else 'one-hidden-layer'} {domain}"
        return f"names of {what}s ({', '.join(known)}); unknown: {', '.join(map(repr, bad))}"

    return check


def _known(domain: str, linear: bool) -> list[str]:
    # imported when a profile is checked, not when this module is: the bound registry
    # loads the solvers, which `flowbound --help` does not need
    if domain == "variant":
        from flowbound.training.zoo import VARIANTS

        return [n for n, v in VARIANTS.items() if (v.arch == "linear") == linear]
    from flowbound.certificates.registry import BOUNDS

    arch = "linear" if linear else "one_hidden"
    return [n for n, b in BOUNDS.items() if arch in b.applies_to]


def _threat_set_name(v: Any) -> str | None:
    from flowbound.threat.sets import THREAT_SETS  # loads scipy: not at `flowbound --help`

    return None if v in THREAT_SETS else f"one of {', '.join(map(repr, THREAT_SETS))}"


def _all(*rules: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        for rule in rules:
            problem = rule(v)
            if problem:
                return problem
        return None

    return check


POS, NONNEG, SEED = _int(1), _int(0), _int(0)
RATE = _num(0.0, 1.0, open_low=True)
EPS = _num(0.0)
POS_NUM = _num(0.0, open_low=True)
PIXEL = _list(_int(0), min_len=2)

#: Every key a profile must have, by dotted path, and what its value must be.
SCHEMA: dict[str, Callable[[Any], str | None]] = {
    "name": _string,
    "description": _string,
    "hidden.section3": POS,
    "hidden.section4": POS,
    "train.epochs": POS,
    "train.batch_size": POS,
    "train.lr": _num(0.0, 1.0, open_low=True),
    "train.train_subset": _optional(POS),
    "train.seed": SEED,
    "eval.test_subset": _optional(POS),
    "background.digit_index": NONNEG,
    "background.flow_amplitude": POS_NUM,
    "background.flow_smoothness": POS_NUM,
    "background.prop1_trials": POS,
    "background.midpoint_n": _list(POS),
    "background.midpoint_images": POS,
    "background.midpoint_eps": POS_NUM,
    "background.seed": SEED,
    "variants.fro.lambda": EPS,
    "variants.spe.lambda": EPS,
    "variants.stn.stn_hidden": POS,
    "variants.at.lambda_r": _num(0.0, 1.0),
    "variants.at.tau": EPS,
    "variants.at.pool_every": POS,
    "variants.at.pool_size": POS,
    "variants.at.pool_steps": POS,
    "variants.at.pool_batch": POS,
    "variants.at.seed": SEED,
    "variants.at_pgd.eps": EPS,
    "variants.at_pgd.alpha": POS_NUM,
    "variants.at_pgd.steps": POS,
    "variants.lin_fro.lambda": EPS,
    "variants.sdp.lambda": EPS,
    "variants.sdp.eps": EPS,
    "variants.sdp.lanczos_steps": POS,
    "variants.sdp.refresh_tol": RATE,
    "variants.sdp.seed": SEED,
    "intro.pgd_eps": EPS,
    "intro.pgd_alpha": POS_NUM,
    "intro.pgd_steps": POS,
    "intro.stadv_tau": EPS,
    "intro.stadv_steps": POS,
    "intro.eval_images": POS,
    "intro.eval_steps": POS,
    "intro.eval_variants": _all(_list(_name), _registered("variant", linear=False)),
    "impossibility.eps": _list(EPS),
    "impossibility.networks": _all(_list(_name), _registered("variant", linear=False)),
    "impossibility.linear_networks": _all(_list(_name), _registered("variant", linear=True)),
    "impossibility.pairs": lambda v: None if v == "all" or POS(v) is None else "'all' or >= 1",
    "impossibility.n": POS,
    "impossibility.max_iter": POS,
    "impossibility.max_inner": POS,
    "impossibility.sample_eps": POS_NUM,
    "impossibility.convergence_eps": _list(EPS),
    "impossibility.beyond_eps": _list(POS_NUM),
    "impossibility.search_steps": POS,
    "impossibility.search_restarts": POS,
    "impossibility.seed": SEED,
    "possibility.eps": _list(EPS),
    "possibility.variants": _all(_list(_name), _registered("variant", linear=False)),
    "possibility.beyond_variants": _all(
        _list(_name, min_len=0), _registered("variant", linear=False)
    ),
    "possibility.linear_variants": _all(_list(_name), _registered("variant", linear=True)),
    "possibility.kinds": _all(_list(_name), _registered("bound", linear=False)),
    "possibility.linear_kinds": _all(_list(_name), _registered("bound", linear=True)),
    "possibility.test_images": _optional(POS),
    "possibility.tol": RATE,
    "possibility.fig7_pixels": _list(PIXEL, min_len=2),
    "possibility.fig7_eps": POS_NUM,
    "possibility.taus": _list(EPS),
    "possibility.gap.eps": _list(POS_NUM),
    "possibility.gap.steps": POS,
    "possibility.gap.lr": POS_NUM,
    "possibility.gap.seed": SEED,
    "possibility.budget_attack.eps": _list(POS_NUM),
    "possibility.budget_attack.images": POS,
    "possibility.budget_attack.steps": POS,
    "possibility.budget_attack.lr": POS_NUM,
    "possibility.budget_attack.seed": SEED,
    "possibility.seeds": _list(SEED),
    "possibility.claim_tau": EPS,
    "possibility.claim_success": _choice("success", "success_final"),
    "possibility.border_compare": _all(
        _list(_name, min_len=0), _registered("variant", linear=False)
    ),
    "local.eps": _list(EPS),
    "local.variants": _all(_list(_name), _registered("variant", linear=False)),
    "local.kinds": _all(_list(_name), _registered("bound", linear=False)),
    "local.images": _optional(POS),
    "local.modes": _optional(POS),
    "local.attack.images": POS,
    "local.attack.steps": POS,
    "local.attack.restarts": POS,
    "local.attack.targets": NONNEG,
    "local.attack.seed": SEED,
    "local.attack.search_dtype": _choice("float32", "float64"),  # checked in float64 after
    "local.sides.variant": _all(_name, _registered("variant", linear=False)),
    "local.sides.eps": _list(POS_NUM),
    "local.sides.steps": POS,
    "local.sides.restarts": POS,
    "local.sides.lr": POS_NUM,
    "local.sides.seed": SEED,
    "local.sides.example_digit": NONNEG,
    "local.report_eps": _list(EPS),
    "local.sloped_bracket": _num(0.0, 1.0),
    "local.refine_bracket": _num(0.0, 1.0),
    "local.branch.variant": _all(_name, _registered("variant", linear=False)),
    "local.branch.eps.tied": _list(POS_NUM, min_len=0),
    "local.branch.eps.full": _list(POS_NUM, min_len=0),
    "local.branch.level": _choice("chord", "kinked", "sloped", "descent", "split"),
    "local.branch.modes": _optional(POS),
    "local.branch.depth": NONNEG,
    "local.branch.leaves": POS,
    "local.branch.steps": NONNEG,
    "own.channels": _list(POS, min_len=2),
    "own.kernel": POS,
    "own.hidden": POS,
    "own.epochs": POS,
    "own.batch_size": POS,
    "own.lr": POS_NUM,
    "own.decay_epochs": _list(POS, min_len=0),
    "own.decay_factor": _num(0.0, 1.0, open_low=True),
    "own.seed": SEED,
    "own.images": POS,
    "own.eps": _list(EPS),
    "own.report_eps": EPS,
}


#: The variants trained against the per-digit certificate (f_cert on tied flows,
#: f_cert_full on full flows): the same settings each.
CERT_VARIANTS = ("cert", "cert_full")

_CERT_RULES: dict[str, Callable[[Any], str | None]] = {
    "eps": POS_NUM,
    "kappa": _num(0.0, 1.0),
    "ramp_epochs": POS,
    "cert_batch": POS,
    "modes": _optional(POS),
    "threat": _threat_set_name,
    "kink": _bool,
}
SCHEMA |= {f"variants.{v}.{k}": rule for v in CERT_VARIANTS for k, rule in _CERT_RULES.items()}

#: Keys a profile may leave out (absent: the default the code documents), checked when
#: given. f_cert's optional recipe settings (:mod:`flowbound.training.certified`): absent
#: from a profile, they leave its networks' cache keys as they were.
_CERT_OPTIONAL: dict[str, Callable[[Any], str | None]] = {
    "deeper": _choice("crown", "interval"),
    "adv_steps": NONNEG,
    "decay_epochs": _list(POS, min_len=0),
    "decay_factor": _num(0.0, 1.0, open_low=True),
    "init": _choice("default", "ibp"),
}
OPTIONAL_SCHEMA: dict[str, Callable[[Any], str | None]] = {
    f"variants.{v}.{k}": rule for v in CERT_VARIANTS for k, rule in _CERT_OPTIONAL.items()
}


def _leaves(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and f"{prefix}{k}" not in SCHEMA:
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def validate_profile(data: Any, source: str = "profile") -> dict[str, Any]:
    """Check ``data`` against :data:`SCHEMA`; return it, or raise :class:`ProfileError`."""
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: a profile is a JSON object, got {type(data).__name__}")
    leaves = _leaves(data)
    for key in sorted(set(leaves) - set(SCHEMA) - set(OPTIONAL_SCHEMA)):
        below = sorted(k[len(key) + 1 :] for k in SCHEMA if k.startswith(f"{key}."))
        if below:  # a section given as something else than an object
            raise ProfileError(
                f"{source}: {key} must be an object with the keys {', '.join(below)}, got "
                f"{leaves[key]!r}"
            )
        here = key.rsplit(".", 1)[0]
        near = [k for k in (*SCHEMA, *OPTIONAL_SCHEMA) if k.rsplit(".", 1)[0] == here]
        hint = (
            f" (known keys here: {', '.join(k.rsplit('.', 1)[-1] for k in near)})" if near else ""
        )
        raise ProfileError(f"{source}: unknown key {key!r}, misspelt?{hint}")
    for key, rule in SCHEMA.items():
        if key not in leaves:
            raise ProfileError(f"{source}: missing key {key!r}")
        problem = rule(leaves[key])
        if problem:
            raise ProfileError(f"{source}: {key} must be {problem}, got {leaves[key]!r}")
    for key, rule in OPTIONAL_SCHEMA.items():
        problem = rule(leaves[key]) if key in leaves else None
        if problem:
            raise ProfileError(f"{source}: {key} must be {problem}, got {leaves[key]!r}")
    p = data["possibility"]
    if p["claim_tau"] not in p["taus"]:
        raise ProfileError(f"{source}: possibility.claim_tau {p['claim_tau']} is not in taus")
    for name in CERT_VARIANTS:
        _check_cert_plan(data["variants"][name], data["train"], f"{source}: variants.{name}")
    if data["train"]["seed"] not in p["seeds"]:
        raise ProfileError(f"{source}: train.seed must be one of possibility.seeds")
    local = data["local"]
    missing = [e for e in local["report_eps"] if e not in local["eps"]]
    if missing:
        raise ProfileError(
            f"{source}: local.report_eps {missing} must be on the grid local.eps "
            f"({local['eps']}): the report reads Figure 12's values there"
        )
    own = data["own"]
    if len(own["channels"]) != 2:
        raise ProfileError(f"{source}: own.channels must name two widths, got {own['channels']}")
    _check_decays(own["decay_epochs"], own["epochs"], f"{source}: own", "own.epochs")
    if own["report_eps"] not in own["eps"]:
        raise ProfileError(
            f"{source}: own.report_eps {own['report_eps']} must be on the grid own.eps"
        )
    return data


def _check_cert_plan(cert: dict[str, Any], train: dict[str, Any], where: str) -> None:
    """A certified-training recipe the training plan can follow: its ramp and decays
    within train.epochs, its certified images within a batch."""
    if cert["ramp_epochs"] > train["epochs"]:
        raise ProfileError(
            f"{where}.ramp_epochs {cert['ramp_epochs']} is more than train.epochs {train['epochs']}"
        )
    _check_decays(cert.get("decay_epochs", []), train["epochs"], where, "train.epochs")
    if cert["cert_batch"] > train["batch_size"]:
        raise ProfileError(
            f"{where}.cert_batch {cert['cert_batch']} is more than train.batch_size "
            f"{train['batch_size']}"
        )


def _check_decays(decays: list[int], epochs: int, where: str, epochs_key: str) -> None:
    """Learning-rate decays (1-based epochs) that lie within the ``epochs`` trained."""
    late = [e for e in decays if e > epochs]
    if late:
        raise ProfileError(f"{where}.decay_epochs {late} lie past {epochs_key} {epochs}")


@cache
def _read(name: str) -> dict[str, Any]:
    path = resources.files("flowbound").joinpath("profile_data", f"{name}.json")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ProfileError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    return validate_profile(data, str(path))


def load_profile(name: str) -> dict[str, Any]:
    """Return a fresh, validated copy of the profile called ``name`` (``smoke`` or ``paper``)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return copy.deepcopy(_read(name))


def with_seed(profile: dict[str, Any], seed: int) -> dict[str, Any]:
    """A copy of ``profile`` whose networks are trained with ``train.seed = seed``."""
    out = copy.deepcopy(profile)
    out["train"]["seed"] = int(seed)
    return out
