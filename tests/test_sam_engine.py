"""SAM-Audio (the tiny golden model) through the streaming engine and the CLI, end to end."""

import json
import subprocess
import sys

import numpy as np
import soundfile as sf
from conftest import ROOT, sam_tiny_with_tokenizer


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
        assert sr == 44100 and out.shape == (n,)
        assert np.isfinite(out).all() and np.abs(out).max() > 0
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    windows = [r for r in records if r["type"] == "window"]
    assert len(windows) >= 3
    assert all(w["compute_s"] > 0 for w in windows)
