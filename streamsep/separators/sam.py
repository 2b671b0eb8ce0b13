"""The live engine's view of SAM-Audio: one window in, target and residual out.

The prompt's T5 features are computed once in ``set_prompt`` and re-used for every window. The
watermark message is drawn once per separator (seeded), so successive windows that the engine
crossfades carry the same watermark instead of a fresh random one each time.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np

from streamsep.sam_audio.model import SAMAudio
from streamsep.sam_audio.ode import step_size_for, validate_method
from streamsep.separators.base import check_window


class SAMSeparator:
    def __init__(
        self,
        model: SAMAudio,
        *,
        steps: int = 16,
        method: str = "midpoint",
        wm_seed: int = 0,
    ):
        self.model = model
        self.method = validate_method(method)
        self.steps = int(steps)
        self.step_size = step_size_for(self.steps)
        self.sample_rate: int = model.sample_rate
        self.frame_hop: int = model.hop_length
        self.noise_channels: int = model.noise_channels
        rng = np.random.default_rng(wm_seed)
        self.wm_message = mx.array(rng.integers(0, 2, 16).astype(np.float32))
        self.prompt: str | None = None
        self._text: tuple[mx.array, mx.array] | None = None

    def set_prompt(self, text: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the prompt is empty; describe the sound to extract, e.g. 'speech'")
        features = self.model.encode_text([text.strip()])
        mx.eval(*features)
        self.prompt, self._text = text.strip(), features

    def separate(
        self,
        window: np.ndarray,
        noise: np.ndarray | None,
        anchors: list[tuple[str, float, float]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        if self._text is None:
            raise RuntimeError("call set_prompt(text) before separate()")
        window = check_window(window, self.frame_hop)
        frames = window.size // self.frame_hop
        if noise is None:
            raise ValueError("SAM-Audio needs the window's noise (frames, 256); got None")
        noise = np.asarray(noise, dtype=np.float32)
        if noise.shape != (frames, self.noise_channels):
            raise ValueError(
                f"noise must have shape ({frames}, {self.noise_channels}) for this window; got "
                f"{noise.shape}"
            )
        target, residual = self.model.separate_window(
            mx.array(window),
            self._text,
            mx.array(noise)[None],
            method=self.method,
            step_size=self.step_size,
            anchors=anchors or None,
            wm_message=self.wm_message,
        )
        return (
            np.array(target[0], dtype=np.float32),
            np.array(residual[0], dtype=np.float32),
        )


def load(
    spec: str | Path,
    *,
    steps: int,
    method: str,
    dtype: mx.Dtype = mx.float32,
) -> SAMSeparator:
    """A SAM-Audio separator from a local directory or a hub repo id."""
    validate_method(method)
    step_size_for(steps)  # fail on bad knobs before a long download
    model = SAMAudio.from_pretrained(str(spec), dtype=dtype)
    return SAMSeparator(model, steps=steps, method=method)
