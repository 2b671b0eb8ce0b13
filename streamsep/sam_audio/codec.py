"""DAC-VAE audio codec (48 kHz waveform <-> 25 Hz, 128-dim features), MLX port.

The module tree mirrors the official checkpoint (``audio_codec.`` prefix stripped), so
``encoder.block.1.block.0.block.1.weight`` here is ``encoder.block.1.block.0.block.1.weight_{g,v}``
there. Weight norm is folded once in :meth:`DACVAE.sanitize`; the forward path only sees plain
weights. Arrays are channels-last, (batch, time, channels), as MLX convolutions expect.

Like the reference, the decoder adds a watermark: a small encoder/decoder pair that runs at
1/320 of the audio rate through two 2-layer LSTMs and is blended in with weight channels / 128
(``decode(..., watermark=False)`` leaves it out).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from streamsep.configs import FromDict

# The watermark branch's fixed sizes in the reference (dacvae.model.dac.Decoder).
WM_RATES = (8, 5, 4, 2)
WM_NBITS = 16
WM_LATENT = 128
WM_LSTM_LAYERS = 2
# Channel reduction of the watermark path inside every decoder block.
WM_DOWNSAMPLING = 3


@dataclass
class DACVAEConfig(FromDict):
    encoder_dim: int = 64
    encoder_rates: list[int] = field(default_factory=lambda: [2, 8, 10, 12])
    latent_dim: int = 1024
    decoder_dim: int = 1536
    decoder_rates: list[int] = field(default_factory=lambda: [12, 10, 8, 2])
    n_codebooks: int = 16
    codebook_size: int = 1024
    codebook_dim: int = 128
    quantizer_dropout: bool = False  # training only
    sample_rate: int = 48_000
    mean: float = 0.0  # carried by the reference config, unused by the codec
    std: float = 1.0

    @property
    def hop_length(self) -> int:
        return int(np.prod(self.encoder_rates))

    @property
    def wm_channels(self) -> int:
        return self.decoder_dim // 48

    @property
    def wm_hidden(self) -> int:
        return self.decoder_dim // 3


# --------------------------------------------------------------------------------------------
# Compute paths
#
# MLX's Linux CPU backend evaluates transcendental functions one element at a time and runs
# dilated and transposed convolutions as slow generic loops. On CPU every conv is therefore
# lowered to large GEMMs (im2col over strided views in bounded time slices, or GEMM then
# shift-add when the output is narrow) and Snake uses a fused polynomial sine. GPUs keep MLX's
# native kernels. Both paths compute the same function to float32 rounding; tests compare them.

# "auto": CPU forms when the default device is the CPU; "cpu" / "native" force one path.
COMPUTE_PATH = "auto"

# im2col buffers above this many floats are built and multiplied in time slices, so peak
# memory stays bounded (a 10 s decode would otherwise build a 1.3 GB buffer per conv).
_IM2COL_MAX_FLOATS = 1 << 20


def _cpu_forms() -> bool:
    if COMPUTE_PATH == "auto":
        return mx.default_device().type == mx.DeviceType.cpu
    if COMPUTE_PATH not in ("cpu", "native"):
        raise ValueError(
            f"codec COMPUTE_PATH must be 'auto', 'cpu' or 'native', got {COMPUTE_PATH!r}"
        )
    return COMPUTE_PATH == "cpu"


# --------------------------------------------------------------------------------------------
# Layers


@mx.compile
def _snake(x: mx.array, alpha: mx.array) -> mx.array:
    return x + mx.reciprocal(alpha + 1e-9) * mx.square(mx.sin(alpha * x))


# sin(z)^2 = u * g(u) with z reduced by k * pi to r in [-pi/2, pi/2], u = r^2; g is a degree-5
# least-squares minimax fit of sin(r)^2 / r^2 on u <= (pi/2 + 0.02)^2 (max error 1.7e-8, below
# float32 rounding). pi is split Cody-Waite style: k * _PI_HI is exact for |k| < 2^16.
_PI_HI = 3.140625
_PI_LO = 0.0009676535846665502
_SIN2 = (
    0.9999996423721313,
    -0.33333122730255127,
    0.04443969950079918,
    -0.0031695207580924034,
    0.0001382688496960327,
    -3.4803501876012888e-06,
)


def _sin_squared(x: mx.array, alpha: mx.array, alpha_pi: mx.array) -> mx.array:
    """sin(alpha * x)^2 from mul/add only (alpha_pi = alpha / pi)."""
    k = mx.round(x * alpha_pi)
    r = (x * alpha - k * _PI_HI) - k * _PI_LO
    u = r * r
    u2 = u * u
    c = _SIN2
    return u * ((c[0] + c[1] * u) + u2 * (c[2] + c[3] * u) + (u2 * u2) * (c[4] + c[5] * u))


@mx.compile
def _snake_poly(x: mx.array, alpha: mx.array, alpha_pi: mx.array, inv: mx.array) -> mx.array:
    # One fused CPU kernel of mul/add only: ~2.5x faster than mx.sin there, same rounding error.
    return x + inv * _sin_squared(x, alpha, alpha_pi)


class Snake1d(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.alpha = mx.ones((1, 1, channels))

    def __call__(self, x: mx.array) -> mx.array:
        a = self.alpha
        if not _cpu_forms():
            return _snake(x, a)
        # The range reduction needs float32 whatever the model dtype; the result takes the dtype
        # the plain formula would have.
        dtype = mx.result_type(x, a)
        if dtype != mx.float32:
            x, a = x.astype(mx.float32), a.astype(mx.float32)
        y = _snake_poly(x, a, a * (1 / math.pi), mx.reciprocal(a + 1e-9))
        return y if dtype == mx.float32 else y.astype(dtype)


class Conv1d(nn.Module):
    """The reference's NormConv1d with its weight norm folded.

    pad_mode "none" pads (k - stride) * dilation // 2 on both sides; "auto" pads like
    audiocraft's streamable convs (all left when causal) so that the output has
    ceil(length / stride) frames.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        causal: bool = False,
        pad_mode: str = "none",
    ):
        super().__init__()
        self.weight = mx.zeros((out_channels, kernel_size, in_channels))
        self.bias = mx.zeros((out_channels,))
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation
        self.causal = causal
        self.pad_mode = pad_mode
        self.padding = (kernel_size - stride) * dilation // 2 if pad_mode == "none" else 0

    def _auto_pad(self, x: mx.array) -> mx.array:
        length = x.shape[1]
        k, s, d = self.kernel_size, self.stride, self.dilation
        effective = (k - 1) * d + 1
        total = effective - s
        n_frames = (length - effective + total) / s + 1
        extra = (math.ceil(n_frames) - 1) * s + (k - total) - length
        if self.causal:
            left, right = total, extra
        else:
            left, right = total - extra // 2, extra // 2 + extra
        if right < 0:
            x = x[:, : length + right]
            right = 0
        if left or right:
            x = mx.pad(x, [(0, 0), (left, right), (0, 0)])
        return x

    def __call__(self, x: mx.array) -> mx.array:
        if self.pad_mode == "auto":
            x = self._auto_pad(x)
        return self.conv(x, self.padding)

    def conv(self, x: mx.array, padding: int = 0) -> mx.array:
        """The convolution with ``padding`` zeros on both sides and no other padding.

        The streaming decoder calls it on inputs that already carry their left context.
        """
        if _cpu_forms():
            return _conv1d_gemm(x, self.weight, self.bias, self.stride, padding, self.dilation)
        return mx.conv1d(x, self.weight, self.stride, padding, self.dilation) + self.bias


def _conv1d_gemm(
    x: mx.array, w: mx.array, bias: mx.array, stride: int, padding: int, dilation: int
) -> mx.array:
    """mx.conv1d(x, w, stride, padding, dilation) + bias as GEMMs (the CPU form).

    Wide outputs: im2col (a strided view of the k shifted inputs, materialised once) times the
    (k * Cin, Cout) weight. Narrow outputs (k * Cout <= Cin, e.g. the 1-channel audio head):
    one GEMM to all k taps' partial outputs, then k shifted adds, which never builds im2col.
    """
    cout, k, cin = w.shape
    if padding:
        x = mx.pad(x, [(0, 0), (padding, padding), (0, 0)])
    batch, length = x.shape[:2]
    out_len = (length - (k - 1) * dilation - 1) // stride + 1
    if out_len <= 0:
        raise ValueError(
            f"conv input of {length} frames (padded) is shorter than its kernel span "
            f"{(k - 1) * dilation + 1}; pass a longer signal"
        )
    if k == 1:
        return mx.addmm(bias, x[:, : (out_len - 1) * stride + 1 : stride], w[:, 0].T)
    if stride == 1 and k * cout <= cin:
        taps = x @ w.transpose(2, 1, 0).reshape(cin, k * cout)
        taps = taps.reshape(batch, length, k, cout)
        y = taps[:, :out_len, 0] + bias
        for i in range(1, k):
            y = y + taps[:, i * dilation : i * dilation + out_len, i]
        return y
    x = mx.contiguous(x)
    w2 = w.reshape(cout, k * cin).T
    rows = max(1, _IM2COL_MAX_FLOATS // (batch * k * cin))
    pieces = []
    for start in range(0, out_len, rows):
        n = min(rows, out_len - start)
        view = mx.as_strided(
            x,
            (batch, n, k, cin),
            (length * cin, stride * cin, dilation * cin, 1),
            start * stride * cin,
        )
        pieces.append(mx.addmm(bias, view.reshape(batch, n, k * cin), w2))
    return pieces[0] if len(pieces) == 1 else mx.concatenate(pieces, axis=1)


class ConvTranspose1d(nn.Module):
    """The reference's NormConvTranspose1d (kernel 2 * stride) with its weight norm folded."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        causal: bool = False,
        pad_mode: str = "none",
    ):
        super().__init__()
        self.weight = mx.zeros((out_channels, 2 * stride, in_channels))
        self.bias = mx.zeros((out_channels,))
        self.stride = stride
        self.causal = causal
        self.pad_mode = pad_mode

    def full(self, x: mx.array) -> mx.array:
        """The uncropped output, (steps + 1) * stride frames."""
        if _cpu_forms():
            return _conv_transpose_gemm(x, self.weight, self.bias)
        return mx.conv_transpose1d(x, self.weight, stride=self.stride) + self.bias

    def __call__(self, x: mx.array) -> mx.array:
        s = self.stride
        full = self.full(x)
        steps = x.shape[1]
        if self.pad_mode == "none":
            # torch: padding (s + 1) // 2 on both sides, output_padding s % 2 back on the right
            p = (s + 1) // 2
            return full[:, p : full.shape[1] - p + s % 2]
        if self.causal:
            return full[:, : steps * s]
        right = s // 2
        return full[:, s - right : full.shape[1] - right]


def _conv_transpose_gemm(x: mx.array, w: mx.array, bias: mx.array) -> mx.array:
    """Uncropped conv_transpose1d(x, w, stride=k/2) + bias: one GEMM and one shifted add.

    With kernel 2 * stride, input frame t writes output frames t (taps 0..s-1) and t + 1 (taps
    s..2s-1), each of `stride` samples, so output frame t = y0[t] + y1[t - 1]. MLX's own CPU
    conv_transpose1d is ~20x slower for these shapes.
    """
    cout, k, cin = w.shape
    s = k // 2
    batch, steps, _ = x.shape
    # The bias rides on the first-half taps; the last frame, which has none, adds it itself.
    bias2 = mx.stack([mx.broadcast_to(bias, (s, cout)), mx.zeros((s, cout))])
    if batch * steps < cin:
        # Few frames, wide layer: take product columns in the weight's own (cout, k) order and
        # reorder the (small) product rather than copy the (large) weight on every call.
        bias2 = bias2.transpose(2, 0, 1).reshape(-1)
        y = mx.addmm(bias2, x, w.reshape(cout * k, cin).T)
        y = y.reshape(batch, steps, cout, 2, s).transpose(0, 1, 3, 4, 2)
    else:
        y = mx.addmm(bias2.reshape(-1), x, w.transpose(2, 1, 0).reshape(cin, k * cout))
        y = y.reshape(batch, steps, 2, s, cout)
    head, tail = y[:, :, 0], y[:, :, 1]
    frames = mx.concatenate([head[:, :1], head[:, 1:] + tail[:, :-1], tail[:, -1:] + bias], axis=1)
    return frames.reshape(batch, (steps + 1) * s, cout)


class ResidualUnit(nn.Module):
    def __init__(
        self,
        dim: int,
        kernel: int = 7,
        dilation: int = 1,
        act: str = "snake",
        compress: int = 1,
        causal: bool = False,
        pad_mode: str = "none",
    ):
        super().__init__()
        hidden = dim // compress
        if act == "snake":
            acts = [Snake1d(dim), Snake1d(hidden)]
        else:
            acts = [nn.ELU(), nn.ELU()]
        self.block = [
            acts[0],
            Conv1d(dim, hidden, kernel, dilation=dilation, causal=causal, pad_mode=pad_mode),
            acts[1],
            Conv1d(hidden, dim, 1, causal=causal, pad_mode=pad_mode),
        ]

    def __call__(self, x: mx.array) -> mx.array:
        y = x
        for layer in self.block:
            y = layer(y)
        crop = (x.shape[1] - y.shape[1]) // 2
        if crop > 0:
            x = x[:, crop:-crop]
        return x + y


def _run(layers: list, x: mx.array) -> mx.array:
    for layer in layers:
        x = layer(x)
    return x


def _apply(layer: nn.Module, x: mx.array) -> mx.array:
    return layer(x)


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, stride: int):
        super().__init__()
        half = dim // 2
        self.block = [
            ResidualUnit(half, dilation=1),
            ResidualUnit(half, dilation=3),
            ResidualUnit(half, dilation=9),
            Snake1d(half),
            Conv1d(half, dim, 2 * stride, stride=stride),
        ]

    def __call__(self, x: mx.array) -> mx.array:
        return _run(self.block, x)


class Encoder(nn.Module):
    def __init__(self, d_model: int, strides: list[int], d_latent: int):
        super().__init__()
        layers: list[nn.Module] = [Conv1d(1, d_model, 7)]
        for stride in strides:
            d_model *= 2
            layers.append(EncoderBlock(d_model, stride))
        layers += [Snake1d(d_model), Conv1d(d_model, d_latent, 3)]
        self.block = layers

    def __call__(self, x: mx.array) -> mx.array:
        return _run(self.block, x)


class DecoderBlock(nn.Module):
    """One upsampling stage; it also hosts one stage of the watermark path.

    Layout (indices are checkpoint names): 0 Snake, 1 ConvT (audio path); 2 ELU, 3 causal ConvT
    (watermark up); 4, 5 Snake residuals; 6, 7 ELU residuals (watermark); 8 Snake residual;
    9 identity; 10 ELU, 11 causal strided conv (watermark down).
    """

    def __init__(self, input_dim: int, output_dim: int, stride: int, stride_wm: int):
        super().__init__()
        wm_in, wm_out = input_dim // WM_DOWNSAMPLING, output_dim // WM_DOWNSAMPLING
        elu_res = dict(kernel=3, act="elu", compress=2, causal=True, pad_mode="auto")
        self.block = [
            Snake1d(input_dim),
            ConvTranspose1d(input_dim, output_dim, stride),
            nn.ELU(),
            ConvTranspose1d(wm_in, wm_out, stride_wm, causal=True, pad_mode="auto"),
            ResidualUnit(output_dim, dilation=1),
            ResidualUnit(output_dim, dilation=3),
            ResidualUnit(wm_out, **elu_res),
            ResidualUnit(wm_out, **elu_res),
            ResidualUnit(output_dim, dilation=9),
            nn.Identity(),
            nn.ELU(),
            Conv1d(wm_out, wm_in, 2 * stride_wm, stride=stride_wm, causal=True, pad_mode="auto"),
        ]

    @property
    def audio_layers(self) -> list[nn.Module]:
        b = self.block
        return [b[0], b[1], b[4], b[5], b[8]]

    @property
    def wm_down_layers(self) -> list[nn.Module]:
        # The reference calls this group "upsample_group"; it lowers the frame rate.
        b = self.block
        return [b[7], b[10], b[11]]

    @property
    def wm_up_layers(self) -> list[nn.Module]:
        # The reference's "downsample_group"; it raises the frame rate.
        b = self.block
        return [b[2], b[3], b[6]]

    def __call__(self, x: mx.array) -> mx.array:
        return _run(self.audio_layers, x)


class LSTM(nn.Module):
    """PyTorch-compatible multi-layer LSTM (gate order i, f, g, o; zero initial state)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        for layer in range(num_layers):
            n_in = input_size if layer == 0 else hidden_size
            setattr(self, f"weight_ih_l{layer}", mx.zeros((4 * hidden_size, n_in)))
            setattr(self, f"weight_hh_l{layer}", mx.zeros((4 * hidden_size, hidden_size)))
            setattr(self, f"bias_ih_l{layer}", mx.zeros((4 * hidden_size,)))
            setattr(self, f"bias_hh_l{layer}", mx.zeros((4 * hidden_size,)))

    def __call__(self, x: mx.array) -> mx.array:
        return self.run(x)[0]

    def run(
        self,
        x: mx.array,
        state: list[tuple[mx.array, mx.array]] | None = None,
        keep: Sequence[int] = (),
    ) -> tuple[mx.array, list[tuple[mx.array, mx.array]]]:
        """Run from ``state`` (per layer (h, c), each (B, hidden); None: zeros).

        Returns the output and, per layer, the (h, c) after each step count in ``keep``
        (each (B, len(keep), hidden)): the states a later call may resume from.
        """
        kept = []
        for layer in range(self.num_layers):
            w_ih = getattr(self, f"weight_ih_l{layer}")
            bias = getattr(self, f"bias_ih_l{layer}") + getattr(self, f"bias_hh_l{layer}")
            # Input projections of all steps at once; only h @ W_hh stays in the loop.
            gates_x = mx.addmm(bias, x, w_ih.T)
            h0, c0 = state[layer] if state is not None else (None, None)
            x, cells = _lstm_scan(gates_x, getattr(self, f"weight_hh_l{layer}").T, h0, c0, keep)
            if keep:
                kept.append((mx.stack([x[:, t - 1] for t in keep], axis=1), cells))
        return x, kept


@mx.compile
def _lstm_cell(gates: mx.array, c: mx.array) -> tuple[mx.array, mx.array]:
    i, f, g, o = mx.split(gates, 4, axis=-1)
    c = mx.sigmoid(f) * c + mx.sigmoid(i) * mx.tanh(g)
    return mx.sigmoid(o) * mx.tanh(c), c


def _lstm_scan(
    gates_x: mx.array,
    w_hh_t: mx.array,
    h: mx.array | None = None,
    c: mx.array | None = None,
    keep: Sequence[int] = (),
) -> tuple[mx.array, mx.array | None]:
    """Outputs of all steps, and the cell states after each step count in ``keep``."""
    batch, steps, four_h = gates_x.shape
    if h is None:
        h = mx.zeros((batch, four_h // 4), dtype=gates_x.dtype)
    if c is None:
        c = mx.zeros((batch, four_h // 4), dtype=gates_x.dtype)
    wanted = set(keep)
    outputs, cells = [], {}
    for t in range(steps):
        h, c = _lstm_cell(mx.addmm(gates_x[:, t], h, w_hh_t), c)
        outputs.append(h)
        if t + 1 in wanted:
            cells[t + 1] = c
    kept = mx.stack([cells[t] for t in keep], axis=1) if keep else None
    return mx.stack(outputs, axis=1), kept


class LSTMBlock(nn.Module):
    def __init__(self, size: int, num_layers: int):
        super().__init__()
        self.lstm = LSTM(size, size, num_layers)

    def __call__(self, x: mx.array) -> mx.array:
        return self.lstm(x) + x


class MsgProcessor(nn.Module):
    """Adds sum_k embed(2k + bit_k) to every frame."""

    def __init__(self, nbits: int, hidden_size: int):
        super().__init__()
        self.nbits = nbits
        self.msg_processor = nn.Embedding(2 * nbits, hidden_size)

    def __call__(self, hidden: mx.array, message: mx.array) -> mx.array:
        idx = 2 * mx.arange(self.nbits) + message.astype(mx.int32)
        aux = self.msg_processor(idx).sum(axis=-2)
        return hidden + aux[:, None, :]


class WatermarkEncoderBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, channels: int, hidden: int):
        super().__init__()
        # pre[0:3] is also the codec's audio output head (Snake, conv to 1 channel, tanh).
        self.pre = [
            Snake1d(in_dim),
            Conv1d(in_dim, 1, 7),
            nn.Tanh(),
            Conv1d(1, channels, 7, causal=True, pad_mode="auto"),
        ]
        self.post = [
            LSTMBlock(hidden, WM_LSTM_LAYERS),
            nn.ELU(),
            Conv1d(hidden, out_dim, 7, causal=True, pad_mode="auto"),
        ]


class WatermarkDecoderBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, channels: int, hidden: int):
        super().__init__()
        self.pre = [
            Conv1d(in_dim, hidden, 7, causal=True, pad_mode="auto"),
            LSTMBlock(hidden, WM_LSTM_LAYERS),
        ]
        self.post = [nn.ELU(), Conv1d(channels, out_dim, 7, causal=True, pad_mode="auto")]


class Watermarker(nn.Module):
    def __init__(self, dim: int, channels: int, hidden: int):
        super().__init__()
        self.encoder_block = WatermarkEncoderBlock(dim, WM_LATENT, channels, hidden)
        self.msg_processor = MsgProcessor(WM_NBITS, WM_LATENT)
        self.decoder_block = WatermarkDecoderBlock(WM_LATENT, 1, channels, hidden)


class Decoder(nn.Module):
    def __init__(self, config: DACVAEConfig):
        super().__init__()
        channels = config.decoder_dim
        layers: list[nn.Module] = [Conv1d(config.latent_dim, channels, 7)]
        for i, (stride, stride_wm) in enumerate(zip(config.decoder_rates, WM_RATES, strict=True)):
            layers.append(
                DecoderBlock(channels // 2**i, channels // 2 ** (i + 1), stride, stride_wm)
            )
        self.model = layers
        out_dim = channels // 2 ** len(config.decoder_rates)
        self.wm_model = Watermarker(out_dim, config.wm_channels, config.wm_hidden)
        self.alpha = config.wm_channels / WM_LATENT

    @property
    def audio_layers(self) -> list[nn.Module]:
        """The audio path, embedded features to waveform, flattened (no watermark)."""
        layers = [self.model[0]]
        for block in self.model[1:]:
            layers += block.audio_layers
        return layers + self.wm_model.encoder_block.pre[:3]

    def audio(self, x: mx.array) -> mx.array:
        """(B, T, latent_dim) embedded features -> (B, T * hop, 1) waveform, unwatermarked."""
        return _run(self.audio_layers, x)

    def watermark(
        self,
        audio: mx.array,
        message: mx.array,
        apply: Callable[[nn.Module, mx.array], mx.array] | None = None,
    ) -> mx.array:
        """The watermark term (before its weight ``alpha``) for ``audio`` (B, N, 1).

        ``apply(layer, x)`` runs each layer (default: ``layer(x)``); the streaming decoder
        passes one that carries the causal layers' state from call to call.
        """
        apply = apply or _apply
        enc, dec = self.wm_model.encoder_block, self.wm_model.decoder_block
        h = apply(enc.pre[3], audio)
        for block in reversed(self.model[1:]):
            for layer in block.wm_down_layers:
                h = apply(layer, h)
        for layer in enc.post:
            h = apply(layer, h)
        h = self.wm_model.msg_processor(h, message)
        for layer in dec.pre:
            h = apply(layer, h)
        for block in self.model[1:]:
            for layer in block.wm_up_layers:
                h = apply(layer, h)
        for layer in dec.post:
            h = apply(layer, h)
        return h

    def __call__(self, x: mx.array, message: mx.array | None) -> mx.array:
        audio = self.audio(x)
        if message is None:
            return audio
        return audio + self.alpha * self.watermark(audio, message)


class VAEBottleneck(nn.Module):
    def __init__(self, latent_dim: int, codebook_dim: int):
        super().__init__()
        self.codebook_dim = codebook_dim
        self.in_proj = Conv1d(latent_dim, 2 * codebook_dim, 1)
        self.out_proj = Conv1d(codebook_dim, latent_dim, 1)

    def mean(self, z: mx.array) -> mx.array:
        # Only the mean half of in_proj is used for features; skip the log-scale half.
        n = self.codebook_dim
        return z @ self.in_proj.weight[:n, 0].T + self.in_proj.bias[:n]


# --------------------------------------------------------------------------------------------
# Checkpoint layout

_CONV_TRANSPOSE = re.compile(r"^decoder\.model\.\d+\.block\.[13]\.")


def _layer_type(key: str) -> str:
    """The layer a checkpoint tensor belongs to, from its module path (never from its shape)."""
    if key.endswith(".alpha"):
        return "snake"
    if ".lstm." in key:
        return "lstm"
    if key.startswith("decoder.wm_model.msg_processor."):
        return "embedding"
    if _CONV_TRANSPOSE.match(key):
        return "conv_transpose"
    return "conv"


def _shape_error(key: str, what: str, shape: tuple[int, ...]) -> ValueError:
    return ValueError(
        f"codec weight '{key}' has shape {shape}, expected {what}; "
        "the checkpoint does not match the DAC-VAE layout"
    )


def _conv_weight(weights: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    """The plain (out|in, in|out, k) weight of a conv, folding weight norm when present."""
    if prefix + "weight" in weights:
        w = np.asarray(weights[prefix + "weight"], dtype=np.float32)
        if w.ndim != 3:
            raise _shape_error(prefix + "weight", "3 dims", w.shape)
        return w
    for part in ("weight_g", "weight_v"):
        if prefix + part not in weights:
            raise ValueError(
                f"codec checkpoint lacks '{prefix + part}' (its weight-norm partner is present)"
            )
    g = np.asarray(weights[prefix + "weight_g"], dtype=np.float64)
    v = np.asarray(weights[prefix + "weight_v"], dtype=np.float64)
    if v.ndim != 3:
        raise _shape_error(prefix + "weight_v", "3 dims", v.shape)
    if g.shape != (v.shape[0], 1, 1):
        raise _shape_error(prefix + "weight_g", str((v.shape[0], 1, 1)), g.shape)
    # torch weight_norm(dim=0): one norm per index of dim 0, for Conv1d and ConvTranspose1d.
    norm = np.sqrt((v * v).sum(axis=(1, 2), keepdims=True))
    return (g * v / norm).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Model


class DACVAE(nn.Module):
    def __init__(self, config: DACVAEConfig | None = None):
        super().__init__()
        self.config = config = config or DACVAEConfig()
        self.hop_length = config.hop_length
        self.sample_rate = config.sample_rate
        self.encoder = Encoder(config.encoder_dim, config.encoder_rates, config.latent_dim)
        self.quantizer = VAEBottleneck(config.latent_dim, config.codebook_dim)
        self.decoder = Decoder(config)

    # ---- public API ------------------------------------------------------------------------

    def encode(self, wav: mx.array) -> mx.array:
        """(B, 1, N) or (B, N) waveform at 48 kHz -> (B, ceil(N / hop), codebook_dim)."""
        if wav.ndim == 3 and wav.shape[1] == 1:
            wav = wav[:, 0]
        if wav.ndim != 2 or wav.shape[-1] == 0:
            raise ValueError(
                f"encode expects a (batch, 1, samples) or (batch, samples) waveform, got shape "
                f"{tuple(wav.shape)}; add a batch axis or downmix to mono first"
            )
        x = self._reflect_pad(wav.astype(mx.float32))[..., None]
        return self.quantizer.mean(self.encoder(x))

    def decode(
        self, features: mx.array, message: mx.array | None = None, *, watermark: bool = True
    ) -> mx.array:
        """(B, T, codebook_dim) features -> (B, 1, T * hop) waveform.

        ``message`` is the 16-bit watermark, (16,) or (B, 16) of 0/1; None draws one at random
        per item, as the reference does. ``watermark=False`` skips the watermark branch (its
        LSTMs dominate decode time on CPU); the result then differs from the reference by the
        watermark term, weight channels / 128.
        """
        features = self._check_features(features)
        message = self._message(message, features.shape[0]) if watermark else None
        emb = self.quantizer.out_proj(features)
        return self.decoder(emb, message).transpose(0, 2, 1)

    def decode_chunked(
        self,
        features: mx.array,
        chunk_size: int,
        message: mx.array | None = None,
        context: int = 16,
        *,
        watermark: bool = True,
    ) -> mx.array:
        """:meth:`decode` in pieces of ``chunk_size`` frames to bound peak memory.

        Every piece is decoded with ``context`` extra frames on each side and only its own
        samples are kept. The audio path's receptive field is a few frames, so it matches
        ``decode`` to float rounding; the watermark's LSTMs carry state across the whole input,
        which a piece only sees for ``context`` frames back, so the watermark term differs
        slightly. Exact equality would need carried LSTM and causal-conv state (not done).
        """
        if chunk_size < 1 or context < 0:
            raise ValueError(
                f"decode_chunked needs chunk_size >= 1 and context >= 0, got {chunk_size}, "
                f"{context}"
            )
        features = self._check_features(features)
        # One message for all pieces, else a random draw per piece would change mid-signal.
        message = self._message(message, features.shape[0])
        n = features.shape[1]
        if n <= chunk_size:
            return self.decode(features, message, watermark=watermark)
        hop = self.hop_length
        pieces = []
        for start in range(0, n, chunk_size):
            end = min(start + chunk_size, n)
            lo, hi = max(0, start - context), min(n, end + context)
            wav = self.decode(features[:, lo:hi], message, watermark=watermark)
            piece = wav[..., (start - lo) * hop : (end - lo) * hop]
            mx.eval(piece)
            pieces.append(piece)
        return mx.concatenate(pieces, axis=-1)

    def wav_idx_to_feature_idx(self, wav_idx: int | mx.array, sample_rate: int | None = None):
        """Frames needed to cover ``wav_idx`` samples given at ``sample_rate``."""
        sr = sample_rate or self.sample_rate
        if isinstance(wav_idx, mx.array):
            target = mx.ceil(self.sample_rate * wav_idx / sr)
            return mx.ceil(target / self.hop_length).astype(mx.int32)
        return math.ceil(math.ceil(self.sample_rate * wav_idx / sr) / self.hop_length)

    def feature_idx_to_wav_idx(self, feature_idx: int | mx.array, sample_rate: int | None = None):
        """Samples (at ``sample_rate``) spanned by ``feature_idx`` frames."""
        sr = sample_rate or self.sample_rate
        samples = feature_idx * self.hop_length * (sr / self.sample_rate)
        if isinstance(samples, mx.array):
            return samples.astype(mx.int32)
        return int(samples)

    # ---- checkpoint ------------------------------------------------------------------------

    @staticmethod
    def sanitize(weights: dict[str, np.ndarray]) -> dict[str, mx.array]:
        """Official codec weights (``audio_codec.`` prefix stripped) -> this module's layout.

        Converts by layer type: Conv1d (out, in, k) -> (out, k, in); ConvTranspose1d
        (in, out, k) -> (out, k, in); Snake alpha (1, C, 1) -> (1, 1, C); LSTM, embedding and
        biases unchanged. Weight norm is folded. Quantizer codebooks are dropped.
        """
        out: dict[str, mx.array] = {}
        conv_prefixes = set()
        for key, value in weights.items():
            if key.startswith("quantizer.") and not key.startswith(
                ("quantizer.in_proj.", "quantizer.out_proj.")
            ):
                continue  # codebooks of the discrete quantizer, if any: unused by the VAE
            kind = _layer_type(key)
            if kind in ("conv", "conv_transpose") and key.endswith(
                (".weight", ".weight_g", ".weight_v")
            ):
                conv_prefixes.add(key.rsplit(".", 1)[0] + ".")
            elif kind == "snake":
                a = np.asarray(value, dtype=np.float32)
                if a.ndim != 3 or a.shape[0] != 1 or a.shape[2] != 1:
                    raise _shape_error(key, "(1, C, 1)", a.shape)
                out[key] = mx.array(a.transpose(0, 2, 1))
            else:  # biases, LSTM and embedding tensors keep their layout
                out[key] = mx.array(np.asarray(value, dtype=np.float32))
        for prefix in sorted(conv_prefixes):
            w = _conv_weight(weights, prefix)
            layout = (1, 2, 0) if _layer_type(prefix) == "conv_transpose" else (0, 2, 1)
            out[prefix + "weight"] = mx.array(np.ascontiguousarray(w.transpose(layout)))
        return out

    def load_checkpoint(self, weights: dict[str, np.ndarray]) -> DACVAE:
        """Sanitize official weights, check every parameter is present and shaped, load them."""
        sanitized = self.sanitize(weights)
        for key, param in tree_flatten(self.parameters()):
            if key not in sanitized:
                raise ValueError(
                    f"codec checkpoint lacks '{key}' (or its weight_g/weight_v pair); "
                    "is it a DAC-VAE checkpoint for this config?"
                )
            if tuple(sanitized[key].shape) != tuple(param.shape):
                raise ValueError(
                    f"codec weight '{key}' has shape {tuple(sanitized[key].shape)} after layout "
                    f"conversion, expected {tuple(param.shape)}; the checkpoint does not match "
                    "the codec config"
                )
        wanted = {k for k, _ in tree_flatten(self.parameters())}
        self.load_weights([(k, v) for k, v in sanitized.items() if k in wanted])
        mx.eval(self.parameters())
        return self

    def randomize(self, seed: int = 0) -> DACVAE:
        """Random weights with the golden fixture's statistics (PyTorch's default init).

        A fresh DACVAE holds zeros, which is fine for timing but hides every value-dependent
        effect (the watermark LSTMs' memory, rounding); tests and benchmarks of such effects on
        codec shapes without a checkpoint use this.
        """
        rng = np.random.default_rng(seed)
        params = []
        for key, value in tree_flatten(self.parameters()):
            shape = tuple(value.shape)
            if key.endswith(".alpha"):
                a = rng.uniform(0.5, 2.0, shape)
            elif ".lstm." in key:
                bound = 1 / math.sqrt(shape[0] // 4)
                a = rng.uniform(-bound, bound, shape) if "weight" in key else rng.normal(
                    0, 0.07, shape
                )
            elif len(shape) == 3:  # conv weights, (out, k, in)
                bound = 1 / math.sqrt(shape[1] * shape[2])
                a = rng.uniform(-bound, bound, shape)
            elif key.endswith("msg_processor.weight"):
                a = rng.normal(0, 0.5, shape)
            else:
                a = rng.normal(0, 0.04, shape)
            params.append((key, mx.array(a.astype(np.float32))))
        self.load_weights(params)
        mx.eval(self.parameters())
        return self

    # ---- helpers ---------------------------------------------------------------------------

    def _reflect_pad(self, wav: mx.array) -> mx.array:
        """Right-pad to a multiple of the hop by reflection (torch 'reflect', no edge repeat)."""
        n = wav.shape[-1]
        pad = -n % self.hop_length
        if pad == 0:
            return wav
        # Mirror indices n-2, n-3, ...; folded so inputs shorter than the pad still work.
        idx = np.arange(n, n + pad)
        period = max(2 * (n - 1), 1)
        idx = idx % period
        idx = np.where(idx < n, idx, period - idx)
        return mx.concatenate([wav, wav[:, mx.array(idx)]], axis=-1)

    def _check_features(self, features: mx.array) -> mx.array:
        dim = self.config.codebook_dim
        if features.ndim != 3 or features.shape[-1] != dim or features.shape[1] == 0:
            raise ValueError(
                f"decode expects features of shape (batch, frames, {dim}), got "
                f"{tuple(features.shape)}; transpose (B, {dim}, T) input to (B, T, {dim})"
            )
        return features.astype(mx.float32)

    @staticmethod
    def _message(message: mx.array | None, batch: int) -> mx.array:
        if message is None:
            return mx.random.randint(0, 2, (batch, WM_NBITS)).astype(mx.float32)
        message = mx.array(message).astype(mx.float32)
        if message.shape == (WM_NBITS,):
            return mx.broadcast_to(message, (batch, WM_NBITS))
        if message.shape != (batch, WM_NBITS):
            raise ValueError(
                f"watermark message must have shape ({WM_NBITS},) or ({batch}, {WM_NBITS}), got "
                f"{tuple(message.shape)}"
            )
        return message
