"""Shared fixtures: every test gets its own cache folder; MNIST comes from $MNIST_DIR."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FLOWBOUND_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("FLOWBOUND_FIGURES", str(tmp_path_factory.mktemp("figures")))


@pytest.fixture(scope="session")
def mnist_dir() -> str:
    path = os.environ.get("MNIST_DIR")
    if not path:
        pytest.fail("set MNIST_DIR to the folder with the four MNIST files (the Makefile does)")
    return path


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
