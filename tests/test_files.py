import os

import numpy as np
import pytest
import soundfile as sf

import streamsep
from streamsep.audio.files import (
    AudioFileError,
    ResamplingWriter,
    SafeWriter,
    probe,
    read_audio,
    save_audio,
)


def test_save_audio_accepts_numpy_and_mlx_shapes(tmp_path):
    import mlx.core as mx

    x = np.linspace(-0.5, 0.5, 480, dtype=np.float32)
    for i, a in enumerate([x, x[None, :], x[:, None], mx.array(x[None, :])]):
        p = tmp_path / f"a{i}.wav"
        streamsep.save_audio(a, str(p))
        y, sr = sf.read(p, dtype="float32")
        assert sr == 48000
        np.testing.assert_array_equal(y, x)
    save_audio(x, str(tmp_path / "b.flac"), sample_rate=16000)
    assert sf.info(str(tmp_path / "b.flac")).samplerate == 16000
    with pytest.raises(AudioFileError, match="mono"):
        save_audio(np.zeros((2, 10)), str(tmp_path / "c.wav"))


def test_safe_writer_keeps_partial_output_and_leaves_existing_file_alone(tmp_path):
    p = tmp_path / "o.wav"
    sf.write(p, np.full(10, 0.25, np.float32), 48000)
    with pytest.raises(RuntimeError), SafeWriter(str(p), 48000):
        raise RuntimeError("failed before writing anything")
    assert len(sf.read(p)[0]) == 10  # untouched
    with pytest.raises(KeyboardInterrupt), SafeWriter(str(p), 48000) as w:
        w.write(np.ones(100, np.float32) * 0.5)
        assert len(sf.read(p)[0]) == 10  # the final name is replaced only at the end
        raise KeyboardInterrupt
    y, _ = sf.read(p, dtype="float32")
    assert len(y) == 100 and np.all(y == 0.5)  # what was written is kept
    assert os.listdir(tmp_path) == ["o.wav"]


def test_resampling_writer_produces_exact_length(tmp_path):
    p = tmp_path / "o.wav"
    w = ResamplingWriter(SafeWriter(str(p), 44100), 48000, frames=44100 + 3)
    for _ in range(10):
        w.write(np.zeros(4800, np.float32))
    w.close()
    assert sf.info(str(p)).frames == 44103


def test_read_audio_downmixes_and_resamples(tmp_path):
    p = tmp_path / "s.wav"
    t = np.arange(22050) / 22050
    left = np.sin(2 * np.pi * 300 * t)
    sf.write(p, np.stack([left, left], 1).astype(np.float32), 22050)
    notes = []
    y = read_audio(str(p), 48000, note=notes.append)
    assert len(y) == 48000 and "downmixing 2 channels" in notes[0] and "22050 Hz" in notes[0]
    assert probe(str(p)).channels == 2
