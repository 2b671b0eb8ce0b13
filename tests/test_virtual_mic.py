"""`run --virtual-mic` and `--input monitor` on a real, headless PipeWire and its PulseAudio layer.

harness(out) -> null sink ci_feed -> its monitor -> streamsep run (passthrough) -> virtual mic.
A PulseAudio client in this process records the virtual mic (what OBS or a browser does) and must
get the input. The delay is measured by a second recording process, jack_rec under pw-jack (a
JACK client of the same graph, which buffers nothing of its own), recording ci_feed's monitor
and the virtual mic side by side on one clock, so neither the harness's own start-up lag nor its
buffering enters the figure. Both of run's paths are measured: PipeWire's JACK layer (what it
uses where it can) and the PulseAudio layer (STREAMSEP_VIRTUAL_MIC_VIA=pulse).

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
        # described as FEED: also its name as a JACK client (jack_rec records its monitor)
        pactl("load-module", "module-null-sink", f"sink_name={FEED}", "rate=48000",
              "channels=1", "format=float32le", f"sink_properties=device.description={FEED}")
        yield sd
    finally:
        for line in pactl("list", "short", "modules", check=False).splitlines():
            if f"sink_name={FEED} " in line:
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

    def __init__(self, sd, sink, source, sig, rec_s):
        self.sig = sig
        self.rec = np.zeros((len(sig) + int(rec_s * SR), 1), np.float32)
        self.pos = self.rpos = 0
        self.flags = 0
        self.done = threading.Event()
        old = {k: os.environ.get(k) for k in ("PULSE_SINK", "PULSE_SOURCE")}
        os.environ.update(PULSE_SINK=sink, PULSE_SOURCE=source)
        try:
            self.stream = sd.Stream(device="pulse", samplerate=SR, channels=(1, 1),
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
        return self.rec[:, 0]


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


def _jack_links():
    """PortAudio's JACK ports and what they are linked to, from ``pw-link -l``."""
    links, port = {}, None
    for line in subprocess.run(["pw-link", "-l"], capture_output=True, text=True,
                               timeout=10).stdout.splitlines():
        if not line.startswith(" "):
            port = line.strip()
        elif port and port.startswith("PortAudio") and ("|->" in line or "|<-" in line):
            links.setdefault(port.split(":", 1)[1], []).append(line.split(maxsplit=1)[1])
    return links


def _quantum():
    """The graph's period in samples (what a JACK client gets per cycle)."""
    r = subprocess.run(["pw-jack", "jack_bufsize"], capture_output=True, text=True, timeout=10)
    words = r.stdout.split()
    return int(words[-1]) if r.returncode == 0 and words and words[-1].isdigit() else QUANTUM


def _default_sink():
    """The default sink's name and description (its JACK client name)."""
    sink = next(ln.split(": ", 1)[1] for ln in pactl("info").splitlines()
                if ln.startswith("Default Sink: "))
    block = pactl("list", "sinks").split(f"Name: {sink}\n", 1)[1]
    return sink, block.split("Description: ", 1)[1].split("\n", 1)[0]


@pytest.mark.parametrize("via,source", [("jack", "mic"), ("pulse", "mic"), ("jack", "monitor")])
def test_virtual_mic_carries_the_input_at_the_reported_latency(pipewire, tmp_path, via, source):
    """A process recording from the virtual microphone gets the input, delayed by the reported
    latency: within one block on PipeWire's JACK layer (what `run --virtual-mic` uses where it
    can), within what PortAudio cannot see of the PulseAudio-protocol streams on the pulse
    layer (STREAMSEP_VIRTUAL_MIC_VIA=pulse; PulseAudio itself, PipeWire without pipewire-jack).

    The recording process is jack_rec under pw-jack, a JACK client of the same graph: it gets
    each cycle's samples in that cycle (no buffering of its own), and it records the engine's
    input (ci_feed's monitor; with --input monitor, the default sink's) and the microphone side
    by side, on one clock."""
    sd = pipewire
    for tool in ("pw-jack", "jack_rec", "pw-link"):
        if not shutil.which(tool):
            _unavailable(f"{tool} is not installed (apt-get install pipewire-jack jackd2)")
    sig = _signal()
    name = f"vm{via}{source}{os.getpid()}"
    env = _feed_env(**({"STREAMSEP_VIRTUAL_MIC_VIA": "pulse"} if via == "pulse" else {}))
    # the engine's input: ci_feed (as the default microphone), or what the default sink plays
    feed, feed_jack = (FEED, FEED) if source == "mic" else _default_sink()
    args = ["--input", "monitor"] if source == "monitor" else []
    child, metrics = _start([*args, "--virtual-mic", name, "--duration", "17"], tmp_path,
                            env=env)
    wav = tmp_path / "jack_rec.wav"
    try:
        sources = pactl("list", "short", "sources")
        assert f"streamsep.{name}\t" in sources, sources
        # what other programs see: a real source (not a monitor) described by NAME
        assert f"Description: {name}\n" in pactl("list", "sources")
        links = _jack_links()
        if via == "jack":  # one duplex JACK stream: our input source in, the mic's sink out
            assert links == {"in_0": [f"streamsep.{name}.input:capture_MONO"],
                             "out_0": [f"streamsep.{name}.sink:playback_MONO"]}, links
        else:
            assert links == {}, links
        # The pulse layer's first second has start-up xruns: measure after it.
        time.sleep(1.5 if via == "pulse" else 0.3)
        secs = len(sig) / SR + 2.5
        for _ in range(3):  # a dropout in the PulseAudio client's recording: record again
            rec = subprocess.Popen(["pw-jack", "jack_rec", "-f", str(wav), "-d", f"{secs:.1f}",
                                    "-b", "32", f"{feed_jack}:monitor_MONO",
                                    f"{name}:capture_MONO"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            time.sleep(0.3)  # its ports linked (the signal starts with 0.5 s of silence)
            # A PulseAudio client recording the mic (what OBS or a browser does) gets the input
            # unchanged, but for the dropouts that PulseAudio-protocol streams have on a busy
            # 2-core VM (a few ms here and there, also without streamsep): mostly bit for bit.
            got = Harness(sd, feed, f"streamsep.{name}", sig, 2.0).run()
            out = rec.communicate(timeout=secs + 10)[0].decode()
            assert rec.returncode == 0, out
            lag, peak = _lag(sig, got)
            exact = np.mean(np.abs(got[lag : lag + len(sig)] - sig) <= 1e-6)
            if peak > 0.9 and exact > 0.98:
                break
    finally:
        err = _wait(child)
    assert child.returncode == 0, err
    assert "Traceback" not in err, err
    assert ("on PipeWire's JACK layer" in err) == (via == "jack"), err
    assert peak > 0.9 and exact > 0.98, (peak, exact)
    both, rate = sf.read(wav, dtype="float32")
    assert rate == SR and both.shape[1] == 2, both.shape
    (at_input, p1), (at_mic, p2) = _lag(sig, both[:, 0]), _lag(sig, both[:, 1])
    assert p1 > 0.9 and p2 > 0.9, (p1, p2)
    lat = json.loads(metrics.read_text().splitlines()[0])["latency"]
    internal = round((lat["algorithmic_s"] + lat["compute_s"]) * SR)
    reported = round(lat["total_s"] * SR)
    delay, block = at_mic - at_input, _quantum()
    print(f"\n{via} {source}: input -> virtual mic: {delay} samples ({delay / SR * 1000:.1f} ms); "
          f"reported latency {reported} (internal {internal} + device {reported - internal}); "
          f"extra {delay - reported} samples ({(delay - reported) / SR * 1000:.1f} ms); "
          f"block {block}")
    (tmp_path.parent / f"vm_delay_{via}_{source}_{os.getpid()}.json").write_text(json.dumps(
        {"via": via, "source": source, "delay": delay, "reported": reported, "internal": internal,
         "block": block}))
    if via == "jack":
        # Measured over 40 starts on a loaded 2-core VM (and 3 at quantum 256, 3 with --input
        # monitor): 0 samples off, every time.
        assert abs(delay - reported) <= block, (delay, reported, block)
    else:
        # The reported latency give or take a few quanta: PortAudio's ALSA view of the two
        # PulseAudio-protocol streams is not what they buffer, and what they buffer differs
        # from one start to the next. Measured over 11 runs on a 2-core VM: -3088 to +2560
        # samples against the reported latency (-64 to +53 ms), most often -1024; +6144
        # (+128 ms) once, with the whole suite and a training run on the two cores.
        assert internal - QUANTUM <= delay <= reported + 8 * QUANTUM, (delay, internal,
                                                                       reported)
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


def _graph_rate():
    r = subprocess.run(["pw-jack", "jack_samplerate"], capture_output=True, text=True, timeout=10)
    return r.stdout.strip()


def test_a_graph_jack_cannot_serve_falls_back_to_the_pulse_layer(pipewire, tmp_path):
    """A graph at 44.1 kHz: JACK clients do not resample, so PipeWire's JACK layer cannot carry
    48 kHz streams. `run` says so, removes the input source it made for the JACK path, serves the
    microphone on the PulseAudio layer (which resamples), and leaves nothing behind."""
    for tool in ("pw-metadata", "pw-jack", "jack_samplerate"):
        if not shutil.which(tool):
            _unavailable(f"{tool} is not installed (apt-get install pipewire-jack jackd2)")
    name = f"vmrate{os.getpid()}"

    def force(rate):
        subprocess.run(["pw-metadata", "-n", "settings", "0", "clock.force-rate", str(rate)],
                       capture_output=True, timeout=10, check=True)
        want = "48000" if rate == 0 else str(rate)
        for _ in range(100):
            if _graph_rate() == want:
                return
            time.sleep(0.05)
        raise AssertionError(f"the graph did not switch to {want} Hz: {_graph_rate()}")

    force(44100)
    try:
        child, _ = _start(["--virtual-mic", name, "--duration", "1"], tmp_path,
                          env=_feed_env())
        assert f"streamsep.{name}\t" in pactl("list", "short", "sources")
        # the JACK path's input source is gone again: only the microphone's nodes remain
        ours = _ours()
        assert f"streamsep.{name}.sink" in ours and f"streamsep.{name}" in ours, ours
        assert not any(f"streamsep.{name}.input" in x for x in ours), ours
        err = _wait(child)
    finally:
        force(0)
    assert child.returncode == 0, err
    assert "PipeWire's JACK layer cannot serve the virtual microphone" in err, err
    assert "48000 Hz" in err, err
    assert "on PipeWire's JACK layer:" not in err, err
    assert _ours() == [], _ours()
