"""The embedded separator network: a small text-conditioned DiT predicting a spectral mask.

Like SAM-Audio's DiT it takes the flow state x_t, the mixture features and a conditioning vector
(flow time + text embedding through adaLN) and runs self-attention over latent frames (25/s).
Unlike it, the network does not regress the velocity: it predicts a per-bin sigmoid mask on the
mixture's compressed magnitudes, x̂1 = σ(out) · mix. Predicting the velocity on raw spectral
features failed here (−12 dB SI-SDR, see MODEL_CARD.md); the mask keeps the mixture's fine
structure. Position is relative (RoPE) so windows longer than the 4 s training crops work.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import mlx.core as mx
import mlx.nn as nn

from streamsep.configs import FromDict


@dataclass
class ModelArgs(FromDict):
    n_bins: int = 641
    state_channels: int = 128
    text_dim: int = 384
    dim: int = 256
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 3.0
    conv_kernel: int = 5
    # "linear": compressed magnitudes as they are (the first shipped model). "log": their log
    # relative to the window's mean level, so a quiet and a loud take of one scene look the same.
    input_norm: str = "linear"
    # Adds a per-bin term gate(h)·(how far the bin stands above its spectral neighbours): a frame
    # embedding alone can only paint a smooth mask, this lets it keep or drop harmonic peaks.
    peak_head: bool = False
    peak_width: int = 9

    def to_dict(self) -> dict:
        return asdict(self)


def timestep_embedding(t: mx.array, dim: int) -> mx.array:
    half = dim // 2
    freqs = mx.exp(-math.log(10000.0) * mx.arange(half) / half)
    args = (t[:, None] * 1000.0) * freqs[None]
    return mx.concatenate([mx.cos(args), mx.sin(args)], axis=-1)


def modulate(x: mx.array, shift: mx.array, scale: mx.array) -> mx.array:
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rope = nn.RoPE(dim // heads)

    def __call__(self, x: mx.array) -> mx.array:
        b, t, d = x.shape
        q, k, v = mx.split(self.qkv(x).reshape(b, t, 3, self.heads, -1).transpose(2, 0, 3, 1, 4), 3)
        q, k, v = q[0], k[0], v[0]
        q, k = self.rope(q), self.rope(k)
        y = mx.fast.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(d // self.heads))
        return self.proj(y.transpose(0, 2, 1, 3).reshape(b, t, d))


class Block(nn.Module):
    """adaLN-zero DiT block with a depthwise temporal conv for local context."""

    def __init__(self, a: ModelArgs):
        super().__init__()
        d = a.dim
        self.norm1 = nn.LayerNorm(d, affine=False, eps=1e-6)
        self.attn = Attention(d, a.heads)
        self.conv = nn.Conv1d(d, d, a.conv_kernel, padding=a.conv_kernel // 2, groups=d)
        self.norm2 = nn.LayerNorm(d, affine=False, eps=1e-6)
        hidden = int(d * a.mlp_ratio)
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)
        self.ada = nn.Linear(d, 6 * d)
        self.ada.weight = mx.zeros_like(self.ada.weight)
        self.ada.bias = mx.zeros_like(self.ada.bias)

    def __call__(self, x: mx.array, c: mx.array) -> mx.array:
        s1, g1, a1, s2, g2, a2 = mx.split(self.ada(nn.silu(c)), 6, axis=-1)
        h = modulate(self.norm1(x), s1, g1)
        x = x + a1[:, None] * (self.attn(h) + self.conv(h))
        h = modulate(self.norm2(x), s2, g2)
        return x + a2[:, None] * self.fc2(nn.gelu_approx(self.fc1(h)))


class MaskFlowDiT(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.args = a
        d = a.dim
        self.inp = nn.Linear(a.n_bins + a.state_channels, d)
        self.t_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.text_mlp = nn.Sequential(nn.Linear(a.text_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = [Block(a) for _ in range(a.layers)]
        self.norm_out = nn.LayerNorm(d, affine=False, eps=1e-6)
        self.ada_out = nn.Linear(d, 2 * d)
        self.ada_out.weight = mx.zeros_like(self.ada_out.weight)
        self.ada_out.bias = mx.zeros_like(self.ada_out.bias)
        self.out = nn.Linear(d, a.n_bins)
        if a.peak_head:
            self.peak = nn.Linear(d, a.n_bins)
            self.peak.weight = mx.zeros_like(self.peak.weight)
            self.peak.bias = mx.zeros_like(self.peak.bias)

    def __call__(self, x_t: mx.array, mix: mx.array, t: mx.array, text: mx.array) -> mx.array:
        """Mask logits (B, T, n_bins) for state x_t (B, T, C), mixture features (B, T, n_bins),
        flow time t (B,) in [0, 1) and text embeddings (B, text_dim)."""
        a = self.args
        z = log_level(mix) if a.input_norm == "log" or a.peak_head else None
        h = self.inp(mx.concatenate([z if a.input_norm == "log" else mix, x_t], axis=-1))
        c = self.t_mlp(timestep_embedding(t, self.args.dim)) + self.text_mlp(text)
        for blk in self.blocks:
            h = blk(h, c)
        shift, scale = mx.split(self.ada_out(nn.silu(c)), 2, axis=-1)
        h = modulate(self.norm_out(h), shift, scale)
        if a.peak_head:
            return self.out(h) + self.peak(h) * local_contrast(z, a.peak_width)
        return self.out(h)


def log_level(mix: mx.array) -> mx.array:
    """log of the compressed magnitudes relative to the window's mean (gain invariant).

    The mean skips all-zero frames (digital silence, e.g. a muted input): counting them would
    shift every real frame's level by log(1/fraction of frames with signal).
    """
    frame_level = mx.mean(mix, axis=2, keepdims=True)
    live = (frame_level > 0).astype(mix.dtype)
    n_live = mx.maximum(mx.sum(live, axis=1, keepdims=True), 1.0)
    ref = mx.sum(frame_level, axis=1, keepdims=True) / n_live + 1e-6
    return mx.log(mix / ref + 1e-3)


def local_contrast(z: mx.array, width: int) -> mx.array:
    """z minus its moving average over ``width`` neighbouring bins (edges padded)."""
    half = width // 2
    zp = mx.concatenate([mx.repeat(z[..., :1], half, axis=-1), z,
                         mx.repeat(z[..., -1:], half, axis=-1)], axis=-1)
    c = mx.concatenate([mx.zeros_like(zp[..., :1]), mx.cumsum(zp, axis=-1)], axis=-1)
    return z - (c[..., width:] - c[..., :-width]) / width
