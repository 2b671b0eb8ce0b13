"""SAMAudioProcessor: batches, sizes, masks and anchors as the reference's processor builds them."""

import json
import math

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf
from conftest import FIXTURES

from streamsep.sam_audio.processor import SAMAudioProcessor

FIXTURE = FIXTURES / "sam_tiny_a"
SR, HOP = 48_000, 1920


@pytest.fixture
def proc():
    return SAMAudioProcessor(audio_hop_length=HOP, audio_sampling_rate=SR)


def _np(x):
    return np.array(x)


def test_reproduces_fixture_inputs():
    # Generic over batch size and anchors, so other fixtures in this format check it too.
    inputs = np.load(FIXTURE / "inputs.npz")
    meta = json.loads((FIXTURE / "meta.json").read_text())
    proc = SAMAudioProcessor.from_pretrained(FIXTURE)
    audios = [inputs["audios"][i, 0, : n] for i, n in enumerate(inputs["wav_sizes"])]
    batch = proc(meta["descriptions"], audios, anchors=meta["anchors"])
    for key in ("audios", "sizes", "wav_sizes", "audio_pad_mask", "anchor_ids",
                "anchor_alignment"):
        got = _np(getattr(batch, key))
        assert got.shape == inputs[key].shape, key
        np.testing.assert_array_equal(got, inputs[key], err_msg=key)
    assert batch.descriptions == meta["descriptions"]


def test_from_pretrained_reads_hop_and_rate(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"audio_codec": {"encoder_rates": [2, 4, 5], "sample_rate": 16000}})
    )
    proc = SAMAudioProcessor.from_pretrained(tmp_path)
    assert (proc.audio_hop_length, proc.audio_sampling_rate) == (40, 16000)
    proc = SAMAudioProcessor.from_pretrained(FIXTURE)
    assert (proc.audio_hop_length, proc.audio_sampling_rate) == (1920, 48000)


def test_padding_sizes_and_mask(proc):
    batch = proc(["a", "b"], [np.ones(3 * HOP + 1, np.float32), np.ones(HOP, np.float32)])
    assert batch.audios.shape == (2, 1, 3 * HOP + 1)
    assert batch.audios.dtype == mx.float32
    np.testing.assert_array_equal(_np(batch.wav_sizes), [3 * HOP + 1, HOP])
    np.testing.assert_array_equal(_np(batch.sizes), [4, 1])  # ceil(samples / hop)
    np.testing.assert_array_equal(
        _np(batch.audio_pad_mask), [[True] * 4, [True, False, False, False]]
    )
    assert float(_np(batch.audios)[1, 0, HOP:].max()) == 0.0  # zero padding
    # No anchors: rows [<null>, <pad>]; valid frames → 0, padded frames → 1.
    np.testing.assert_array_equal(_np(batch.anchor_ids), [[0, 3], [0, 3]])
    np.testing.assert_array_equal(_np(batch.anchor_alignment), [[0, 0, 0, 0], [0, 1, 1, 1]])


def test_anchor_ids_and_alignment_follow_reference(proc):
    audios = [np.zeros(3 * SR, np.float32), np.zeros(SR, np.float32)]  # 75 and 25 frames
    anchors = [[("+", 0.5, 1.0), ("-", 2.0, 2.5)], [["+", 0.1, 0.2]]]
    batch = proc(["speech", "music"], audios, anchors=anchors)
    # Rows: [<null>, <pad>, then one id per span], padded with <pad> (3).
    np.testing.assert_array_equal(_np(batch.anchor_ids), [[0, 3, 1, 2], [0, 3, 1, 3]])
    expected = np.zeros((2, 75), np.int64)
    expected[1, 25:] = 1  # padded frames of the shorter item point at <pad>
    expected[0, 13:25] = 2  # ceil(0.5·48000/1920) = 13 .. ceil(1.0·48000/1920) = 25
    expected[0, 50:63] = 3  # ceil(100) = 50 .. ceil(62.5) = 63
    expected[1, 3:5] = 2  # ceil(2.5) = 3 .. ceil(5) = 5
    np.testing.assert_array_equal(_np(batch.anchor_alignment), expected)


def test_anchor_spans_are_not_clipped_to_valid_frames(proc):
    # The reference writes span indices over padded frames too, and slicing clips at T.
    audios = [np.zeros(4 * HOP, np.float32), np.zeros(2 * HOP, np.float32)]
    batch = proc(["a", "b"], audios, anchors=[[], [("-", 0.0, 100.0)]])
    np.testing.assert_array_equal(_np(batch.anchor_ids), [[0, 3, 3], [0, 3, 2]])
    np.testing.assert_array_equal(_np(batch.anchor_alignment), [[0, 0, 0, 0], [2, 2, 2, 2]])


def test_anchor_frames_use_unrounded_sample_position(proc):
    # t·sr = 1920.5 samples: the reference gives ceil(1920.5/1920) = 2 (truncating first gives 1).
    t = 1920.5 / SR
    batch = proc(["a"], [np.zeros(10 * HOP, np.float32)], anchors=[[("+", t, 4 * HOP / SR)]])
    row = _np(batch.anchor_alignment)[0]
    assert math.ceil(t * SR / HOP) == 2
    np.testing.assert_array_equal(row, [0, 0, 2, 2, 0, 0, 0, 0, 0, 0])


def test_arrays_are_downmixed_and_taken_at_model_rate(proc):
    stereo = np.stack([np.full(HOP, 0.2, np.float32), np.full(HOP, 0.6, np.float32)])
    half = mx.array(np.full(HOP, 0.5, np.float32)).astype(mx.bfloat16)
    batch = proc(["a", "b"], [stereo, half])
    audio = _np(batch.audios)
    np.testing.assert_allclose(audio[0, 0], 0.4, rtol=1e-6)
    np.testing.assert_allclose(audio[1, 0], 0.5)
    # One (B, C, N) array is a batch of B items.
    batch = proc(["a", "b"], np.zeros((2, 1, HOP), np.float32))
    assert batch.audios.shape == (2, 1, HOP)


def test_files_are_resampled_and_downmixed(proc, tmp_path):
    n = 44_100
    left, right = np.full(n, 0.1), np.full(n, 0.3)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 44_100, subtype="FLOAT")
    batch = proc(["a"], [str(path)])
    wav = _np(batch.audios)[0, 0]
    assert abs(wav.shape[0] - SR) <= 1
    np.testing.assert_allclose(wav[1000:-1000], 0.2, atol=1e-3)
    batch = proc(["a"], [path])  # Path objects too
    assert abs(batch.audios.shape[-1] - SR) <= 1


def _error(proc, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as info:
        proc(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_audio_inputs(proc, tmp_path):
    ok = np.zeros(HOP, np.float32)
    assert "does not exist" in _error(proc, ["a"], [str(tmp_path / "missing.wav")])
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio" * 10)
    msg = _error(proc, ["a"], [str(garbage)])
    assert "cannot read audio file" in msg and "garbage.wav" in msg and "WAV or FLAC" in msg
    assert "empty (0 samples)" in _error(proc, ["a"], [np.zeros(0, np.float32)])
    bad = ok.copy()
    bad[5] = np.nan
    assert "NaN or Inf" in _error(proc, ["a"], [bad])
    bad[5] = np.inf
    assert "NaN or Inf" in _error(proc, ["a"], [bad])
    assert "pass its transpose" in _error(proc, ["a"], [np.zeros((HOP, 2), np.float32)])
    assert "one description per recording" in _error(proc, ["a", "b"], [ok])


def test_bad_descriptions(proc):
    ok = [np.zeros(HOP, np.float32)]
    assert "description 0 is empty" in _error(proc, [""], ok)
    assert "description 0 is empty" in _error(proc, ["   "], ok)
    assert "use ['speech']" in _error(proc, "speech", ok)
    assert "not a string" in _error(proc, [3], ok)


def test_bad_anchors(proc):
    ok = [np.zeros(SR, np.float32)]
    msg = _error(proc, ["a"], ok, anchors=[[("x", 0.0, 1.0)]])
    assert "token 'x'" in msg and "'+'" in msg
    assert "start must be < end" in _error(proc, ["a"], ok, anchors=[[("+", 0.5, 0.5)]])
    assert "start must be < end" in _error(proc, ["a"], ok, anchors=[[("+", 0.7, 0.2)]])
    assert ">= 0" in _error(proc, ["a"], ok, anchors=[[("+", -1.0, 0.2)]])
    assert "start_s, end_s" in _error(proc, ["a"], ok, anchors=[[("+", 0.2)]])
    assert "one anchor list per recording" in _error(proc, ["a"], ok, anchors=[[], []])
