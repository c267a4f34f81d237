"""Post-processing in experiments/ on tiny hand-made inputs."""

from __future__ import annotations

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
