"""A fault-injection separator whose output is wrong on chosen windows: NaN, Inf, the wrong length,
dtype or shape. A plugin for tests and for trying by hand:

    STREAMSEP_TEST_CORRUPT_MODE=short STREAMSEP_TEST_FAULT_WINDOWS=2-4 streamsep file in.wav -p x \\
        -o out.wav --model tests/plugins/corrupt.py:corrupt

On the other windows it is a passthrough (target = input, residual = 0). Windows are counted by
calls to ``separate``, from 0.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
from faulty import _Passthrough, window_set  # found next to this file (the plugin's folder)

#: mode -> whether the engine must accept that output (mono shapes and float dtypes are fine)
MODES = {
    "nan": False, "inf": False, "short": False, "long": False, "int16": False,
    "complex": False, "stereo": False, "scalar": False, "triple": False, "none": False,
    "column": True, "row": True, "float64": True,
}


class Corrupt(_Passthrough):
    def __init__(self, mode: str = "nan", windows: str | Iterable[int] = "all") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        self.mode = mode
        self.hit = window_set(windows)

    def separate(self, window, noise, anchors=None):  # noqa: ANN001
        k, self.calls = self.calls, self.calls + 1
        t, r = super().separate(window, noise, anchors)
        if not self.hit(k):
            return t, r
        m = self.mode
        if m == "none":
            return None
        if m == "triple":
            return t, r, r
        if m == "nan":
            t[len(t) // 2] = np.nan
        elif m == "inf":
            r[0] = np.inf
        elif m == "short":
            t = t[: len(t) // 2]
        elif m == "long":
            t = np.concatenate([t, t[:100]])
        elif m == "int16":
            t = (t * 32767).astype(np.int16)
        elif m == "complex":
            t = t.astype(np.complex64)
        elif m == "stereo":
            t = np.stack([t, t])
        elif m == "scalar":
            t = np.float32(0.0)
        elif m == "column":
            t, r = t[:, None], r[:, None]
        elif m == "row":
            t = t[None, :]
        elif m == "float64":
            t = t.astype(np.float64)
        return t, r


def corrupt() -> Corrupt:
    """Corrupt from STREAMSEP_TEST_CORRUPT_MODE (nan) and STREAMSEP_TEST_FAULT_WINDOWS (all)."""
    env = os.environ.get
    return Corrupt(env("STREAMSEP_TEST_CORRUPT_MODE", "nan"),
                   env("STREAMSEP_TEST_FAULT_WINDOWS", "all"))
