"""MNIST loading: shapes, known facts, checksums, offline errors, checked download."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from flowbound import data


def test_load_mnist_shapes_ranges_and_known_facts(mnist_dir):
    x, y = data.load_mnist("test")
    assert x.shape == (10000, 28, 28) and x.dtype == torch.float32
    assert y.shape == (10000,) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # Facts of the canonical files: first test labels and class counts.
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    xt, yt = data.load_mnist("train")
    assert xt.shape == (60000, 28, 28) and yt[:5].tolist() == [5, 0, 4, 1, 9]


def test_load_mnist_returns_copies(mnist_dir):
    x, _ = data.load_mnist("test")
    x[0] = 5.0
    assert float(data.load_mnist("test")[0][0].max()) <= 1.0


def test_bad_split_is_a_clear_error():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        data.load_mnist("validation")


def _copy(src: str, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in data.FILES:
        shutil.copy(Path(src) / name, dst / name)
    return dst


def test_corrupted_file_is_reported(mnist_dir, tmp_path, monkeypatch):
    folder = _copy(mnist_dir, tmp_path / "mnist")
    target = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(target.read_bytes())
    raw[-10] ^= 0xFF
    target.chmod(0o644)
    target.write_bytes(bytes(raw))
    monkeypatch.setenv("MNIST_DIR", str(folder))
    with pytest.raises(data.MNISTChecksumError, match="t10k-labels-idx1-ubyte.gz"):
        data.find_mnist_dir()


def test_offline_and_missing_names_all_four_files(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "MIRRORS", [(tmp_path / "no-mirror").as_uri() + "/"])
    with pytest.raises(data.MNISTNotFoundError) as err:
        data.find_mnist_dir()
    for name in data.FILES:
        assert name in str(err.value)
    assert "MNIST_DIR" in str(err.value)


def test_download_checks_md5_and_falls_back_to_next_mirror(mnist_dir, tmp_path, monkeypatch):
    bad = _copy(mnist_dir, tmp_path / "bad-mirror")
    victim = bad / "train-labels-idx1-ubyte.gz"
    victim.chmod(0o644)
    victim.write_bytes(b"not mnist")
    monkeypatch.setattr(data, "MIRRORS", [bad.as_uri() + "/", Path(mnist_dir).as_uri() + "/"])
    dest = tmp_path / "downloaded"
    monkeypatch.setenv("MNIST_DIR", str(dest))
    assert data.find_mnist_dir() == dest
    for name, md5 in data.FILES.items():
        assert data._md5(dest / name) == md5
    assert not list(dest.glob(".*")), "no temporary files left behind"


def test_download_with_only_corrupt_mirrors_fails_naming_md5(mnist_dir, tmp_path, monkeypatch):
    bad = _copy(mnist_dir, tmp_path / "bad-mirror")
    for f in bad.iterdir():
        f.chmod(0o644)
        f.write_bytes(b"junk")
    monkeypatch.setattr(data, "MIRRORS", [bad.as_uri() + "/"])
    monkeypatch.setenv("MNIST_DIR", str(tmp_path / "dest"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(data.MNISTNotFoundError, match="MD5"):
        data.find_mnist_dir()
