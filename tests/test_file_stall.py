"""`streamsep file --realtime` with a separator that stalls 90 s once: playback goes on with the
overload policy at constant latency, and the written files still hold every window's separation."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
SR = 48000


@pytest.mark.slow
def test_file_realtime_survives_a_90_s_stall(tmp_path):
    x = (0.1 * np.random.default_rng(3).standard_normal(100 * SR)).astype(np.float32)
    src, out, metrics = tmp_path / "in.wav", tmp_path / "out.wav", tmp_path / "m.jsonl"
    sf.write(src, x, SR, subtype="FLOAT")
    env = dict(os.environ, STREAMSEP_TEST_STALL_S="90", STREAMSEP_TEST_STALL_AFTER="5",
               CI="true")
    r = subprocess.run(
        [sys.executable, "-m", "streamsep", "file", str(src), "-p", "speech", "-o", str(out),
         "--realtime", "--model", f"{ROOT / 'tests' / 'plugins' / 'faulty.py'}:stalling",
         "--window", "1", "--hop", "0.2", "--lookahead", "0.08", "--crossfade", "0.04",
         "--budget", "0.1", "--metrics-json", str(metrics)],
        capture_output=True, text=True, timeout=400, env=env)
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in metrics.read_text().splitlines()]
    end = recs[-1]
    assert end["type"] == "end"
    # The stretch the stalled separator could not serve played dry, and was counted ...
    assert end["counters"]["underrun_s"] > 80, end["counters"]
    windows = [m for m in recs if m["type"] == "window"]
    assert windows[0]["latency"]["total_s"] == windows[-1]["latency"]["total_s"]
    # ... while the file has every window's separation: for this passthrough, the input itself.
    got, rate = sf.read(out, dtype="float32")
    assert rate == SR and len(got) == len(x)
    np.testing.assert_array_equal(got, x)
