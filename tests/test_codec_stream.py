"""The codec on a sliding window: incremental encode and region decode against whole decodes."""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from streamsep.sam_audio import codec as codec_module
from streamsep.sam_audio.checkpoint import load_torch_checkpoint
from streamsep.sam_audio.codec import DACVAE, DACVAEConfig
from streamsep.sam_audio.codec_stream import (
    RegionDecoder,
    WindowEncoder,
    _select,
    _Stateful,
    decoder_margins,
    encoder_margins,
)

FIXTURE = Path(__file__).parent / "fixtures" / "sam_tiny_a"
HOP = 1920
TOL = 1e-4


@pytest.fixture(scope="module")
def fixture_codec() -> DACVAE:
    config = json.loads((FIXTURE / "config.json").read_text())["audio_codec"]
    weights = load_torch_checkpoint(FIXTURE / "checkpoint.pt")
    prefix = "audio_codec."
    codec_weights = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
    return DACVAE(DACVAEConfig.from_dict(config)).load_checkpoint(codec_weights)


@pytest.fixture(scope="module")
def reduced_codec() -> DACVAE:
    # The small preset's strides, kernels and watermark layout at reduced widths (the issue's
    # "reduced" codec: encoder 16, decoder 384), with random non-zero weights.
    return DACVAE(DACVAEConfig(encoder_dim=16, latent_dim=64, decoder_dim=384)).randomize(3)


@pytest.fixture(params=["cpu", "native"])
def path(request, monkeypatch):
    monkeypatch.setattr(codec_module, "COMPUTE_PATH", request.param)
    return request.param


def _audio(frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(frames * HOP) / 48_000
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.7 * t))
    return (tone + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def test_margins_follow_the_architecture(fixture_codec, reduced_codec):
    # Widths do not change a receptive field; the strides and kernels, shared here, do.
    assert encoder_margins(fixture_codec) == encoder_margins(reduced_codec) == (6, 6)
    assert decoder_margins(fixture_codec) == decoder_margins(reduced_codec) == (8, 8)
    # Smaller strides: the same kernels span more frames.
    fine = DACVAE(DACVAEConfig(encoder_rates=[2, 4, 5, 8], decoder_rates=[8, 5, 4, 2]))
    assert encoder_margins(fine) == (8, 8) and decoder_margins(fine) == (10, 10)


def _loud_outside(x: np.ndarray, lo: int, hi: int, axis: int) -> mx.array:
    # The farthest taps carry little weight: make the outermost margin frame and all beyond it
    # loud, so that a cut one frame too close shows far above float rounding.
    x = np.array(x)
    index = [slice(None)] * x.ndim
    for part in (slice(None, lo), slice(hi, None)):
        index[axis] = part
        x[tuple(index)] *= 1000
    return mx.array(x)


def test_margins_are_the_smallest_that_work(fixture_codec):
    """One frame less of margin on either side and a cut shows in the output."""
    codec = fixture_codec
    a, b = 10, 30
    left, right = encoder_margins(codec)
    x = _loud_outside(_audio(40)[None], (a - left + 1) * HOP, (b + right - 1) * HOP, axis=1)
    whole = codec.encode(x)
    for lo, hi, exact in ((a - left, b + right, True), (a - left + 1, b + right, False),
                          (a - left, b + right - 1, False)):
        part = codec.encode(x[:, lo * HOP : hi * HOP])[:, a - lo : b - lo]
        err = float(mx.abs(part - whole[:, a:b]).max())
        assert (err <= TOL) == exact, (lo, hi, err)
    a, b = 12, 20
    left, right = decoder_margins(codec)
    feats = np.random.default_rng(0).standard_normal((1, 40, 128)).astype(np.float32)
    feats = _loud_outside(feats, a - left + 1, b + right - 1, axis=1)
    audio = codec.decode(feats, watermark=False)
    for lo, hi, exact in ((a - left, b + right, True), (a - left + 1, b + right, False),
                          (a - left, b + right - 1, False)):
        part = codec.decode(feats[:, lo:hi], watermark=False)[..., (a - lo) * HOP : (b - lo) * HOP]
        err = float(mx.abs(part - audio[..., a * HOP : b * HOP]).max())
        assert (err <= TOL) == exact, (lo, hi, err)


@pytest.mark.parametrize("which", ["fixture_codec", "reduced_codec"])
def test_incremental_encode_equals_a_full_encode(which, path, request):
    if which == "reduced_codec" and path == "native":
        pytest.skip("MLX's native CPU convolutions make the wider codec slow; cpu path covers it")
    codec = request.getfixturevalue(which)
    # 1 frame, a shift not dividing the window, and (cpu) one near the largest that pays; MLX's
    # native CPU kernels are slow, so that path runs a shorter window
    frames, shifts, calls = (40, (1, 7, 13), 4) if path == "cpu" else (30, (1, 4), 2)
    audio = _audio(frames + calls * max(shifts), seed=1)
    for shift in shifts:
        enc = WindowEncoder(codec)
        for k in range(calls):
            start = k * shift * HOP
            wav = mx.array(audio[start : start + frames * HOP])[None]
            got = enc(wav, shift if k else None)
            assert enc.encoded == (frames if k == 0 else shift + 24)
            err = float(mx.abs(got - codec.encode(wav)).max())
            assert err <= TOL, (shift, k, err)


def test_encoder_falls_back_to_a_full_encode(fixture_codec):
    enc = WindowEncoder(fixture_codec)
    wav = mx.array(_audio(30))[None]
    enc(wav)
    enc(wav, 10)  # 10 + 24 frames of work would exceed the window's 30
    assert enc.encoded == 30
    enc(wav[:, : 20 * HOP], 1)  # another shape: nothing to reuse
    assert enc.encoded == 20


def _stream(codec, feats, message, *, window, hop, crossfade, lookahead, shifts=None, **kw):
    """Region decodes of consecutive windows over one feature sequence, and their regions."""
    dec = RegionDecoder(codec, message, **kw)
    e0 = window - (hop + lookahead + crossfade)
    out, k = [], 0
    while k * hop + window <= feats.shape[1]:
        s = k * hop
        wav = dec(feats[:, s : s + window], (e0, e0 + hop + crossfade), hop if k else None)
        out.append((s + e0, wav, dec.resumed))
        k += 1
    return out


@pytest.mark.parametrize("which", ["fixture_codec", "reduced_codec"])
def test_streamed_decode_equals_one_continuous_decode(which, path, request):
    if which == "reduced_codec" and path == "native":
        pytest.skip("MLX's native CPU convolutions make the wider codec slow; cpu path covers it")
    codec = request.getfixturevalue(which)
    rng = np.random.default_rng(2)
    # MLX's native CPU kernels are slow: that path runs the smallest windows that still have
    # the decoder's margin on both sides of the region.
    if path == "cpu":
        window, hop, calls = 22, 2, 5 if which == "fixture_codec" else 3
    else:
        window, hop, calls = 18, 1, 2
    feats = mx.array(rng.standard_normal((2, window + hop * (calls - 1), 128)).astype(np.float32))
    message = mx.array(rng.integers(0, 2, 16).astype(np.float32))
    whole = codec.decode(feats, message)[:, 0]
    # The first window starts at the sequence's start, so its watermark (history=None: from the
    # window's start) begins where the continuous decode's does; the lookahead covers the
    # decoder's right margin, so the window's right edge is out of the region's reach.
    parts = _stream(codec, feats, message, window=window, hop=hop, crossfade=1, lookahead=8,
                    history=None)
    assert [p[2] for p in parts] == [False] + [True] * (calls - 1)
    for first, wav, _ in parts:
        ref = whole[:, first * HOP : first * HOP + wav.shape[1]]
        assert float(mx.abs(wav - ref).max()) <= TOL
    # The watermark term is what the carried state is about: make sure it is in the output.
    bare = codec.decode(feats, watermark=False)[:, 0]
    assert float(mx.abs(whole - bare).max()) > 10 * TOL


def test_watermark_state_carries_across_chunks(fixture_codec, path):
    """The causal branch alone, chunk by chunk with overlapping chunks (as the engine's regions
    overlap by the crossfade), equals one pass over the whole signal."""
    codec = fixture_codec
    rng = np.random.default_rng(5)
    audio = mx.array(np.tanh(_audio(12, seed=5))[None, :, None].repeat(2, axis=0))
    message = mx.array(rng.integers(0, 2, (2, 16)).astype(np.float32))
    whole = codec.decoder.watermark(audio, message)
    state, pos, size, advance = None, 0, 3, 2
    while pos + size <= 12:
        run = _Stateful(state, list(range(1, size + 1)), size)
        part = codec.decoder.watermark(audio[:, pos * HOP : (pos + size) * HOP], message, run)
        ref = whole[:, pos * HOP : (pos + size) * HOP]
        assert float(mx.abs(part - ref).max()) <= TOL * float(mx.abs(ref).max()), pos
        state, pos = _select(run.kept, advance - 1), pos + advance
    assert pos == 10


def test_region_decode_per_window_is_exact(fixture_codec):
    """carry=False, history=None: each region equals that window's own full decode."""
    codec = fixture_codec
    rng = np.random.default_rng(3)
    message = mx.array(rng.integers(0, 2, 16).astype(np.float32))
    dec = RegionDecoder(codec, message, carry=False, history=None)
    for k in range(2):
        feats = mx.array(rng.standard_normal((2, 16, 128)).astype(np.float32))
        wav = dec(feats, (6, 10), 2 if k else None)
        assert not dec.resumed and dec.decoded_frames == 16  # 10 + 8 frames clip to the window
        ref = codec.decode(feats, message)[:, 0, 6 * HOP : 10 * HOP]
        assert float(mx.abs(wav - ref).max()) <= TOL


def test_region_decode_restarts_after_a_gap(fixture_codec):
    codec = fixture_codec
    rng = np.random.default_rng(4)
    feats = mx.array(rng.standard_normal((2, 28, 128)).astype(np.float32))
    message = mx.array(rng.integers(0, 2, 16).astype(np.float32))
    dec = RegionDecoder(codec, message, history=3)
    dec(feats[:, :24], (12, 15))
    # A move beyond the previous region (3 frames) leaves no state to resume from: the
    # watermark starts from zeros `history` frames before the region, like a fresh decoder.
    got = dec(feats[:, 4:28], (12, 15), 4)
    assert not dec.resumed and dec.decoded_frames == 8 + 3 + 3 + 8
    fresh = RegionDecoder(codec, message, history=3)(feats[:, 4:28], (12, 15))
    assert float(mx.abs(got - fresh).max()) == 0.0
    # No watermark: the audio path alone, equal to an unwatermarked full decode.
    bare = RegionDecoder(codec, watermark=False)(feats[:, 4:28], (12, 15))
    ref = codec.decode(feats[:, 4:28], watermark=False)[:, 0, 12 * HOP : 15 * HOP]
    assert float(mx.abs(bare - ref).max()) <= TOL


def test_region_decode_checks_its_region(fixture_codec):
    dec = RegionDecoder(fixture_codec)
    feats = mx.zeros((2, 10, 128))
    with pytest.raises(ValueError, match="not inside a window"):
        dec(feats, (5, 11))
    with pytest.raises(ValueError, match="history"):
        RegionDecoder(fixture_codec, history=-1)
