"""MNIST loading: ``$MNIST_DIR``, then ``data/mnist``, then a checked download.

Used in: every chapter (models are trained and evaluated on MNIST).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "FILES",
    "MIRRORS",
    "MNISTChecksumError",
    "MNISTNotFoundError",
    "find_mnist_dir",
    "load_mnist",
]

#: The four canonical files and their MD5 checksums (LeCun et al., 1998).
FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

#: Where a reader's machine downloads the files from, tried in order.
MIRRORS: list[str] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]

_SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class MNISTNotFoundError(FileNotFoundError):
    """The MNIST files are nowhere to be found and cannot be downloaded."""


class MNISTChecksumError(ValueError):
    """An MNIST file exists but its MD5 differs from the canonical one."""


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verified(path: Path) -> Path:
    expected = FILES[path.name]
    got = _md5(path)
    if got != expected:
        raise MNISTChecksumError(
            f"{path} has MD5 {got}, expected {expected}: the file is corrupted or not the "
            f"canonical MNIST file. Delete it and download it again."
        )
    return path


def _candidate_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("MNIST_DIR"):
        env = Path(os.environ["MNIST_DIR"])
        if env.exists() and not env.is_dir():
            raise MNISTNotFoundError(
                f"MNIST_DIR={env} is a file, not a folder; set MNIST_DIR to the folder that "
                f"holds {', '.join(FILES)}"
            )
        dirs.append(env)
    dirs.append(Path("data/mnist"))
    return dirs


def _download(dest: Path, mirrors: list[str]) -> None:
    """Fetch the missing files into ``dest``; a folder it had to create is removed
    again when the download fails, so a failed run leaves nothing behind."""
    created = not dest.exists()
    try:
        _fetch_all(dest, mirrors)
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise


def _fetch_all(dest: Path, mirrors: list[str]) -> None:
    payloads: dict[str, bytes] = {}
    for name in FILES:
        target = dest / name
        if target.exists():
            continue
        errors = []
        for base in mirrors:
            try:
                with urllib.request.urlopen(base + name, timeout=30) as resp:
                    payload = resp.read()
            except (urllib.error.URLError, OSError, ValueError) as exc:
                errors.append(f"{base}: {exc}")
                continue
            got = hashlib.md5(payload).hexdigest()
            if got != FILES[name]:
                errors.append(f"{base}: MD5 {got}, expected {FILES[name]}")
                continue
            payloads[name] = payload
            break
        else:
            raise MNISTNotFoundError(
                "MNIST is not available and could not be downloaded. Put the four files "
                f"{', '.join(FILES)} in a folder and set MNIST_DIR to it (or put them in "
                f"{dest.resolve()}). Download errors: " + "; ".join(errors)
            )
    dest.mkdir(parents=True, exist_ok=True)  # only once every file arrived
    for name, payload in payloads.items():
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, dest / name)


def find_mnist_dir(*, download: bool = True) -> Path:
    """Return a folder holding all four MNIST files with verified checksums.

    Looks in ``$MNIST_DIR``, then ``data/mnist``; otherwise downloads into
    ``$MNIST_DIR`` (if set) or ``data/mnist``, checking every MD5.
    """
    for d in _candidate_dirs():
        if all((d / name).exists() for name in FILES):
            for name in FILES:
                _verified(d / name)
            return d
    if not download:
        raise MNISTNotFoundError(
            f"MNIST files {', '.join(FILES)} not found in "
            f"{', '.join(str(d) for d in _candidate_dirs())}; set MNIST_DIR to their folder."
        )
    dest = _candidate_dirs()[0]
    _download(dest, MIRRORS)
    for name in FILES:
        _verified(dest / name)
    return dest


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise MNISTChecksumError(f"{path}: header says {shape}, found {data.size} values")
    return data.reshape(shape)


@lru_cache(maxsize=4)
def _load(split: str, folder: str) -> tuple[torch.Tensor, torch.Tensor]:
    img_name, lab_name = _SPLITS[split]
    images = _read_idx(Path(folder) / img_name)
    labels = _read_idx(Path(folder) / lab_name)
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def load_mnist(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an MNIST split.

    Parameters
    ----------
    split : ``"train"`` (60,000 images) or ``"test"`` (10,000 images).

    Returns
    -------
    x : float32 tensor of shape (N, 28, 28), pixels in [0, 1].
    y : int64 tensor of shape (N,), labels 0-9.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    x, y = _load(split, str(find_mnist_dir()))
    return x.clone(), y.clone()
