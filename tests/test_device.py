"""Batch sizes by device: known kinds, larger on a GPU, results independent of them."""

from __future__ import annotations

import pytest
import torch

from flowbound.attacks.stadv import stadv
from flowbound.device import CHUNKS, chunk_size
from flowbound.networks.architectures import OneHidden


def test_a_gpu_takes_larger_batches_than_the_cpu():
    for kind in CHUNKS:
        assert chunk_size(kind, "cuda") > chunk_size(kind, "cpu") >= 1
        assert chunk_size(kind, torch.device("cpu")) == CHUNKS[kind]["cpu"]
    assert chunk_size("stadv", "meta") == CHUNKS["stadv"]["cpu"]  # other devices: the CPU's
    with pytest.raises(ValueError, match="unknown chunk kind 'stAdv'.*stadv"):
        chunk_size("stAdv", "cpu")


def test_stadv_by_device_equals_any_explicit_chunk():
    torch.manual_seed(0)
    net = OneHidden(d=64, hidden=12, classes=3).double().eval()
    x = torch.rand(7, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = net(x).argmax(1)
    ref = stadv(net, x, y, tau=0.05, steps=15)
    for chunk in (1, 3, 100):
        got = stadv(net, x, y, tau=0.05, steps=15, chunk=chunk)
        torch.testing.assert_close(got.flows, ref.flows, rtol=0, atol=1e-12)
        assert torch.equal(got.success, ref.success)


def test_device_text_names_the_device_torch_and_threads():
    from flowbound.device import device_text

    text = device_text(torch.device("cpu"))
    assert text.startswith("cpu (") and f"torch {torch.__version__}" in text
    assert text.endswith(f"{torch.get_num_threads()} threads")
