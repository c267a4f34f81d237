"""MKL's fast kernels on AMD CPUs for the book's kernels (a build-time speed setting).

torch's CPU build links Intel's MKL, which picks its matrix-product kernels by
CPU vendor: on an AMD CPU with AVX-512 it runs its slower generic path. MKL
asks its own exported function ``mkl_serv_intel_cpu_true`` which path to take;
a one-line library that returns 1, preloaded (``LD_PRELOAD``) into a process,
makes MKL choose by the CPU's features instead. On the project's 2-core AMD
EPYC this doubles float64 and float32 GEMM throughput and makes the build's
training 1.2-1.7x, the per-digit certificates about 1.4x and stAdv 1.1-1.3x faster
(``benchmarks/mkl_vendor.py``; numbers in ``benchmarks/RESULTS.md``). The
results are the same up to floating-point rounding (different kernels sum in
a different order); a certificate is still checked in float64.

:func:`preload_for_kernels` compiles the library once (with the system's C
compiler) into the cache folder and adds it to ``LD_PRELOAD`` of this
process's environment, which the chapter kernels inherit. It does nothing
(and says why) when the CPU is not AMD, torch does not use MKL, no C compiler
is found, or ``FLOWBOUND_MKL_SHIM=0``. The running process itself is not
changed (a preload acts at process start).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["preload_for_kernels", "reason_not_applied", "shim_library"]

_SOURCE = "int mkl_serv_intel_cpu_true(void) { return 1; }\n"
_NAME = "libflowbound_mkl_vendor.so"


def _cpu_vendor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def reason_not_applied() -> str | None:
    """Why the library does not apply here (None: it does)."""
    if os.environ.get("FLOWBOUND_MKL_SHIM", "1") == "0":
        return "FLOWBOUND_MKL_SHIM=0"
    if platform.system() != "Linux":
        return f"{platform.system()} is not Linux"
    if _cpu_vendor() != "AuthenticAMD":
        return "the CPU is not AMD"
    import torch

    if not torch.backends.mkl.is_available():
        return "torch does not use MKL"
    return None


def shim_library(folder: Path) -> Path | None:
    """The compiled library in ``folder`` (built now if missing), or None without a C compiler."""
    out = folder / _NAME
    if out.exists():
        return out
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "vendor.c"
        src.write_text(_SOURCE)
        built = Path(tmp) / _NAME
        done = subprocess.run(
            [cc, "-shared", "-fPIC", "-O2", "-o", str(built), str(src)], capture_output=True
        )
        if done.returncode != 0:
            return None
        part = folder / f".{_NAME}.{os.getpid()}"
        shutil.copyfile(built, part)
        part.replace(out)  # atomic: two builds never load a half-written file
    return out


def preload_for_kernels(folder: Path) -> str:
    """Add the library to ``LD_PRELOAD`` for child processes; return a line saying what was done."""
    why = reason_not_applied()
    if why is None:
        try:
            lib = shim_library(folder)
        except OSError:  # an unwritable cache folder: build with the default kernels
            lib = None
        if lib is None:
            why = f"no library: no C compiler (cc), or {folder} is not writable"
        else:
            current = os.environ.get("LD_PRELOAD", "")
            if str(lib) not in current.split():
                os.environ["LD_PRELOAD"] = f"{lib} {current}".strip()
            return (
                "MKL: the chapters pick its kernels by this AMD CPU's features, not its "
                "vendor (FLOWBOUND_MKL_SHIM=0 turns this off)"
            )
    return f"MKL: default kernels ({why})"
