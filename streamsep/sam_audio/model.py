"""SAM-Audio, the top-level model: codec + T5 + DiT flow, with mlx-audio's ``separate`` API.

Attribute names follow the official checkpoint (``audio_codec``, ``transformer``, ``proj``,
``memory_proj``, ``embed_anchors``, ``align_masked_video``, ``text_encoder``), so loading is a
per-component ``sanitize`` followed by ``load_weights``.

One vector-field evaluation (``velocity``), as the reference's ``SAMAudio.forward``:
  x      = proj(concat[noisy (2C), zeros (2C), mixture features stacked twice (2C)])
  x     += tanh(g_v) · LayerNorm(conv1x1(video features))     (zeros without video: conv bias)
  x     += tanh(g_a) · proj_a(embed(anchor_ids[alignment]))
  memory = memory_proj(T5 hidden) + sinusoid(t)
  v      = DiT(x, t, memory, text mask, audio padding mask)
The ODE runs t = 0 → 1 from the noise itself; channels 0..C-1 of the result are the target's
codec features, C..2C-1 the residual's; both are decoded together as a batch of 2B.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_reduce

from streamsep.sam_audio.codec import DACVAE
from streamsep.sam_audio.config import SAMAudioConfig
from streamsep.sam_audio.dit import DiT
from streamsep.sam_audio.loading import SKIPPED_PREFIXES
from streamsep.sam_audio.ode import odeint, parse_ode_opt, step_size_for
from streamsep.sam_audio.processor import anchor_arrays
from streamsep.sam_audio.t5 import T5Config, T5Encoder, T5TextEncoder, T5Tokenizer

if TYPE_CHECKING:
    from streamsep.engine.plan import WindowPlan

log = logging.getLogger("streamsep")



class SAMAudioLoadError(ValueError):
    """A checkpoint that does not fit the model built from its config."""


@dataclass
class SeparationResult:
    #: One waveform per item, float32 (sizes[i]·hop,) at ``sample_rate``; in a
    #: ``separate_streaming`` chunk, the chunk's own float32 (n,) waveform (as mlx-audio, one
    #: array, not a list).
    target: list[mx.array] | mx.array
    residual: list[mx.array] | mx.array
    #: The initial ODE state, (B, T, 2·codebook_dim); on the last streaming chunk only.
    noise: mx.array | None = None
    #: Peak memory in GB as MLX reports it; on the last streaming chunk only.
    peak_memory: float | None = None
    #: Streaming chunks only (None from separate / separate_long), as mlx-audio.
    chunk_idx: int | None = None
    is_last: bool | None = None
    #: Hz of target and residual where they are not the model's (``streamsep.load(...)
    #: .separate`` returns the input's rate); None: the model's ``sample_rate``.
    sample_rate: int | None = None


@dataclass
class Conditioning:
    """Everything the vector field needs besides the state and t; fixed for a whole solve."""

    mixture: mx.array  # (B, T, 2C): codec features stacked twice
    text_hidden: mx.array  # (B, L, D_text)
    text_mask: mx.array  # (B, L) bool
    anchor_ids: mx.array  # (B, K) int
    anchor_alignment: mx.array  # (B, T) int
    pad_mask: mx.array  # (B, T) bool, True on valid frames
    sizes: list[int]  # valid frames per item

    @property
    def tensors(self) -> tuple[mx.array, ...]:
        """The per-solve inputs, in the order the compiled vector field receives them."""
        return (self.mixture, self.text_hidden, self.text_mask, self.anchor_ids,
                self.anchor_alignment, self.pad_mask)


class SinusoidalEmbedding(nn.Module):
    """cos/sin features of a scalar per item (the reference's model.timestep_emb, no weights)."""

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"sinusoidal embedding width must be even; got {dim}")
        half = dim // 2
        # Same float32 arithmetic as the reference: arange/half, times -log(theta), exp.
        freqs = np.arange(half, dtype=np.float32) / np.float32(half)
        self._inv_freq = mx.array(np.exp(np.float32(-math.log(theta)) * freqs).astype(np.float32))

    def __call__(self, pos: mx.array) -> mx.array:
        emb = pos.astype(mx.float32)[:, None] * self._inv_freq[None, :]
        return mx.concatenate([mx.cos(emb), mx.sin(emb)], axis=-1)


class EmbedAnchors(nn.Module):
    """Per-frame anchor token (null / + / − / pad) embedding, added through a tanh gate."""

    def __init__(self, num_anchors: int, embedding_dim: int, out_dim: int):
        super().__init__()
        self.embed = nn.Embedding(num_anchors + 1, embedding_dim)
        self.proj = nn.Linear(embedding_dim, out_dim, bias=False)
        self.gate = mx.zeros((1,))

    def __call__(self, x: mx.array, anchor_ids: mx.array, anchor_alignment: mx.array) -> mx.array:
        ids = mx.take_along_axis(anchor_ids, anchor_alignment, axis=1)
        return x + mx.tanh(self.gate) * self.proj(self.embed(ids)).astype(x.dtype)


class AlignModalities(nn.Module):
    """Adds gated, normalised video features (1×1 conv) to the projected audio input."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=1)
        self.layer_norm = nn.LayerNorm(out_channels, eps=1e-5)
        self.gate = mx.zeros((1,))

    def __call__(self, x: mx.array, video: mx.array | None = None) -> mx.array:
        if video is None:
            # The reference feeds zeros (B, T, vision_dim) when there is no video: a 1×1 conv of
            # zeros is exactly its bias, so skip the (T × vision_dim × dim) matmul of zeros.
            feats = self.layer_norm(self.conv.bias)[None, None, :]
        else:
            feats = self.layer_norm(self.conv(video))
        return x + mx.tanh(self.gate) * feats.astype(x.dtype)


class SAMAudio(nn.Module):
    def __init__(
        self,
        config: SAMAudioConfig,
        t5_config: T5Config | None = None,
        tokenizer: T5Tokenizer | None = None,
    ):
        super().__init__()
        self.config = config
        dim = config.transformer.dim
        self.audio_codec = DACVAE(config.audio_codec)
        self.transformer = DiT(config.transformer)
        self.proj = nn.Linear(config.in_channels, dim)
        self.align_masked_video = AlignModalities(config.vision_dim, dim)
        self.embed_anchors = EmbedAnchors(config.num_anchors, config.anchor_embedding_dim, dim)
        self.memory_proj = nn.Linear(config.text_encoder.dim, dim)
        self.timestep_emb = SinusoidalEmbedding(dim)
        # The T5 weights live under ``text_encoder`` (HF names after T5Encoder.sanitize); the
        # tokenizer and the per-prompt cache sit in a plain wrapper beside it.
        self.text_encoder = T5Encoder(t5_config or T5Config.t5_base())
        if self.text_encoder.config.d_model != config.text_encoder.dim:
            raise ValueError(
                f"T5 width {self.text_encoder.config.d_model} does not match the SAM-Audio "
                f"config's text_encoder.dim {config.text_encoder.dim}"
            )
        self.text = T5TextEncoder(
            self.text_encoder,
            tokenizer,
            max_length=config.text_encoder.max_length,
            pad_mode=config.text_encoder.pad_mode,
        )

    # ------------------------------------------------------------------ properties
    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def noise_channels(self) -> int:
        return 2 * self.config.codebook_dim

    @property
    def dtype(self) -> mx.Dtype:
        return self.proj.weight.dtype

    # ------------------------------------------------------------------ one evaluation
    def velocity(
        self,
        noisy: mx.array,
        mixture_features: mx.array,
        text_hidden: mx.array,
        text_mask: mx.array | None,
        t: float | mx.array,
        anchor_ids: mx.array,
        anchor_alignment: mx.array,
        audio_pad_mask: mx.array | None = None,
    ) -> mx.array:
        """The ODE's vector field at time t. ``mixture_features`` is (B, T, 2C), stacked.

        ``noisy`` may be wider than the model (``solve`` keeps a float32 state) and the DiT may
        run in its own dtype (bfloat16 on GPUs); the result is in the DiT's dtype."""
        batch = noisy.shape[0]
        time = t if isinstance(t, mx.array) else mx.full((batch,), t, dtype=mx.float32)
        time = mx.broadcast_to(time.astype(mx.float32).reshape(-1), (batch,))
        noisy = noisy.astype(self.dtype)
        x = mx.concatenate([noisy, mx.zeros_like(mixture_features), mixture_features], axis=-1)
        h = self.proj(x)
        h = self.align_masked_video(h)
        h = self.embed_anchors(h, anchor_ids, anchor_alignment)
        memory = self.memory_proj(text_hidden) + self.timestep_emb(time)[:, None, :].astype(h.dtype)
        dit_dtype = self.transformer.output.weight.dtype
        return self.transformer(
            h.astype(dit_dtype),
            time,
            memory=memory.astype(dit_dtype),
            padding_mask=audio_pad_mask,
            memory_padding_mask=text_mask,
        )

    # ------------------------------------------------------------------ building blocks
    def encode_mixture(self, audios: mx.array) -> mx.array:
        """(B, 1, N) waveforms → (B, T, 2C) mixture features (codec means, stacked twice)."""
        feats = self.audio_codec.encode(audios)
        return mx.concatenate([feats, feats], axis=-1)

    def encode_text(self, descriptions: Sequence[str]) -> tuple[mx.array, mx.array]:
        """T5 last hidden state and bool mask; the encoder caches per text."""
        return self.text.encode(list(descriptions))

    def conditioning(
        self,
        mixture: mx.array,
        text_features: tuple[mx.array, mx.array],
        sizes: Sequence[int] | mx.array | np.ndarray | None = None,
        anchor_ids: mx.array | None = None,
        anchor_alignment: mx.array | None = None,
    ) -> Conditioning:
        batch, frames = mixture.shape[0], mixture.shape[1]
        sizes = _as_sizes(sizes, batch, frames)
        pad_mask = mx.arange(frames)[None, :] < mx.array(sizes)[:, None]
        if anchor_ids is None and anchor_alignment is None:
            anchor_ids, anchor_alignment = anchor_tensors(None, frames, sizes, 1, 1)
        elif anchor_ids is None or anchor_alignment is None:
            raise ValueError(
                "pass anchor_ids and anchor_alignment together (both from the processor)"
            )
        anchor_ids = mx.array(anchor_ids).astype(mx.int32)
        anchor_alignment = mx.array(anchor_alignment).astype(mx.int32)
        if anchor_ids.shape[0] != batch or tuple(anchor_alignment.shape) != (batch, frames):
            raise ValueError(
                f"anchor_alignment must be (B, T) = ({batch}, {frames}) and anchor_ids (B, K); "
                f"got {tuple(anchor_alignment.shape)} and {tuple(anchor_ids.shape)}"
            )
        hidden, mask = text_features
        if hidden.shape[0] != batch:
            raise ValueError(
                f"got {hidden.shape[0]} text prompts for {batch} audio items; pass one each"
            )
        return Conditioning(
            mixture=mixture.astype(self.dtype),
            text_hidden=hidden.astype(self.dtype),
            text_mask=mask.astype(mx.bool_),
            anchor_ids=anchor_ids,
            anchor_alignment=anchor_alignment,
            pad_mask=pad_mask,
            sizes=sizes,
        )

    def solve(
        self,
        cond: Conditioning,
        noise: mx.array,
        method: str = "midpoint",
        step_size: float = 2 / 32,
        verbose: bool = False,
        *,
        compiled: bool = True,
    ) -> mx.array:
        """Integrate the flow from ``noise``; returns the (B, T, 2C) final state (model dtype).

        The state is float32 whatever the model's dtype. Each step is one ``mx.compile``'d call
        whose trace is kept on the model, so later windows of the same length replay it;
        ``compiled=False`` runs the same arithmetic op by op."""
        from streamsep.sam_audio.dit import cpu_forms
        from streamsep.sam_audio.ode import CompiledSteps, make_step

        expected = (*cond.mixture.shape[:2], self.noise_channels)
        if tuple(noise.shape) != expected:
            raise ValueError(f"noise must have shape {expected}; got {tuple(noise.shape)}")
        args = cond.tensors

        def field(
            t: mx.array,
            y: mx.array,
            mixture: mx.array,
            text_hidden: mx.array,
            text_mask: mx.array,
            anchor_ids: mx.array,
            anchor_alignment: mx.array,
            pad_mask: mx.array,
        ) -> mx.array:
            return self.velocity(
                y, mixture, text_hidden, text_mask, t, anchor_ids, anchor_alignment, pad_mask
            )

        if compiled:
            steps = getattr(self, "_ode_steps", None)
            if steps is None:
                # The conditioning comes in as arguments, not captured, so the trace outlives
                # this solve; the weights are inputs, so it also sees reloaded ones.
                steps = CompiledSteps(field, inputs=self.state)
                self._ode_steps = steps
            # A trace bakes in the device and the DiT's compute path.
            step = steps(method, key=(str(mx.default_device()), cpu_forms()))
        else:
            step = make_step(field, method)
        y0 = noise.astype(mx.float32)
        with _progress(verbose, "ODE steps") as on_step:
            y = odeint(field, y0, method, step_size, on_step=on_step, args=args, step=step)
        return y.astype(self.dtype)

    def decode_pair(
        self,
        features: mx.array,
        chunk_size: int | None = None,
        wm_message: mx.array | None = None,
    ) -> tuple[mx.array, mx.array]:
        """(B, T, 2C) final state → target and residual waveforms, each (B, T·hop).

        Decoded together as a batch of 2B (item order target₀, residual₀, target₁, …) like the
        reference, so a random watermark message is drawn per decoded item.
        """
        batch, frames, channels = features.shape
        half = channels // 2
        stacked = features.reshape(batch, frames, 2, half).transpose(0, 2, 1, 3)
        stacked = stacked.reshape(2 * batch, frames, half)
        if chunk_size:
            wavs = self.audio_codec.decode_chunked(stacked, chunk_size, message=wm_message)
        else:
            wavs = self.audio_codec.decode(stacked, message=wm_message)
        wavs = wavs.reshape(batch, 2, -1)
        return wavs[:, 0], wavs[:, 1]

    # ------------------------------------------------------------------ public API
    def separate(
        self,
        audios: mx.array | Sequence[str | Path | np.ndarray],
        descriptions: Sequence[str] | None,
        sizes: Sequence[int] | mx.array | None = None,
        anchor_ids: mx.array | None = None,
        anchor_alignment: mx.array | None = None,
        ode_opt: Mapping[str, Any] | None = None,
        ode_decode_chunk_size: int | None = None,
        noise: mx.array | None = None,
        seed: int | None = None,
        wm_message: mx.array | None = None,
        text_features: tuple[mx.array, mx.array] | None = None,
        verbose: bool = False,
        anchors: Sequence[Sequence[tuple[str, float, float]]] | None = None,
    ) -> SeparationResult:
        """Separate each item of ``audios`` (B, 1, N) at 48 kHz by its text description.

        ``sizes`` are valid latent frames per item (the processor's ``batch.sizes``); without
        them every frame counts. Without anchors the reference's null anchors are used.
        ``ode_opt`` defaults to the reference's 16 midpoint steps. Each returned waveform has
        sizes[i]·hop samples (up to hop−1 more than the item's true length, as the reference).
        As in mlx-audio, ``audios`` may also be a list of file paths (or 1-D arrays), run
        through the processor together with ``anchors``.
        """
        method, step_size = parse_ode_opt(ode_opt)
        if isinstance(audios, list | tuple):
            from streamsep.sam_audio.processor import SAMAudioProcessor

            batch = SAMAudioProcessor(self.hop_length, self.sample_rate)(
                descriptions, audios, anchors
            )
            audios, sizes = batch.audios, batch.sizes
            anchor_ids, anchor_alignment = batch.anchor_ids, batch.anchor_alignment
        elif anchors is not None:
            raise ValueError(
                "anchors apply to file-path input; with an audio array pass the processor's "
                "anchor_ids and anchor_alignment"
            )
        audios = _check_audios(audios)
        if text_features is None:
            if descriptions is None:
                raise ValueError("pass descriptions (one text prompt per audio item)")
            if isinstance(descriptions, str):
                descriptions = [descriptions]
            if len(descriptions) != audios.shape[0]:
                raise ValueError(
                    f"got {len(descriptions)} descriptions for {audios.shape[0]} audio items; "
                    "pass one description per item"
                )
        with wired_limit(self):
            mixture = self.encode_mixture(audios.astype(self.dtype))
            mx.eval(mixture)
            if text_features is None:
                text_features = self.encode_text(descriptions)
            cond = self.conditioning(mixture, text_features, sizes, anchor_ids, anchor_alignment)
            if noise is None:
                noise = self.make_noise(mixture.shape[0], mixture.shape[1], seed)
            features = self.solve(cond, noise, method, step_size, verbose=verbose)
            mx.clear_cache()
            target, residual = self.decode_pair(features, ode_decode_chunk_size, wm_message)
            mx.eval(target, residual)
            hop = self.hop_length
            targets = [target[i, : cond.sizes[i] * hop] for i in range(len(cond.sizes))]
            residuals = [residual[i, : cond.sizes[i] * hop] for i in range(len(cond.sizes))]
            mx.clear_cache()
        return SeparationResult(
            target=targets, residual=residuals, noise=noise, peak_memory=_peak_memory_gb()
        )

    def solve_window(
        self,
        mixture_features: mx.array,
        text_features: tuple[mx.array, mx.array],
        noise: mx.array | np.ndarray,
        method: str,
        step_size: float,
        anchors: list[tuple[str, float, float]] | None = None,
    ) -> mx.array:
        """The flow over one window's stacked mixture features (B, T, 2C): (B, T, 2C) target
        and residual features. ``anchors`` are window-relative spans, for B = 1."""
        batch, frames = mixture_features.shape[:2]
        anchor_ids = anchor_alignment = None
        if anchors:
            if batch != 1:
                raise ValueError("anchors in separate_window apply to a single window (B = 1)")
            anchor_ids, anchor_alignment = anchor_tensors(
                [anchors], frames, [frames], self.hop_length, self.sample_rate
            )
        hidden, mask = text_features
        if hidden.shape[0] == 1 and batch > 1:
            hidden = mx.broadcast_to(hidden, (batch, *hidden.shape[1:]))
            mask = mx.broadcast_to(mask, (batch, *mask.shape[1:]))
        cond = self.conditioning(
            mixture_features, (hidden, mask), None, anchor_ids, anchor_alignment
        )
        noise = mx.array(noise) if not isinstance(noise, mx.array) else noise
        if noise.ndim == 2:
            noise = noise[None]
        return self.solve(cond, noise, method, step_size)

    def separate_window(
        self,
        audio: mx.array | np.ndarray | None = None,
        text_features: tuple[mx.array, mx.array] | None = None,
        noise: mx.array | np.ndarray | None = None,
        *,
        mixture_features: mx.array | None = None,
        steps: int | None = None,
        method: str = "euler",
        step_size: float | None = None,
        anchors: list[tuple[str, float, float]] | None = None,
        wm_message: mx.array | None = None,
        seed: int | None = None,
    ) -> tuple[mx.array, mx.array]:
        """One window for the streaming engine: returns (target, residual), each (B, T·hop).

        Give either ``audio`` ((N,), (B, N) or (B, 1, N), N a multiple of the hop) or
        precomputed stacked ``mixture_features`` (B, T, 2C); ``text_features`` from
        ``encode_text`` (cache them across windows); ``steps`` or ``step_size`` for the solver.
        ``anchors`` are ("+"|"-", start_s, end_s) relative to the window start, for B = 1.
        """
        if text_features is None:
            raise ValueError(
                "separate_window needs text_features; compute them once with encode_text"
            )
        if mixture_features is None:
            if audio is None:
                raise ValueError("pass the window audio or its mixture_features")
            wav = mx.array(audio) if not isinstance(audio, mx.array) else audio
            if wav.ndim == 1:
                wav = wav[None, None, :]
            elif wav.ndim == 2:
                wav = wav[:, None, :]
            wav = _check_audios(wav)
            mixture_features = self.encode_mixture(wav.astype(self.dtype))
        if step_size is None:
            step_size = step_size_for(steps if steps is not None else 16)
        method, step_size = parse_ode_opt({"method": method, "step_size": step_size})
        if noise is None:
            noise = self.make_noise(*mixture_features.shape[:2], seed)
        features = self.solve_window(mixture_features, text_features, noise, method, step_size,
                                     anchors)
        target, residual = self.decode_pair(features, None, wm_message)
        mx.eval(target, residual)
        return target, residual

    def separate_long(
        self,
        audios: Any,
        descriptions: Sequence[str] | str,
        chunk_seconds: float = 10.0,
        overlap_seconds: float = 3.0,
        anchor_ids: mx.array | None = None,
        anchor_alignment: mx.array | None = None,
        ode_opt: Mapping[str, Any] | None = None,
        ode_decode_chunk_size: int | None = None,
        seed: int = 42,
        verbose: bool = False,
        *,
        plan: WindowPlan | None = None,
        anchors: Sequence[Any] | None = None,
    ) -> SeparationResult:
        """Separate a long recording (B = 1): ``separate_streaming``'s chunks, joined.

        The result has exactly the input's length. Windows, noise and crossfade are the
        engine's (see ``separate_streaming``): chunk_seconds is the window, one window every
        chunk − overlap seconds, the overlap crossfaded; each latent frame's noise is a
        function of (seed, frame). An input no longer than one chunk is one ``separate`` call
        with ``make_noise(1, frames, seed)``.
        """
        from streamsep.sam_audio.streaming import stream

        chunks = stream(
            self, audios, descriptions, chunk_seconds=chunk_seconds,
            overlap_seconds=overlap_seconds, plan=plan, anchors=anchors, anchor_ids=anchor_ids,
            anchor_alignment=anchor_alignment, ode_opt=ode_opt, seed=seed,
            ode_decode_chunk_size=ode_decode_chunk_size, verbose=verbose, name="separate_long",
        )
        targets, residuals, last = [], [], None
        for last in chunks:
            targets.append(last.target)
            residuals.append(last.residual)
        return SeparationResult(
            target=[mx.concatenate(targets)],
            residual=[mx.concatenate(residuals)],
            noise=last.noise,
            peak_memory=last.peak_memory,
        )

    def separate_streaming(
        self,
        audios: Any,
        descriptions: Sequence[str] | str,
        target_callback: Callable[[mx.array, int, bool], None] | None = None,
        residual_callback: Callable[[mx.array, int, bool], None] | None = None,
        chunk_seconds: float = 10.0,
        overlap_seconds: float = 3.0,
        anchor_ids: mx.array | None = None,
        anchor_alignment: mx.array | None = None,
        ode_opt: Mapping[str, Any] | None = None,
        seed: int = 42,
        verbose: bool = False,
        *,
        plan: WindowPlan | None = None,
        anchors: Sequence[Any] | None = None,
        ode_decode_chunk_size: int | None = None,
    ) -> Iterator[SeparationResult] | int:
        """Separate one recording as it goes, on the live engine's path (mlx-audio's signature).

        ``audios``: a (1, 1, N) or (N,) array at 48 kHz, a file path (read and resampled block by
        block), a one-item list of either (mlx-audio's batch form), or any other iterator of mono
        audio blocks at 48 kHz (live-like input). Yields ``SeparationResult`` chunks as the
        engine finalises them: ``target`` / ``residual`` (n,) arrays, ``chunk_idx``, ``is_last``;
        the last chunk also carries ``noise`` (1, frames, 256) and ``peak_memory``. The chunks
        joined are exactly the input's length and aligned with it. With ``target_callback``
        (and optionally ``residual_callback``), each is called as callback(chunk, idx, is_last)
        instead and the number of samples is returned.

        Window k covers mlx-audio's chunk k, [k·(chunk − overlap), k·(chunk − overlap) + chunk),
        in whole latent frames; the overlap is the crossfade, up to one hop, any overlap beyond
        that is lookahead. ``plan`` (a ``WindowPlan``, e.g. ``WindowPlan.from_seconds(
        model.sample_rate, model.hop_length, 10, 2, 1, 0.4)``) sets the engine's window, hop,
        lookahead and crossfade instead. A chunk is yielded as soon as its window has run: the
        first after one window, when ``plan.first_end`` samples (plus one block, to know the
        input goes on) have arrived. An input that ends within the first window is one
        ``separate`` call. ``anchors`` are ("+"|"-", start_s, end_s) spans in the recording's
        seconds; ``anchor_ids`` / ``anchor_alignment`` the processor's tensors for it. The
        watermark message is fixed per call (``SAMSeparator``'s), so results are reproducible.
        """
        from streamsep.sam_audio.streaming import stream

        gen = stream(
            self, audios, descriptions, chunk_seconds=chunk_seconds,
            overlap_seconds=overlap_seconds, plan=plan, anchors=anchors, anchor_ids=anchor_ids,
            anchor_alignment=anchor_alignment, ode_opt=ode_opt, seed=seed,
            ode_decode_chunk_size=ode_decode_chunk_size, verbose=verbose,
            name="separate_streaming",
        )
        if target_callback is None:
            return gen
        written = 0
        for chunk in gen:
            target_callback(chunk.target, chunk.chunk_idx, chunk.is_last)
            if residual_callback is not None:
                residual_callback(chunk.residual, chunk.chunk_idx, chunk.is_last)
            written += chunk.target.shape[0]
        return written

    def make_noise(self, batch: int, frames: int, seed: int | None = None) -> mx.array:
        shape = (batch, frames, self.noise_channels)
        key = None if seed is None else mx.random.key(int(seed))
        return mx.random.normal(shape, dtype=mx.float32, key=key)

    # ------------------------------------------------------------------ loading
    @staticmethod
    def sanitize(weights: Mapping[str, Any]) -> dict[str, mx.array]:
        """Official checkpoint names/layouts → this module's, component by component.

        Skips the vision encoder, rankers and span predictor (unused by text prompting).
        """
        groups: dict[str, dict[str, Any]] = {
            "audio_codec": {},
            "transformer": {},
            "text_encoder": {},
        }
        own: dict[str, mx.array] = {}
        for key, value in weights.items():
            if key.startswith(SKIPPED_PREFIXES):
                continue
            head, _, rest = key.partition(".")
            if head in groups:
                groups[head][rest] = value
            elif key == "align_masked_video.conv.weight":
                # torch Conv1d (out, in, k) → MLX (out, k, in), by layer type.
                own[key] = mx.array(value).transpose(0, 2, 1)
            else:
                own[key] = mx.array(value)
        out = dict(own)
        sanitizers = {
            "audio_codec": DACVAE.sanitize,
            "transformer": DiT.sanitize,
            "text_encoder": T5Encoder.sanitize,
        }
        for head, group in groups.items():
            if group:
                for k, v in sanitizers[head](group).items():
                    out[f"{head}.{k}"] = mx.array(v)
        return out

    def load_checkpoint(self, weights: Mapping[str, Any], source: str = "checkpoint") -> None:
        """Sanitize and load with strict checks: every parameter present with its shape."""
        sanitized = self.sanitize(weights)
        params = dict(tree_flatten(self.parameters()))
        for key, param in params.items():
            if key not in sanitized:
                raise SAMAudioLoadError(
                    f"{source}: missing tensor {key!r}; the checkpoint does not match its "
                    "config.json (re-download or re-convert it)"
                )
            if tuple(sanitized[key].shape) != tuple(param.shape):
                raise SAMAudioLoadError(
                    f"{source}: tensor {key!r} has shape {tuple(sanitized[key].shape)}, the "
                    f"config needs {tuple(param.shape)}; the checkpoint does not match its "
                    "config.json"
                )
        unexpected = sorted(set(sanitized) - set(params))
        if unexpected:
            log.warning(
                "%s: ignoring %d unexpected tensors (first: %s)",
                source,
                len(unexpected),
                ", ".join(unexpected[:5]),
            )
        dtype = self.dtype
        self.load_weights(
            [
                (k, v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) else v)
                for k, v in sanitized.items()
                if k in params
            ],
            strict=True,
        )
        mx.eval(self.parameters())

    @classmethod
    def from_pretrained(
        cls,
        repo_id_or_dir: str | Path,
        dtype: mx.Dtype = mx.float32,
        *,
        revision: str | None = None,
        token: str | None = None,
    ) -> SAMAudio:
        """Load from a hub repo id or a local directory (official layout, MLX conversion).

        ``token`` defaults to HF_TOKEN / the ``hf auth login`` token (needed for the gated repos).
        """
        from streamsep import runtime
        from streamsep.sam_audio.loading import resolve_model

        runtime.report_backend_once()
        resolved = resolve_model(str(repo_id_or_dir), revision=revision, token=token)
        config = SAMAudioConfig.from_dict(resolved.config)
        t5_config = _t5_config(resolved)
        tokenizer = T5Tokenizer(resolved.tokenizer_path) if resolved.tokenizer_path else None
        model = cls(config, t5_config=t5_config, tokenizer=tokenizer)
        if tokenizer is None:
            model.text.tokenizer_hint = f"{resolved.source} (no tokenizer.json found)"
        if dtype != mx.float32:
            model.set_dtype(dtype)
        model.load_checkpoint(resolved.weights, source=resolved.source)
        model.eval()
        return model


# ---------------------------------------------------------------------- helpers
def _t5_config(resolved: Any) -> T5Config:
    given = getattr(resolved, "text_encoder_config", None)
    if not given:
        raise SAMAudioLoadError(
            f"{resolved.source}: no T5 config.json for the text encoder; put t5-base's "
            "config.json, model.safetensors and tokenizer.json in the model's t5/ folder"
        )
    return T5Config.from_dict(dict(given))


def anchor_tensors(
    anchors: Sequence[Sequence[tuple[str, float, float]]] | None,
    frames: int,
    sizes: Sequence[int],
    hop: int,
    sample_rate: int,
) -> tuple[mx.array, mx.array]:
    """Anchor ids (B, K) and per-frame alignment (B, T) as the reference's processor builds them."""
    pad_mask = np.arange(frames)[None, :] < np.asarray(sizes, dtype=np.int64)[:, None]
    ids, align = anchor_arrays(anchors, pad_mask, hop, sample_rate)
    return mx.array(ids), mx.array(align)


def _as_sizes(sizes: Any, batch: int, frames: int) -> list[int]:
    if sizes is None:
        return [frames] * batch
    values = [int(s) for s in np.array(sizes).reshape(-1).tolist()]
    if len(values) != batch:
        raise ValueError(f"sizes has {len(values)} entries for {batch} audio items")
    for s in values:
        if not 0 < s <= frames:
            raise ValueError(f"sizes must be in 1..{frames} latent frames; got {s}")
    return values


def _check_audios(audios: Any) -> mx.array:
    if not isinstance(audios, mx.array):
        audios = mx.array(np.asarray(audios, dtype=np.float32))
    if audios.ndim != 3 or audios.shape[1] != 1:
        raise ValueError(
            f"audios must be (B, 1, N) mono at 48 kHz (the processor's batch.audios); got shape "
            f"{tuple(audios.shape)}"
        )
    if audios.shape[-1] == 0:
        raise ValueError("audios is empty (0 samples)")
    return audios


def _peak_memory_gb() -> float:
    return mx.get_peak_memory() / 1e9


@contextlib.contextmanager
def wired_limit(model: nn.Module) -> Iterator[None]:
    """On Metal, wire the model's working set for the duration (as mlx-audio); a no-op elsewhere."""
    if not mx.metal.is_available():
        yield
        return
    model_bytes = tree_reduce(
        lambda acc, x: acc + x.nbytes if isinstance(x, mx.array) else acc, model, 0
    )
    limit = mx.metal.device_info()["max_recommended_working_set_size"]
    if model_bytes > 0.9 * limit:
        log.warning(
            "model needs %d MB, close to the recommended working set of %d MB; expect slowness",
            model_bytes >> 20,
            limit >> 20,
        )
    old = mx.set_wired_limit(limit)
    try:
        yield
    finally:
        mx.synchronize()
        mx.set_wired_limit(old)


@contextlib.contextmanager
def _progress(verbose: bool, desc: str) -> Iterator[Any]:
    if not verbose:
        yield None
        return
    from tqdm import tqdm

    bar = None

    def on_step(i: int, n: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=n, desc=desc)
        bar.update(1)

    try:
        yield on_step
    finally:
        if bar is not None:
            bar.close()
