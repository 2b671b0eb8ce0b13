"""A passthrough separator that spends a share of each hop in pure-Python work (holding the GIL):
the worst neighbour a device callback can have if it needs the interpreter.

    STREAMSEP_BUSY_S=0.8 streamsep run -p x -i system -o system --model tests/plugins/busy.py:Busy

With the default 2 s hop, 0.8 s is 40 % of each hop. The output equals the input, so any wrong
sample at the far end of a loop is a glitch.
"""

from __future__ import annotations

import os
import time

import numpy as np


class Busy:
    sample_rate = 48000
    frame_hop = 1920
    noise_channels = 0

    def __init__(self) -> None:
        self.busy_s = float(os.environ.get("STREAMSEP_BUSY_S", "0.8"))

    def set_prompt(self, text: str) -> None:
        self.prompt = text

    def separate(self, window, noise, anchors=None):  # noqa: ANN001
        end = time.perf_counter() + self.busy_s
        n = 0
        while time.perf_counter() < end:  # interpreter work, no C call that releases the GIL
            n += sum(i * i for i in range(200))
        w = np.asarray(window, np.float32)
        return w.copy(), np.zeros_like(w)
