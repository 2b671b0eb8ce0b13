"""Position-seeded noise: the noise of absolute latent frame f is a pure function of (seed, f).

Two overlapping windows therefore start their flow from identical noise on the frames they share,
so their separations agree closely there and the crossfade blends near-identical signals. The
generator is a counter-based hash (splitmix64) evaluated for every (frame, channel) at once, then
Box-Muller; it needs no state, works for negative frames (left padding at start-up) and is
identical on every platform.

``independent_noise`` is the scheme of mlx-audio's chunked separation, kept for comparison
(``--continuity independent``): every window draws its own noise, a pure function of (seed, the
window's first frame), so overlapping windows start from different noise on the frames they share.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_CHANNEL_KEY = np.uint64(0xD1B54A32D192ED03)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    # uint64 array arithmetic wraps modulo 2**64, which is what the hash wants.
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def position_noise(seed: int, first_frame: int, n_frames: int, channels: int) -> np.ndarray:
    """Standard normal noise for latent frames [first_frame, first_frame + n_frames).

    Returns float32 (n_frames, channels). Row i depends only on (seed, first_frame + i).
    """
    if n_frames < 0 or channels < 0:
        raise ValueError("n_frames and channels must not be negative")
    frames = np.arange(first_frame, first_frame + n_frames, dtype=np.int64).view(np.uint64)
    key = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    per_frame = _splitmix64(_splitmix64(frames ^ key))
    chans = np.arange(channels, dtype=np.uint64) * _CHANNEL_KEY
    h = _splitmix64(per_frame[:, None] + chans[None, :])
    # Two 32-bit halves give two uniforms in (0, 1); Box-Muller turns them into one normal.
    u1 = ((h >> np.uint64(32)).astype(np.float64) + 0.5) / 4294967296.0
    u2 = ((h & np.uint64(0xFFFFFFFF)).astype(np.float64) + 0.5) / 4294967296.0
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return z.astype(np.float32)


#: Mixed into the key of independent_noise so that its windows never reproduce position_noise.
_WINDOW_KEY = np.uint64(0x8CB92BA72F3D8DD7)


def independent_noise(seed: int, first_frame: int, n_frames: int, channels: int) -> np.ndarray:
    """Standard normal noise for the window whose first latent frame is ``first_frame``.

    Returns float32 (n_frames, channels). Unlike ``position_noise``, every row depends on the
    window's start as well, so two windows that share frames get unrelated noise there (still
    deterministic: the same window always gets the same noise)."""
    start = np.array([first_frame], dtype=np.int64).view(np.uint64)
    key = _splitmix64(start ^ _WINDOW_KEY)[0]
    window_seed = int(_splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], np.uint64) ^ key)[0])
    return position_noise(window_seed, 0, n_frames, channels)
