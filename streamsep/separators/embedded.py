"""Separator adapter over the embedded model (the default when no SAM-Audio weights are given).

At the interface audio is 48 kHz with one latent frame per 1920 samples; inside, the model runs at
16 kHz where that frame is one STFT hop. The target is band-limited to 8 kHz; the residual is the
48 kHz input minus the target, so target + residual always equals the input.
"""

from __future__ import annotations

import os

import mlx.core as mx
import numpy as np
import soxr

from streamsep.embedded import features as F
from streamsep.embedded.flow import METHODS, sample
from streamsep.embedded.load import EmbeddedModel, find_model_dir, load_model
from streamsep.embedded.prompts import CLASSES, TRAIN_WORDINGS
from streamsep.separators.base import check_window

INTERFACE_SR = 48000
FRAME_HOP = 1920
#: Below this cosine similarity to every trained wording a prompt names something the model never
#: heard. Held-out paraphrases score 0.64 to 0.82; "a dog barking" 0.41, "a car engine" 0.28.
KNOWN_PROMPT_SIMILARITY = 0.5


class EmbeddedSeparator:
    sample_rate = INTERFACE_SR
    frame_hop = FRAME_HOP

    def __init__(self, model: EmbeddedModel, *, steps: int, method: str = "euler"):
        if method not in METHODS:
            raise ValueError(f"unknown ODE method {method!r} for the embedded model; "
                             f"use one of {METHODS}")
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        self.model = model
        self.steps = steps
        self.method = method
        self.noise_channels = model.net.args.state_channels
        self._bands = mx.array(F.band_matrix(self.noise_channels))
        self._encoder = None
        self._text: mx.array | None = None
        self.prompt: str | None = None
        #: set by set_prompt when the prompt is unlike anything trained (the CLI prints it)
        self.prompt_note: str | None = None
        self._trained = [(c, w) for c, ws in TRAIN_WORDINGS.items() for w in ws
                         if w in model.prompt_cache]
        self._trained_emb = np.stack([model.prompt_cache[w] for _, w in self._trained]
                                     ).astype(np.float32) if self._trained else None

    # -- prompt

    def embed(self, text: str) -> np.ndarray:
        """384-d prompt embedding: the bundled cache for known wordings, else MiniLM."""
        key = " ".join(text.strip().split())
        if not key:
            raise ValueError("the prompt is empty; describe the sound to extract, e.g. -p speech")
        if key in self.model.prompt_cache:
            return self.model.prompt_cache[key]
        if self._encoder is None:
            from streamsep.embedded.text import TextEncoder

            try:
                self._encoder = TextEncoder()
            except RuntimeError as e:
                known = ", ".join(sorted(self.model.prompt_cache)[:12])
                raise RuntimeError(f"{e} (without it only the cached prompts work: {known}, …)") \
                    from None
        return self._encoder.encode([key])[0]

    def prepare_prompt(self, text: str) -> tuple[str, np.ndarray]:
        """The slow half of a prompt change (MiniLM for an uncached wording), run by the engine
        while it idles between windows."""
        return text, self.embed(text)

    def apply_prompt(self, prepared: tuple[str, np.ndarray]) -> None:
        text, emb = prepared
        self._text = mx.array(emb[None])
        self.prompt = text
        self.prompt_note = None
        cls, wording, sim = self.closest_trained(emb)
        if sim < KNOWN_PROMPT_SIMILARITY:
            self.prompt_note = (
                f"the embedded model knows {', '.join(CLASSES)}; {text.strip()!r} is closest to "
                f"{wording!r} (similarity {sim:.2f}), so it will act as a {cls} prompt")

    def set_prompt(self, text: str) -> None:
        self.apply_prompt(self.prepare_prompt(text))

    def closest_trained(self, emb: np.ndarray) -> tuple[str, str, float]:
        """(class, wording, cosine similarity) of the trained wording nearest to an embedding."""
        if self._trained_emb is None:
            return "", "", 1.0  # a model folder without cached wordings: nothing to compare
        sims = self._trained_emb @ emb
        k = int(np.argmax(sims))
        return (*self._trained[k], float(sims[k]))

    # -- separation

    def separate(
        self,
        window: np.ndarray,
        noise: np.ndarray | None,
        anchors: list[tuple[str, float, float]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        # anchors are accepted for interface compatibility; this model has no anchor input.
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
        if live.size:
            a, b = int(live[0]), int(live[-1]) + 1
            target[a * FRAME_HOP: b * FRAME_HOP] = self._separate_frames(
                window[a * FRAME_HOP: b * FRAME_HOP], noise[a:b])
        return target, window - target

    def _separate_frames(self, x48: np.ndarray, noise: np.ndarray) -> np.ndarray:
        frames = len(noise)
        x16 = soxr.resample(x48, INTERFACE_SR, F.SR)[: frames * F.HOP]
        x16 = np.pad(x16, (0, frames * F.HOP - x16.size))
        target16 = self.separate_16k(x16, noise)
        target = soxr.resample(target16, F.SR, INTERFACE_SR)[: x48.size].astype(np.float32)
        return np.pad(target, (0, x48.size - target.size))

    def separate_16k(self, x: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Target at 16 kHz for a 16 kHz signal of len(noise) STFT hops."""
        spec = F.stft(x)
        mix = F.magnitude_features(spec)
        est = sample(self.model.net, mx.array(mix[None]), self._text, mx.array(noise[None]),
                     self._bands, self.steps, self.method)
        gain = F.features_to_gain(np.array(est[0]), mix)
        return F.istft(spec * gain)


def load(spec: str | os.PathLike | None = None, *, steps: int | None = None,
         method: str = "euler") -> EmbeddedSeparator:
    """The embedded separator from a model folder (None: the bundled model/)."""
    model = load_model(find_model_dir(spec))
    return EmbeddedSeparator(model, steps=steps or int(model.config.get("default_steps", 4)),
                             method=method)
