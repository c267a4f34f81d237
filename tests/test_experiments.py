"""Post-processing in experiments/ on tiny hand-made inputs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from flowbound.book.experiments.possibility import StAdvVsTau, ranks_over_seeds
from flowbound.networks.architectures import OneHidden


def test_ranks_over_seeds_share_ties_and_give_the_seed_range():
    runs = {
        "a": np.array([[1.0, 0.2], [1.0, 0.3]]),  # (seeds, taus)
        "b": np.array([[1.0, 0.1], [1.0, 0.4]]),
        "sdp": np.array([[1.0, 0.0], [1.0, 0.0]]),
    }
    ranks = ranks_over_seeds(StAdvVsTau(taus=np.array([0.1, 0.2]), seed_runs={"success": runs}))
    np.testing.assert_array_equal(ranks["sdp"], [[1, 1], [1, 1], [1, 1]])
    # tau 1: everyone tied at 1.0; tau 2: a and b tie on the mean (0.25), seeds differ
    np.testing.assert_array_equal(ranks["a"], [[1, 2], [1, 2], [1, 3]])
    np.testing.assert_array_equal(ranks["b"], [[1, 2], [1, 2], [1, 3]])


def test_a_registered_toy_bound_reaches_the_figure5_data(tiny, mnist_dir, monkeypatch):
    """Extending checklist, 'a bound': one registration and a profile entry suffice."""
    from flowbound.book.experiments import zero_one_losses
    from flowbound.book.trained import get_model
    from flowbound.certificates.registry import BOUNDS, Bound, margins
    from flowbound.data import load_mnist

    def toy(net, pairs, side, tol):  # Delta = 1 at eps = 1 for every pair
        return np.ones(len(pairs))

    monkeypatch.setitem(BOUNDS, "toy", Bound("toy", "toy bound", toy, ":"))
    prof = copy.deepcopy(tiny)
    prof["possibility"].update(variants=["nt"], kinds=["spectral", "toy"], test_images=200)
    res = zero_one_losses(prof)
    assert set(res.losses["nt"]) == {"spectral", "toy"}
    model = get_model("nt", prof, section=4, progress=False).model.cpu()
    x, y = load_mnist("test")
    m = margins(model, x[:200], y[:200])
    m[np.arange(200), y[:200].numpy()] = np.inf
    expected = [1 - (m > e).all(1).mean() for e in prof["possibility"]["eps"]]
    np.testing.assert_allclose(res.losses["nt"]["toy"], expected)
    assert res.mean_delta["nt"]["toy"] == 1.0


def test_a_registered_toy_bound_reaches_figures_5_and_12_and_the_soundness_checks(
    tiny, mnist_dir, monkeypatch
):
    """CONTRIBUTING, 'a bound', followed to the letter: a sound global bound (twice the
    sound spectral Delta), one registration and its name in the profile's kinds reach
    Figure 5's and Figure 12's data and figures and every soundness check, no other edit."""
    import test_bounds as tb
    import test_certify as tc

    from flowbound.book import plots
    from flowbound.book.experiments import certified_accuracy, zero_one_losses
    from flowbound.certificates.registry import BOUNDS, Bound, bound, sound_bounds

    def doubled(net, pairs, side, tol):  # sound: above the sound spectral Delta
        return 2 * bound("spectral").decrease(net, pairs, side, tol)

    monkeypatch.setitem(BOUNDS, "toy", Bound("toy", "toy (2 x spectral)", doubled, "-."))
    assert "toy" in sound_bounds("one_hidden")  # what the soundness tests iterate over
    prof = copy.deepcopy(tiny)
    prof["possibility"].update(variants=["nt"], kinds=["spectral", "toy"], test_images=100)
    prof["local"].update(
        variants=["nt"], kinds=["spectral", "toy"], images=40, eps=[0.0, 0.05], report_eps=[0.05]
    )
    prof["local"]["attack"].update(images=10, steps=5, targets=1)
    fig5 = zero_one_losses(prof)
    spectral, toy = fig5.losses["nt"]["spectral"], fig5.losses["nt"]["toy"]
    assert np.all(toy >= spectral)  # a looser bound certifies less
    assert fig5.mean_delta["nt"]["toy"] == pytest.approx(2 * fig5.mean_delta["nt"]["spectral"])
    fig12 = certified_accuracy(prof)
    assert np.all(fig12.accuracy["nt"]["toy"] <= fig12.accuracy["nt"]["spectral"])
    assert fig12.violations["nt"]["toy"] == 0
    assert "toy (2 x spectral)" in {t.get_text() for t in
                                    plots.plot_figure12(fig12).legends[0].get_texts()}  # fmt: skip
    assert "toy (2 x spectral)" in [ax.get_title() for ax in plots.plot_zero_one(fig5).axes]
    tc.check_certified_inputs_cannot_be_flipped(_tiny_problem(), "toy")
    tb.check_no_gradient_search_beats("toy", seed=3, eps=1.0)
    tc.check_refuses_bad_input(_tiny_problem(), "toy")


def _tiny_problem():
    torch.manual_seed(0)
    net = OneHidden(d=9, hidden=8, classes=3).double()
    x = torch.rand(200, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        y = net(x).argmax(1)
    return net, x, y


def test_figure5_and_the_mean_decrease_share_one_computation_of_delta(tiny, mnist_dir, monkeypatch):
    """A network's Delta is computed once (decrease_of) and read by every experiment."""
    from flowbound.book.experiments import zero_one_losses
    from flowbound.book.experiments.possibility import mean_decrease_bounds
    from flowbound.certificates.registry import BOUNDS, Bound

    calls = []

    def toy(net, pairs, side, tol):
        calls.append(tol)
        return np.full(len(pairs), 2.0)

    monkeypatch.setitem(BOUNDS, "toy", Bound("toy", "toy bound", toy, ":"))
    prof = copy.deepcopy(tiny)
    prof["possibility"].update(variants=["nt"], kinds=["toy"], test_images=50)
    res = zero_one_losses(prof)
    assert mean_decrease_bounds(prof)["nt"]["toy"] == res.mean_delta["nt"]["toy"] == 2.0
    assert calls == [prof["possibility"]["tol"]]


def _fake_lower_bounds(rising: bool) -> dict:
    eps = np.array([0.5, 1.0, 2.0])
    best = np.array([1.0, 2.0, 4.0]) if rising else np.array([1.0, 3.0, 2.0])
    col = best[:, None] * np.array([1.0, 0.5])  # two pairs; the first is the best
    return {
        "eps": eps,
        "exact": col,
        "thm_exact": col / 4,
        "estimate": col * 2,
        "thm_linear": col / 2,
        "exact_history": np.array([[0.0, 1.0, 2.0, 2.0]] * 3),
        "estimate_history": np.array([[0.0, 1.5, 2.5, 2.5]] * 3),
    }


def test_figure2_table_and_summary_from_a_hand_made_summary():
    from flowbound.book.experiments.impossibility import (
        LowerBoundSummary,
        convergence_summary,
        figure2_summary,
        figure2_table,
    )

    data = {"nt": {"paper": _fake_lower_bounds(False), "true": _fake_lower_bounds(True)}}
    final = {("nt", "paper"): (2.0, 0.5), ("nt", "true"): (4.0, 1.0)}
    est = {("nt", "paper"): (4.0, 1.0), ("nt", "true"): (8.0, 2.0)}
    shape = {("nt", "paper"): "power law", ("nt", "true"): "exponential"}
    s = LowerBoundSummary(data, {"nt": {"ceiling": 10.0}}, shape, final, est)
    header, rows = figure2_table(s, 2.0)
    assert header[2] == "Theorem 1 at eps = 2.0" and len(rows) == 2
    assert rows[1][4] == "4.0" and rows[1][5] == "4.0" and rows[1][-1] == "10"
    g = figure2_summary(s)
    assert g["ratio_nt_true"] == 4.0 and g["nt_share"] == 40.0
    assert g["drops"] == "nt (Dg as printed)"  # only the falling curve
    assert g["shapes_true"] == "nt exponential"
    # Dg as printed: 2.0 / 0.5 = 4x above Theorem 1 on the one network
    assert (g["printed_n"], g["printed_kept"]) == (1, 0)
    assert g["printed_higher"] == "nt (4.00x)"
    assert s.beyond_theorem1("true", at_least=4.0) == {"nt": 4.0}
    assert s.beyond_theorem1("true", at_least=4.5) == {}
    curves = [
        {"net": "nt", "jacobian": "true", "exact": np.array([0.0, 1.0, 2.0, 2.0]), "estimate": 0},
        {"net": "nt", "jacobian": "true", "exact": np.array([1.0, 1.0, 1.0]), "estimate": 0},
        {"net": "nt", "jacobian": "paper", "exact": np.array([2.0, 1.0]), "estimate": [0, 3.0]},
    ]
    c = convergence_summary(curves)
    assert c["rounds_median"] == 2 and c["rounds_flat"] == 1 and c["rounds_runs"] == 2
    assert c["printed_falls"] == 1 and c["printed_est_best"] == 3.0


def test_gap_table_counts_violations_and_finds_the_extremes():
    from flowbound.book.experiments.possibility import gap_table

    gap = {
        "eps": [0.1],
        "networks": {
            "a": {"attack": np.array([[1.0, 2.0]]), "certificate": np.array([[10.0, 4.0]])},
            "b": {"attack": np.array([[1.0, 3.0]]), "certificate": np.array([[0.5, 300.0]])},
        },
    }
    header, rows, cited = gap_table(gap)
    assert len(header) == 6 and rows[0][2:5] == ["2", "4", "2"]
    assert cited["violations"] == 1 and cited["n_checks"] == 4  # b's first pair: 1 > 0.5
    assert cited["tightest"] == "a" and cited["loosest"] == "b"


def test_figure8_table_cites_the_last_eps():
    from flowbound.book.experiments.impossibility import figure8_table

    data = {"lin_nt": {"true": _fake_lower_bounds(True)}}
    header, rows, cited = figure8_table(data, {"lin_nt": 0.9}, 2.0)
    assert header[3] == "Theorem 2 at eps = 2.0" and rows[0][:3] == [
        "`lin_nt`",
        "0.9000",
        "exact Jacobian",
    ]
    assert cited == {"lin_alg_lin_nt_true": 4.0, "lin_thm_lin_nt_true": 1.0}


def test_section4_names_and_the_beyond_summary_from_hand_made_results():
    from flowbound.book.experiments.possibility import section4_beyond_summary, section4_names

    p = {"variants": ["nt", "sdp"], "beyond_variants": ["cert"]}
    assert section4_names(p, beyond=False) == ["nt", "sdp"]
    assert section4_names(p, beyond=True) == ["nt", "sdp", "cert"]
    taus = np.array([0.001, 0.05])
    f6 = StAdvVsTau(
        taus=taus,
        seed_runs={
            "success_final": {
                "cert": np.array([[0.9, 0.1], [0.8, 0.3]]),
                "sdp": np.array([[1.0, 0.5], [1.0, 0.7]]),
            },
            "success": {
                "cert": np.array([[0.95, 0.2], [0.85, 0.4]]),
                "sdp": np.array([[1.0, 0.6], [1.0, 0.8]]),
            },
        },
    )
    budget = {
        "eps": np.array([1.0, 2.0]),
        "success": {"cert": np.array([0.1, 0.3]), "sdp": np.array([0.5, 0.9])},
        "success_ci": {
            "cert": np.array([[0.05, 0.15], [0.25, 0.35]]),
            "sdp": np.array([[0.45, 0.55], [0.85, 0.95]]),
        },
    }
    out = section4_beyond_summary(f6, budget, tau=0.05, definition="success_final", names=["cert"])
    assert set(out) == {"cert", "sdp"}
    assert out["cert"]["success"] == pytest.approx(0.2)
    assert out["cert"]["success_range"] == pytest.approx((0.1, 0.3))
    assert out["cert"]["seeds"] == 2
    assert out["cert"]["success_small_any"] == pytest.approx(0.9)  # any iterate, smallest tau
    assert out["sdp"]["success"] == pytest.approx(0.6)
    assert out["cert"]["budget"][0].value == pytest.approx(0.1)
    assert out["cert"]["budget"][1].lo == pytest.approx(0.25)
    assert out["sdp"]["budget_eps"] == [1.0, 2.0]
