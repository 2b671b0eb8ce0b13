"""`streamsep file` under bad input, faults and signals: cut files, MP3 block decoding, huge
outputs, full disks, SIGINT/SIGTERM/SIGHUP, and files that do not depend on playback timing."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from cli_util import run_cli

from streamsep.audio.files import (
    AudioFileError,
    SafeWriter,
    _blocks,
    _open_read,
    check_space,
    container_limit,
    output_format,
    read_blocks,
)
from streamsep.engine.offline import run_file
from streamsep.engine.plan import WindowPlan
from streamsep.separators.simple import Passthrough

SR = 48000
FAST = ["--model", "passthrough", "--window", "1", "--hop", "0.2", "--lookahead", "0.08",
        "--crossfade", "0.04"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _noise(seconds, sr=SR, seed=0, scale=0.1):
    return (scale * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(
        np.float32)


_run_cli = run_cli


def _lines(err, prefix):
    return [ln for ln in err.splitlines() if ln.startswith(prefix)]


def _no_partials(folder):
    return not [p for p in os.listdir(folder) if p.endswith(".partial")]


def _cut(src, dst, keep):
    data = open(src, "rb").read()
    open(dst, "wb").write(data[: int(len(data) * keep)])


# -- 1. cut inputs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", ["wav", "aiff", "flac", "mp3"])
def test_cut_input_warns_once_and_writes_exactly_what_was_read(capsys, tmp_path, ext):
    x = _noise(8.0)
    full, cut = tmp_path / f"full.{ext}", tmp_path / f"cut.{ext}"
    kw = {"subtype": "FLOAT"} if ext in ("wav", "aiff") else {}
    sf.write(full, x, SR, **kw)
    _cut(full, cut, 0.6)
    out = tmp_path / "o.wav"
    code, err = _run_cli(capsys, "file", str(cut), "-p", "x", "-o", str(out), *FAST)
    assert code == 0, err
    assert "Traceback" not in err and not _lines(err, "error:")
    warnings = _lines(err, "warning:")
    assert len(warnings) == 1 and "missing" in warnings[0] and "nothing is padded" in warnings[0]
    assert "Xing" not in err  # libmpg123's own chatter about the cut MP3 is not passed on
    y, sr = sf.read(out, dtype="float32")
    assert sr == SR
    # The warning's count is the output's length, well short of what the header declares.
    assert f"after {len(y)} samples" in warnings[0]
    assert 0.5 * len(x) < len(y) < 0.65 * len(x)
    assert f"of the {len(x)} its header declares" in warnings[0]
    if ext == "mp3":
        ref = sf.read(cut, dtype="float32")[0]  # libsndfile's whole decode of the cut file
        assert len(y) == len(ref)
        np.testing.assert_array_equal(y, ref)
    else:
        ref = sf.read(full, dtype="float32")[0]
        np.testing.assert_array_equal(y, ref[: len(y)])
    assert np.abs(y[-SR // 10 :]).max() > 0  # no silence padded on at the end
    assert "wrote" in err and f"({len(y)} samples at" in err


def test_complete_files_do_not_warn(capsys, tmp_path):
    for ext in ("wav", "mp3", "flac"):
        p = tmp_path / f"in.{ext}"
        sf.write(p, _noise(3.0), SR)
        code, err = _run_cli(capsys, "file", str(p), "-p", "x", "-o", str(tmp_path / "o.wav"),
                             "--overwrite", *FAST)
        assert code == 0 and not _lines(err, "warning:"), err
        assert sf.info(tmp_path / "o.wav").frames == sf.info(p).frames


# -- 2. MP3 read in blocks -------------------------------------------------------------------------
def _sf_blocks(path, n):
    with sf.SoundFile(path) as f:
        parts = []
        while True:
            b = f.read(n, dtype="float32", always_2d=True)
            if not len(b):
                return np.concatenate(parts)[:, 0]
            parts.append(b)


@pytest.mark.parametrize("rate", [48000, 44100])
def test_mp3_read_in_blocks_equals_the_whole_file_decode(tmp_path, rate):
    t = np.arange(20 * rate) / rate
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    p = tmp_path / "x.mp3"
    sf.write(p, x, rate, format="MP3")
    whole = sf.read(p, dtype="float32")[0]
    # The libsndfile/soundfile behaviour this works around: read() re-seeks after each block.
    if np.array_equal(_sf_blocks(p, rate), whole):
        pytest.skip("this soundfile decodes MP3 blocks correctly already")
    for n in (rate, 1152, 4096, 47232, 1 << 16):
        got = np.concatenate(list(_blocks(_open_read(str(p)), n)))[:, 0]
        np.testing.assert_array_equal(got, whole, err_msg=f"blocks of {n}")
    if rate == SR:  # no resampling: read_blocks hands the decode through unchanged
        got = np.concatenate(list(read_blocks(str(p), SR, block_s=1.0, note=None)))
        np.testing.assert_array_equal(got, whole)


# -- 3. outputs past 4 GiB -------------------------------------------------------------------------
def test_wav_past_4_gib_is_written_as_rf64(tmp_path, capsys):
    six_h = 6 * 3600 * SR  # 4.15 GB of mono float: still fits
    assert not container_limit("WAV", six_h)
    assert container_limit("WAV", six_h + 15 * 60 * SR)  # 6 h 15 min: does not
    assert output_format(str(tmp_path / "a.wav"), six_h) == ("WAV", "FLOAT")
    assert output_format(str(tmp_path / "a.wav"), 2**30) == ("RF64", "FLOAT")
    assert output_format(str(tmp_path / "a.flac"), 2**34)[0] == "FLAC"
    assert output_format(str(tmp_path / "a.w64"), 2**34)[0] == "W64"
    with pytest.raises(AudioFileError, match=r"\.w64"):
        output_format(str(tmp_path / "a.aiff"), 2**30)
    # The writer follows the decision (a fake length; only a few samples are written).
    p = tmp_path / "big.wav"
    with SafeWriter(str(p), SR, frames=2**30) as w:
        w.write(np.full(1000, 0.25, np.float32))
    assert "RF64" in capsys.readouterr().err
    assert sf.info(p).format == "RF64"
    np.testing.assert_array_equal(sf.read(p, dtype="float32")[0], 0.25)


def test_outputs_that_cannot_fit_on_the_disk_fail_before_any_work(tmp_path, capsys):
    with pytest.raises(AudioFileError, match="free space, write elsewhere"):
        check_space([(str(tmp_path / "o.wav"), 10**13)])
    check_space([(str(tmp_path / "o.flac"), 10**13)])  # compressed: size unknown, not checked


# -- 4. write errors -------------------------------------------------------------------------------
class _FailingFile:
    """Stands in for the SoundFile: takes ``ok`` writes, then fails like a full disk does."""

    def __init__(self, f, ok):
        self.f, self.ok = f, ok

    def write(self, x):
        if self.ok == 0:
            raise sf.LibsndfileError(2)  # what libsndfile raises for ENOSPC: "System error"
        self.ok -= 1
        self.f.write(x)

    def close(self):
        self.f.close()


def test_full_disk_is_one_line_and_keeps_what_was_written(tmp_path, monkeypatch):
    import streamsep.audio.files as files

    p = tmp_path / "o.wav"
    w = SafeWriter(str(p), SR)
    w._f = _FailingFile(w._f, ok=3)
    for _ in range(3):
        w.write(np.full(SR, 0.5, np.float32))
    monkeypatch.setattr(files.shutil, "disk_usage", lambda _p: type("U", (), {"free": 0})())
    with pytest.raises(AudioFileError) as e:
        w.write(np.ones(SR, np.float32))
    msg = str(e.value)
    assert f"the disk holding {p} is full" in msg and "free space or write elsewhere" in msg
    assert "3.0 s" in msg
    w.write(np.ones(10, np.float32))  # later writes are ignored, not a second error
    w.close()
    y = sf.read(p, dtype="float32")[0]
    assert len(y) == 3 * SR and np.all(y == 0.5)
    assert _no_partials(tmp_path)


@pytest.fixture
def tiny_disk(tmp_path):
    d = tmp_path / "tiny"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(d)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_full_disk_during_a_run(capsys, tmp_path, tiny_disk):
    src = tmp_path / "in.wav"
    sf.write(src, _noise(40.0, scale=0.3), SR, subtype="FLOAT")
    out = tiny_disk / "o.flac"  # FLAC's size is unknown up front, so the disk fills mid-run
    code, err = _run_cli(capsys, "file", str(src), "-p", "x", "-o", str(out), *FAST)
    assert code == 1 and "Traceback" not in err
    errors = _lines(err, "error:")
    assert len(errors) == 1, err
    assert f"the disk holding {out} is full" in errors[0]
    assert "free space or write elsewhere" in errors[0]
    y = sf.read(out, dtype="float32")[0]
    assert SR < len(y) < 40 * SR
    assert _no_partials(tiny_disk)


def test_uncompressed_output_too_big_for_the_disk_is_refused_up_front(capsys, tmp_path,
                                                                      tiny_disk):
    src = tmp_path / "in.wav"
    sf.write(src, _noise(10.0), SR, subtype="FLOAT")  # float in, float out: 1.9 MB for 1 MB
    code, err = _run_cli(capsys, "file", str(src), "-p", "x", "-o", str(tiny_disk / "o.wav"),
                         *FAST)
    errors = _lines(err, "error:")
    assert code == 1 and len(errors) == 1 and "not enough space" in errors[0], err
    assert os.listdir(tiny_disk) == []


# -- 5. signals ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def long_input(tmp_path_factory):
    p = tmp_path_factory.mktemp("long") / "in.wav"
    sf.write(p, _noise(120.0), SR, subtype="FLOAT")
    return p


def _start(src, out, ignore_hup=False):
    def pre():
        if ignore_hup:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)

    cmd = [sys.executable, "-m", "streamsep", "file", str(src), "-p", "x", "-o", str(out),
           "--realtime", "--budget", "0.1", *FAST]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=pre)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # separating (not loading): output is being written
        parts = [p for p in os.listdir(out.parent) if p.endswith(".partial")]
        if parts and os.path.getsize(out.parent / parts[0]) > 200_000:
            return proc
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the run never started writing")


def _check_stopped(proc, out, name, code, x):
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and not _lines(err, "error:"), err
    stops = _lines(err, "note: stopped by")
    assert len(stops) == 1 and name in stops[0], err
    y, sr = sf.read(out, dtype="float32")
    assert sr == SR and 0 < len(y) < len(x)
    np.testing.assert_array_equal(y, x[: len(y)])  # passthrough: aligned and complete
    assert _no_partials(out.parent)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                      (signal.SIGHUP, 129)])
def test_signal_finalizes_the_files(tmp_path, long_input, sig, code):
    out = tmp_path / "o.wav"
    proc = _start(long_input, out)
    proc.send_signal(sig)
    x = sf.read(long_input, dtype="float32")[0]
    _check_stopped(proc, out, signal.Signals(sig).name, code, x)


def test_an_ignored_sighup_stays_ignored(tmp_path, long_input):
    out = tmp_path / "o.wav"
    proc = _start(long_input, out, ignore_hup=True)  # as under nohup
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _check_stopped(proc, out, "SIGTERM", 143, sf.read(long_input, dtype="float32")[0])


class _SignalAfter(Passthrough):
    """Sends the process a signal from inside window ``n`` (fast mode runs on the main thread)."""

    def __init__(self, n, sig):
        super().__init__()
        self.n, self.sig, self.calls = n, sig, 0

    def separate(self, window, noise=None, anchors=None):
        self.calls += 1
        if self.calls == self.n:
            os.kill(os.getpid(), self.sig)
        return super().separate(window, noise, anchors)


def test_signal_in_fast_mode_stops_at_the_next_window(tmp_path):
    x = _noise(10.0)
    src, out, res = tmp_path / "in.wav", tmp_path / "o.wav", tmp_path / "r.wav"
    sf.write(src, x, SR, subtype="FLOAT")
    plan = WindowPlan.from_seconds(SR, 1920, 1.0, 0.2, 0.08, 0.04)
    before = signal.getsignal(signal.SIGTERM)
    sep = _SignalAfter(10, signal.SIGTERM)
    s = run_file(sep, plan, str(src), str(out), prompt="x", residual_path=str(res))
    assert signal.getsignal(signal.SIGTERM) is before  # restored
    assert s["signal"] == "SIGTERM" and s["exit_code"] == 143
    assert sep.calls <= 11  # stopped at once, not at the end of the file
    y = sf.read(out, dtype="float32")[0]
    r = sf.read(res, dtype="float32")[0]
    assert 0 < len(y) == len(r) == s["written"][str(out)] < len(x)
    np.testing.assert_array_equal(y, x[: len(y)])
    np.testing.assert_array_equal(r, 0)
    assert _no_partials(tmp_path)


def test_stop_event_ends_a_run_with_files_finalized(tmp_path):
    x = _noise(5.0)
    src, out = tmp_path / "in.wav", tmp_path / "o.wav"
    sf.write(src, x, SR, subtype="FLOAT")
    plan = WindowPlan.from_seconds(SR, 1920, 1.0, 0.2, 0.08, 0.04)
    stop = threading.Event()

    class StopAfter(Passthrough):
        calls = 0

        def separate(self, window, noise=None, anchors=None):
            self.calls += 1
            if self.calls == 8:
                stop.set()
            return super().separate(window, noise, anchors)

    s = run_file(StopAfter(), plan, str(src), str(out), prompt="x", stop=stop)
    assert "signal" not in s
    y = sf.read(out, dtype="float32")[0]
    assert 0 < len(y) < len(x)
    np.testing.assert_array_equal(y, x[: len(y)])


# -- 6. files do not depend on playback timing -----------------------------------------------------
class _SometimesLate(Passthrough):
    """target = input scaled by a window-dependent gain; every 4th window takes far longer than
    the budget, so live playback misses it."""

    def __init__(self, sleep_s):
        super().__init__()
        self.sleep_s, self.calls = sleep_s, 0

    def separate(self, window, noise=None, anchors=None):
        self.calls += 1
        if self.sleep_s and self.calls % 4 == 0:
            time.sleep(self.sleep_s)
        w = np.asarray(window, np.float32)
        t = (0.5 * w).astype(np.float32)
        return t, (w - t).astype(np.float32)


@pytest.mark.parametrize("rate", [48000, 44100])
def test_realtime_files_hold_every_window_even_when_late(tmp_path, rate):
    x = _noise(2.5, sr=rate, seed=3)
    src = tmp_path / "in.wav"
    sf.write(src, x, rate, subtype="FLOAT")
    plan = WindowPlan.from_seconds(SR, 1920, 0.4, 0.08, 0.04, 0.04)
    outs = {}
    for mode in ("fast", "realtime"):
        o, r = tmp_path / f"{mode}.wav", tmp_path / f"{mode}_res.wav"
        s = run_file(_SometimesLate(0.3 if mode == "realtime" else 0.0), plan, str(src), str(o),
                     prompt="x", residual_path=str(r), realtime=mode == "realtime",
                     budget=int(0.04 * SR))
        outs[mode] = (sf.read(o, dtype="float32")[0], sf.read(r, dtype="float32")[0], s)
    (ft, fr, _), (rt, rr, s) = outs["fast"], outs["realtime"]
    c = s["counters"]
    assert c["underrun_s"] > 0.1 or c["late_s"] > 0.1  # playback really was late
    assert c["dropped_windows"] == 0  # ... but no window was skipped for the files
    assert len(rt) == len(rr) == len(ft) == len(x)
    np.testing.assert_array_equal(rt, ft)
    np.testing.assert_array_equal(rr, fr)


# -- bad paths -------------------------------------------------------------------------------------
def test_output_over_the_input_is_refused(capsys, tmp_path):
    src = tmp_path / "in.wav"
    sf.write(src, _noise(1.0), SR)
    before = open(src, "rb").read()
    for args in (["-o", str(src)], ["-o", str(tmp_path / "o.wav"), "--residual", str(src)]):
        code, err = _run_cli(capsys, "file", str(src), "-p", "x", *args, *FAST)
        errors = _lines(err, "error:")
        assert code == 1 and len(errors) == 1 and "is the input file" in errors[0], err
    assert open(src, "rb").read() == before


def test_realtime_files_are_complete_when_the_separator_is_always_too_slow(tmp_path):
    x = _noise(1.5, seed=4)
    src = tmp_path / "in.wav"
    sf.write(src, x, SR, subtype="FLOAT")
    plan = WindowPlan.from_seconds(SR, 1920, 0.4, 0.08, 0.04, 0.04)

    class Slow(_SometimesLate):
        def separate(self, window, noise=None, anchors=None):
            time.sleep(self.sleep_s)  # 2.5x slower than real time, on every window
            return super().separate(window, noise, anchors)

    fast = tmp_path / "fast.wav"
    run_file(_SometimesLate(0.0), plan, str(src), str(fast), prompt="x")
    paced = tmp_path / "paced.wav"
    s = run_file(Slow(0.2), plan, str(src), str(paced), prompt="x", realtime=True,
                 budget=int(0.04 * SR))
    c = s["counters"]
    assert c["underrun_s"] > 0.5 and c["dropped_windows"] == 0 and c["overrun_s"] == 0
    np.testing.assert_array_equal(sf.read(paced, dtype="float32")[0],
                                  sf.read(fast, dtype="float32")[0])
