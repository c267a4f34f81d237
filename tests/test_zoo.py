"""The paper's variants: each loss decreases on a small run; the pieces are right."""

from __future__ import annotations

import pytest
import torch

from flowbound.book.profiles import load_profile
from flowbound.book.trained import get_model, variant_settings
from flowbound.data import load_mnist
from flowbound.networks.architectures import STNClassifier, build
from flowbound.training.objectives import hinge, spectral_norm_estimate
from flowbound.training.zoo import VARIANTS


@pytest.fixture(scope="module")
def tiny() -> dict:
    p = load_profile("smoke")
    p["hidden"] = {"section3": 24, "section4": 20}
    p["train"].update(train_subset=1024, epochs=2, batch_size=32, lr=0.003)
    p["eval"]["test_subset"] = 300
    p["variants"]["at"].update(pool_size=64, pool_steps=3, pool_every=1)
    p["variants"]["at_pgd"].update(steps=2)
    return p


@pytest.mark.parametrize("name", ["nt", "fro", "spe", "stn", "at", "at_pgd"])
def test_each_variants_loss_decreases_with_training(name, tiny, mnist_dir):
    v = VARIANTS[name]
    settings = variant_settings(v, tiny)
    x, y = load_mnist("train")
    xb, yb = x[2000:2256], y[2000:2256]  # not in the training subset
    before_model = build(v.arch, 20, tiny["train"]["seed"], settings)
    after_model = get_model(name, tiny, section=4, progress=False).model.cpu()

    def loss_of(model):
        loss = v.loss_factory()(settings)
        torch.manual_seed(0)
        if hasattr(loss, "on_epoch_start"):
            loss.on_epoch_start(model, 0, xb, yb)
        torch.manual_seed(0)
        return float(loss(model, xb, yb).detach())

    assert loss_of(after_model) < 0.9 * loss_of(before_model)


def test_hinge_is_weston_watkins():
    s = torch.tensor([[2.0, 1.5, -1.0], [0.0, 0.2, 3.0]])
    y = torch.tensor([0, 2])
    manual = ((1 - 2.0 + 1.5) + 0 + 0 + 0) / 3 / 2
    assert float(hinge(s, y)) == pytest.approx(manual)


def test_power_iteration_converges_to_the_spectral_norm():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(50, 80, generator=g, dtype=torch.float64)
    state: dict = {}
    for _ in range(200):
        est = spectral_norm_estimate(w, state, "w")
    assert float(est) == pytest.approx(float(torch.linalg.matrix_norm(w, ord=2)), rel=1e-8)
    w.requires_grad_(True)
    est = spectral_norm_estimate(w, state, "w")
    (grad,) = torch.autograd.grad(est, w)
    u, _, vh = torch.linalg.svd(w.detach())
    # d sigma_max / dW = u_1 v_1^T (unchanged when u_1 and v_1 flip sign together).
    torch.testing.assert_close(grad, torch.outer(u[:, 0], vh[0]), atol=1e-6, rtol=0)


def test_stn_starts_at_the_identity(mnist_dir):
    torch.manual_seed(0)
    net = STNClassifier(hidden=16, stn_hidden=8)
    x = load_mnist("test")[0][:4]
    torch.testing.assert_close(net.transform(x), x, atol=1e-5, rtol=0)  # float32 grid
    torch.testing.assert_close(net(x), net.classifier(x), atol=1e-5, rtol=0)


def test_a_registered_toy_variant_trains(tiny, mnist_dir, monkeypatch):
    """Extending checklist, 'a network variant': one registration (a loss named by a
    string, imported when it trains); settings, when it has any, go in the profile."""
    from flowbound.training.zoo import Variant

    toy = Variant("toy", "hinge only", make_loss="flowbound.training.objectives:stn")
    monkeypatch.setitem(VARIANTS, "toy", toy)
    trained = get_model("toy", tiny, section=4, progress=False)  # no settings needed
    assert trained.test_accuracy > 0.5 and trained.config["variant"] == "toy"
