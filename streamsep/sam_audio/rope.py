"""Rotary position embedding as SAM-Audio's DiT applies it.

The reference rotates adjacent pairs (x[2i], x[2i+1]) by angle pos / theta^(2i/d) with positions
0..T-1 of the current sequence; that is ``mx.fast.rope`` in its "traditional" layout. The periods
theta^(2i/d) are computed in float32 like the reference and handed to the kernel as ``freqs``
so the angles round the same way.

On CPU, ``mx.fast.rope`` falls back to ops that evaluate cos/sin for every (position, pair) on
each call, one element at a time (about 20 ns each there): 2 calls per layer per step. The
table form computes the angles once per sequence length with numpy (the kernel's float32
``pos * (1 / period)``, within 5e-7 of it up to 10000 positions) and rotates with mul/add.
"""

from __future__ import annotations

from functools import lru_cache

import mlx.core as mx
import mlx.nn as nn
import numpy as np


def rope_periods(head_dim: int, theta: float) -> np.ndarray:
    """float32 theta^(2i/d) for i < d/2 (the reciprocal of the reference's frequencies)."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float32)[: head_dim // 2] / np.float32(head_dim)
    return np.power(np.float32(theta), exponents).astype(np.float32)


@lru_cache(maxsize=16)
def _table(head_dim: int, theta: float, length: int) -> tuple[mx.array, mx.array]:
    inv = (np.float32(1) / rope_periods(head_dim, theta)).astype(np.float32)
    angles = np.arange(length, dtype=np.float32)[:, None] * inv[None, :]
    return mx.array(np.cos(angles)), mx.array(np.sin(angles))


@mx.compile
def _rotate_pairs(x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
    pairs = x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    return mx.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1).reshape(x.shape)


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, theta: float, max_positions: int):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
        self.head_dim = head_dim
        self.theta = theta
        self.max_positions = max_positions
        self._periods = mx.array(rope_periods(head_dim, theta))

    def _check(self, length: int) -> None:
        if length > self.max_positions:
            # The reference's table stops at max_positions and fails past it.
            raise ValueError(
                f"sequence of {length} frames exceeds the DiT's max_positions "
                f"({self.max_positions}); use shorter windows (separate_long / a smaller window "
                "length)"
            )

    def __call__(self, x: mx.array) -> mx.array:
        """Rotate x (B, H, T, head_dim) by positions 0..T-1 with the fused kernel."""
        self._check(x.shape[-2])
        return mx.fast.rope(
            x,
            self.head_dim,
            traditional=True,
            base=None,
            scale=1.0,
            offset=0,
            freqs=self._periods,
        )

    def tabled(self, length: int) -> TabledRotation:
        """The same rotation for sequences of ``length`` frames, from a cached cos/sin table."""
        self._check(length)
        return TabledRotation(*_table(self.head_dim, float(self.theta), length))


class TabledRotation:
    """RoPE for one sequence length: (B, H, T, D) → rotated, from (T, D/2) cos/sin tables."""

    def __init__(self, cos: mx.array, sin: mx.array):
        self.cos, self.sin = cos, sin

    def __call__(self, x: mx.array) -> mx.array:
        return _rotate_pairs(x, self.cos.astype(x.dtype), self.sin.astype(x.dtype))
