"""The embedded model's fixed, invertible representation: a 16 kHz STFT at 25 frames/s.

One STFT hop (640 samples at 16 kHz) equals one engine latent frame (1920 samples at 48 kHz).
The model sees compressed magnitudes |S|^0.3 per bin; its flow state lives in a smaller band
space (mel-like triangular averages) so that the state fits well inside the model width.
Decoding applies the predicted magnitude to the mixture phase (sqrt-Hann analysis and synthesis
windows reconstruct perfectly at 50 % overlap).
"""

from __future__ import annotations

import numpy as np

SR = 16000
N_FFT = 1280
HOP = 640
N_BINS = N_FFT // 2 + 1
POWER = 0.3
# Compressed magnitudes of speech at -20 dBFS average ~0.5 and peak ~2 without further scaling.
FEATURE_SCALE = 1.0

_WINDOW = np.sqrt(np.hanning(N_FFT + 1)[:N_FFT]).astype(np.float32)


def stft(x: np.ndarray) -> np.ndarray:
    """(..., N) with N a multiple of HOP → complex (..., N // HOP, N_BINS).

    Frame k is centred on sample k*HOP + HOP/2 of the padded signal, so the frames tile the
    input exactly: a window of W frames in, W frames out.
    """
    x = np.asarray(x, np.float32)
    n = x.shape[-1]
    if n % HOP:
        raise ValueError(f"signal length {n} is not a multiple of the hop {HOP}; pad it first")
    pad = [(0, 0)] * (x.ndim - 1) + [((N_FFT - HOP) // 2, (N_FFT - HOP) // 2)]
    xp = np.pad(x, pad)
    frames = np.lib.stride_tricks.sliding_window_view(xp, N_FFT, axis=-1)[..., ::HOP, :]
    return np.fft.rfft(frames * _WINDOW, axis=-1).astype(np.complex64)


def istft(spec: np.ndarray) -> np.ndarray:
    """Inverse of ``stft`` (overlap-add with the same sqrt-Hann window)."""
    frames = np.fft.irfft(spec, n=N_FFT, axis=-1).astype(np.float32) * _WINDOW
    t = frames.shape[-2]
    out = np.zeros(frames.shape[:-2] + ((t - 1) * HOP + N_FFT,), np.float32)
    for k in range(N_FFT // HOP):
        # frames k, k+2, ... never overlap each other: add them in one strided reshape
        sub = frames[..., k :: N_FFT // HOP, :]
        m = sub.shape[-2]
        seg = out[..., k * HOP : k * HOP + m * N_FFT]
        seg += sub.reshape(sub.shape[:-2] + (m * N_FFT,))
    off = (N_FFT - HOP) // 2
    # The outer half-hops are covered by one frame only: divide by the summed squared window.
    return out[..., off : off + t * HOP] / _norm(t)[off : off + t * HOP]


def _norm(t: int) -> np.ndarray:
    w2 = np.zeros((t - 1) * HOP + N_FFT, np.float32)
    for k in range(t):
        w2[k * HOP : k * HOP + N_FFT] += _WINDOW**2
    return np.maximum(w2, 1e-3)


def magnitude_features(spec: np.ndarray) -> np.ndarray:
    """Compressed magnitudes, float32 (..., T, N_BINS)."""
    return (np.abs(spec) ** POWER * FEATURE_SCALE).astype(np.float32)


def features_to_gain(target_feat: np.ndarray, mix_feat: np.ndarray) -> np.ndarray:
    """Magnitude gain to apply to the mixture STFT for a predicted compressed magnitude."""
    ratio = np.clip(target_feat / np.maximum(mix_feat, 1e-6), 0.0, 1.0)
    return ratio ** (1.0 / POWER)


def band_matrix(n_bands: int, n_bins: int = N_BINS, sr: int = SR) -> np.ndarray:
    """(n_bands, n_bins) triangular mel-spaced averaging filters, each row summing to one."""

    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def inv(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0, sr / 2, n_bins)
    edges = inv(np.linspace(mel(0.0), mel(sr / 2), n_bands + 2))
    # Low bands are narrower than one bin: give each at least a bin's width so none is empty.
    width = sr / 2 / (n_bins - 1)
    fb = np.zeros((n_bands, n_bins), np.float32)
    for b in range(n_bands):
        lo, c, hi = edges[b], edges[b + 1], edges[b + 2]
        lo, hi = min(lo, c - width), max(hi, c + width)
        up = (freqs - lo) / (c - lo)
        down = (hi - freqs) / (hi - c)
        fb[b] = np.maximum(0.0, np.minimum(up, down))
    return fb / fb.sum(axis=1, keepdims=True)
