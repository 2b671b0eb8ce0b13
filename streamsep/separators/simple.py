"""Deterministic separators whose exact output is known.

They take no noise and ignore the prompt, so the engine's tests can check its output sample for
sample, and users can measure their devices' and the engine's latency without a model:
``passthrough`` (target = input, residual = 0), ``silence`` (target = 0, residual = input) and
``bandpass`` (an FFT brick-wall band filter per window; residual = input - target).
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 48000
FRAME_HOP = 1920  # SAM-Audio's latent hop, so plans match the real models


class _Simple:
    noise_channels = 0

    def __init__(self, sample_rate: int = SAMPLE_RATE, frame_hop: int = FRAME_HOP):
        self.sample_rate = sample_rate
        self.frame_hop = frame_hop
        self.prompt: str | None = None

    def set_prompt(self, text: str) -> None:
        self.prompt = text


class Passthrough(_Simple):
    name = "passthrough"

    def separate(self, window, noise=None, anchors=None):  # noqa: ANN001
        w = np.asarray(window, np.float32)
        return w.copy(), np.zeros_like(w)


class Silence(_Simple):
    name = "silence"

    def separate(self, window, noise=None, anchors=None):  # noqa: ANN001
        w = np.asarray(window, np.float32)
        return np.zeros_like(w), w.copy()


class Bandpass(_Simple):
    """Keeps [low, high] Hz exactly (zeroes every other FFT bin of the window)."""

    name = "bandpass"

    def __init__(self, low: float = 300.0, high: float = 3400.0, **kw):
        super().__init__(**kw)
        if not 0 <= low < high:
            raise ValueError(f"bandpass needs 0 <= low < high, got {low}-{high} Hz: "
                             "use e.g. --model bandpass:300-3400")
        self.low, self.high = float(low), float(high)

    def separate(self, window, noise=None, anchors=None):  # noqa: ANN001
        w = np.asarray(window, np.float64)
        spec = np.fft.rfft(w)
        f = np.fft.rfftfreq(len(w), 1.0 / self.sample_rate)
        spec[(f < self.low) | (f > self.high)] = 0.0
        target = np.fft.irfft(spec, len(w))
        return target.astype(np.float32), (w - target).astype(np.float32)


SIMPLE = {"passthrough": Passthrough, "silence": Silence, "bandpass": Bandpass}
