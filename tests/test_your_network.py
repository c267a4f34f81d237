"""Certifying your own network: the profile's CNN beside f_nt, both threat sets."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from flowbound.book import experiments as ex
from flowbound.networks.chain import chain


@pytest.mark.parametrize("kernel", [3, 4, 5])
def test_own_cnn_reads_28_by_28_digits_and_is_a_supported_chain(kernel):
    cnn = ex.own_cnn([2, 3], kernel, 8).double().eval()
    assert cnn(torch.zeros(5, 1, 28, 28, dtype=torch.float64)).shape == (5, 10)
    assert len(chain(cnn, 28).stages) == 4  # three ReLUs: four affine stages


def test_own_network_brackets_the_cnn_and_f_nt_soundly(tiny, mnist_dir):
    p = copy.deepcopy(tiny)
    p["own"].update(images=5, eps=[0.0, 0.2], report_eps=0.2)
    d = ex.own_network(p)
    assert set(d["nets"]) == {"cnn", "nt"} and d["images"] == 5
    for per in d["nets"].values():
        for t in ("tied", "full"):
            s = per[t]
            assert s["broken"] == 0
            assert np.all(s["bracket_digits"] >= 0)
            assert s["certified"][0] == s["robust"][0]  # eps = 0: both are clean accuracy
            assert np.all(np.diff(s["certified"]) <= 0)
        assert np.all(per["full"]["certified"] <= per["tied"]["certified"])
    s = ex.own_network_summary(d)
    assert s["own_at"] == "0.2" and s["own_broken"] == "zero certified digits"
    rate, lo, hi = (float(v) for v in s["own_cnn_tied_robust"].replace("[", "").replace(",", "")
                    .replace("]", "").split())  # fmt: skip
    assert lo <= rate <= hi and rate == pytest.approx(d["nets"]["cnn"]["tied"]["robust"][1])
    header, rows = ex.own_network_table(d)
    assert len(rows) == 4 and len(header) == 4


def test_own_network_runs_the_levels_the_chapter_names(tiny, mnist_dir, monkeypatch):
    """The first two levels on every digit, the third alone on the digits the attack and
    those leave open (the chapter's prose and the section's cost say so)."""
    from flowbound.book.experiments import your_network
    from flowbound.certificates.local import CASCADE, certified

    asked = []

    def spy(*args, levels=None, **kw):
        asked.append(tuple(levels))
        return certified(*args, levels=levels, **kw)

    monkeypatch.setattr(your_network, "certified", spy)
    p = copy.deepcopy(tiny)
    p["own"].update(images=5, eps=[0.0, 0.5], report_eps=0.5)
    ex.own_network(p)
    assert asked[0] == CASCADE[:2] and set(asked) == {CASCADE[:2], CASCADE[2:3]}
