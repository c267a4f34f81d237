"""Networks, the variant registry, and cached training (atomic, verified, keyed)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from flowbound import cache
from flowbound.book.trained import get_model
from flowbound.networks.architectures import Linear, OneHidden
from flowbound.training.zoo import VARIANTS


def test_one_hidden_is_v_relu_w_x_without_biases(rng):
    net = OneHidden(d=20, hidden=7, classes=3)
    assert all("bias" not in name for name, _ in net.named_parameters())
    x = torch.randn(5, 4, 5, generator=rng)
    w, v = net.W.weight, net.V.weight
    expected = torch.relu(x.flatten(1) @ w.T) @ v.T
    torch.testing.assert_close(net(x), expected)
    assert net(torch.zeros(2, 20)).abs().max() == 0  # no bias: f(0) = 0


def test_linear_is_v_x_without_bias(rng):
    net = Linear(d=20, classes=3)
    assert [n for n, _ in net.named_parameters()] == ["V.weight"]
    x = torch.randn(4, 20, generator=rng)
    torch.testing.assert_close(net(x), x @ net.V.weight.T)


def test_registry_has_rd_and_nt():
    assert {"rd", "nt"} <= set(VARIANTS)
    assert VARIANTS["rd"].make_loss is None and VARIANTS["nt"].make_loss is not None


def test_rd_is_deterministic_and_untrained(tiny, mnist_dir):
    a, b = get_model("rd", tiny, section=3), get_model("rd", tiny, section=3)
    for (_, pa), (_, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items(),
                                strict=True):  # fmt: skip
        assert torch.equal(pa, pb)
    assert a.test_accuracy < 0.3 and a.train_seconds < 1.0
    assert a.config["hidden"] == 16


def test_nt_trains_caches_and_reloads(tiny, mnist_dir):
    first = get_model("nt", tiny, section=4)
    assert not first.from_cache and first.config["hidden"] == 12
    assert first.test_accuracy > 0.6  # 64 steps on 2,048 images; chance is 0.1
    second = get_model("nt", tiny, section=4)
    assert second.from_cache and second.test_accuracy == first.test_accuracy
    for k, t in first.model.state_dict().items():
        assert torch.equal(t, second.model.state_dict()[k])
    h = cache.config_hash(first.config)
    record = json.loads((cache.cache_dir() / "models" / f"{h}.json").read_text())
    assert record["meta"]["test_accuracy"] == first.test_accuracy
    assert record["config"] == first.config


def test_training_lowers_the_loss(tiny, mnist_dir):
    from flowbound.data import load_mnist

    x, y = load_mnist("train")
    x, y = x[:512], y[:512]
    untrained = get_model("rd", tiny, section=4).model
    trained = get_model("nt", tiny, section=4).model
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert float(ce(trained(x), y)) < 0.5 * float(ce(untrained(x), y))


def _pt(trained) -> Path:
    return cache.cache_dir() / "models" / f"{cache.config_hash(trained.config)}.pt"


def test_truncated_cache_file_is_detected_and_retrained(tiny, mnist_dir):
    first = get_model("nt", tiny)
    pt = _pt(first)
    pt.write_bytes(pt.read_bytes()[:100])
    again = get_model("nt", tiny)
    assert not again.from_cache
    assert again.test_accuracy == first.test_accuracy  # same seed, same result
    assert get_model("nt", tiny).from_cache


def test_altered_cache_file_of_the_same_size_is_detected(tiny, mnist_dir):
    first = get_model("nt", tiny)
    pt = _pt(first)
    raw = bytearray(pt.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    pt.write_bytes(bytes(raw))
    assert not get_model("nt", tiny).from_cache


def test_every_training_setting_is_in_the_key(tiny, mnist_dir):
    a = get_model("nt", tiny)
    other = copy.deepcopy(tiny)
    other["train"]["lr"] = 0.002
    b = get_model("nt", other)
    assert not b.from_cache and cache.config_hash(a.config) != cache.config_hash(b.config)
    assert a.config["train"]["lr"] == 0.005 and b.config["train"]["lr"] == 0.002


def test_unknown_variant_and_section_are_clear_errors(tiny):
    with pytest.raises(ValueError, match="unknown variant 'f_sdf'.*nt"):
        get_model("f_sdf", tiny)
    with pytest.raises(ValueError, match="section must be 3 or 4"):
        get_model("nt", tiny, section=2)
