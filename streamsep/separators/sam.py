"""The live engine's view of SAM-Audio: one window in, target and residual out.

The prompt's T5 features are computed once in ``set_prompt`` and re-used for every window. The
watermark message is drawn once per separator (seeded), so successive windows that the engine
crossfades carry the same watermark instead of a fresh random one each time.

``separate_region`` is the engine's fast path: the codec encodes only the audio that is new
since the previous window (``WindowEncoder``; the DiT still sees the whole window's features,
equal to a full encode) and decodes only the emitted region, target and residual as one batch
(``RegionDecoder``). The one difference from ``separate`` sliced is the watermark term: by
default (``wm_state="stream"``) its LSTMs and causal convolutions carry their state along the
stream of emitted regions, where a per-window decode restarts them from zeros at every window's
start; ``wm_state="window"`` reproduces the per-window result exactly, at the cost of decoding
the window up to the region's end.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np

from streamsep.sam_audio.codec_stream import RegionDecoder, WindowEncoder
from streamsep.sam_audio.model import SAMAudio
from streamsep.sam_audio.ode import step_size_for, validate_method
from streamsep.separators.base import check_window

WM_STATES = ("stream", "window")
#: Where the streamed watermark has no state to resume (the first window, after a skip), it
#: starts from zeros this long before the region. The watermark's LSTMs forget their zero start
#: within a few frames: 8 frames (0.32 s) leave < 1e-5 of the watermark term in every random
#: codec measured (PyTorch-init weights, tiny to small-preset widths); 0.5 s leaves margin.
WM_RESET_HISTORY_S = 0.5


class SAMSeparator:
    def __init__(
        self,
        model: SAMAudio,
        *,
        steps: int = 16,
        method: str = "midpoint",
        wm_seed: int = 0,
        wm_state: str = "stream",
    ):
        if wm_state not in WM_STATES:
            raise ValueError(f"wm_state must be one of {', '.join(WM_STATES)}; got {wm_state!r}")
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
        self.wm_state = wm_state
        self.encoder = WindowEncoder(model.audio_codec)
        per_window = wm_state == "window"
        history = round(WM_RESET_HISTORY_S * self.sample_rate / self.frame_hop)
        self.decoder = RegionDecoder(
            model.audio_codec, self.wm_message, carry=not per_window,
            history=None if per_window else history,
        )
        # (start, emit, copy of the window) of the last separate_region call
        self._last: tuple[int, tuple[int, int], np.ndarray] | None = None

    def set_prompt(self, text: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the prompt is empty; describe the sound to extract, e.g. 'speech'")
        features = self.model.encode_text([text.strip()])
        mx.eval(*features)
        self.prompt, self._text = text.strip(), features

    def _checked(
        self, window: np.ndarray, noise: np.ndarray | None
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
        return window, noise

    def separate(
        self,
        window: np.ndarray,
        noise: np.ndarray | None,
        anchors: list[tuple[str, float, float]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        window, noise = self._checked(window, noise)
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

    def separate_region(
        self,
        window: np.ndarray,
        noise: np.ndarray | None,
        anchors: list[tuple[str, float, float]] | None,
        *,
        start: int,
        emit: slice,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``separate(window, noise, anchors)`` sliced to ``emit``, at a fraction of its cost.

        ``start`` is the window's position in the stream: a window that moved on by whole frames
        from the previous call's, with the same length and emit slice, re-uses that call's codec
        features and watermark state; any other resets them.
        """
        window, noise = self._checked(window, noise)
        hop = self.frame_hop
        lo, hi, step = emit.indices(window.size)
        if step != 1 or hi <= lo:
            raise ValueError(f"emit must be a non-empty contiguous slice; got {emit}")
        shift = self._shift(window, int(start), (lo, hi))
        model = self.model
        wav = mx.array(window)[None].astype(model.dtype)
        feats = self.encoder(wav, shift)
        mixture = mx.concatenate([feats, feats], axis=-1)
        features = self.model.solve_window(mixture, self._text, noise, self.method,
                                           self.step_size, anchors)
        # (1, T, 2C) -> (2, T, C): target and residual as one decode batch, as decode_pair
        frames, half = features.shape[1], features.shape[2] // 2
        pair = features.reshape(frames, 2, half).transpose(1, 0, 2)
        f0, f1 = lo // hop, -(-hi // hop)
        wavs = np.array(self.decoder(pair, (f0, f1), shift), dtype=np.float32)
        cut = slice(lo - f0 * hop, hi - f0 * hop)
        return wavs[0, cut], wavs[1, cut]

    def _shift(self, window: np.ndarray, start: int, emit: tuple[int, int]) -> int | None:
        """Frames the stream moved since the last call, or None when this window does not
        continue it (and the codec caches must be rebuilt)."""
        last, self._last = self._last, (start, emit, window.copy())
        if last is None:
            return None
        d = start - last[0]
        old = last[2]
        if (
            emit != last[1]
            or old.size != window.size
            or not 0 < d < window.size
            or d % self.frame_hop
            # The engine promises continuity; the audio check costs well under a millisecond
            # and keeps a caller that reuses positions across streams from mixing them.
            or not np.array_equal(window[: window.size - d], old[d:])
        ):
            return None
        return d // self.frame_hop


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
