"""f_sdp's training pieces: warm-started Lanczos and the differentiable dual bound."""

import numpy as np
import pytest
import torch

from flowbound.certificates.bounds import certify, sdp_bound, sdp_matrix
from flowbound.certificates.eigs import top_eigenpairs
from flowbound.networks.architectures import OneHidden
from flowbound.threat.geometry import aabb_lambda
from flowbound.training.fit import fit
from flowbound.training.sdp import SDPDualLoss, dual_sdp_bounds


def _sym(b: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(b, n, n, generator=g, dtype=torch.float64)
    return (m + m.transpose(1, 2)) / 2


def test_full_krylov_space_gives_the_exact_top_eigenpair():
    mats = _sym(4, 20, 0)
    start = torch.randn(4, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    vals, vecs = top_eigenpairs(lambda u: (mats @ u.unsqueeze(2)).squeeze(2), start, steps=20)
    for k in range(4):
        ref = np.linalg.eigvalsh(mats[k].numpy())[-1]
        assert vals[k].item() == pytest.approx(ref, abs=1e-8)
        u = vecs[k].numpy()
        assert np.linalg.norm(mats[k].numpy() @ u - ref * u) < 1e-6


def test_ritz_values_never_exceed_lambda_max():
    mats = _sym(8, 60, 2)
    start = torch.randn(8, 60, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    vals, _ = top_eigenpairs(lambda u: (mats @ u.unsqueeze(2)).squeeze(2), start, steps=4)
    ref = torch.linalg.eigvalsh(mats)[:, -1]
    assert (vals <= ref + 1e-10).all()


def _tiny(seed=0, h=6, side=3):
    torch.manual_seed(seed)
    m = OneHidden(side * side, h, 3).double()
    lam = torch.tensor(np.array(aabb_lambda(side)))
    return m, lam


def test_dual_bound_equals_the_float64_certificate_and_its_gradient():
    m, lam = _tiny()
    w = m.W.weight.detach()
    v = (m.V.weight[0] - m.V.weight[1]).detach()
    a = sdp_matrix(w, v, lam.numpy()).numpy()
    n = sum(a.shape)
    c = torch.tensor(np.random.default_rng(0).normal(0, 0.1, n), requires_grad=True)
    p = np.block([[np.zeros((a.shape[0],) * 2), a], [a.T, np.zeros((a.shape[1],) * 2)]])
    vals, vecs = np.linalg.eigh(p - np.diag(c.detach().numpy()))
    assert vals[-1] > 0 and vals[-1] - vals[-2] > 1e-6  # simple top eigenvalue: differentiable
    u = torch.from_numpy(vecs[:, -1]).unsqueeze(0)
    wt = w.clone().requires_grad_(True)
    b = dual_sdp_bounds(wt, v.unsqueeze(0), lam, c.unsqueeze(0), u)[0]
    assert b.item() == pytest.approx(certify(a, c.detach().numpy()), rel=1e-12)
    b.backward()
    # central finite differences of the certificate in W and c
    step = 1e-6
    for i, j in [(0, 0), (2, 5), (5, 8)]:
        wp, wm = w.clone(), w.clone()
        wp[i, j] += step
        wm[i, j] -= step
        fd = (
            certify(sdp_matrix(wp, v, lam.numpy()), c.detach().numpy())
            - certify(sdp_matrix(wm, v, lam.numpy()), c.detach().numpy())
        ) / (2 * step)
        assert wt.grad[i, j].item() == pytest.approx(fd, rel=1e-4, abs=1e-6)
    for k in [0, 7, n - 1]:
        cp, cm = c.detach().numpy().copy(), c.detach().numpy().copy()
        cp[k] += step
        cm[k] -= step
        fd = (certify(a, cp) - certify(a, cm)) / (2 * step)
        assert c.grad[k].item() == pytest.approx(fd, rel=1e-4, abs=1e-6)


def test_training_optimises_the_duals_and_shrinks_the_bound():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 3, 3, generator=g)
    y = (x.flatten(1)[:, :3].argmax(1)).long()
    settings = {"lambda": 1.0, "eps": 0.1, "lanczos_steps": 6, "refresh_tol": 1e-3}

    def mean_sdp(model):
        w = model.W.weight.detach().double()
        vm = model.V.weight.detach().double()
        a = torch.stack([sdp_matrix(w, vm[i] - vm[j], aabb_lambda(3)) for i, j in loss.pairs])
        return float(sdp_bound(a, tol=1e-5).upper.mean())

    loss = SDPDualLoss(settings)
    base = OneHidden(9, 8, 3)
    model = OneHidden(9, 8, 3)
    model.load_state_dict(base.state_dict())
    loss.extra_parameters(model)
    c0 = loss.c.detach().clone()
    before = mean_sdp(model)
    fit(model, loss, x, y, epochs=3, batch_size=32, lr=1e-2, seed=0, progress=False)
    assert not torch.equal(loss.c.detach(), c0)
    after = mean_sdp(model)
    assert after < 0.7 * before
    # the trained duals give a valid certificate (sound whatever c is) near the optimum
    w = model.W.weight.detach().double()
    vm = model.V.weight.detach().double()
    for k, (i, j) in enumerate(loss.pairs):
        a = sdp_matrix(w, vm[i] - vm[j], aabb_lambda(3))
        exact = sdp_bound(a, tol=1e-6).lower
        assert certify(a, loss.c[k].detach().double().numpy()) >= exact - 1e-9
