"""The DAC-VAE codec on a sliding window: encode only new audio, decode only emitted audio.

The live engine hands SAM-Audio a window that shares all but its newest ``shift`` frames with the
previous one, and keeps only a short region of each result. Two objects exploit that:

``WindowEncoder`` keeps the previous window's features and encodes only the new frames plus the
encoder's receptive-field margin, and the few frames at the window's left edge (which the
encoder's zero padding makes differ from the same audio inside a longer signal). The result equals
``codec.encode(window)`` on every frame, to float rounding.

``RegionDecoder`` decodes only the region (target and residual as one batch) plus the audio
path's margin. The audio path (convolutions, no state) then equals a full-window decode on the
region. The watermark branch is causal but its LSTMs remember everything before: the decoder
carries its state (LSTM h/c, causal convolutions' left context, transposed convolutions' last
input frame) from one region to the next, so consecutive regions of one feature sequence decode
exactly as the whole sequence does. A per-window decode, the reference's way, instead starts the
watermark from zeros at the window's start; ``history`` reproduces that (see RegionDecoder).

Both margins come from walking the layers' kernel sizes, dilations, strides and paddings
(``encoder_margins``, ``decoder_margins``), not from constants.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from streamsep.sam_audio.codec import (
    DACVAE,
    Conv1d,
    ConvTranspose1d,
    DecoderBlock,
    EncoderBlock,
    LSTMBlock,
    ResidualUnit,
    Snake1d,
)

_POINTWISE = (Snake1d, nn.ELU, nn.Tanh, nn.Identity)

# --------------------------------------------------------------------------------------------
# Receptive fields


def _conv_layers(layers: Sequence[nn.Module]) -> list[nn.Module]:
    """``layers`` with containers opened and pointwise layers (no time extent) dropped."""
    out: list[nn.Module] = []
    for layer in layers:
        if isinstance(layer, EncoderBlock):
            out += _conv_layers(layer.block)
        elif isinstance(layer, DecoderBlock):
            out += _conv_layers(layer.audio_layers)
        elif isinstance(layer, Conv1d | ConvTranspose1d | ResidualUnit):
            if getattr(layer, "pad_mode", "none") != "none":
                raise TypeError("the receptive-field walk covers the non-causal audio path only")
            out.append(layer)
        elif not isinstance(layer, _POINTWISE):
            raise TypeError(f"no receptive-field rule for {type(layer).__name__}")
    return out


def _out_len(layer: nn.Module, n: int) -> int:
    if isinstance(layer, Conv1d):
        k, s, d, p = layer.kernel_size, layer.stride, layer.dilation, layer.padding
        return (n + 2 * p - (k - 1) * d - 1) // s + 1
    if isinstance(layer, ConvTranspose1d):
        s = layer.stride
        return (n + 1) * s - 2 * ((s + 1) // 2) + s % 2
    for inner in _conv_layers(layer.block):  # ResidualUnit: the skip is cropped to the branch
        n = _out_len(inner, n)
    return n


def _reads(layers: list[nn.Module], n: int, lo: int, hi: int) -> tuple[int, int] | None:
    """Input positions that outputs [lo, hi] of ``layers`` (input length n) depend on.

    None when some layer would reach into its zero padding for them: then those outputs at an
    artificial edge (a cut segment) differ from the same outputs inside the longer signal.
    """
    lengths = [n]
    for layer in layers:
        lengths.append(_out_len(layer, lengths[-1]))
    for layer, n_in in zip(reversed(layers), reversed(lengths[:-1]), strict=True):
        if isinstance(layer, Conv1d):
            k, s, d, p = layer.kernel_size, layer.stride, layer.dilation, layer.padding
            lo, hi = lo * s - p, hi * s - p + (k - 1) * d
        elif isinstance(layer, ConvTranspose1d):
            # Input frame t writes uncropped outputs [t * s, t * s + 2s); the crop shifts by c.
            s, c = layer.stride, (layer.stride + 1) // 2
            lo, hi = (lo + c) // s - 1, (hi + c) // s
        else:
            inner = _conv_layers(layer.block)
            branch = _reads(inner, n_in, lo, hi)
            if branch is None:
                return None
            crop = (n_in - _out_len(layer, n_in)) // 2
            lo, hi = min(branch[0], lo + crop), max(branch[1], hi + crop)
        if lo < 0 or hi > n_in - 1:
            return None
    return lo, hi


def _edge_margins(
    layers: Sequence[nn.Module], in_per_frame: int, out_per_frame: int, limit: int = 256
) -> tuple[int, int]:
    """Frames next to a segment's left and right cuts whose outputs the cut changes."""
    layers = _conv_layers(layers)
    n = 4 * limit
    n_in, n_out = n * in_per_frame, n * out_per_frame
    mid = n_out // 2
    left = next(
        (m for m in range(limit) if _reads(layers, n_in, m * out_per_frame, mid) is not None), None
    )
    right = next(
        (
            m
            for m in range(limit)
            if _reads(layers, n_in, mid, (n - m) * out_per_frame - 1) is not None
        ),
        None,
    )
    if left is None or right is None:
        raise ValueError(f"the receptive field exceeds {limit} frames")
    return left, right


def encoder_margins(codec: DACVAE) -> tuple[int, int]:
    """(left, right): feature frames next to a cut in the audio that the cut changes."""
    layers = [*codec.encoder.block, codec.quantizer.in_proj]
    return _edge_margins(layers, codec.hop_length, 1)


def decoder_margins(codec: DACVAE) -> tuple[int, int]:
    """(left, right): feature frames beyond a region that its audio (unwatermarked) reads."""
    layers = [codec.quantizer.out_proj, *codec.decoder.audio_layers]
    return _edge_margins(layers, 1, codec.hop_length)


# --------------------------------------------------------------------------------------------
# Encoder


class WindowEncoder:
    """Codec features of a sliding window, encoding only what the last shift changed.

    Frames at least ``left`` from the window's start and ``right`` from its end do not see the
    window's edges, so when the window moves on by ``shift`` frames they are the previous
    window's frames ``shift`` later. Everything else is encoded again: the new frames with
    ``left`` frames of audio before them (from ``right`` before the old right edge, whose frames
    saw that edge), and the first ``left`` frames from ``left + right`` frames of audio.
    """

    def __init__(self, codec: DACVAE):
        self.codec = codec
        self.hop = codec.hop_length
        self.left, self.right = encoder_margins(codec)
        self.features: mx.array | None = None
        #: frames of audio the last call encoded (the window's, when it could not reuse)
        self.encoded = 0

    def reset(self) -> None:
        self.features = None

    def encoded_frames(self, frames: int, shift: int | None) -> int:
        """Frames of audio one call encodes for a window of ``frames`` moved by ``shift``."""
        if shift is None:
            return frames
        fresh = shift + 2 * (self.left + self.right)
        return fresh if 1 <= shift and fresh < frames else frames

    def __call__(self, wav: mx.array, shift: int | None = None) -> mx.array:
        """(B, N) window, N a multiple of the hop -> (B, N // hop, codebook_dim) features.

        ``shift``: frames the window moved since the previous call on the same stream, whose
        audio it shares; None (or a previous call of another shape) encodes the whole window.
        """
        if wav.ndim != 2 or wav.shape[1] % self.hop:
            raise ValueError(
                f"WindowEncoder expects (batch, samples), samples a multiple of {self.hop}; got "
                f"{tuple(wav.shape)}"
            )
        frames = wav.shape[1] // self.hop
        prev = self.features
        same = prev is not None and tuple(prev.shape[:2]) == (wav.shape[0], frames)
        self.encoded = self.encoded_frames(frames, shift) if same else frames
        if self.encoded == frames:
            feats = self.codec.encode(wav)
        else:
            hop, left, right = self.hop, self.left, self.right
            keep = frames - shift - right  # first frame the previous window cannot give
            head = self.codec.encode(wav[:, : (left + right) * hop])[:, :left]
            tail = self.codec.encode(wav[:, (keep - left) * hop :])[:, left:]
            feats = mx.concatenate([head, prev[:, left + shift : keep + shift], tail], axis=1)
        mx.eval(feats)
        self.features = feats
        return feats


# --------------------------------------------------------------------------------------------
# Decoder


class _Stateful:
    """``apply`` for ``Decoder.watermark``: runs the causal layers from carried state.

    ``state`` maps a layer's visiting order to its state at this run's start (missing: the
    zeros a fresh decode starts from). For every frame count in ``marks`` it also gathers the
    state after that many frames of this run, for a later run to resume from.
    """

    def __init__(self, state: dict[int, Any] | None, marks: list[int], frames: int):
        self.state = state or {}
        self.marks = marks
        self.frames = frames
        self.kept: dict[int, Any] = {}
        self._n = 0

    def _key(self) -> int:
        self._n += 1
        return self._n

    def _positions(self, length: int) -> list[int]:
        # Every length in this branch is a whole multiple of the run's frames.
        return [m * length // self.frames for m in self.marks]

    def __call__(self, layer: nn.Module, x: mx.array) -> mx.array:
        if isinstance(layer, Conv1d):
            return self._conv(layer, x)
        if isinstance(layer, ConvTranspose1d):
            return self._conv_transpose(layer, x)
        if isinstance(layer, LSTMBlock):
            return self._lstm(layer, x)
        if isinstance(layer, ResidualUnit):
            y = x
            for inner in layer.block:
                y = self(inner, y)
            if y.shape[1] != x.shape[1]:
                raise TypeError("a causal residual unit must keep its length")
            return x + y
        if isinstance(layer, _POINTWISE):
            return layer(x)
        raise TypeError(f"no streaming rule for {type(layer).__name__}")

    def _conv(self, conv: Conv1d, x: mx.array) -> mx.array:
        batch, length, channels = x.shape
        if not (conv.causal and conv.pad_mode == "auto" and conv.dilation == 1):
            raise TypeError("the watermark's convolutions are causal, undilated and padded 'auto'")
        if length % conv.stride:
            raise ValueError(f"causal conv input of {length} frames is not a multiple of stride")
        key = self._key()
        # On a stride-aligned input, "auto" pads exactly this much on the left and none on the
        # right: the left context is all a causal conv needs from the past.
        context = conv.kernel_size - conv.stride
        if context == 0:
            return conv.conv(x)
        past = self.state.get(key)
        if past is None:
            past = mx.zeros((batch, context, channels), dtype=x.dtype)
        z = mx.concatenate([past, x], axis=1)
        if self.marks:
            idx = mx.array([[p + i for i in range(context)] for p in self._positions(length)])
            self.kept[key] = z[:, idx]
        return conv.conv(z)

    def _conv_transpose(self, conv: ConvTranspose1d, x: mx.array) -> mx.array:
        batch, length, channels = x.shape
        if not (conv.causal and conv.pad_mode == "auto"):
            raise TypeError("the watermark's transposed convolutions are causal")
        key = self._key()
        s = conv.stride
        # Output frame t is taps 0..s-1 of input t plus taps s..2s-1 of input t - 1: carry the
        # last input frame (a zero frame adds nothing, as at a decode's start).
        past = self.state.get(key)
        if past is None:
            past = mx.zeros((batch, 1, channels), dtype=x.dtype)
        z = mx.concatenate([past, x], axis=1)
        if self.marks:
            self.kept[key] = z[:, mx.array(self._positions(length))][:, :, None]
        return conv.full(z)[:, s : (length + 1) * s]

    def _lstm(self, block: LSTMBlock, x: mx.array) -> mx.array:
        key = self._key()
        y, kept = block.lstm.run(x, self.state.get(key), self._positions(x.shape[1]))
        if self.marks:
            self.kept[key] = kept
        return y + x


def _select(kept: dict[int, Any], i: int) -> dict[int, Any]:
    """The state after mark ``i`` of a run's kept states."""
    out: dict[int, Any] = {}
    for key, value in kept.items():
        if isinstance(value, list):
            out[key] = [(h[:, i], c[:, i]) for h, c in value]
        else:
            out[key] = value[:, i]
    return out


class RegionDecoder:
    """Decodes a region of a window's features, carrying the watermark's state between calls.

    Per call the audio path runs on the region plus ``margins`` frames each side (clipped to the
    window, whose edges a full-window decode sees the same way), so on the region it equals
    ``codec.decode`` of the whole window. The watermark branch continues from the state the
    previous call left ``shift`` frames into its region: consecutive regions of one feature
    sequence then decode exactly as the whole sequence.

    Without usable state (the first call, a discontinuity, or ``carry=False``) the watermark
    starts from zeros ``history`` frames before the region (None: at the window's start, which
    is exactly what a per-window decode does on the region, at the cost of decoding the window
    up to the region's end).
    """

    def __init__(
        self,
        codec: DACVAE,
        message: mx.array | None = None,
        *,
        watermark: bool = True,
        carry: bool = True,
        history: int | None = 0,
    ):
        if history is not None and history < 0:
            raise ValueError(f"history must be None or >= 0 frames; got {history}")
        self.codec = codec
        self.hop = codec.hop_length
        self.margins = decoder_margins(codec)
        self.message = message
        self.watermark = watermark
        self.carry = carry
        self.history = history
        self._kept: dict[int, Any] | None = None
        self._kept_frames = 0
        self._batch = 0
        #: frames of features the last call decoded (audio path), and whether it resumed the
        #: previous call's watermark state; for benchmarks and tests
        self.decoded_frames = 0
        self.resumed = False

    def reset(self) -> None:
        self._kept = None

    def __call__(
        self, features: mx.array, region: tuple[int, int], shift: int | None = None
    ) -> mx.array:
        """(B, T, codebook_dim) window features -> (B, (f1 - f0) * hop) waveform of [f0, f1).

        ``shift``: frames from the previous call's region start to this one's in the stream
        (the window's move); None, or a shift beyond the previous region, starts afresh.
        """
        codec, hop = self.codec, self.hop
        batch, frames = features.shape[:2]
        f0, f1 = region
        if not 0 <= f0 < f1 <= frames:
            raise ValueError(f"region [{f0}, {f1}) is not inside a window of {frames} frames")
        resume = (
            self.carry
            and self.watermark
            and self._kept is not None
            and batch == self._batch
            and shift is not None
            and 1 <= shift <= self._kept_frames
        )
        self.resumed = resume
        state = _select(self._kept, shift - 1) if resume else None
        if resume or not self.watermark:
            start = f0
        else:
            start = 0 if self.history is None else max(0, f0 - self.history)
        left, right = self.margins
        a, b = max(0, start - left), min(frames, f1 + right)
        self.decoded_frames = b - a
        emb = codec.quantizer.out_proj(codec._check_features(features[:, a:b]))
        audio = codec.decoder.audio(emb)[:, (start - a) * hop : (f1 - a) * hop]
        if not self.watermark:
            out = audio[..., 0]
            mx.eval(out)
            return out
        message = codec._message(self.message, batch)
        marks = list(range(f0 - start + 1, f1 - start + 1)) if self.carry else []
        run = _Stateful(state, marks, f1 - start)
        wm = codec.decoder.watermark(audio, message, run)
        out = (audio + codec.decoder.alpha * wm)[:, (f0 - start) * hop :, 0]
        mx.eval(out, run.kept)
        self._kept = run.kept if self.carry else None
        self._kept_frames, self._batch = f1 - f0, batch
        return out
