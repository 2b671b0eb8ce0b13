"""Overlap-add weights that sum to one, and the blend that uses them.

A raised-cosine (sin^2) fade: fade_in[i] = sin^2(pi/2 * (i + 0.5) / n) and fade_out = 1 - fade_in,
so the two weights sum to one at every sample and the blend of two identical signals is the signal
itself. The blend is written as ``new + fade_out * (old - new)``, which is exactly ``new`` when
old == new, so an identity separator comes out bit-exact across seams.
"""

from __future__ import annotations

import numpy as np


def fade_weights(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fade_in, fade_out) for an n-sample crossfade, float64, fade_in + fade_out == 1."""
    if n < 0:
        raise ValueError("crossfade length must not be negative")
    fade_in = np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / max(n, 1)) ** 2
    return fade_in, 1.0 - fade_in


class Crossfader:
    """Blends the previous window's tail into the next window's head, in place, no allocation."""

    def __init__(self, n: int):
        self.n = n
        _, fade_out = fade_weights(n)
        self.fade_out = fade_out.astype(np.float32)
        self._tmp = np.zeros(n, np.float32)

    def blend(self, old_tail: np.ndarray, new_head: np.ndarray) -> None:
        """new_head <- new_head + fade_out * (old_tail - new_head)."""
        t = self._tmp
        np.subtract(old_tail, new_head, out=t)
        t *= self.fade_out
        new_head += t
