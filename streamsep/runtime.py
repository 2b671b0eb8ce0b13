"""Process-wide runtime set-up that must happen before MLX is first imported.

MLX's Linux CPU wheel links a slow reference BLAS. Loading OpenBLAS with RTLD_GLOBAL first makes
its symbols win, which speeds float32 matmul by ~60x. Import this module (``streamsep`` does) before
``mlx.core``; set ``STREAMSEP_NO_BLAS_PRELOAD=1`` to measure or debug without it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger("streamsep")

_BLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
)

_state: dict[str, str | None] = {"blas": None, "reported": None}


def preload_blas() -> str | None:
    """Preload a fast system BLAS on Linux; returns its path, or None when none was loaded."""
    if _state["blas"] is not None:
        return _state["blas"]
    if not sys.platform.startswith("linux") or os.environ.get("STREAMSEP_NO_BLAS_PRELOAD") == "1":
        return None
    if "mlx.core" in sys.modules:
        # Too late: MLX already resolved its BLAS symbols.
        return None
    for path in (os.environ.get("STREAMSEP_BLAS_PATH"), *_BLAS_CANDIDATES):
        if path and os.path.exists(path):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                continue
            _state["blas"] = path
            return path
    return None


def limit_blas_threads(n: int | None) -> int | None:
    """Set the preloaded OpenBLAS's thread count; returns the previous one (None when there is
    no preloaded OpenBLAS, e.g. on macOS, where this does nothing). ``None`` leaves it as is."""
    lib = _openblas()
    if lib is None or n is None:
        return None
    prev = int(lib.openblas_get_num_threads())
    lib.openblas_set_num_threads(int(n))
    return prev


def lock_memory() -> bool:
    """Keep every page of the process resident (mlockall, current and future), best effort.

    A page fault in the audio thread waits for the kernel's memory-map lock, which other threads
    hold while they map or unmap memory (numpy and MLX do, every window): a missed deadline. With
    the pages locked there is nothing to fault. Returns whether it worked (it needs
    CAP_IPC_LOCK or a large enough RLIMIT_MEMLOCK; elsewhere it is a no-op)."""
    if not sys.platform.startswith("linux") or os.environ.get("STREAMSEP_NO_MLOCK") == "1":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.mlockall(1 | 2) == 0  # MCL_CURRENT | MCL_FUTURE
    except (OSError, AttributeError):
        return False


def unlock_memory() -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).munlockall()
        except (OSError, AttributeError):
            pass


def cpu_stolen_s() -> float | None:
    """Seconds of CPU time the hypervisor has given to other guests since boot (Linux ``steal``
    in /proc/stat, all CPUs together); None where the kernel does not report it.

    On a virtual machine a thread can be held off its CPU by the host, which nothing inside the
    guest controls; the engine uses this to tell such stalls from compute that really grew."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()
        return int(fields[8]) / _CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _openblas() -> ctypes.CDLL | None:
    path = _state["blas"]
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
        lib.openblas_get_num_threads  # noqa: B018 (not every BLAS is OpenBLAS)
    except (OSError, AttributeError):
        return None
    return lib


def backend_description() -> str:
    """One line naming the compute backend and BLAS in use."""
    import mlx.core as mx

    if mx.metal.is_available():
        return "mlx backend: Metal GPU"
    try:
        if mx.cuda.is_available():
            return "mlx backend: CUDA GPU"
    except AttributeError:
        pass
    blas = _state["blas"]
    if blas:
        return f"mlx backend: CPU, BLAS preloaded from {blas}"
    if os.environ.get("STREAMSEP_NO_BLAS_PRELOAD") == "1":
        return "mlx backend: CPU, BLAS preload disabled (STREAMSEP_NO_BLAS_PRELOAD=1)"
    return (
        "mlx backend: CPU, MLX's bundled reference BLAS "
        "(slow; apt-get install libopenblas0-pthread)"
    )


def report_backend_once() -> None:
    """Log the active backend the first time it is called."""
    if _state["reported"] is None:
        _state["reported"] = backend_description()
        log.info(_state["reported"])


preload_blas()
