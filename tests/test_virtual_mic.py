"""`run --virtual-mic` and `--input monitor` on a real, headless PipeWire and its PulseAudio layer.

harness(out) -> null sink ci_feed -> its monitor -> streamsep run (passthrough) -> virtual mic.
A PulseAudio client in this process records the virtual mic (what OBS or a browser does) and must
get the input. The delay is measured on one clock: ci_feed's monitor and the virtual mic are
linked (pw-link) into the left and right channels of one stereo null sink, recorded together, so
neither the harness's own start-up lag nor its buffering enters the figure.

Uses the server that tools/pipewire_ci.sh started (.ci/run: STREAMSEP_TEST_PULSE=1) or starts a
private one with that script (never the desktop's own server: these tests create nodes and
change the defaults). Skipped when PipeWire, pactl or PortAudio's ALSA pulse plugin is missing,
unless AUDIO_TESTS_REQUIRED=1 (CI), which makes it fail instead.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytestmark = pytest.mark.audio

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = os.environ.get("AUDIO_TESTS_REQUIRED") == "1"
SR = 48000
# --latency high (the default): with PortAudio's smallest ALSA buffers the PulseAudio-protocol
# streams underrun now and then (PipeWire delivers 1024-sample quanta in bursts).
FAST = ["--window", "1", "--hop", "0.2", "--lookahead", "0.08", "--crossfade", "0.04",
        "--budget", "0.1", "--latency", "high"]
FEED = "ci_feed"
REC = "ci_rec"  # stereo: left = the engine's input, right = the virtual mic, on one clock
QUANTUM = 1024  # PipeWire's default graph period at 48 kHz


def _unavailable(why):
    (pytest.fail if REQUIRED else pytest.skip)(why)


def pactl(*args, check=True):
    r = subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=10,
                       env=dict(os.environ, LC_ALL="C"))
    if check and r.returncode:
        raise AssertionError(f"pactl {' '.join(args)}: {r.stderr}")
    return r.stdout


def _server_up():
    return subprocess.run(["pactl", "info"], capture_output=True, timeout=10).returncode == 0


@pytest.fixture(scope="module")
def pipewire():
    """A PulseAudio-compatible server these tests may change freely; yields sounddevice."""
    for tool in ("pactl", "pipewire", "wireplumber", "pipewire-pulse", "dbus-daemon"):
        if not shutil.which(tool):
            _unavailable(f"{tool} is not installed (apt-get install pipewire pipewire-pulse "
                         "wireplumber pulseaudio-utils libasound2-plugins dbus)")
    own = None
    saved = {k: os.environ.get(k) for k in ("XDG_RUNTIME_DIR", "PULSE_SERVER",
                                            "DBUS_SESSION_BUS_ADDRESS")}
    if os.environ.get("STREAMSEP_TEST_PULSE") != "1" or not _server_up():
        own = tempfile.mkdtemp(prefix="streamsep-pw-")
        r = subprocess.run(["bash", str(ROOT / "tools" / "pipewire_ci.sh"), "start", own],
                           capture_output=True, text=True, timeout=60)
        os.environ.update(XDG_RUNTIME_DIR=own, PULSE_SERVER=f"unix:{own}/pulse/native",
                          DBUS_SESSION_BUS_ADDRESS=f"unix:path={own}/bus")
        if r.returncode:
            subprocess.run(["bash", str(ROOT / "tools" / "pipewire_ci.sh"), "stop", own])
            _unavailable(f"could not start PipeWire: {r.stderr.strip()}")
    try:
        try:
            import sounddevice as sd
        except OSError:
            _unavailable("PortAudio is not installed (apt-get install libportaudio2)")
        if not any(d["name"] == "pulse" for d in sd.query_devices()):
            _unavailable("PortAudio has no ALSA 'pulse' device (apt-get install "
                         "libasound2-plugins)")
        pactl("load-module", "module-null-sink", f"sink_name={FEED}", "rate=48000",
              "channels=1", "format=float32le")
        pactl("load-module", "module-null-sink", f"sink_name={REC}", "rate=48000",
              "channels=2", "format=float32le", "channel_map=front-left,front-right")
        yield sd
    finally:
        for line in pactl("list", "short", "modules", check=False).splitlines():
            if f"sink_name={FEED} " in line or f"sink_name={REC} " in line:
                pactl("unload-module", line.split("\t")[0], check=False)
        if own is not None:
            subprocess.run(["bash", str(ROOT / "tools" / "pipewire_ci.sh"), "stop", own],
                           timeout=60)
            shutil.rmtree(own, ignore_errors=True)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _ours():
    """Our nodes and modules still on the server (names start with 'streamsep.')."""
    mods = [ln for ln in pactl("list", "short", "modules").splitlines()
            if "_name=streamsep." in ln]
    nodes = [ln.split("\t")[1] for kind in ("sinks", "sources")
             for ln in pactl("list", "short", kind).splitlines()
             if ln.split("\t")[1].startswith("streamsep.")]
    return mods + nodes


def _start(args, tmp_path, *, env=None, stdin=subprocess.DEVNULL):
    metrics = tmp_path / f"m{time.monotonic_ns()}.jsonl"
    cmd = [sys.executable, "-m", "streamsep", "run", "-p", "speech", "--model", "passthrough",
           *FAST, *args, "--metrics-json", str(metrics)]
    child = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=dict(env or os.environ, CI="true"))
    for _ in range(600):  # until its engine runs (the first window record)
        if metrics.exists() and '"type": "window"' in metrics.read_text():
            break
        if child.poll() is not None:
            break
        time.sleep(0.05)
    if child.poll() is not None:
        pytest.fail(f"streamsep run ended early: {child.communicate()[1].decode()}")
    return child, metrics


def _wait(child, timeout=20):
    try:
        _, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        _, err = child.communicate()
        pytest.fail(f"streamsep run did not exit within {timeout} s: {err.decode()}")
    return err.decode()


def _feed_env(**extra):
    # The engine's input: what the harness plays into ci_feed (libpulse's own variable).
    return dict(os.environ, PULSE_SOURCE=f"{FEED}.monitor", **extra)


class Harness:
    """One duplex stream on ALSA's pulse device: plays ``sig`` into ``sink``, records ``source``."""

    def __init__(self, sd, sink, source, sig, rec_s, in_channels=1):
        self.sig = sig
        self.rec = np.zeros((len(sig) + int(rec_s * SR), in_channels), np.float32)
        self.pos = self.rpos = 0
        self.flags = 0
        self.done = threading.Event()
        old = {k: os.environ.get(k) for k in ("PULSE_SINK", "PULSE_SOURCE")}
        os.environ.update(PULSE_SINK=sink, PULSE_SOURCE=source)
        try:
            self.stream = sd.Stream(device="pulse", samplerate=SR, channels=(in_channels, 1),
                                    dtype="float32", blocksize=1024, latency="low",
                                    callback=self._cb)
        finally:
            for k, v in old.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)

    def _cb(self, indata, outdata, frames, time_info, status):
        if status:
            self.flags += 1
        p = self.pos
        n = max(0, min(frames, len(self.sig) - p))
        outdata[:n, 0] = self.sig[p : p + n]
        outdata[n:] = 0
        self.pos += frames
        q = self.rpos
        m = min(frames, len(self.rec) - q)
        self.rec[q : q + m] = indata[:m]
        self.rpos += m
        if self.rpos >= len(self.rec):
            self.done.set()

    def run(self):
        with self.stream:
            assert self.done.wait(len(self.rec) / SR + 10), "the harness stream stalled"
        return self.rec[:, 0] if self.rec.shape[1] == 1 else self.rec


def _signal():
    """Silence, a noise burst (one sharp correlation peak), a 1 kHz sine, silence."""
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    parts = [np.zeros(SR // 2), rng.uniform(-0.3, 0.3, SR // 20), np.zeros(SR // 10),
             0.5 * np.sin(2 * np.pi * 1000 * t), np.zeros(SR // 4)]
    return np.concatenate(parts).astype(np.float32)


def _lag(sig, rec):
    nfft = 1 << (len(sig) + len(rec)).bit_length()
    cc = np.fft.irfft(np.fft.rfft(rec, nfft) * np.conj(np.fft.rfft(sig, nfft)), nfft)
    lag = int(np.argmax(cc[: len(rec)]))
    return lag, float(cc[lag] / np.dot(sig, sig))


def test_virtual_mic_carries_the_input_at_the_reported_latency(pipewire, tmp_path):
    sd = pipewire
    sig = _signal()
    name = f"vmtest{os.getpid()}"
    child, metrics = _start(["--virtual-mic", name, "--duration", "14"], tmp_path,
                            env=_feed_env())
    try:
        sources = pactl("list", "short", "sources")
        assert f"streamsep.{name}\t" in sources, sources
        # what other programs see: a real source (not a monitor) described by NAME
        assert f"Description: {name}\n" in pactl("list", "sources")
        # The first second of PulseAudio streams has start-up xruns: measure after it.
        time.sleep(1.5)
        # A recording program (PulseAudio client) gets the input unchanged, but for the
        # dropouts that PulseAudio-protocol streams have on a busy 2-core VM (a few ms here and
        # there, also without streamsep): mostly bit for bit.
        rec = Harness(sd, FEED, f"streamsep.{name}", sig, 2.0).run()
        lag, peak = _lag(sig, rec)
        exact = np.mean(np.abs(rec[lag : lag + len(sig)] - sig) <= 1e-6)
        assert peak > 0.9 and exact > 0.98, (peak, exact)
        # The delay, measured on one clock: the engine's input (ci_feed's monitor) and the
        # virtual mic's output linked into the two channels of one sink, recorded together.
        for a, b in ((f"{FEED}:monitor_MONO", f"{REC}:playback_FL"),
                     (f"streamsep.{name}:capture_MONO", f"{REC}:playback_FR")):
            r = subprocess.run(["pw-link", a, b], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
        for _ in range(3):  # a dropout right on the burst spoils a measurement: take another
            both = Harness(sd, FEED, f"{REC}.monitor", sig, 2.0, in_channels=2).run()
            (at_input, p1), (at_mic, p2) = _lag(sig, both[:, 0]), _lag(sig, both[:, 1])
            if p1 > 0.9 and p2 > 0.9:
                break
    finally:
        err = _wait(child)
    assert child.returncode == 0, err
    assert "Traceback" not in err, err
    lat = json.loads(metrics.read_text().splitlines()[0])["latency"]
    internal = round((lat["algorithmic_s"] + lat["compute_s"]) * SR)
    reported = round(lat["total_s"] * SR)
    assert p1 > 0.9 and p2 > 0.9, (p1, p2)
    delay = at_mic - at_input
    print(f"\ninput -> virtual mic: {delay} samples ({delay / SR * 1000:.1f} ms); reported "
          f"latency {reported} (internal {internal} + device {reported - internal}); extra "
          f"{delay - reported} samples ({(delay - reported) / SR * 1000:.1f} ms)")
    (tmp_path.parent / f"vm_delay_{os.getpid()}.json").write_text(json.dumps(
        {"delay": delay, "reported": reported, "internal": internal}))
    # The reported latency give or take a few PipeWire quanta (1024 samples here): PortAudio's
    # ALSA view of the two PulseAudio-protocol streams is not what they buffer, and what they
    # buffer differs from one start to the next. Measured over 11 runs on a 2-core VM: -3088 to
    # +2560 samples against the reported latency (-64 to +53 ms), most often -1024.
    assert internal - QUANTUM <= delay <= reported + 4 * QUANTUM, (delay, internal, reported)
    assert _ours() == [], _ours()


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_removes_the_virtual_mic(pipewire, tmp_path, sig, code):
    name = f"vmsig{os.getpid()}"
    child, _ = _start(["--virtual-mic", name, "--virtual-mic-residual", f"{name}-rest"],
                      tmp_path, env=_feed_env())
    assert f"streamsep.{name}\t" in pactl("list", "short", "sources")
    assert f"streamsep.{name}-rest\t" in pactl("list", "short", "sources")
    child.send_signal(sig)
    err = _wait(child)
    assert child.returncode == code, err
    assert "Traceback" not in err, err
    assert _ours() == [], _ours()


def test_kill9_leaves_nodes_that_the_next_start_removes(pipewire, tmp_path):
    name = f"vmkill{os.getpid()}"
    child, _ = _start(["--virtual-mic", name], tmp_path, env=_feed_env())
    child.kill()
    child.wait()
    assert any(name in x for x in _ours()), "kill -9 cannot clean up: the node should remain"
    child, _ = _start(["--virtual-mic", name, "--duration", "1"], tmp_path, env=_feed_env())
    err = _wait(child)
    assert child.returncode == 0, err
    assert "removed virtual devices left by a streamsep that was killed" in err, err
    assert _ours() == [], _ours()


def test_input_monitor_records_what_the_default_output_plays(pipewire, tmp_path):
    sd = pipewire
    default_sink = next(ln.split(": ", 1)[1] for ln in pactl("info").splitlines()
                        if ln.startswith("Default Sink: "))
    target = tmp_path / "t.wav"
    child, _ = _start(["--input", "monitor", "-o", "none", "--record-target", str(target),
                       "--duration", "4"], tmp_path)
    t = np.arange(2 * SR) / SR
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    # played to the default output, as any program would
    sd.play(tone, SR, device="pulse", blocking=True)
    err = _wait(child)
    assert child.returncode == 0, err
    assert f"what {default_sink!r} plays" in err, err
    got, rate = sf.read(target, dtype="float32")
    assert rate == SR and np.abs(got).max() > 0.3, np.abs(got).max()
    idx = np.nonzero(np.abs(got) > 0.01)[0]
    loud = got[idx[0] : idx[-1] + 1]  # the stretch the tone plays in
    spec = np.abs(np.fft.rfft(loud * np.hanning(len(loud))))
    assert abs(np.argmax(spec) * SR / len(loud) - 440) < 3


def test_input_monitor_refuses_to_play_back_into_the_default_output(pipewire, tmp_path):
    r = subprocess.run([sys.executable, "-m", "streamsep", "run", "-p", "speech", "--model",
                        "passthrough", "--input", "monitor", "-o", "pulse", "--duration", "1"],
                       capture_output=True, text=True, timeout=60)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 1 and len(errors) == 1, r.stderr
    assert "feed it back" in errors[0]


def test_no_sound_server_is_one_line_saying_how_to_start_one(tmp_path):
    env = dict(os.environ, PULSE_SERVER=f"unix:{tmp_path}/none/native",
               XDG_RUNTIME_DIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "streamsep", "run", "-p", "speech", "--model",
                        "passthrough", "--virtual-mic"], capture_output=True, text=True,
                       timeout=60, env=env)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 1 and len(errors) == 1, r.stderr
    assert "Traceback" not in r.stderr
    if shutil.which("pactl"):
        assert "no sound server is running" in errors[0] and "pipewire-pulse" in errors[0]
    else:
        assert "pactl is not installed" in errors[0]
