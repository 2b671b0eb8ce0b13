import os
import subprocess
import sys

import pytest

from streamsep import runtime


def _run(code: str, **env: str) -> str:
    full_env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, check=True
    ).stdout.strip()


def test_backend_description_names_the_blas():
    text = runtime.backend_description()
    assert text.startswith("mlx backend: ")
    if runtime.preload_blas():
        assert runtime.preload_blas() in text


def test_preload_can_be_turned_off():
    out = _run(
        "import streamsep.runtime as r; print(r.preload_blas()); print(r.backend_description())",
        STREAMSEP_NO_BLAS_PRELOAD="1",
    )
    first, second = out.splitlines()
    assert first == "None"
    assert "disabled" in second or "Metal" in second or "CUDA" in second


def test_preload_is_skipped_once_mlx_is_imported():
    out = _run(
        "import mlx.core; import streamsep.runtime as r; print(r.preload_blas())",
        STREAMSEP_NO_BLAS_PRELOAD="0",
    )
    assert out == "None"


def test_live_runs_can_cap_the_blas_threads():
    prev = runtime.limit_blas_threads(1)
    if prev is None:
        pytest.skip("no preloaded OpenBLAS on this machine")
    try:
        assert runtime.limit_blas_threads(1) == 1
    finally:
        runtime.limit_blas_threads(prev)
    assert runtime.limit_blas_threads(None) is None
