"""Figure 12's data: both threat sets attacked, brackets on the attacked digits, sound."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from flowbound.book import experiments as ex
from flowbound.certificates import local
from flowbound.stats import wilson_interval


@pytest.fixture
def local_profile(tiny, mnist_dir):
    p = copy.deepcopy(tiny)
    p["local"].update(variants=["nt"], images=40, eps=[0.0, 0.1, 0.5, 2.0], report_eps=[0.1])
    p["local"]["attack"].update(images=20, steps=10, targets=1)
    p["local"]["sides"].update(eps=[0.1, 0.5], steps=5)
    return p


def test_certified_accuracy_brackets_both_threat_sets_on_the_attacked_digits(local_profile):
    d = ex.certified_accuracy(local_profile)
    assert d.images == 40 and d.attack_images == 20
    for threat, key in (("tied", "attack"), ("full", "attack_full")):
        attack = getattr(d, key)["nt"]
        assert attack.shape == (4,) and np.all(np.diff(attack) <= 0)  # nested threat sets
        cert = d.certified_attacked["nt"][threat]
        np.testing.assert_allclose(d.bracket["nt"][threat], attack - cert)
        assert np.all(d.bracket["nt"][threat] >= 0)  # attack >= certificate, per digit
    assert np.all(d.attack_full["nt"] <= d.attack["nt"])  # full flows contain tied
    assert d.bracket["nt"]["tied"][0] == 0.0  # eps = 0: both are clean accuracy
    assert sum(d.violations["nt"].values()) == 0
    assert d.checked["nt"]["local_full"] > 0  # full-flow certificates were attacked
    header, rows = ex.bracket_table(d)
    assert len(rows) == 2 and len(header) == 2 + 3 + 1
    summary = ex.local_summary(d)["nt"]
    assert set(summary["known"]) == {"tied", "full"}
    assert summary["eps50"]["attack_full"] <= summary["eps50"]["attack"]


def test_known_within_is_the_last_eps_of_a_narrow_bracket_from_zero():
    eps = np.array([0.0, 0.1, 0.2, 0.3])
    assert ex.known_within(eps, np.array([0, 10, 30, 0]), 1000) == 0.1
    assert ex.known_within(eps, np.zeros(4), 1000) == 0.3
    assert ex.known_within(eps, np.array([50, 0, 0, 0]), 1000) == 0.0


@pytest.mark.parametrize("n", [50, 100, 250, 1000, 1050, 10_000])
def test_a_bracket_of_exactly_two_points_is_within_two_points(n):
    """In floats, robust.mean - cert.mean > 0.02 for many brackets of exactly 2 points;
    in digits, 2 points of n is within 2 points and one digit more is not."""
    eps = np.array([0.0, 0.05, 0.1])
    exact = 2 * n // 100
    if 100 * exact == 2 * n:
        assert ex.known_within(eps, np.array([0, exact, exact]), n) == 0.1
    assert ex.known_within(eps, np.array([0, exact + 1, 0]), n) == 0.0


def test_eps_zero_never_counts_as_a_checked_certificate(local_profile):
    """Certified cases counted for the soundness sentence are at eps > 0 only."""
    d = ex.certified_accuracy(local_profile)
    assert d.eps[0] == 0 and d.accuracy["nt"]["local_tied"][0] > 0
    n, attacked = d.attack_images, int((d.eps > 0).sum())
    for by_kind in d.checked.values():
        assert all(c <= n * attacked for c in by_kind.values())
    np.testing.assert_array_equal(
        d.bracket_digits["nt"]["tied"], np.rint(d.bracket["nt"]["tied"] * n).astype(int)
    )


def test_bracket_sides_measures_both_sides_and_reads_one_digit_in_pixels(local_profile):
    s = ex.bracket_sides(local_profile)
    np.testing.assert_allclose(s["bracket_before"], s["pgd"] - s["cert_before"])
    np.testing.assert_allclose(
        s["bracket_before"] - s["bracket_now"], s["certificate_side"] + s["attack_side"]
    )
    assert np.all(s["cert_now"] >= s["cert_before"] - 1e-12)  # the kink only tightens here
    ex_ = s["example"]
    # Readings table, point 19: a uniform shift costs ||M 1|| = sqrt(4 * 28) per pixel
    assert ex_["shift_cost"] == pytest.approx(np.sqrt(112))
    assert ex_["uniform_shift"] == pytest.approx(ex_["largest_certified"] / np.sqrt(112))
    assert ex_["one_pixel"] >= ex_["uniform_shift"]


def test_sentences_with_branches_are_true_for_every_value():
    """Ties, negative changes, nothing certified, one seed: each reads right."""
    from flowbound.book.experiments.certify_digits import closer_side, example_text, known_text
    from flowbound.book.glue import count_noun

    assert closer_side(0.05, 0.01).startswith("the certificate closed more")
    assert closer_side(-0.01, 0.0).startswith("the attack closed more")  # a negative side
    assert closer_side(0.02, 0.02).startswith("the certificate and the attack closed the same")
    assert known_text(0.3) == "up to eps = 0.3"
    assert known_text(0.0) == "at no eps > 0 of the grid"
    assert count_noun(1, "training seed") == "one training seed"
    assert count_noun(3, "training seed") == "three training seeds"
    base = {"digit": 0, "label": 7, "uniform_shift": 0.01, "one_pixel": 0.3}
    text = example_text({**base, "largest_certified": 0.5, "certified_somewhere": True}, "f_nt")
    assert "up to eps = 0.5" in text and "diagonally" in text
    text = example_text({**base, "largest_certified": 0.0, "certified_somewhere": True}, "f_nt")
    assert "certified at no eps > 0" in text
    text = example_text({**base, "largest_certified": 0.0, "certified_somewhere": False}, "f_nt")
    assert "misclassified" in text


def test_the_findings_sentences_follow_the_numbers_either_way():
    from flowbound.book.experiments.report import finding_sentences

    v = {"alg_value_true": 2.0, "alg_value_paper": 1.0, "nt_sdp_last": 0.1, "local_nt_01": 0.9,
         "local_nt_sdp_01": 0.1, "local_cert_1": 0.8, "local_nt_1": 0.2, "tighter": False,
         "n_compared": "three"}  # fmt: skip
    s = finding_sentences(v, ["Frobenius", "spectral", "SDP"])
    assert s["alg_headline"] == "Algorithm 1 needs the exact Jacobian."
    assert "up to eps = 0.1" in s["nt_sdp_text"] and "pays." in s["cert_headline"]
    assert "Frobenius, spectral, SDP" in s["sdp_cert_bounds"]
    assert s["tight_clause"].startswith("but the bound's box")
    flipped = {**v, "alg_value_true": 0.5, "nt_sdp_last": 0.0, "local_nt_01": 0.1,
               "local_cert_1": 0.2, "tighter": True}  # fmt: skip
    s = finding_sentences(flipped, ["SDP"])
    assert "better with the Jacobian as printed" in s["alg_headline"]
    assert "no digit" in s["nt_sdp_text"] and "does not pay" in s["cert_headline"]
    assert "no more than" in s["local_headline"]
    assert s["tight_clause"].startswith("and under f_sdp the SDP is the tightest")
    assert s["sdp_cert_bounds"] == "the paper's SDP bound (Figure 5)"
    tie = finding_sentences({**v, "alg_value_paper": 2.0}, ["SDP"])
    assert "as well" in tie["alg_headline"]


def test_the_refinement_adds_sound_certificates_on_open_attacked_digits_only(local_profile):
    """The dearer levels (own slopes, then the exact ellipsoid) run on the attacked
    digits left open where few are: what they add is on those digits only, never broken
    by the attack, and not in the accuracy curve."""
    d = ex.certified_accuracy(local_profile)
    plain = __import__("copy").deepcopy(local_profile)
    plain["local"]["refine_bracket"] = plain["local"]["sloped_bracket"] = 0.0  # never
    base = ex.certified_accuracy(plain)
    for name in d.accuracy:
        np.testing.assert_array_equal(
            d.accuracy[name]["local_tied"], base.accuracy[name]["local_tied"]
        )
        assert sum(base.refined[name].values()) == 0
        assert sum(d.violations[name].values()) == 0
        for threat in d.bracket[name]:
            assert np.all(d.bracket_digits[name][threat] <= base.bracket_digits[name][threat])


def test_the_settings_search_is_shown_per_threat_set_with_each_adopted_setting():
    """cert_search keeps a threat set's settings only (the adopted ones marked);
    the summary names each certified variant's adopted setting and says whether the
    profile trains it; the clean-accuracy gap sentence follows the numbers."""
    for threat in ("tied", "full"):
        header, rows, rec = ex.cert_search(threat)
        ours = [n for n, r in rec["settings"].items() if r["threat"] == threat]
        assert [r[0].split("`")[1] for r in rows] == ours
        assert all(len(r) == len(header) for r in rows)
        for name in rec["adopted"].values():
            marked = [r for r in rows if r[0] == f"`{name}` (adopted)"]
            assert len(marked) == (rec["settings"][name]["threat"] == threat)
    with pytest.raises(ValueError, match="no setting"):
        ex.cert_search("nowhere")
    _, _, rec = ex.cert_search()
    paper, smoke = (ex.cert_search_summary(p, rec) for p in ("paper", "smoke"))
    for name in rec["adopted"].values():
        tag = rec["settings"][name]["threat"]
        assert paper[f"adopted_{tag}_text"] == f"the adopted setting ({name})"
        assert smoke[f"adopted_{tag}_text"].startswith("not the adopted setting")
    gap = paper["adopted_tied_acc"] - paper["adopted_full_acc"]
    word = "below" if gap > 0 else "above"
    assert word in paper["full_clean_gap_text"] or abs(gap) < 5e-4


def test_branch_and_bound_certifies_only_open_unbroken_digits_and_says_so(local_profile):
    """The branch-and-bound table reads Figure 12's cached run: per (threat set, eps) the
    open digits are the attacked ones neither certified nor broken, branch and bound
    certifies a subset of them, and the sentence follows the counts."""
    p = copy.deepcopy(local_profile)
    p["local"]["branch"].update(eps={"tied": [0.5, 2.0], "full": [0.5]}, depth=2, leaves=4)
    d = ex.certified_accuracy(p)
    res = ex.branch_bracket(p)
    rows = {(r["threat"], r["eps"]): r for r in res["rows"]}
    assert set(rows) == {("tied", 0.5), ("tied", 2.0), ("full", 0.5)}
    for (threat, e), r in rows.items():
        i = list(d.eps).index(e)
        assert r["open"] == d.bracket_digits["nt"][threat][i]
        assert 0 <= r["closed"] <= r["open"] and r["after"] <= r["before"]
        assert r["before"] == pytest.approx(d.bracket["nt"][threat][i])
        assert r["after"] == pytest.approx((r["open"] - r["closed"]) / d.attack_images)
    header, table = ex.branch_table(res)
    assert len(table) == 3 and all(len(row) == len(header) for row in table)
    s = ex.branch_summary(res)
    opened = sum(r["open"] for r in res["rows"])
    closed = sum(r["closed"] for r in res["rows"])
    assert s["branch_net"] == "f_nt" and "tied flows at 0.5, 2" in s["branch_where"]
    if opened > 1 and 0 < closed < opened:
        assert s["branch_text"] == f"certified {closed} of the {opened} cases left open"
    fake = {**res, "rows": [{**r, "open": 3, "closed": 0} for r in res["rows"][:1]]}
    assert ex.branch_summary(fake)["branch_text"] == "certified none of the three cases left open"
    fake["rows"][0].update(open=1, closed=1)
    assert ex.branch_summary(fake)["branch_text"] == "certified the one case left open"
    fake["rows"][0].update(open=0, closed=0)
    assert ex.branch_summary(fake)["branch_text"].startswith("found no case")


def test_each_attacked_digit_is_decided_once_and_the_sentence_follows(local_profile):
    """The yield table counts every attacked digit once per (threat set, eps): the first
    levels, the refinement and branch and bound add up to the certified digits and
    the rest is broken or open, as Figure 12's bracket and the branch table count."""
    p = copy.deepcopy(local_profile)
    p["local"]["branch"].update(eps={"tied": [0.5], "full": [0.5]}, depth=2, leaves=4)
    d = ex.certified_accuracy(p)
    res = ex.branch_bracket(p)
    y = ex.level_yield(p, res)
    closed = {(r["threat"], r["eps"]): r["closed"] for r in res["rows"]}
    assert {r["threat"] for r in y["rows"]} == {"tied", "full"}
    for r in y["rows"]:
        i = list(d.eps).index(r["eps"])
        assert sum(r[k] or 0 for k in ("first", "refined", "branched", "broken", "open")) == (
            d.attack_images
        )
        cert = d.certified_attacked["nt"][r["threat"]][i] * d.attack_images
        assert r["first"] + r["refined"] == pytest.approx(cert)
        assert r["branched"] == closed.get((r["threat"], r["eps"]))
        assert r["open"] + (r["branched"] or 0) == d.bracket_digits["nt"][r["threat"]][i]
    header, table = ex.level_yield_table(y)
    assert all(len(row) == len(header) for row in table)
    certified = [r["first"] + r["refined"] + (r["branched"] or 0) for r in y["rows"]]
    assert len(table) == sum(c > 0 for c in certified)
    rows = [{**r, "first": 0, "refined": 0, "branched": None, "open": 0} for r in y["rows"]]
    assert ex.level_yield_summary({**y, "rows": rows})["yield_text"] == (
        "no case is certified at any level"
    )
    rows[0].update(first=2, open=1)
    assert ex.level_yield_summary({**y, "rows": rows})["yield_open"].endswith("case stays open")
    assert ex.level_yield_summary({**y, "rows": rows})["yield_text"] == (
        "the first two levels certify all two cases"
    )
    rows[1].update(refined=1, branched=3)
    assert ex.level_yield_summary({**y, "rows": rows})["yield_text"] == (
        "of the six certified cases the first two levels certify 2, the refinement "
        "adds 1 and branch and bound 3"
    )
    rows[1].update(first=12_000)
    assert (
        "of the 12,006 certified cases the first two levels certify 12,002"
        in (ex.level_yield_summary({**y, "rows": rows})["yield_text"])
    )


def test_the_seed_record_reads_back_and_its_ranges_are_true():
    """f_cert's seeds under the whole certificate, as recorded: a row per seed in seed
    order with its numbers; the summary's ranges are the record's min and max, one
    number where the seeds agree."""
    header, rows, seeds = ex.cert_seeds()
    runs = seeds["runs"]
    assert [int(r[0]) for r in rows] == sorted(r["seed"] for r in runs)
    assert all(len(r) == len(header) for r in rows)
    for row, run in zip(rows, runs, strict=True):
        assert row[1] == f"{run['clean']:.4f}"
        for (t, e), cell in zip(seeds["columns"], row[2:-1], strict=True):
            assert cell == f"{run['certified'][t][e]:.3f}" or (
                cell == "-" and e not in run["certified"].get(t, {})
            )
    s = ex.cert_seeds_summary(seeds)
    assert s["seeds_n"].endswith("seed" if len(runs) == 1 else "seeds")
    fake = {
        "runs": [
            {
                "seed": 0,
                "clean": 0.95,
                "certified": {"tied": {"1": 0.85, "1.5": 0.69}},
                "certify_seconds": {"tied": 600.0},
                "levels": ["chord", "kinked", "sloped", "descent"],
            },
            {
                "seed": 1,
                "clean": 0.9581,
                "certified": {"tied": {"1": 0.8504, "1.5": 0.7}},
                "certify_seconds": {"tied": 830.0},
                "levels": ["chord", "kinked", "sloped", "descent"],
            },
        ],
        "columns": [("tied", "1"), ("tied", "1.5")],
    }
    s = ex.cert_seeds_summary(fake)
    assert s["seeds_n"] == "two seeds" and s["seeds_clean"] == "0.9500-0.9581"
    assert s["seeds_1"] == "0.850" and s["seeds_15"] == "0.690-0.700"
    assert s["seeds_minutes"] == "10-14"
    assert s["seeds_levels"].startswith("the levels the cascade had then: chord, kinked,")
    now = list(local.CASCADE_NAMES)
    for r in fake["runs"]:
        r["levels"] = now
    assert ex.cert_seeds_summary(fake)["seeds_levels"] == "every level the cascade has"
    with pytest.raises(ValueError, match="no seed of variant"):
        ex.cert_seeds("nowhere")


def test_branch_and_bound_refuses_budgets_figure12_did_not_run(local_profile):
    p = copy.deepcopy(local_profile)
    p["local"]["branch"]["eps"] = {"tied": [0.3], "full": []}
    with pytest.raises(ValueError, match="local.branch.eps.tied must be budgets on local.eps"):
        ex.branch_bracket(p)
    p["local"]["branch"]["eps"] = {"tied": [], "full": [0.5]}
    p["local"]["kinds"] = ["sdp", "local_tied"]
    with pytest.raises(ValueError, match="needs the local_full certificate"):
        ex.branch_bracket(p)


def _cnn_point(name, clean, share, n=300):
    return {
        "name": name,
        "label": name,
        "clean": clean,
        "certified": {"1": wilson_interval(round(share * n), n)},
    }


def test_the_cnn_record_reads_back_with_intervals():
    """The certified CNNs as recorded: a row per CNN and one for f_cert, each share with
    the Wilson interval of its digit count; the record's shares are what the rows say."""
    import json
    from importlib import resources

    header, rows, data = ex.certified_cnns()
    rec = json.loads(
        resources.files("flowbound").joinpath("records", "certified_cnn.json").read_text()
    )
    assert len(rows) == len(rec["settings"]) + 1 and all(len(r) == len(header) for r in rows)
    for row, r in zip(rows, rec["settings"].values(), strict=False):
        assert row[2] == f"{r['valid_accuracy']:.4f}"
        for e, cell in zip(data["eps"], row[3:], strict=False):
            n = r["certified_digits"]
            iv = wilson_interval(round(r["certified"][e] * n), n)
            assert cell == iv.text() and cell.startswith(f"{r['certified'][e]:.3f} [")
    assert rows[-1][0].startswith("f_cert")


def test_the_cnn_verdict_is_true_for_every_value():
    """Each branch of the verdict: a CNN that wins; one above f_cert beyond its interval
    but below the clean bar; f_cert inside; f_cert above every interval."""
    cert = {"clean": 0.964, "certified": {"1": wilson_interval(4200, 5000)}}  # 0.840
    win = {"points": [_cnn_point("big", 0.975, 0.95)], "cert": cert}
    s = ex.certified_cnns_summary(win)
    assert s["cnn_verdict"].startswith("big does") and "buys" in s["cnn_conclusion"]
    assert s["cnn_clean_text"] == "1.1 points above"
    low = {"points": [_cnn_point("a", 0.95, 0.95), _cnn_point("b", 0.96, 0.5)], "cert": cert}
    s = ex.certified_cnns_summary(low)
    assert "none reaches a clean accuracy of 0.97 (the highest is 0.9600, b)" in s["cnn_verdict"]
    assert "beyond its interval, but not at the clean" in s["cnn_conclusion"]
    inside = {"points": [_cnn_point("c", 0.98, 0.84)], "cert": cert}
    s = ex.certified_cnns_summary(inside)
    assert "one reaches a clean accuracy of 0.97 without" in s["cnn_verdict"]
    assert "f_cert's 0.840 inside its interval" in s["cnn_verdict"]
    assert "no certified robustness" in s["cnn_conclusion"]
    below = {"points": [_cnn_point("d", 0.964, 0.6)], "cert": cert}
    s = ex.certified_cnns_summary(below)
    assert "above its interval" in s["cnn_verdict"] and "less than" in s["cnn_conclusion"]
    assert s["cnn_clean_text"] == "the same as"


def test_the_full_flow_frontier_sentence_is_true_for_every_record():
    from flowbound.book.experiments.certify_digits import _frontier_text

    def run(acc, at1, threat="full"):
        return {"threat": threat, "valid_accuracy": acc, "certified": {"0.5": 0.8, "1": at1}}

    assert _frontier_text({"a": run(0.9, 0.4, "tied")}, "full").startswith("no setting")
    one = _frontier_text({"a": run(0.90, 0.40)}, "full")
    assert "one setting" in one and "0.400 (a, clean 0.9000); none reaches" in one
    both = _frontier_text({"a": run(0.90, 0.45), "b": run(0.96, 0.41)}, "full")
    assert "is 0.450 (a," in both and "at least 0.95, 0.410 (b, clean 0.9600)" in both
    top = _frontier_text({"a": run(0.97, 0.45), "b": run(0.90, 0.41)}, "full")
    assert top.endswith("0.450 (a, clean 0.9700), at a clean accuracy of at least 0.95")
