"""SAM-Audio (the tiny golden model) through the streaming engine and the CLI, end to end."""

import json
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf
from conftest import ROOT, sam_tiny_with_tokenizer

from streamsep.engine.noise import position_noise


def test_file_command_runs_sam_audio(tmp_path):
    model_dir = sam_tiny_with_tokenizer(tmp_path)
    rng = np.random.default_rng(1)
    n = 44100 * 3 + 123  # odd rate and length: resampled in, written back at the input's rate
    stereo = 0.1 * rng.standard_normal((n, 2)).astype(np.float32)
    sf.write(tmp_path / "in.wav", stereo, 44100)
    metrics = tmp_path / "m.jsonl"
    cmd = [
        sys.executable, "-m", "streamsep", "file", str(tmp_path / "in.wav"), "-p", "speech",
        "-o", str(tmp_path / "target.wav"), "--residual", str(tmp_path / "rest.wav"),
        "--model", str(model_dir), "--window", "1.2", "--hop", "0.4", "--lookahead", "0.16",
        "--crossfade", "0.08", "--steps", "2", "--metrics-json", str(metrics),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    for name in ("target.wav", "rest.wav"):
        out, sr = sf.read(tmp_path / name, dtype="float32")
        assert sr == 44100 and out.shape == (n, 2)  # channels kept: one model copy each
        assert np.isfinite(out).all() and np.abs(out).max() > 0
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    windows = [r for r in records if r["type"] == "window"]
    assert len(windows) >= 3
    assert all(w["compute_s"] > 0 for w in windows)


# ------------------------------------------------------------------ separate_region
HOP = 1920
# A window long enough for the incremental encode to pay at a 3-frame hop (hop + 24 < window).
W, H, R, X = 28, 3, 2, 1
E0 = W - (H + R + X)
EMIT = slice(E0 * HOP, (E0 + H + X) * HOP)


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    from streamsep.sam_audio.model import SAMAudio

    return SAMAudio.from_pretrained(str(sam_tiny_with_tokenizer(tmp_path_factory.mktemp("m"))))


def _stream_audio(frames):
    rng = np.random.default_rng(7)
    t = np.arange(frames * HOP) / 48_000
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.7 * t))
    return (tone + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def _compare(sep, audio, positions, anchors_at=()):
    """separate_region against separate() sliced, window by window; yields per-window facts."""
    for i, k in enumerate(positions):
        start = k * H * HOP
        window = audio[start : start + W * HOP]
        noise = position_noise(0, k * H, W, 256)
        anchors = [("+", 0.0, 0.2)] if i in anchors_at else None
        got = sep.separate_region(window, noise, anchors, start=start, emit=EMIT)
        encoded = sep.encoder.encoded
        # The encode part is exact: the DiT sees the features a full encode gives.
        full_feats = sep.model.audio_codec.encode(mx.array(window)[None])
        assert float(mx.abs(sep.encoder.features - full_feats).max()) <= 1e-4
        want = sep.separate(window, noise, anchors)
        err = max(float(np.abs(g - w[EMIT]).max()) for g, w in zip(got, want, strict=True))
        assert got[0].shape == got[1].shape == (EMIT.stop - EMIT.start,)
        yield encoded, sep.decoder.resumed, err


def test_separate_region_matches_separate_on_the_emitted_region(tiny_sam):
    from streamsep.separators.sam import SAMSeparator

    sep = SAMSeparator(tiny_sam, steps=2, method="euler")
    sep.set_prompt("speech")
    audio = _stream_audio(W + 8 * H)
    # three consecutive windows, a skipped one (the start jumps two hops), one more after it
    facts = list(_compare(sep, audio, [0, 1, 2, 4, 5], anchors_at={2}))
    encoded = [f[0] for f in facts]
    resumed = [f[1] for f in facts]
    assert encoded == [W, H + 24, H + 24, W, H + 24]
    assert resumed == [False, True, True, False, True]
    # The watermark's state runs along the stream instead of from each window's start; with
    # these (random) weights its LSTMs forget within a few frames, so the outputs agree to
    # far below the watermark term (~3e-3 here).
    assert max(f[2] for f in facts) <= 1e-5, facts


def test_separate_region_per_window_watermark_is_exact(tiny_sam):
    from streamsep.separators.sam import SAMSeparator

    sep = SAMSeparator(tiny_sam, steps=2, method="euler", wm_state="window")
    sep.set_prompt("speech")
    facts = list(_compare(sep, _stream_audio(W + 2 * H), [0, 1]))
    assert [f[:2] for f in facts] == [(W, False), (H + 24, False)]
    assert max(f[2] for f in facts) <= 1e-6, facts
    with pytest.raises(ValueError, match="wm_state"):
        SAMSeparator(tiny_sam, wm_state="chunk")
