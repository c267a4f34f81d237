"""MKL's kernels by CPU features on AMD (flowbound.blas): when it applies, and same results."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from flowbound import blas

_PRODUCT = (
    "import torch; g = torch.Generator().manual_seed(0); "
    "a = torch.randn(300, 784, generator=g, dtype=torch.float64); "
    "w = torch.randn(500, 784, generator=g, dtype=torch.float64); "
    "torch.save(a @ w.T, {path!r})"
)


@pytest.fixture
def env(monkeypatch):
    monkeypatch.delenv("FLOWBOUND_MKL_SHIM", raising=False)
    monkeypatch.setenv("LD_PRELOAD", "")
    return monkeypatch


def test_the_preloaded_kernels_give_the_same_products(env, tmp_path):
    if (why := blas.reason_not_applied()) is not None:
        pytest.skip(f"the library does not apply here: {why}")
    line = blas.preload_for_kernels(tmp_path)
    assert "AMD" in line and "FLOWBOUND_MKL_SHIM=0" in line
    lib = tmp_path / blas._NAME
    assert os.environ["LD_PRELOAD"].split() == [str(lib)]
    blas.preload_for_kernels(tmp_path)  # twice: listed once
    assert os.environ["LD_PRELOAD"].split() == [str(lib)]
    out = {}
    for name, preload in (("plain", ""), ("shim", str(lib))):
        path = tmp_path / f"{name}.pt"
        run_env = dict(os.environ, LD_PRELOAD=preload)
        code = _PRODUCT.format(path=str(path))
        subprocess.run([sys.executable, "-c", code], env=run_env, check=True)
        out[name] = torch.load(path)
    scale = out["plain"].abs().max()
    assert float((out["plain"] - out["shim"]).abs().max() / scale) < 1e-13


def test_it_is_off_when_asked_or_not_amd_or_without_a_compiler(env, tmp_path):
    env.setenv("FLOWBOUND_MKL_SHIM", "0")
    assert blas.preload_for_kernels(tmp_path) == "MKL: default kernels (FLOWBOUND_MKL_SHIM=0)"
    env.delenv("FLOWBOUND_MKL_SHIM")
    env.setattr(blas, "_cpu_vendor", lambda: "GenuineIntel")
    assert "the CPU is not AMD" in blas.preload_for_kernels(tmp_path)
    env.setattr(blas, "_cpu_vendor", lambda: "AuthenticAMD")
    env.setattr(blas.shutil, "which", lambda name: None)
    line = blas.preload_for_kernels(tmp_path)
    if torch.backends.mkl.is_available():
        assert "no C compiler" in line
    assert os.environ["LD_PRELOAD"] == ""  # nothing preloaded in any of these cases
    assert not (tmp_path / blas._NAME).exists()
