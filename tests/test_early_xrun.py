"""A missed JACK cycle at the very start of a stream keeps the output aligned (issue #13).

The C harness (tools/rtharness) is the device of `streamsep run --model passthrough`: it plays
noise with markers, records what comes back, and stalls its own process callback twice
(``--stall``): 30 ms in the cycle in which streamsep connects to it (the stream's first callback
runs in or right after that stalled cycle, its stream time hundreds of frames late, and the
server skips cycles for every client), and 12 ms about 2 s later (a missed cycle in steady
state). Before the fix the first callback's late time became the baseline of rt.c's missed-cycle
detector and was never lowered, so the second missed cycle looked too small to count: it was not
filled in and the output played a period late for a whole latency. Now every block of the output
is the input, bit for bit, at one delay (the reported latency plus the harness loop's two
periods), except the few blocks around each missed cycle before it is detected.

Uses a private JACK dummy server (the stalls are xruns for every client of a server). Skipped
without jackd or the JACK headers unless AUDIO_TESTS_REQUIRED=1 (CI), which makes it fail.
"""

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools" / "rtharness"))

import rth  # noqa: E402

pytestmark = pytest.mark.audio
REQUIRED = os.environ.get("AUDIO_TESTS_REQUIRED") == "1"
SR, N = 48000, 256
NAME = "stallh"
#: blocks per missed cycle that may be off: those written before the gap was detected (8
#: callbacks) and those played from them, plus the gap itself, in and out
PER_GAP = 24


def _unavailable(why):
    (pytest.fail if REQUIRED else pytest.skip)(why)


@pytest.fixture()
def jack(tmp_path_factory):
    if not rth.have_jackd():
        _unavailable("jackd is not installed (apt-get install jackd2)")
    try:
        rth.build()
        server = rth.JackServer(log_dir=tmp_path_factory.mktemp("jackd")).start()
    except rth.HarnessError as e:
        _unavailable(str(e))
    yield server
    server.stop()


@pytest.mark.parametrize("late_first, missed", [(320, 200), (100, 3), (0, 1)])
def test_a_late_first_callback_does_not_hide_a_missed_cycle(late_first, missed):
    """rt_callback called as PortAudio's JACK host API would, without a server: the first
    callback's stream time ``late_first`` frames late (as after a stall just before the stream
    started), then the server runs cycle ``missed`` without us (its input is lost) and flags the
    next callback. The cycle is filled in, and the output is the input at exactly the latency
    (but for the blocks around the gap), also when the gap falls in the first 8 callbacks."""
    from streamsep.engine._rt import ffi, lib
    from streamsep.engine.engine import Engine
    from streamsep.engine.plan import WindowPlan
    from streamsep.separators.simple import Passthrough

    eng = Engine(Passthrough(), WindowPlan(SR, 1920, 25, 5, 2, 1), budget=int(0.1 * SR))
    sink = eng.add_playback("target")
    st = eng.stream_state(sink, feeds_input=True, fill_gaps=True, frame_clock=None)
    lat, k_all = eng.latency_samples, 400
    x = np.random.default_rng(5).standard_normal(N * k_all).astype(np.float32)
    played = np.full(len(x), np.nan, np.float32)
    jitter = np.random.default_rng(6).uniform(0, 60, k_all)  # late wake-ups: not gaps
    for k in range(k_all):
        if k == missed:
            continue
        late = late_first if k == 0 else jitter[k]
        t = 1.0 + (N * k + late) / SR
        ti = ffi.new("double[3]", [t, t, t])
        out = np.zeros(N, np.float32)
        flags = 0x4 if k in (0, missed + 1) else 0  # paOutputUnderflow: the xruns' flags
        lib.rt_callback(ffi.from_buffer("float[]", x[N * k : N * (k + 1)].copy()),
                        ffi.from_buffer("float[]", out), N, ti, flags, st.c)
        played[N * k : N * (k + 1)] = out
    assert st.xruns()["missed_cycles"] == 1 and st.xruns()["missed_frames"] == N
    assert eng.input.write_pos == len(x)  # the input ring kept the device's timeline
    ok = np.ones(len(x), bool)
    ok[:lat] = False
    for lo in (N * missed, N * missed + lat):  # the gap, until it was detected, in and out
        ok[lo : lo + N * 10] = False
    ref = np.concatenate([np.zeros(lat, np.float32), x[: len(x) - lat]])
    np.testing.assert_array_equal(played[ok], ref[ok])


def _split_offset(missed):
    """Input and own-clock output streams called as on one JACK client; the output's first
    callback comes two cycles after the input's cycle ``missed`` (None: none missed). Returns
    (output read position - input write position, frames the input filled in) at the end."""
    from streamsep.engine._rt import ffi, lib
    from streamsep.engine.engine import Engine
    from streamsep.engine.plan import WindowPlan
    from streamsep.separators.simple import Passthrough

    eng = Engine(Passthrough(), WindowPlan(SR, 1920, 25, 5, 2, 1), budget=int(0.1 * SR))
    st_in = eng.stream_state(None, feeds_input=True, fill_gaps=True, frame_clock=None)
    sink = eng.add_playback("target", own_clock=True)
    st_out = eng.stream_state(sink, feeds_input=False, fill_gaps=True, frame_clock=None)
    blk = np.zeros(N, np.float32)
    for k in range(60):
        if k == missed:
            continue  # the server ran this cycle without us
        t = 1.0 + N * k / SR
        ti = ffi.new("double[3]", [t, t, t])
        flags = 0x4 if missed is not None and k == missed + 1 else 0
        lib.rt_callback(ffi.from_buffer("float[]", blk), ffi.NULL, N, ti, flags, st_in.c)
        if k >= 3:
            out = np.zeros(N, np.float32)
            lib.rt_callback(ffi.NULL, ffi.from_buffer("float[]", out), N, ti, flags, st_out.c)
    assert eng.input.write_pos == 60 * N  # the input ring kept the device's timeline
    return sink.ring.read_pos - eng.input.write_pos, st_in.xruns()["missed_frames"]


def test_an_output_on_its_own_clock_starts_after_the_input_filled_a_missed_cycle():
    """Split streams: the input misses the cycle after its first, and the output stream's first
    callback comes before the input has judged that xrun (8 callbacks later). Starting there, the
    output took the input's position from before the fill and played a period late until drift
    control trimmed it (seconds). Now it waits until the input is settled: the output keeps the
    same distance to the input as without the missed cycle (within the few frames the input
    position is extrapolated by, from the input's callback to the output's)."""
    ref, _ = _split_offset(None)
    got, filled = _split_offset(1)
    assert filled == N
    assert abs(got - ref) <= 8, (got, ref)


def _blocks(rec, sig, lags):
    """For each recorded block: the delay d (one of ``lags``) with rec == played(t - d) bit for
    bit, 0 for a silent block, None for anything else."""
    out = []
    for b in range(len(rec) // N):
        got = rec[b * N : (b + 1) * N]
        if not got.any():
            out.append(0)
            continue
        out.append(next((d for d in lags if np.array_equal(got, sig.get(b * N - d, N))), None))
    return out


def _run(jack, wd):
    """The harness with two stalls, `streamsep run` on it; returns (harness summary, end record,
    start record, per-block delays from the engine's first output on)."""
    h = rth.start_harness(wd / "harness", env=jack.env, name=NAME, duration=120.0,
                          gen="noise:0.1", marker_period=0.1, marker_len=256, exclusive=False,
                          extra=["--stall-from", "connect", "--stall", "0:30",
                                 "--stall", "400:12"])
    try:
        for _ in range(200):
            if f"{NAME}:out" in jack.ports():
                break
            time.sleep(0.05)
        metrics = wd / "m.jsonl"
        env = dict(jack.env, CI="true", PYTHONPATH=str(ROOT))
        child = subprocess.run(
            [sys.executable, "-m", "streamsep", "run", "-p", "speech", "--model", "passthrough",
             "-i", NAME, "-o", NAME, "--window", "1", "--hop", "0.2", "--lookahead", "0.08",
             "--crossfade", "0.04", "--budget", "0.1", "--blocksize", str(N), "--latency",
             "low", "--duration", "4", "--metrics-json", str(metrics)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, cwd=wd,
            timeout=180)
        assert child.returncode == 0, child.stderr
    finally:
        if h.proc.poll() is None:
            h.proc.send_signal(signal.SIGINT)
    summary = h.wait(30)
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    start = next(r for r in lines if r["type"] == "start")
    assert start["gap_clock"] == ["jack frames"]  # jack2: JACK's own frame counter
    end = lines[-1]
    assert end["type"] == "end"
    lat = start["latency"]
    internal = int(round((lat["algorithmic_s"] + lat["compute_s"]) * SR))
    rec = h.recording(mmap=False)[:, 0]
    lags = [internal + N * k for k in (2, 1, 3, 0, 4, -1, 5)]
    cls = _blocks(rec, h.signal(), lags)
    first = next(i for i, c in enumerate(cls) if c)  # the engine's first output
    last = max(i for i, c in enumerate(cls) if c)    # its last (the run ended after it)
    return summary, end, internal, cls[first : last + 1]


def test_missed_cycles_at_the_start_and_later_keep_the_output_aligned(jack, tmp_path):
    for attempt in (1, 2):
        wd = tmp_path / f"a{attempt}"
        wd.mkdir()
        summary, end, internal, cls = _run(jack, wd)
        stalls = summary["stalls"]
        assert all(s["pos"] is not None for s in stalls), stalls
        counts = collections.Counter(cls)
        delay = counts.most_common(1)[0][0]
        off = [i for i, c in enumerate(cls) if c != delay]
        gaps = summary["gap_cycles"]
        print(f"\nattempt {attempt}: internal latency {internal}, delay {delay} "
              f"(+{delay - internal}), blocks by delay {dict(counts)}, {len(off)} of {len(cls)} "
              f"blocks off; harness: {gaps} missed cycles ({summary['gap_frames']} frames), "
              f"server xruns {summary['server_xruns']}; engine {end['xruns']}")
        if gaps > len(stalls):  # the machine stalled the graph by itself as well: JACK's
            if attempt == 1:    # interpolated stream time then wanders (see rt.c): once more
                continue
            pytest.skip(f"the JACK graph missed {gaps} cycles, {len(stalls)} induced: the "
                        "machine is too busy to tell the engine's alignment from its own xruns")
        # one delay: the reported latency plus the harness loop (one period each way)
        assert delay == internal + 2 * N
        assert end["xruns"]["missed_frames"] > 0  # the steady-state stall was filled in
        # every block is the input at that delay, but a few around each missed cycle; before
        # the fix the second stall left a whole latency (79 blocks) a period late
        assert len(off) <= PER_GAP * max(gaps, 1), (off[:10], off[-10:])
        return
