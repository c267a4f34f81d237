"""The network view: the one place that reads W and V, for every architecture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowbound.certificates.impossibility import theorem1_bound
from flowbound.networks.architectures import Linear, OneHidden, STNClassifier
from flowbound.networks.view import (
    binary_weights,
    ordered_pairs,
    pair_layers,
    unordered_pairs,
    view,
    weights,
)


def test_view_reads_each_architecture():
    torch.manual_seed(0)
    one, lin, stn = OneHidden(16, 5, 3), Linear(16, 3), STNClassifier(7)
    v = view(one)
    assert v.w.dtype == torch.float64 and v.w.shape == (5, 16) and v.classes == 3
    assert torch.equal(v.w, one.W.weight.detach().double())
    assert view(lin).w is None and view(lin).v.shape == (3, 16)
    s = view(stn)
    assert s.w.shape == (7, 784) and s.transform is not None
    assert view(one).transform is None
    w, vmat = weights(one)
    assert w.requires_grad and vmat is one.V.weight  # the parameters themselves


def test_binary_weights_and_pairs_agree_with_a_hand_loop():
    vmat = torch.randn(4, 6, dtype=torch.float64)
    pairs = ordered_pairs(4)
    assert len(pairs) == 12 and len(unordered_pairs(4)) == 6
    assert set(unordered_pairs(4)) == {(i, j) for i, j in pairs if i < j}
    heads = binary_weights(vmat, pairs)
    for row, (i, j) in zip(heads, pairs, strict=True):
        torch.testing.assert_close(row, vmat[i] - vmat[j])
    with pytest.raises(ValueError, match="two different classes"):
        binary_weights(vmat, [(1, 1)])


def test_the_stn_can_be_listed_among_the_impossibility_networks():
    # before the view existed, binary weights of an STN raised AttributeError
    torch.manual_seed(0)
    stn = STNClassifier(6).double()
    w, v = pair_layers(stn, [(0, 1), (2, 3)])
    assert w.shape == (6, 784) and v.shape == (2, 6)
    res = theorem1_bound(stn, [(0, 1)], 0.1)
    assert np.isfinite(res.exact.numpy()).all()


def test_a_non_network_is_refused_clearly():
    with pytest.raises(TypeError, match="not one of flowbound.s architectures"):
        view(torch.nn.Linear(3, 2))


def test_classifier_input_is_the_stns_output_or_the_images_themselves():
    from flowbound.networks.view import classifier_input

    torch.manual_seed(0)
    stn, one = STNClassifier(6), OneHidden(784, 5, 10)
    x = torch.rand(3, 28, 28)
    net, seen = classifier_input(stn, x)
    assert net is stn.classifier
    torch.testing.assert_close(seen, stn.transform(x).detach())
    torch.testing.assert_close(net(seen), stn(x).detach())
    net, seen = classifier_input(one, x)
    assert net is one and seen is x
