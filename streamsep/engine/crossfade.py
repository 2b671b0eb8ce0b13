"""Overlap-add weights, and the blend that uses them: the engine's one crossfade.

Two shapes (``WindowPlan.crossfade_shape``, ``--crossfade-shape``):

* ``amplitude`` (the default): a raised-cosine (sin^2) fade, fade_in[i] = sin^2(pi/2 * (i + 0.5) /
  n) and fade_out = 1 - fade_in. The weights sum to one at every sample, so the blend of two
  identical signals is the signal itself, and target + residual stays the input. The blend is
  written as ``new + fade_out * (old - new)``, which is exactly ``new`` when old == new, so an
  identity separator comes out bit-exact across seams.
* ``power``: fade_in = sin(pi/2 * u), fade_out = cos(pi/2 * u), whose squares sum to one. It keeps
  the level of two *uncorrelated* signals constant through the fade, which is what independently
  seeded windows give; for correlated ones (position-seeded noise) it bulges by up to 3 dB in the
  middle, and target + residual is no longer exactly the input inside the fade.
"""

from __future__ import annotations

import numpy as np

CROSSFADE_SHAPES = ("amplitude", "power")


def fade_weights(n: int, shape: str = "amplitude") -> tuple[np.ndarray, np.ndarray]:
    """(fade_in, fade_out) for an n-sample crossfade, float64.

    ``amplitude``: fade_in + fade_out == 1; ``power``: fade_in**2 + fade_out**2 == 1."""
    if n < 0:
        raise ValueError("crossfade length must not be negative")
    if shape not in CROSSFADE_SHAPES:
        raise ValueError(f"unknown crossfade shape {shape!r}: use one of "
                         f"{', '.join(CROSSFADE_SHAPES)}")
    u = 0.5 * np.pi * (np.arange(n) + 0.5) / max(n, 1)
    if shape == "power":
        return np.sin(u), np.cos(u)
    fade_in = np.sin(u) ** 2
    return fade_in, 1.0 - fade_in


class Crossfader:
    """Blends the previous window's tail into the next window's head, in place, no allocation."""

    def __init__(self, n: int, shape: str = "amplitude"):
        self.n = n
        self.shape = shape
        fade_in, fade_out = fade_weights(n, shape)
        self.fade_in = fade_in.astype(np.float32)
        self.fade_out = fade_out.astype(np.float32)
        self._tmp = np.zeros(n, np.float32)

    def blend(self, old_tail: np.ndarray, new_head: np.ndarray) -> None:
        """amplitude: new_head <- new_head + fade_out * (old_tail - new_head);
        power: new_head <- fade_in * new_head + fade_out * old_tail."""
        t = self._tmp
        if self.shape == "power":
            np.multiply(old_tail, self.fade_out, out=t)
            new_head *= self.fade_in
            new_head += t
            return
        np.subtract(old_tail, new_head, out=t)
        t *= self.fade_out
        new_head += t
