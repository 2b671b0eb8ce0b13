"""Rotary position embedding as SAM-Audio's DiT applies it.

The reference rotates adjacent pairs (x[2i], x[2i+1]) by angle pos / theta^(2i/d) with positions
0..T-1 of the current sequence; that is ``mx.fast.rope`` in its "traditional" layout. The periods
theta^(2i/d) are computed in float32 like the reference and handed to the kernel as ``freqs``
so the angles round the same way.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np


def rope_periods(head_dim: int, theta: float) -> np.ndarray:
    """float32 theta^(2i/d) for i < d/2 (the reciprocal of the reference's frequencies)."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float32)[: head_dim // 2] / np.float32(head_dim)
    return np.power(np.float32(theta), exponents).astype(np.float32)


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, theta: float, max_positions: int):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
        self.head_dim = head_dim
        self.theta = theta
        self.max_positions = max_positions
        self._periods = mx.array(rope_periods(head_dim, theta))

    def __call__(self, x: mx.array) -> mx.array:
        """Rotate x (B, H, T, head_dim) by positions 0..T-1."""
        T = x.shape[-2]
        if T > self.max_positions:
            # The reference's table stops at max_positions and fails past it.
            raise ValueError(
                f"sequence of {T} frames exceeds the DiT's max_positions ({self.max_positions}); "
                "use shorter windows (separate_long / a smaller window length)"
            )
        return mx.fast.rope(
            x,
            self.head_dim,
            traditional=True,
            base=None,
            scale=1.0,
            offset=0,
            freqs=self._periods,
        )
