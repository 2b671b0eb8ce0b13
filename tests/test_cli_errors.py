"""Every bad input ends in one 'error: ...' line on stderr, a non-zero exit, and no lost output."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from cli_util import one_error

from streamsep.cli import main

SR = 48000
FAST = ["--model", "passthrough", "--window", "1", "--hop", "0.2", "--lookahead", "0.08",
        "--crossfade", "0.04"]


def _cli(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out, err = capsys.readouterr()
    return e.value.code, out, err


def _ok(capsys, *args):
    try:
        main(list(args))
    except SystemExit as e:  # main exits only on failure
        pytest.fail(f"exit {e.code}: {capsys.readouterr().err}")
    return capsys.readouterr()

_one_error = one_error


@pytest.fixture
def wav(tmp_path):
    p = tmp_path / "in.wav"
    t = np.arange(SR) / SR
    sf.write(p, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SR)
    return p


@pytest.fixture
def existing(tmp_path):
    p = tmp_path / "out.wav"
    sf.write(p, np.full(100, 0.5, np.float32), SR)
    return p


def _unchanged(p):
    y, _ = sf.read(p, dtype="float32")
    return len(y) == 100 and np.all(y == 0.5)


def test_missing_input(capsys, tmp_path, existing):
    code, _, err = _cli(capsys, "file", str(tmp_path / "nope.wav"), "-p", "speech", "-o",
                        str(existing), *FAST)
    _one_error(code, err, "not found", "nope.wav")
    assert _unchanged(existing)


def test_corrupt_input(capsys, tmp_path, existing):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200)))
    code, _, err = _cli(capsys, "file", str(bad), "-p", "speech", "-o", str(existing), *FAST)
    _one_error(code, err, "bad.wav")
    assert _unchanged(existing)


def test_unsupported_format(capsys, tmp_path, existing):
    txt = tmp_path / "notes.txt"
    txt.write_text("hello, this is not audio\n" * 20)
    code, _, err = _cli(capsys, "file", str(txt), "-p", "speech", "-o", str(existing), *FAST)
    _one_error(code, err, "notes.txt", "ffmpeg")
    assert _unchanged(existing)


def test_empty_input(capsys, tmp_path, existing):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), SR)
    code, _, err = _cli(capsys, "file", str(empty), "-p", "speech", "-o", str(existing), *FAST)
    _one_error(code, err, "no audio samples")
    assert _unchanged(existing)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_samples(capsys, tmp_path, existing, bad):
    x = np.zeros(SR, np.float32)
    x[24000] = bad
    p = tmp_path / "nan.wav"
    sf.write(p, x, SR, subtype="FLOAT")
    code, _, err = _cli(capsys, "file", str(p), "-p", "speech", "-o", str(existing), *FAST)
    _one_error(code, err, "NaN or Inf", "0.500 s")
    assert _unchanged(existing)


@pytest.mark.parametrize("rate, channels", [(8000, 1), (44100, 2), (96000, 6), (22050, 3)])
def test_any_rate_and_channel_count_is_converted_and_announced(capsys, tmp_path, rate, channels):
    n = int(0.7 * rate) + 3
    x = np.random.default_rng(0).uniform(-0.3, 0.3, (n, channels)).astype(np.float32)
    p = tmp_path / "odd.flac"
    sf.write(p, x, rate)
    out = tmp_path / "o.wav"
    res = _ok(capsys, "file", str(p), "-p", "speech", "-o", str(out), *FAST)
    y, sr = sf.read(out, always_2d=True)
    assert sr == rate and y.shape == (n, channels)  # every channel kept (--channels keep)
    assert "downmixing" not in res.err
    if rate != SR:
        assert f"resampling {rate} Hz to 48000 Hz" in res.err
    mono = tmp_path / "m.wav"
    res = _ok(capsys, "file", str(p), "-p", "speech", "-o", str(mono), "--channels", "mono",
              *FAST)
    y, sr = sf.read(mono)
    assert sr == rate and y.ndim == 1 and len(y) == n
    if channels > 1:
        assert "downmixing" in res.err


def test_empty_prompt(capsys, wav, tmp_path):
    for args in (["file", str(wav), "-p", "  ", "-o", str(tmp_path / "o.wav")],
                 ["run", "-p", ""], ["bench", "-p", ""]):
        code, _, err = _cli(capsys, *args, *FAST)
        _one_error(code, err, "prompt")
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.parametrize(
    "knobs, needle",
    [
        (["--window", "1", "--hop", "0.8", "--lookahead", "0.2", "--crossfade", "0.1"],
         "must not exceed --window"),
        (["--hop", "0.001"], "--hop must be at least one latent frame"),
        (["--crossfade", "-1"], "--crossfade must not be negative"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--budget", "soon"], "--budget must be 'auto' or seconds"),
        (["--window", "abc"], "--window"),
        (["--method", "rk4"], "--method"),
        (["--model", "no-such-model"], "unknown model"),
        (["--model", "bandpass:hi-lo"], "bandpass:LOW-HIGH"),
        (["--model", "./missing_dir"], "no such directory"),
    ],
)
def test_invalid_knobs(capsys, wav, tmp_path, knobs, needle):
    out = tmp_path / "o.wav"
    code, _, err = _cli(capsys, "file", str(wav), "-p", "speech", "-o", str(out), *knobs)
    _one_error(code, err, needle)
    assert not out.exists()


def test_bad_output_paths(capsys, wav, tmp_path):
    code, _, err = _cli(capsys, "file", str(wav), "-p", "x", "-o", str(tmp_path / "o.xyz"), *FAST)
    _one_error(code, err, "unknown audio format")
    # a missing output folder is created (and said, so that a typo shows)
    res = _ok(capsys, "file", str(wav), "-p", "x", "-o", str(tmp_path / "new" / "o.wav"), *FAST)
    assert f"created the folder {tmp_path / 'new'}" in res.err
    assert sf.info(tmp_path / "new" / "o.wav").frames == SR
    code, _, err = _cli(capsys, "file", str(wav), "-p", "x", "-o", str(tmp_path / "o.wav"),
                        "--residual", str(tmp_path / "o.wav"), *FAST)
    _one_error(code, err, "same file")
    code, _, err = _cli(capsys, "file", str(wav), "-p", "x", "-o", str(tmp_path / "o.wav"),
                        "--metrics-json", str(tmp_path / "nodir" / "m.jsonl"), *FAST)
    _one_error(code, err, "--metrics-json")


def test_unknown_devices_list_the_choices(capsys):
    code, _, err = _cli(capsys, "run", "-p", "speech", "-i", "no-such-device-xyz", *FAST)
    line = _one_error(code, err)
    assert "no-such-device-xyz" in line or "PortAudio" in line
    if "PortAudio" not in line:
        assert "choose" in line


def test_file_play_device_errors_and_auto(capsys, wav, tmp_path):
    out = tmp_path / "o.wav"
    code, _, err = _cli(capsys, "file", str(wav), "-p", "speech", "-o", str(out), "--play",
                        "--play-device", "no-such-device-xyz", *FAST)
    line = _one_error(code, err)
    assert "no-such-device-xyz" in line or "PortAudio" in line
    assert not out.exists()
    # --play=auto without a usable device says so and still writes the files
    r = _ok(capsys, "file", str(wav), "-p", "speech", "-o", str(out), "--play=auto",
            "--play-device", "no-such-device-xyz", *FAST)
    assert "not playing" in r.err and "error:" not in r.err
    assert sf.info(out).frames == SR
    code, _, err = _cli(capsys, "file", str(wav), "-p", "speech", "-o", str(out), "--play=loud",
                        *FAST)
    _one_error(code, err, "--play")


def test_run_rejects_bad_live_options(capsys):
    code, _, err = _cli(capsys, "run", "-p", "speech", "--blocksize", "-5", *FAST)
    _one_error(code, err, "--blocksize")
    code, _, err = _cli(capsys, "run", "-p", "speech", "--latency", "soon", *FAST)
    _one_error(code, err, "--latency")
    code, _, err = _cli(capsys, "run", "-p", "speech", "--record-target", "/nonexistent/x.wav",
                        *FAST)
    _one_error(code, err, "does not exist")


def test_bench_errors(capsys, tmp_path):
    code, _, err = _cli(capsys, "bench", str(tmp_path / "nope.wav"), *FAST)
    _one_error(code, err, "not found")
    code, _, err = _cli(capsys, "bench", "--synthetic", "-3", *FAST)
    _one_error(code, err, "--synthetic")


def test_bench_writes_a_table_and_json(capsys, tmp_path):
    js = tmp_path / "b.json"
    res = _ok(capsys, "bench", "--synthetic", "3", "--json", str(js), *FAST)
    assert "RTF" in res.out and "latency" in res.out
    import json

    d = json.loads(js.read_text())
    assert d["windows"] > 5 and d["rtf"] >= 0 and d["algorithmic_latency_s"] == pytest.approx(0.32)


def test_unknown_command_and_option(capsys):
    code, _, err = _cli(capsys, "separate")
    _one_error(code, err, "separate")
    code, _, err = _cli(capsys, "file", "--frobnicate")
    _one_error(code, err, "frobnicate")


def test_metrics_json_lines(capsys, wav, tmp_path):
    m = tmp_path / "m.jsonl"
    _ok(capsys, "file", str(wav), "-p", "speech", "-o", str(tmp_path / "o.wav"),
        "--metrics-json", str(m), *FAST)
    import json

    recs = [json.loads(line) for line in m.read_text().splitlines()]
    assert recs[0]["type"] == "start" and recs[-1]["type"] == "end"
    wins = [r for r in recs if r["type"] == "window"]
    assert len(wins) == recs[-1]["windows"] > 3
    for r in wins:
        lat = r["latency"]
        assert lat["total_s"] == pytest.approx(
            lat["algorithmic_s"] + lat["compute_s"] + lat["buffer_s"] + lat["device_s"])
        assert set(r["counters"]) >= {"underrun_s", "dropped_windows", "dropped_s", "late_s"}


class Interrupting:
    sample_rate, frame_hop, noise_channels = SR, 1920, 0

    def __init__(self, after):
        self.after, self.calls = after, 0

    def set_prompt(self, text):
        pass

    def separate(self, window, noise=None, anchors=None):
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return window.copy(), np.zeros_like(window)


def test_ctrl_c_keeps_what_was_already_written(tmp_path):
    from streamsep.engine.offline import run_file
    from streamsep.engine.plan import WindowPlan

    src = tmp_path / "long.wav"
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 5 * SR).astype(np.float32)
    sf.write(src, x, SR, subtype="FLOAT")
    out = tmp_path / "o.wav"
    plan = WindowPlan.from_seconds(SR, 1920, 1.0, 0.2, 0.08, 0.04)
    with pytest.raises(KeyboardInterrupt):
        run_file(Interrupting(after=10), plan, str(src), str(out), prompt="x")
    y, _ = sf.read(out, dtype="float32")
    assert 0 < len(y) < len(x)
    np.testing.assert_array_equal(y, x[: len(y)])  # finalized, aligned, nothing lost
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_entry_point_subprocess_has_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "streamsep", "file", str(tmp_path / "x.wav"), "-p",
                        "speech", "-o", str(tmp_path / "o.wav")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
