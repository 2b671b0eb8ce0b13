"""``streamsep.load``: one Python API for every model the command line runs.

>>> import streamsep
>>> model = streamsep.load("embedded")                 # or a folder, a hub repo id, FILE.py:NAME
>>> result = model.separate("talk.wav", prompt="speech")
>>> streamsep.save_audio(result.target, "speech.wav", sample_rate=result.sample_rate)

The spec is resolved by ``streamsep.separators.registry.load_separator``, the resolver behind
``--model``, so ``load(X)`` is the model ``streamsep file --model X`` runs, with the same
defaults (SAM-Audio: 4 Euler steps). Both entry points run the engine's offline path (the
worker stepped by hand, every window separated, crossfaded by the engine), so ``separate`` on a
mono 48 kHz recording returns exactly what ``streamsep file`` writes with the same window plan
and seed, and ``separate_streaming`` yields the same samples as they are finalised.

The embedded model knows speech, music and noise (``known_prompts``); a prompt it cannot serve
raises ValueError with the line that says so and names the nearest classes, unless
``prompt_policy="nearest"``. SAM-Audio takes any text.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from streamsep.engine.plan import (
    DEFAULT_CROSSFADE_S,
    DEFAULT_HOP_S,
    DEFAULT_LOOKAHEAD_S,
    DEFAULT_WINDOW_S,
    WindowPlan,
)
from streamsep.sam_audio.model import SeparationResult
from streamsep.separators import registry
from streamsep.separators.base import check_prompt_text

AudioInput = str | Path | np.ndarray | mx.array


class Model:
    """A loaded separator with whole-recording and streaming entry points (see the module)."""

    def __init__(self, separator: Any, spec: str):
        self.separator = separator
        self.spec = spec
        #: "embedded", "sam-audio", "simple" or "plugin"
        self.kind: str = registry.kind_of(separator)
        self.sample_rate: int = int(separator.sample_rate)

    def __repr__(self) -> str:
        return f"streamsep.Model({self.spec!r}, kind={self.kind!r}, sample_rate={self.sample_rate})"

    @property
    def known_prompts(self) -> dict[str, tuple[str, ...]] | None:
        """Class -> the wordings it was trained and evaluated with, for a model with a fixed
        vocabulary (the embedded one); None for a model that takes any text."""
        if self.kind != "embedded":
            return None
        from streamsep.embedded.prompts import CLASSES, HELDOUT_WORDINGS, TRAIN_WORDINGS

        return {c: TRAIN_WORDINGS[c] + HELDOUT_WORDINGS[c] for c in CLASSES}

    def plan(self, window: float = DEFAULT_WINDOW_S, hop: float = DEFAULT_HOP_S,
             lookahead: float = DEFAULT_LOOKAHEAD_S,
             crossfade: float = DEFAULT_CROSSFADE_S) -> WindowPlan:
        """The engine's window plan for this model (the command line's defaults)."""
        return WindowPlan.from_seconds(self.sample_rate, self.separator.frame_hop, window, hop,
                                       lookahead, crossfade)

    # ------------------------------------------------------------------ whole recordings
    def separate(self, audio: AudioInput, sample_rate: int | None = None,
                 prompt: str | None = None, *, prompt_policy: str | None = None,
                 plan: WindowPlan | None = None, seed: int = 0,
                 verbose: bool = False) -> SeparationResult:
        """Separate one recording: a file path, or an array (N,) mono or (N, C) channels.

        ``sample_rate``: the array's (default: the model's, 48 kHz); ignored for a path, whose
        own rate is used. Other rates are resampled to the model's and back. Each channel is
        separated on its own, as ``streamsep file --channels keep`` does. Returns target and
        residual as float32 mx arrays of the input's shape and length, at the input's rate
        (``result.sample_rate``); for the embedded model target + residual is the input.
        """
        prompt = self._check_call(prompt, prompt_policy)
        x, sr = _load_audio(audio, sample_rate, self.sample_rate)
        plan = plan or self.plan()
        targets, residuals = [], []
        with self._policy(prompt_policy):
            self._set_prompt(prompt)
            for ch in range(x.shape[1]):
                lane = _resample(x[:, ch], sr, self.sample_rate)
                t, r = self._run(lane, prompt, plan, seed, verbose)
                targets.append(_resample(t, self.sample_rate, sr, len(x)))
                residuals.append(_resample(r, self.sample_rate, sr, len(x)))
        mono = x.shape[1] == 1 and _is_mono(audio)
        target = targets[0] if mono else np.stack(targets, axis=1)
        residual = residuals[0] if mono else np.stack(residuals, axis=1)
        return SeparationResult(target=mx.array(target), residual=mx.array(residual),
                                sample_rate=sr)

    def _run(self, lane: np.ndarray, prompt: str, plan: WindowPlan, seed: int,
             verbose: bool) -> tuple[np.ndarray, np.ndarray]:
        if lane.size == 0:
            return lane, lane
        parts = [(np.asarray(c.target), np.asarray(c.residual))
                 for c in self._chunks([lane], prompt, plan, seed, len(lane), verbose)]
        return (np.concatenate([t for t, _ in parts]).astype(np.float32),
                np.concatenate([r for _, r in parts]).astype(np.float32))

    # ------------------------------------------------------------------ streaming
    def separate_streaming(self, audio: AudioInput | Iterable[Any],
                           sample_rate: int | None = None, prompt: str | None = None, *,
                           prompt_policy: str | None = None, plan: WindowPlan | None = None,
                           seed: int = 0, verbose: bool = False) -> Iterator[SeparationResult]:
        """Separate one mono recording as it goes, as the live engine does.

        ``audio``: a file path (read and resampled block by block, downmixed to mono), an
        array (N,) at ``sample_rate`` (default the model's), or any iterator of mono blocks at
        the model's rate (live-like input). Yields ``SeparationResult`` chunks at the model's
        rate as the engine finalises them (``chunk_idx``, ``is_last``); joined, they are the
        input's length and aligned with it. A bad argument or prompt raises here, at the call.
        """
        prompt = self._check_call(prompt, prompt_policy)
        if isinstance(audio, np.ndarray | mx.array):
            a, sr = _load_audio(audio, sample_rate, self.sample_rate)
            if a.shape[1] != 1:
                raise ValueError(f"separate_streaming takes mono audio (N,); got shape "
                                 f"{tuple(audio.shape)}: use separate() for channels")
            audio = _resample(a[:, 0], sr, self.sample_rate)
            if audio.size == 0:
                raise ValueError("the audio is empty (0 samples)")
        elif not isinstance(audio, str | Path) and sample_rate not in (None, self.sample_rate):
            raise ValueError(f"blocks must be at the model's {self.sample_rate} Hz (got "
                             f"sample_rate={sample_rate}); a path is resampled for you")
        from streamsep.sam_audio.streaming import audio_blocks

        blocks, total = audio_blocks(audio, self.sample_rate, "separate_streaming")
        plan = plan or self.plan()
        with self._policy(prompt_policy):
            self._set_prompt(prompt)  # refused here, not at the first chunk
        return self._stream(blocks, prompt, plan, seed, total, verbose, prompt_policy)

    def _stream(self, blocks: Iterable[Any], prompt: str, plan: WindowPlan, seed: int,
                total: int | None, verbose: bool,
                prompt_policy: str | None) -> Iterator[SeparationResult]:
        with self._policy(prompt_policy):
            yield from self._chunks(blocks, prompt, plan, seed, total, verbose)

    def _chunks(self, blocks: Iterable[Any], prompt: str, plan: WindowPlan, seed: int,
                total: int | None, verbose: bool) -> Iterator[SeparationResult]:
        from streamsep.sam_audio.streaming import _pieces, engine_chunks

        if (plan.sample_rate, plan.frame_hop) != (self.sample_rate, self.separator.frame_hop):
            raise ValueError(f"plan is for {plan.sample_rate} Hz and {plan.frame_hop}-sample "
                             f"frames; the model runs at {self.sample_rate} Hz with "
                             f"{self.separator.frame_hop}-sample frames: use model.plan(...)")
        yield from engine_chunks(self.separator, _pieces(blocks, plan.hop), prompt, plan,
                                 int(seed), total=total, verbose=verbose, label=self.spec)

    # ------------------------------------------------------------------ prompts
    def _check_call(self, prompt: str | None, prompt_policy: str | None) -> str:
        if prompt is None:
            raise ValueError("no prompt: pass prompt=, e.g. prompt='speech'")
        why = check_prompt_text(prompt)
        if why is not None:
            raise ValueError(why)
        if prompt_policy is not None and prompt_policy not in registry.PROMPT_POLICIES:
            raise ValueError(f"unknown prompt_policy {prompt_policy!r}: use "
                             f"{' or '.join(registry.PROMPT_POLICIES)}")
        return prompt.strip()

    def _set_prompt(self, prompt: str) -> None:
        self.separator.set_prompt(prompt)

    @contextlib.contextmanager
    def _policy(self, prompt_policy: str | None) -> Iterator[None]:
        """This call's prompt policy, on a separator that has one (the embedded model)."""
        before = getattr(self.separator, "prompt_policy", None)
        if prompt_policy is None or before is None:
            yield
            return
        self.separator.prompt_policy = prompt_policy
        try:
            yield
        finally:
            self.separator.prompt_policy = before


def load(spec: str = registry.DEFAULT_MODEL, *, steps: int | None = None,
         method: str | None = None, prompt_policy: str = registry.DEFAULT_PROMPT_POLICY) -> Model:
    """Load a model as ``--model spec`` does: "embedded" (the bundled model), an embedded or
    SAM-Audio folder, a Hugging Face repo id (facebook/sam-audio-small, ...), "passthrough",
    "silence", "bandpass[:LOW-HIGH]", or your own separator as "FILE.py:NAME" or
    "package.module:NAME". A spec that cannot load raises ValueError with one line saying why.
    ``prompt_policy``: "strict" refuses a prompt the embedded model cannot serve, "nearest" maps
    it to the nearest class; ``separate(..., prompt_policy=)`` overrides it per call."""
    if not isinstance(spec, str | Path):
        raise ValueError(f"load() takes a model spec string, e.g. 'embedded'; got "
                         f"{type(spec).__name__}")
    spec = str(spec)
    separator = registry.load_separator(spec, steps=steps, method=method,
                                        prompt_policy=prompt_policy)
    return Model(separator, spec)


# ---------------------------------------------------------------------- audio in and out
def _is_mono(audio: Any) -> bool:
    return not isinstance(audio, np.ndarray | mx.array) or np.ndim(audio) == 1


def _load_audio(audio: Any, sample_rate: int | None, model_rate: int) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 and its rate."""
    if isinstance(audio, str | Path):
        from streamsep.audio.files import probe, read_blocks

        path = str(audio)
        info = probe(path)
        blocks = list(read_blocks(path, info.sample_rate, note=None, keep_channels=True))
        x = np.concatenate(blocks) if blocks else np.zeros((0, info.channels), np.float32)
        return np.asarray(x, np.float32).reshape(len(x), -1), info.sample_rate
    if isinstance(audio, mx.array):
        audio = np.asarray(audio.astype(mx.float32))
    if not isinstance(audio, np.ndarray):
        raise ValueError(f"audio must be a file path or an array (N,) / (N, channels); got "
                         f"{type(audio).__name__}")
    if audio.ndim not in (1, 2):
        raise ValueError(f"audio must be (N,) mono or (N, channels); got shape {audio.shape}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"audio must be float samples in [-1, 1]; got dtype {audio.dtype}")
    x = np.asarray(audio, np.float32)
    x = x[:, None] if x.ndim == 1 else x
    if not np.isfinite(x).all():
        raise ValueError("audio contains NaN or Inf samples")
    sr = model_rate if sample_rate is None else sample_rate
    if not isinstance(sr, int | np.integer) or sr <= 0:
        raise ValueError(f"sample_rate must be a positive whole number of Hz; got {sr!r}")
    return x, int(sr)


def _resample(x: np.ndarray, src: int, dst: int, length: int | None = None) -> np.ndarray:
    if src != dst and x.size:
        import soxr

        x = soxr.resample(x, src, dst, quality="HQ").astype(np.float32)
    if length is not None:
        x = np.pad(x[:length], (0, max(0, length - len(x))))
    return np.ascontiguousarray(x, np.float32)
