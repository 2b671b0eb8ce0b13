"""`streamsep run` through bad moments, on a JACK dummy server: signals, a sound server that dies,
bad typed prompts, a separator that raises, stalls or gets stuck. Each run is a child process, fed
noise by this process's JACK client; what must hold is that files are finalized under their final
names with every received sample, the exit code says why, and there is one clear line.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.test_jack_realtime import CLIENT, REQUIRED, SR, jack  # noqa: F401 (fixture)

pytestmark = pytest.mark.audio
ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "tests" / "plugins"
FAST = ["--window", "1", "--hop", "0.2", "--lookahead", "0.08", "--crossfade", "0.04",
        "--budget", "0.1", "--blocksize", "256", "--latency", "low"]


class Feeder:
    """Plays noise into whatever is wired to this process's JACK ports, forever."""

    def __init__(self, sd):
        self.noise = (0.1 * np.random.default_rng(1).standard_normal(SR)).astype(np.float32)
        self.pos = 0
        self.stream = sd.Stream(device="system", samplerate=SR, blocksize=256, channels=1,
                                dtype="float32", callback=self._cb)

    def _cb(self, indata, outdata, frames, time_info, status):
        i = self.pos % len(self.noise)
        k = min(frames, len(self.noise) - i)
        outdata[:k, 0] = self.noise[i : i + k]
        outdata[k:, 0] = self.noise[: frames - k]
        self.pos += frames


def _start(args, tmp_path, *, stdin=subprocess.DEVNULL, env=None):
    metrics = tmp_path / "m.jsonl"
    cmd = [sys.executable, "-m", "streamsep", "run", "-p", "speech", *args,
           "--metrics-json", str(metrics)]
    child = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=dict(env or os.environ, CI="true"))
    for _ in range(600):  # until its engine runs (the first window record)
        if metrics.exists() and '"type": "window"' in metrics.read_text():
            break
        if child.poll() is not None:
            break
        time.sleep(0.05)
    assert child.poll() is None, child.communicate()[1].decode()
    return child, metrics


def _records(metrics):
    return [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]


def _wait(child, timeout):
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        pytest.fail(f"streamsep run did not exit within {timeout} s: {err.decode()}")
    return err.decode()


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                      (signal.SIGHUP, 129)])
def test_signal_finalizes_files_with_all_received_input(jack, tmp_path, sig, code):  # noqa: F811
    target, residual = tmp_path / "t.wav", tmp_path / "r.wav"
    feeder = Feeder(jack)
    with feeder.stream:
        child, metrics = _start(["--model", "passthrough", "-i", CLIENT.decode(), "-o",
                                 CLIENT.decode(), "--record-target", str(target),
                                 "--residual-out", str(residual), *FAST], tmp_path)
        time.sleep(1.5)
        child.send_signal(sig)
        t0 = time.monotonic()
        err = _wait(child, 10)
        took = time.monotonic() - t0
    assert child.returncode == code, err
    assert took < 5, took
    assert f"stopped by {signal.Signals(sig).name}; files finalized" in err, err
    assert "error" not in err and "Traceback" not in err, err
    end = _records(metrics)[-1]
    assert end["type"] == "end" and end["stop"] == "signal" and end["flushed"], end
    assert not list(tmp_path.glob(".*.partial"))
    got, rate = sf.read(target, dtype="float32")
    rest, _ = sf.read(residual, dtype="float32")
    # Every sample the device delivered reaches the files, also the last latency's worth.
    assert rate == SR and len(got) == len(rest) == end["input_samples"] > SR
    assert np.abs(got[-SR // 4 :]).max() > 0.05  # the noise runs to the very end
    np.testing.assert_array_equal(rest, 0)  # passthrough: everything is target


def test_sound_server_killed_ends_run_with_one_line(tmp_path):
    if not shutil.which("jackd"):
        (pytest.fail if REQUIRED else pytest.skip)("jackd is not installed")
    # A fixed name: a server killed with -9 leaves its slot in JACK's registry (8 slots), and only
    # a new server of the same name reclaims it.
    name = "streamsep_killtest"
    env = dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_AUDIO_RESERVATION="1")
    log = open(tmp_path / "jackd.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(["jackd", "-n", name, "-d", "dummy", "-r", str(SR), "-p", "256"],
                              env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        for _ in range(200):
            if subprocess.run(["jack_lsp"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"jackd did not start: {(tmp_path / 'jackd.log').read_text()}")
        target = tmp_path / "t.wav"
        child, metrics = _start(["--model", "passthrough", "-i", "system", "-o", "system",
                                 "--record-target", str(target), *FAST], tmp_path, env=env)
        time.sleep(1.0)
        server.kill()
        server.wait()
        t0 = time.monotonic()
        err = _wait(child, 20)
        took = time.monotonic() - t0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert child.returncode not in (0, None), err
    assert took < 10, took
    assert len(lines) == 1 and "stopped delivering audio" in lines[0], err
    assert "Traceback" not in err
    assert target.exists() and not list(tmp_path.glob(".*.partial"))
    got, _ = sf.read(target, dtype="float32")
    assert len(got) > SR // 2


def test_bad_typed_prompts_are_refused_and_the_run_goes_on(jack, tmp_path):  # noqa: F811
    feeder = Feeder(jack)
    with feeder.stream:
        child, metrics = _start(["--model", "passthrough", "-i", CLIENT.decode(), "-o",
                                 CLIENT.decode(), *FAST], tmp_path, stdin=subprocess.PIPE)
        for line in (b"\xff\xfebad bytes\n", b"tab\there\x07\n", b"   \n", b"music\n"):
            child.stdin.write(line)
            child.stdin.flush()
        time.sleep(1.0)
        assert child.poll() is None  # still running
        child.send_signal(signal.SIGTERM)
        err = _wait(child, 10)
    assert child.returncode == 143, err
    assert "not valid UTF-8" in err and "control character U+0007" in err, err
    assert "prompt -> 'music'" in err, err
    assert "error" not in err, err
    assert any(r.get("prompt") == "music" for r in _records(metrics) if r["type"] == "window")


def _wait_ready(child, metrics):
    for _ in range(600):
        if metrics.exists() and '"type": "window"' in metrics.read_text():
            return
        if child.poll() is not None:
            return
        time.sleep(0.05)


def test_stuck_separator_never_blocks_a_stop(jack, tmp_path):  # noqa: F811
    """A separator stuck inside separate(): SIGTERM still ends the run within 5 s with the files
    finalized (they hold what was separated before it got stuck)."""
    target = tmp_path / "t.wav"
    feeder = Feeder(jack)
    env = dict(os.environ, STREAMSEP_TEST_STALL_S="3600", STREAMSEP_TEST_STALL_AFTER="5")
    with feeder.stream:
        child, metrics = _start(["--model", f"{PLUGINS / 'faulty.py'}:stalling", "-i",
                                 CLIENT.decode(), "-o", CLIENT.decode(), "--record-target",
                                 str(target), *FAST], tmp_path, env=env)
        time.sleep(3.0)  # well into the stall
        child.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        err = _wait(child, 10)
        took = time.monotonic() - t0
    assert child.returncode == 143, err
    assert took < 5, took
    assert target.exists() and not list(tmp_path.glob(".*.partial"))
    assert len(sf.read(target)[0]) > 0


def test_stall_of_90_s_is_filled_and_latency_holds(jack, tmp_path):  # noqa: F811
    """A separator that stalls 90 s once (longer than the default input ring used to span): the
    run goes on, the stretch is played and written by the overload policy and counted, latency
    afterwards equals latency before, and the files have exactly the received length."""
    target = tmp_path / "t.wav"
    feeder = Feeder(jack)
    env = dict(os.environ, STREAMSEP_TEST_STALL_S="90", STREAMSEP_TEST_STALL_AFTER="5")
    done = threading.Event()
    with feeder.stream:
        child, metrics = _start(["--model", f"{PLUGINS / 'faulty.py'}:stalling", "-i",
                                 CLIENT.decode(), "-o", CLIENT.decode(), "--record-target",
                                 str(target), *FAST], tmp_path, env=env)
        t_end = time.monotonic() + 100
        while time.monotonic() < t_end and child.poll() is None and not done.is_set():
            recs = _records(metrics)
            if any(r["type"] == "window" and r["counters"]["dropped_s"] > 80 for r in recs):
                time.sleep(2.0)  # a few normal windows after the stall
                break
            time.sleep(0.5)
        child.send_signal(signal.SIGTERM)
        err = _wait(child, 15)
    assert child.returncode == 143, err
    recs = [r for r in _records(metrics) if r["type"] == "window"]
    end = _records(metrics)[-1]
    before, after = recs[0]["latency"], recs[-1]["latency"]
    assert end["counters"]["dropped_s"] > 80, end["counters"]
    assert before["total_s"] == after["total_s"]
    got, _ = sf.read(target, dtype="float32")
    assert len(got) == end["input_samples"]
    assert "falling behind" in err, err


def test_device_callbacks_run_while_the_interpreter_is_held(jack):  # noqa: F811
    """The device callbacks are C: with the GIL held by one pure-Python loop for a whole second
    (no thread switch: the switch interval is raised to 2 s), the stream keeps running. A
    callback that needed the interpreter would stop for that second."""
    from streamsep.engine import live
    from streamsep.engine.engine import Engine
    from streamsep.engine.plan import WindowPlan
    from streamsep.separators.simple import Passthrough

    plan = WindowPlan.from_seconds(SR, 1920, window=1.0, hop=0.2, lookahead=0.08, crossfade=0.04)
    eng = Engine(Passthrough(), plan, budget=int(0.1 * SR))
    idx = jack.query_devices("system")["index"]
    streams = live.open_streams(eng, idx, idx, blocksize=256, latency="low")
    old = sys.getswitchinterval()
    try:
        for s in streams:
            s.start()
        time.sleep(0.3)
        st = eng.streams[0]
        sys.setswitchinterval(2.0)
        b0, t0 = st.blocks, time.perf_counter()
        n = 0
        while time.perf_counter() - t0 < 1.0:  # interpreter work only: the GIL is never let go
            n += 1
        b1 = st.blocks
        elapsed = time.perf_counter() - t0
    finally:
        sys.setswitchinterval(old)
        for s in streams:
            s.stop()
            s.close()
    expected = elapsed * SR / 256
    assert b1 - b0 >= 0.8 * expected, (b1 - b0, expected)
