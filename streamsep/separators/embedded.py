"""Separator adapter over the embedded model (the default when no SAM-Audio weights are given).

At the interface audio is 48 kHz with one latent frame per 1920 samples; inside, the model runs at
16 kHz where that frame is one STFT hop. The target is band-limited to 8 kHz; the residual is the
48 kHz input minus the target, so target + residual always equals the input.

``separate_continued`` serves the engine's ``--continuity inpaint``: it returns, with the target,
the window's predicted target state in the flow's band space, keyed by absolute latent frame, and
the next window pins the frames it shares with that committed result (see
``streamsep.embedded.flow``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import mlx.core as mx
import numpy as np
import soxr

from streamsep.embedded import features as F
from streamsep.embedded.flow import METHODS, sample
from streamsep.embedded.load import EmbeddedModel, find_model_dir, load_model
from streamsep.embedded.prompts import (
    PromptVerdict,
    judge,
    known_wordings,
    normalize,
    unsupported_sounds,
)
from streamsep.separators.base import check_window

INTERFACE_SR = 48000
FRAME_HOP = 1920
#: "strict": a prompt the model cannot serve is refused (ValueError naming the nearest classes);
#: "nearest": it acts as its nearest class, with a note (streamsep.embedded.prompts.judge).
PROMPT_POLICIES = ("strict", "nearest")


@dataclass(frozen=True)
class FlowState:
    """One window's answer for ``separate_continued``: band-space target x1 of latent frames
    [first, first + len(x1)), of which those before ``committed_end`` were emitted."""

    first: int
    x1: np.ndarray  # float32 (frames, state channels)
    committed_end: int
    prompt: str | None


class EmbeddedSeparator:
    sample_rate = INTERFACE_SR
    frame_hop = FRAME_HOP

    def __init__(self, model: EmbeddedModel, *, steps: int, method: str = "euler",
                 inpaint_ramp: int = 0, prompt_policy: str = "strict"):
        """inpaint_ramp: for ``separate_continued``, the last this many pinned frames are pinned
        ever more loosely (linear weights below 1), so the state eases from the previous
        window's answer into this window's own instead of switching at one frame."""
        if prompt_policy not in PROMPT_POLICIES:
            raise ValueError(f"unknown prompt policy {prompt_policy!r}; use one of "
                             f"{', '.join(PROMPT_POLICIES)}")
        if method not in METHODS:
            raise ValueError(f"unknown ODE method {method!r} for the embedded model; "
                             f"use one of {METHODS}")
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        self.model = model
        self.steps = steps
        self.method = method
        if inpaint_ramp < 0:
            raise ValueError(f"inpaint_ramp must not be negative, got {inpaint_ramp}")
        self.inpaint_ramp = inpaint_ramp
        self.noise_channels = model.net.args.state_channels
        self._bands = mx.array(F.band_matrix(self.noise_channels))
        self._encoder = None
        self._text: mx.array | None = None
        self.prompt: str | None = None
        self.prompt_policy = prompt_policy
        #: set by set_prompt when the prompt is not one of the known wordings (the CLI prints it)
        self.prompt_note: str | None = None
        self._known = [(c, w) for c, w in known_wordings() if w in model.prompt_cache]
        self._known_emb = np.stack([model.prompt_cache[w] for _, w in self._known]
                                   ).astype(np.float32) if self._known else None
        self._unsupported_emb: np.ndarray | None = None

    # -- prompt

    def embed(self, text: str) -> np.ndarray:
        """384-d prompt embedding: the bundled cache for known wordings, else MiniLM."""
        key = normalize(text)
        if not key:
            raise ValueError("the prompt is empty; describe the sound to extract, e.g. -p speech")
        if key in self.model.prompt_cache:
            return self.model.prompt_cache[key]
        return self._encode([key])[0]

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self._encoder is None:
            from streamsep.embedded.text import TextEncoder

            try:
                self._encoder = TextEncoder()
            except RuntimeError as e:
                known = ", ".join(sorted(self.model.prompt_cache)[:12])
                raise RuntimeError(f"{e} (without it only the cached prompts work: {known}, …)") \
                    from None
        return self._encoder.encode(texts)

    def judge(self, text: str, emb: np.ndarray | None = None) -> PromptVerdict | None:
        """Whether the model can serve ``text`` (None: a model folder without cached wordings,
        which has nothing to compare with)."""
        if self._known_emb is None:
            return None
        emb = self.embed(text) if emb is None else emb
        verdict = judge(text, emb, self._known, self._known_emb)
        if verdict.exact:
            return verdict  # a known wording: no need to load MiniLM for the unsupported sounds
        if self._unsupported_emb is None:
            self._unsupported_emb = self._encode([w for _, w in unsupported_sounds()])
        return judge(text, emb, self._known, self._known_emb, unsupported_sounds(),
                     self._unsupported_emb)

    def prepare_prompt(self, text: str) -> tuple[str, np.ndarray, PromptVerdict | None]:
        """The slow half of a prompt change (MiniLM for an uncached wording), run by the engine
        while it idles between windows. Under the "strict" policy a prompt the model cannot
        serve raises ValueError with the one line that says so."""
        emb = self.embed(text)
        verdict = self.judge(text, emb)
        if verdict is not None and not verdict.accepted and self.prompt_policy == "strict":
            raise ValueError(verdict.refusal())
        return text, emb, verdict

    def apply_prompt(self, prepared: tuple[str, np.ndarray, PromptVerdict | None]) -> None:
        text, emb, verdict = prepared
        self._text = mx.array(emb[None])
        self.prompt = text
        self.prompt_note = verdict.note() if verdict is not None else None

    def set_prompt(self, text: str) -> None:
        self.apply_prompt(self.prepare_prompt(text))

    # -- separation

    def separate(
        self,
        window: np.ndarray,
        noise: np.ndarray | None,
        anchors: list[tuple[str, float, float]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        # anchors are accepted for interface compatibility; this model has no anchor input.
        target, residual, _ = self._separate(window, noise, None, 0)
        return target, residual

    def separate_continued(
        self,
        window: np.ndarray,
        noise: np.ndarray | None,
        anchors: list[tuple[str, float, float]] | None,
        *,
        start: int,
        keep: slice,
        previous: FlowState | None,
    ) -> tuple[np.ndarray, np.ndarray, FlowState | None]:
        """``separate`` with the frames this window shares with ``previous``'s committed part
        pinned to it on the flow path; returns the state for the next window too.

        start: absolute sample of window[0], a multiple of the frame hop; keep: the emitted
        samples of this window (the engine's ``hop + crossfade``)."""
        if start % FRAME_HOP:
            raise ValueError(f"start must be a multiple of {FRAME_HOP} samples, got {start}")
        first = start // FRAME_HOP
        if previous is not None and previous.prompt != self.prompt:
            previous = None  # that answer was for another prompt
        target, residual, state = self._separate(window, noise, previous, first)
        if state is None:
            return target, residual, None
        live_first, x1 = state
        committed = first + -(-int(keep.stop) // FRAME_HOP)
        return target, residual, FlowState(live_first, x1, committed, self.prompt)

    def _separate(self, window: np.ndarray, noise: np.ndarray | None,
                  previous: FlowState | None, first: int
                  ) -> tuple[np.ndarray, np.ndarray, tuple[int, np.ndarray] | None]:
        """(target, residual, (absolute first live frame, band-space x1) or None)."""
        if self._text is None:
            raise RuntimeError("no prompt set; call set_prompt('speech') before separate()")
        window = check_window(window, FRAME_HOP)
        frames = window.size // FRAME_HOP
        if noise is None:
            noise = np.random.default_rng(0).standard_normal((frames, self.noise_channels))
        noise = np.asarray(noise, np.float32)
        if noise.shape != (frames, self.noise_channels):
            raise ValueError(f"noise must have shape ({frames}, {self.noise_channels}) for this "
                             f"window; got {noise.shape}")
        # The engine pads its first and last windows with digital silence. The model never saw
        # seconds of it in training, and its attention would spread over them, so only the frames
        # that hold signal go through it: silence in, silence out, as offline at a file's edges.
        live = np.flatnonzero(np.any(window.reshape(frames, FRAME_HOP) != 0, axis=1))
        target = np.zeros_like(window)
        if not live.size:
            return target, window - target, None
        a, b = int(live[0]), int(live[-1]) + 1
        pinned = self._pinned(previous, first + a, b - a)
        seg, x1 = self._separate_frames(window[a * FRAME_HOP: b * FRAME_HOP], noise[a:b],
                                        pinned)
        target[a * FRAME_HOP: b * FRAME_HOP] = seg
        return target, window - target, (first + a, x1)

    def _pinned(self, previous: FlowState | None, first: int, frames: int
                ) -> tuple[np.ndarray, np.ndarray] | None:
        """(known band state, weights) over [first, first + frames), or None: nothing shared."""
        if previous is None:
            return None
        lo = max(first, previous.first)
        hi = min(first + frames, previous.first + len(previous.x1), previous.committed_end)
        if hi <= lo:
            return None
        known = np.zeros((frames, self.noise_channels), np.float32)
        known[lo - first: hi - first] = previous.x1[lo - previous.first: hi - previous.first]
        weight = np.zeros(frames, np.float32)
        weight[lo - first: hi - first] = 1.0
        r = min(self.inpaint_ramp, hi - lo)
        if r:
            # The last r pinned frames: r/(r+1) ... 1/(r+1), easing out towards the free frames.
            weight[hi - first - r: hi - first] = np.arange(r, 0, -1) / (r + 1)
        return known, weight

    def _separate_frames(self, x48: np.ndarray, noise: np.ndarray,
                         pinned: tuple[np.ndarray, np.ndarray] | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
        frames = len(noise)
        x16 = soxr.resample(x48, INTERFACE_SR, F.SR)[: frames * F.HOP]
        x16 = np.pad(x16, (0, frames * F.HOP - x16.size))
        target16, x1 = self._separate_16k(x16, noise, pinned)
        target = soxr.resample(target16, F.SR, INTERFACE_SR)[: x48.size].astype(np.float32)
        return np.pad(target, (0, x48.size - target.size)), x1

    def separate_16k(self, x: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Target at 16 kHz for a 16 kHz signal of len(noise) STFT hops."""
        return self._separate_16k(x, noise, None)[0]

    def _separate_16k(self, x: np.ndarray, noise: np.ndarray,
                      pinned: tuple[np.ndarray, np.ndarray] | None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(target at 16 kHz, band-space x1 (frames, state channels))."""
        spec = F.stft(x)
        mix = F.magnitude_features(spec)
        known = weight = None
        if pinned is not None:
            known, weight = mx.array(pinned[0][None]), mx.array(pinned[1])
        est = sample(self.model.net, mx.array(mix[None]), self._text, mx.array(noise[None]),
                     self._bands, self.steps, self.method, known=known, known_weight=weight)
        x1 = est[0] @ self._bands.T
        gain = F.features_to_gain(np.array(est[0]), mix)
        return F.istft(spec * gain), np.array(x1, np.float32)


def load(spec: str | os.PathLike | None = None, *, steps: int | None = None,
         method: str = "euler", prompt_policy: str = "strict") -> EmbeddedSeparator:
    """The embedded separator from a model folder (None: the bundled model/)."""
    model = load_model(find_model_dir(spec))
    return EmbeddedSeparator(model, steps=steps or int(model.config.get("default_steps", 4)),
                             method=method, prompt_policy=prompt_policy)
