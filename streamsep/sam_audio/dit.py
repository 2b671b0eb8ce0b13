"""SAM-Audio's diffusion transformer (the reference's ``sam_audio/model/transformer.py``).

Attribute names mirror the official checkpoint after ``transformer.``. Two reference quirks that
change the numbers: attention splits channels into heads as (head_dim, n_heads), i.e. channel
``d * n_heads + h`` belongs to head ``h``, while the output merges them back as (n_heads, head_dim);
and the x-embedder's GroupNorm (one group) normalises over all frames, padded ones included.

Compute paths (as in codec.py): MLX's Linux CPU backend evaluates exp, sin and cos one element at a
time, about 10-20 ns each (30x numpy), and its ``scaled_dot_product_attention`` falls back to a
softmax built on that exp. Left alone, SwiGLU's sigmoid, the attention softmax and RoPE's angles
cost a third of a small-preset evaluation on CPU. The CPU forms build exp from mul/add
(Cody-Waite range reduction and a degree-7 polynomial, within 2 ulp) that ``mx.compile`` fuses
into one kernel, and rotate with a cached cos/sin table. GPUs keep MLX's fused kernels. Both paths
compute the same function to float32 rounding; tests compare them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from streamsep.configs import FromDict

from .rope import RotaryEmbedding


@dataclass
class DiTConfig(FromDict):
    """The reference ``TransformerConfig`` with its defaults (dropouts are unused at inference)."""

    dim: int = 2048
    n_heads: int = 16
    n_layers: int = 16
    dropout: float = 0.1
    norm_eps: float = 1e-5
    qk_norm: bool = True
    fc_bias: bool = False
    ffn_exp: int = 4
    ffn_dim_multiplier: float = 1
    multiple_of: int = 64
    non_linearity: str = "swiglu"
    use_rope: bool = True
    max_positions: int = 10000
    frequency_embedding_dim: int = 256
    timestep_non_linearity: str = "swiglu"
    t_block_non_linearity: str = "silu"
    t_block_bias: bool = True
    context_dim: int = 2048
    context_non_linearity: str = "swiglu"
    context_embedder_dropout: float = 0.0
    context_norm: bool = False
    out_channels: int = 256
    in_channels: int | None = None

    def __post_init__(self) -> None:
        if self.dim % self.n_heads:
            raise ValueError(f"DiT dim {self.dim} is not divisible by n_heads {self.n_heads}")
        for name in (
            "non_linearity",
            "timestep_non_linearity",
            "t_block_non_linearity",
            "context_non_linearity",
        ):
            kind = getattr(self, name)
            if kind not in _NONLINEARITIES:
                raise ValueError(
                    f"unknown DiT {name} {kind!r}; use one of {sorted(_NONLINEARITIES)}"
                )
        if self.t_block_non_linearity == "swiglu":
            raise ValueError("t_block_non_linearity cannot be 'swiglu' (t_block is one Linear)")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_hidden_dim(self) -> int:
        hidden = int(self.ffn_exp * self.dim)
        if self.non_linearity == "swiglu":
            hidden = int(2 * hidden / 3)  # same parameter count as a plain two-layer MLP
        hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    @property
    def rope_theta(self) -> float:
        return max(10000, 2 * self.max_positions)


_NONLINEARITIES = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "approx_gelu": nn.gelu_approx,  # torch's gelu(approximate="tanh")
    "srelu": lambda x: mx.square(nn.relu(x)),
    "silu": nn.silu,
    "swiglu": None,  # gated; handled by the layers that own w3
}


def modulate(x: mx.array, shift: mx.array, scale: mx.array) -> mx.array:
    return x * (1 + scale) + shift


# --------------------------------------------------------------------------------------------
# Compute paths

# "auto": CPU forms when the default device is the CPU; "cpu" / "native" force one path.
COMPUTE_PATH = "auto"


def cpu_forms() -> bool:
    if COMPUTE_PATH == "auto":
        return mx.default_device().type == mx.DeviceType.cpu
    if COMPUTE_PATH not in ("cpu", "native"):
        raise ValueError(
            f"DiT COMPUTE_PATH must be 'auto', 'cpu' or 'native', got {COMPUTE_PATH!r}"
        )
    return COMPUTE_PATH == "cpu"


def default_dtype(device: mx.Device | mx.DeviceType | None = None) -> mx.Dtype:
    """The DiT's compute dtype on ``device`` (default: the default device): bfloat16 on GPUs
    (Metal, CUDA), where it halves the weight traffic and runs on the matrix units; float32 on
    CPU, where MLX has no fast bfloat16 GEMM (5 GFLOP/s against 170 in float32 on a 2-core
    AVX-512 machine)."""
    device = device or mx.default_device()
    kind = device if isinstance(device, mx.DeviceType) else device.type
    return mx.float32 if kind == mx.DeviceType.cpu else mx.bfloat16


_LOG2E = 1.4426950408889634
# ln 2 in two parts: k * _LN2_HI is exact in float32 for the |k| <= 127 exp needs.
_LN2_HI = 0.693359375
_LN2_LO = -2.1219444005471377e-4
# Taylor coefficients 1/n! of e^r, n = 0..7; on |r| <= ln(2)/2 the degree-7 remainder is 5e-9,
# below float32 rounding.
_EXP_POLY = (1.0, 1.0, 1 / 2, 1 / 6, 1 / 24, 1 / 120, 1 / 720, 1 / 5040)


# Adding and subtracting 1.5 * 2^23 rounds a float32 |y| < 2^22 to the nearest integer with two
# adds, which the JIT-compiled kernel vectorises (mx.floor is a libm call per element there).
_ROUNDER = 12582912.0


def _exp(x: mx.array) -> mx.array:
    """exp(x) for float32 x from mul/add: 2^k · e^r with k = round(x / ln 2)."""
    # Clipped to [-88, 88]: 2^k stays finite, and from about -87.98 down k = -127 gives 2^k's bits
    # all zero, so the result is exactly 0 (true value < 1.2e-38) and masked (-inf) attention
    # scores get weight 0 without a select, which would stop the kernel vectorising.
    xc = mx.clip(x, -88.0, 88.0)
    k = (xc * _LOG2E + _ROUNDER) - _ROUNDER
    r = (xc - k * _LN2_HI) - k * _LN2_LO
    # Estrin's scheme: short dependency chains, 4x faster than Horner's in the JIT kernel.
    c = _EXP_POLY
    r2 = r * r
    r4 = r2 * r2
    p = ((c[0] + c[1] * r) + r2 * (c[2] + c[3] * r)) + r4 * (
        (c[4] + c[5] * r) + r2 * (c[6] + c[7] * r)
    )
    two_k = ((k.astype(mx.int32) + 127) << 23).view(mx.float32)
    return p * two_k


@mx.compile
def _silu_cpu(x: mx.array) -> mx.array:
    return x / (1 + _exp(-x))


@mx.compile
def _swiglu_cpu(gate: mx.array, up: mx.array) -> mx.array:
    return gate / (1 + _exp(-gate)) * up


@mx.compile
def _softmax_cpu(scores: mx.array) -> mx.array:
    e = _exp(scores - mx.max(scores, axis=-1, keepdims=True))
    return e / mx.sum(e, axis=-1, keepdims=True)


def silu(x: mx.array) -> mx.array:
    return _silu_cpu(x) if cpu_forms() and x.dtype == mx.float32 else nn.silu(x)


def swiglu(gate: mx.array, up: mx.array) -> mx.array:
    """silu(gate) · up."""
    if cpu_forms() and gate.dtype == mx.float32:
        return _swiglu_cpu(gate, up)
    return nn.silu(gate) * up


def attention(
    q: mx.array, k: mx.array, v: mx.array, scale: float, mask: mx.array | None
) -> mx.array:
    """softmax(q kᵀ · scale, keys where ``mask``) v on (B, H, T, D) heads; mask bool (B, 1, 1, S).

    On CPU MLX's fused attention is this same composition (scale q, matmul, mask, softmax,
    matmul) with its slow exp; only the softmax changes here."""
    if not (cpu_forms() and q.dtype == mx.float32):
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
    scores = (q * scale) @ k.swapaxes(-1, -2)
    if mask is not None:
        scores = mx.where(mask, scores, -mx.inf)
    return _softmax_cpu(scores) @ v


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = mx.ones((dim,))

    def __call__(self, x: mx.array) -> mx.array:
        return mx.fast.rms_norm(x, self.weight, self.eps)


class GatedMLP(nn.Module):
    """w2(act(w1 x)) or, for swiglu, w2(silu(w1 x) * w3 x): the reference's FeedForward and
    ProjectionLayer, which differ only in their sizes."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, kind: str, bias: bool):
        super().__init__()
        self.swiglu = kind == "swiglu"
        self.act = _NONLINEARITIES[kind]
        self.w1 = nn.Linear(in_dim, hidden_dim, bias=bias)
        self.w2 = nn.Linear(hidden_dim, out_dim, bias=bias)
        if self.swiglu:
            self.w3 = nn.Linear(in_dim, hidden_dim, bias=bias)

    def __call__(self, x: mx.array) -> mx.array:
        if self.swiglu:
            return self.w2(swiglu(self.w1(x), self.w3(x)))
        h = self.w1(x)
        return self.w2(silu(h) if self.act is nn.silu else self.act(h))


class Attention(nn.Module):
    def __init__(self, dim: int, n_heads: int, qk_norm: bool, norm_eps: float, bias: bool):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.scale = self.head_dim**-0.5
        self.wq = nn.Linear(dim, dim, bias=bias)
        self.wk = nn.Linear(dim, dim, bias=bias)
        self.wv = nn.Linear(dim, dim, bias=bias)
        self.wo = nn.Linear(dim, dim, bias=bias)
        self.use_qk_norm = qk_norm
        if qk_norm:
            self.q_norm = RMSNorm(self.head_dim, norm_eps)
            self.k_norm = RMSNorm(self.head_dim, norm_eps)

    def _heads(self, x: mx.array) -> mx.array:
        B, T, C = x.shape
        heads = x.reshape(B, T, C // self.n_heads, self.n_heads).transpose(0, 3, 1, 2)
        # On CPU one explicit copy: rms_norm and the matmuls on this strided view cost 4x more
        # than copying first (1.2 against 0.3 ms per (8, 250, 128) head block).
        return mx.contiguous(heads) if cpu_forms() else heads

    def __call__(
        self,
        x: mx.array,
        context: mx.array | None = None,
        mask: mx.array | None = None,
        rope: Callable[[mx.array], mx.array] | None = None,
    ) -> mx.array:
        """x (B, T, dim); context (B, S, dim) for cross-attention; mask bool (B, 1, 1, S);
        rope rotates (B, H, T, head_dim) heads."""
        B, T, _ = x.shape
        kv = x if context is None else context
        q, k, v = self._heads(self.wq(x)), self._heads(self.wk(kv)), self._heads(self.wv(kv))
        if self.use_qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rope(q), rope(k)
        out = attention(q, k, v, self.scale, mask)
        return self.wo(out.transpose(0, 2, 1, 3).reshape(B, T, -1))


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        args = (cfg.dim, cfg.n_heads, cfg.qk_norm, cfg.norm_eps, cfg.fc_bias)
        self.attention = Attention(*args)
        self.cross_attention = Attention(*args)
        self.feed_forward = GatedMLP(
            cfg.dim, cfg.ffn_hidden_dim, cfg.dim, cfg.non_linearity, cfg.fc_bias
        )
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.scale_shift_table = mx.random.normal((6, cfg.dim)) / math.sqrt(cfg.dim)

    def __call__(
        self,
        x: mx.array,
        context: mx.array,
        t: mx.array,
        mask: mx.array | None,
        context_mask: mx.array | None,
        rope: Callable[[mx.array], mx.array] | None,
    ) -> mx.array:
        mod = self.scale_shift_table[None] + t.reshape(x.shape[0], 6, -1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mx.split(mod, 6, axis=1)
        h_attn = self.attention(
            modulate(self.attention_norm(x), shift_msa, scale_msa), mask=mask, rope=rope
        )
        h = x + h_attn * gate_msa
        # Cross-attention has no norm, modulation, gate or RoPE in the reference.
        h = h + self.cross_attention(h, context=context, mask=context_mask)
        h_ff = self.feed_forward(modulate(self.ffn_norm(h), shift_mlp, scale_mlp))
        return h + h_ff * gate_mlp


class ConvBlock1d(nn.Module):
    """GroupNorm(1 group) → SiLU → Conv1d(k=3, 'same' zero padding), channels last."""

    def __init__(self, channels: int):
        super().__init__()
        self.groupnorm = nn.GroupNorm(1, channels, eps=1e-5, pytorch_compatible=True)
        self.project = nn.Conv1d(channels, channels, kernel_size=3, padding=1)

    def __call__(self, x: mx.array) -> mx.array:
        return self.project(silu(self.groupnorm(x)))


class ResnetBlock1d(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block1 = ConvBlock1d(channels)
        self.block2 = ConvBlock1d(channels)

    def __call__(self, x: mx.array) -> mx.array:
        # in == out channels in the DiT, so the reference's to_out is the identity.
        return self.block2(self.block1(x)) + x


class Patcher(nn.Module):
    """The x-embedder: one ResnetBlock1d with patch size 1 (so no reshaping)."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = ResnetBlock1d(channels)

    def __call__(self, x: mx.array) -> mx.array:
        return self.block(x)


class ContextEmbedder(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.context_norm = cfg.context_norm
        if cfg.context_norm:
            self.norm = RMSNorm(cfg.context_dim, cfg.norm_eps)
        self.projection = GatedMLP(
            cfg.context_dim, cfg.dim, cfg.dim, cfg.context_non_linearity, cfg.fc_bias
        )

    def __call__(self, x: mx.array) -> mx.array:
        if self.context_norm:
            x = self.norm(x)
        return self.projection(x)


def timestep_frequencies(frequency_embedding_dim: int, max_period: float = 10000) -> np.ndarray:
    """float32 exp(-ln(max_period) * i / half), evaluated in the reference's order."""
    half = frequency_embedding_dim // 2
    scaled = np.float32(-math.log(max_period)) * np.arange(half, dtype=np.float32)
    return np.exp(scaled / np.float32(half)).astype(np.float32)


class TimestepEmbedder(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.frequency_embedding_dim = cfg.frequency_embedding_dim
        self.projection = GatedMLP(
            cfg.frequency_embedding_dim,
            cfg.dim,
            cfg.dim,
            cfg.timestep_non_linearity,
            cfg.fc_bias,
        )
        self._freqs = mx.array(timestep_frequencies(cfg.frequency_embedding_dim))

    def embedding(self, t: mx.array) -> mx.array:
        """Sinusoidal [cos, sin] features (B, frequency_embedding_dim) of t (B,)."""
        args = t[:, None].astype(mx.float32) * self._freqs[None]
        emb = mx.concatenate([mx.cos(args), mx.sin(args)], axis=-1)
        if self.frequency_embedding_dim % 2:
            emb = mx.concatenate([emb, mx.zeros_like(emb[:, :1])], axis=-1)
        return emb

    def __call__(self, t: mx.array) -> mx.array:
        return self.projection(self.embedding(t).astype(self.projection.w1.weight.dtype))


class DiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.config = cfg
        if cfg.in_channels is not None:
            # Present in the reference (and so in checkpoints) but unused by its forward.
            self.data_proj = nn.Linear(cfg.in_channels, cfg.dim)
        self.rope = (
            RotaryEmbedding(cfg.head_dim, cfg.rope_theta, cfg.max_positions)
            if cfg.use_rope
            else None
        )
        self.layers = [DiTBlock(cfg) for _ in range(cfg.n_layers)]
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.out_channels, bias=cfg.fc_bias)
        self.x_embedder = Patcher(cfg.dim)
        self.y_embedder = ContextEmbedder(cfg)
        self.t_embedder = TimestepEmbedder(cfg)
        self.t_block_act = _NONLINEARITIES[cfg.t_block_non_linearity]
        self.t_block = nn.Linear(cfg.dim, 6 * cfg.dim, bias=cfg.t_block_bias)
        self.final_layer_scale_shift_table = mx.random.normal((2, cfg.dim)) / math.sqrt(cfg.dim)

    def __call__(
        self,
        x: mx.array,
        time: mx.array | float,
        *,
        memory: mx.array,
        padding_mask: mx.array | None = None,
        memory_padding_mask: mx.array | None = None,
    ) -> mx.array:
        """One vector-field evaluation of the transformer.

        x: (B, T, dim) projected input; time: (B,) or a scalar; memory: (B, L, context_dim);
        padding_mask: (B, T) bool, True on valid frames (masks self-attention keys only);
        memory_padding_mask: (B, L) bool, True on valid tokens. Returns (B, T, out_channels).
        """
        B, T, C = x.shape
        if C != self.config.dim:
            raise ValueError(f"DiT input has {C} channels, expected dim={self.config.dim}")
        if memory.ndim != 3 or memory.shape[0] != B:
            raise ValueError(
                f"DiT memory must be (batch={B}, length, {self.config.context_dim}), "
                f"got {memory.shape}"
            )
        time = mx.broadcast_to(mx.array(time, dtype=mx.float32).reshape(-1), (B,))

        h = self.x_embedder(x)
        t = self.t_embedder(time)  # (B, dim)
        t0 = self.t_block(self.t_block_act(t))  # (B, 6 dim)
        y = self.y_embedder(memory)
        mask = None if padding_mask is None else padding_mask.astype(mx.bool_)[:, None, None, :]
        context_mask = (
            None
            if memory_padding_mask is None
            else memory_padding_mask.astype(mx.bool_)[:, None, None, :]
        )
        rope = self.rope
        if rope is not None and cpu_forms() and x.dtype == mx.float32:
            rope = rope.tabled(T)  # one cos/sin table for every layer, q and k
        for layer in self.layers:
            h = layer(h, y, t0, mask, context_mask, rope)

        shift, scale = mx.split(self.final_layer_scale_shift_table[None] + t[:, None], 2, axis=1)
        return self.output(modulate(self.norm(h), shift, scale))

    @staticmethod
    def sanitize(weights: dict[str, Any]) -> dict[str, Any]:
        """Official ``transformer.*`` tensors (prefix optional) → this module's layout.

        Only the x-embedder's convolutions change layout: torch Conv1d (out, in, k) → (out, k, in).
        """
        out = {}
        for key, value in weights.items():
            key = key.removeprefix("transformer.")
            if key.startswith("x_embedder.") and key.endswith(".project.weight"):
                value = value.transpose(0, 2, 1)
            out[key] = value
        return out
