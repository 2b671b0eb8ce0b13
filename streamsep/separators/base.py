"""The one interface between the live engine and any separation model.

The engine never imports model code: it hands a separator one window of mono audio at the
separator's sample rate, plus the position-seeded noise for that window's latent frames, and gets
the target and residual back for the same samples.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Separator(Protocol):
    #: Sample rate of the audio passed to and returned from ``separate``.
    sample_rate: int
    #: Samples per latent frame; every window length the engine uses is a multiple of it.
    frame_hop: int
    #: Noise channels per latent frame (0 for deterministic separators that take no noise).
    noise_channels: int

    def set_prompt(self, text: str) -> None:
        """Select the sound to extract; implementations cache the text features."""

    def separate(
        self,
        window: np.ndarray,
        noise: np.ndarray | None,
        anchors: list[tuple[str, float, float]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Separate one window.

        window: float32 (N,), N a multiple of ``frame_hop``.
        noise: float32 (N // frame_hop, noise_channels), or None when ``noise_channels`` is 0.
        anchors: optional ("+"|"-", start_s, end_s) spans relative to the window start.
        Returns (target, residual), each float32 (N,).
        """


def check_window(window: np.ndarray, frame_hop: int) -> np.ndarray:
    """The window as float32 (N,), or a ValueError when it is not mono whole latent frames."""
    window = np.asarray(window, dtype=np.float32)
    if window.ndim != 1 or window.size == 0 or window.size % frame_hop:
        raise ValueError(
            f"window must be mono (N,) with N a positive multiple of {frame_hop} samples; "
            f"got shape {window.shape}"
        )
    return window
