"""Post-processing in experiments/ on tiny hand-made inputs."""

from __future__ import annotations

import copy

import numpy as np

from flowbound.experiments.possibility import ranks_over_seeds


def test_ranks_over_seeds_share_ties_and_give_the_seed_range():
    runs = {
        "a": np.array([[1.0, 0.2], [1.0, 0.3]]),  # (seeds, taus)
        "b": np.array([[1.0, 0.1], [1.0, 0.4]]),
        "sdp": np.array([[1.0, 0.0], [1.0, 0.0]]),
    }
    ranks = ranks_over_seeds({"seed_runs": {"success": runs}})
    np.testing.assert_array_equal(ranks["sdp"], [[1, 1], [1, 1], [1, 1]])
    # tau 1: everyone tied at 1.0; tau 2: a and b tie on the mean (0.25), seeds differ
    np.testing.assert_array_equal(ranks["a"], [[1, 2], [1, 2], [1, 3]])
    np.testing.assert_array_equal(ranks["b"], [[1, 2], [1, 2], [1, 3]])


def test_a_registered_toy_bound_reaches_the_figure5_data(tiny, mnist_dir, monkeypatch):
    """Extending checklist, 'a bound': one registration and a profile entry suffice."""
    from flowbound.certify import BOUNDS, Bound, margins
    from flowbound.data import load_mnist
    from flowbound.experiments import zero_one_losses
    from flowbound.models import get_model

    def toy(net, pairs, side, tol):  # Delta = 1 at eps = 1 for every pair
        return np.ones(len(pairs))

    monkeypatch.setitem(BOUNDS, "toy", Bound("toy", "toy bound", toy, ":"))
    prof = copy.deepcopy(tiny)
    prof["possibility"].update(variants=["nt"], kinds=["spectral", "toy"], test_images=200)
    res = zero_one_losses(prof)
    assert set(res["losses"]["nt"]) == {"spectral", "toy"}
    model = get_model("nt", prof, section=4, progress=False).model.cpu()
    x, y = load_mnist("test")
    m = margins(model, x[:200], y[:200])
    m[np.arange(200), y[:200].numpy()] = np.inf
    expected = [1 - (m > e).all(1).mean() for e in prof["possibility"]["eps"]]
    np.testing.assert_allclose(res["losses"]["nt"]["toy"], expected)
    assert res["mean_delta"]["nt"]["toy"] == 1.0
