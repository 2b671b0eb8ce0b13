"""The C JACK harness (tools/rtharness) and the live engine's soak test (tools/soak.py).

* test_harness_loopback_bit_exact (a few seconds): builds the harness, wires its output to its own
  input on a private JACK dummy server and checks that it records what it played bit for bit,
  marker aligned, and that the played signal is rebuilt exactly from its dumps.
* test_harness_timeline_survives_late_reads_and_skipped_cycles: the harness's placement of
  each cycle on the device's timeline, replayed from a list of frame reads without JACK.
* test_soak_ci (slow, ~2.5 min): ``tools/soak.py --duration 120``: the embedded model, default
  knobs, fed model/demo.wav by the harness on CI's JACK server: constant latency equal to the
  reported one, no RSS growth after the warm-up, no lasting lost or repeated samples, and a
  bounded number of xruns (the full soak's verdict demands 0; see the test for why CI does not).

Skipped without jackd or the JACK headers unless AUDIO_TESTS_REQUIRED=1 (CI), which makes them
fail instead, like tests/test_jack_realtime.py.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools" / "rtharness"))

import rth  # noqa: E402

pytestmark = pytest.mark.audio
REQUIRED = os.environ.get("AUDIO_TESTS_REQUIRED") == "1"


def _unavailable(why):
    (pytest.fail if REQUIRED else pytest.skip)(why)


@pytest.fixture(scope="module")
def harness_bin():
    if not rth.have_jackd():
        _unavailable("jackd is not installed (apt-get install jackd2)")
    try:
        return rth.build()
    except rth.HarnessError as e:
        _unavailable(str(e))


@pytest.fixture()
def jack(harness_bin, tmp_path_factory):  # per test: it must not run beside the soak's server
    try:
        server = rth.JackServer(log_dir=tmp_path_factory.mktemp("jackd")).start()
    except rth.HarnessError as e:
        _unavailable(str(e))
    yield server
    server.stop()


def _loopback(jack, wd, name):
    h = rth.start_harness(wd, env=jack.env, name=name, duration=2.0,
                          play=str(ROOT / "model" / "demo.wav"), to=[f"{name}:in_1"],
                          marker_period=0.25, played=True)
    return h, h.wait(timeout=30)


def test_harness_loopback_bit_exact(jack, tmp_path):
    import soundfile as sf

    for attempt in range(2):  # once more if JACK skipped a cycle (a loaded machine), not else
        wd = tmp_path / f"try{attempt}"
        h, s = _loopback(jack, wd, "rth_loop")
        assert s["rc"] == 0 and s["error"] is None, (s, h.stderr)
        assert s["frames_recorded"] == s["total_frames"] == 2 * s["sample_rate"]
        assert s["own_xruns"] == 0
        if s["gap_cycles"] == 0 and s["server_xruns"] == 0:
            break
    sig = h.signal()
    # the harness reads the WAV exactly as soundfile does, and its dumps rebuild what it played
    demo, _ = sf.read(ROOT / "model" / "demo.wav", dtype="float32")
    np.testing.assert_array_equal(sig.src, demo)
    played = np.fromfile(wd / "played.f32", dtype=np.float32)
    assert len(played) == s["total_frames"]
    np.testing.assert_array_equal(sig.get(0, len(played)), played)
    assert sig.period == s["sample_rate"] // 4 and len(sig.marker) == 1024
    # its own output comes back one period later (JACK breaks the loop there), bit for bit, and
    # every marker sits exactly one period after its played position
    rec = h.recording()[:, 0]
    a = rth.align(rec, sig, lag_guess=s["buffer_size"], first_search=2048)
    assert a["lag"] == s["buffer_size"], a
    assert a["misaligned"] == [] and a["missing"] == 0 and a["checked"] >= 6, a
    ex = rth.compare_exact(rec, sig, a["lag"])
    assert ex["compared"] == len(rec) - a["lag"]
    if s["gap_cycles"] == 0:
        assert ex["wrong_samples"] == 0, ex
    else:  # a cycle JACK skipped is recorded as zeros, and nothing else differs
        assert ex["wrong_blocks"] <= 2 * s["gap_cycles"], (ex, s)
    np.testing.assert_array_equal(rec[: a["lag"]], 0)


def test_harness_timeline_survives_late_reads_and_skipped_cycles(harness_bin, tmp_path):
    """The harness's own timeline, replayed without JACK (--replay: the first frame each cycle
    read). A callback that ran after the next cycle began reads that cycle's frame, as if a
    cycle had been skipped; taken at its word, that moved the harness's timeline a period ahead
    for good, and everything in flight through the device under test came back a period off for
    a whole latency. Here callbacks 50, 200 and 201 read ahead, cycle 120 is really skipped, and
    the counter wraps at 2^32: the recording (the harness's own output looped back) must equal
    what was played at every frame, hold zeros only for the skipped cycle, and the played signal
    as rth rebuilds it must match, content offsets included."""
    base, n = 2**32 - 256 * 100, 256
    ahead, skipped = {50, 200, 201}, {120}
    frames = [(base + n * k + (n if k in ahead else 0)) % 2**32
              for k in range(400) if k not in skipped]
    (tmp_path / "frames.txt").write_text("\n".join(map(str, frames)))
    wd = tmp_path
    r = subprocess.run([str(harness_bin), "--replay", str(wd / "frames.txt"), "-g", "noise:0.1",
                        "-d", repr(399 * n / 48000), "-r", str(wd / "record.f32"),
                        "--played", str(wd / "played.f32"), "--dump-source",
                        str(wd / "source.f32"), "--dump-marker", str(wd / "marker.f32"),
                        "--marker-period", "0.25", "-j", str(wd / "summary.json")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    s = json.loads((wd / "summary.json").read_text())
    assert (s["gap_cycles"], s["gap_frames"], s["late_reads"]) == (1, n, 2), s
    assert s["frames_recorded"] == s["total_frames"] == 399 * n
    # played a period ahead in the late cycles, back in line at once after each
    assert s["content_offsets"] == [[50 * n, n], [51 * n, 0], [200 * n, n], [202 * n, 0]]
    rec = np.fromfile(wd / "record.f32", np.float32)
    played = np.fromfile(wd / "played.f32", np.float32)
    hole = np.zeros(len(rec), bool)
    hole[120 * n : 121 * n] = True
    np.testing.assert_array_equal(rec, played)
    assert not rec[hole].any() and rec[~hole].any()
    sig = rth.PlayedSignal.from_dumps(wd, s)
    np.testing.assert_array_equal(sig.get(0, len(rec))[~hole], played[~hole])


@pytest.mark.slow
def test_soak_ci(harness_bin, tmp_path):
    out = tmp_path / "soak.json"
    # On CI's shared server (a second one would compete for the 2 cores), and without failing
    # on cycles in which the whole machine stalled (the dummy driver's own timer woke late):
    # those hit every client alike, the harness included, and no code of ours can prevent them.
    server = []
    if os.environ.get("JACK_DEFAULT_SERVER") and os.environ.get("JACKD_LOG"):
        server = ["--server", os.environ["JACK_DEFAULT_SERVER"], "--server-log",
                  os.environ["JACKD_LOG"]]
    # A run in which the C harness itself glitched measured the machine, not the engine (the
    # tool calls it inconclusive), and so does one with more late cycles than the bound below
    # while the shared machine is in a busy stretch: run once more. The exact checks hold for
    # every conclusive run; the xrun bound for the better one. If no run met the bound and one
    # of them was inconclusive, the machine was too busy to judge: say so and skip.
    best, inconclusive = None, []
    for attempt in range(2):
        r = subprocess.run([sys.executable, str(ROOT / "tools" / "soak.py"), "--duration",
                            "120", "--allow-machine-xruns", *server, "--json", str(out),
                            "--workdir", str(tmp_path / f"w{attempt}"), "-q"],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode in (0, 1), r.stderr[-3000:]
        result = json.loads(out.read_text())
        print("\n" + r.stdout)
        why = "\n".join(result["reasons"])
        if "not conclusive" in why:
            inconclusive.append(why)
            continue
        _assert_exact(result, why)
        if best is None or _late_cycles(best) > _late_cycles(result):
            best = result
        if _late_cycles(best) <= XRUN_BOUND:
            break
    if best is None or (_late_cycles(best) > XRUN_BOUND and inconclusive):
        pytest.skip("the machine was too busy to judge the soak: "
                    + (inconclusive[-1] if inconclusive else ""))
    # Zero xruns is the soak's own verdict (tools/soak.py, 1 h, in the README). On CI's shared
    # 2-core virtual machine whole cycles are now and then late for every client (0 to 26 per
    # 2 minutes seen there, mostly 0 or 1), so this variant only bounds them; that the callbacks
    # never wait for the interpreter is proven exactly by
    # test_live_faults.py::test_device_callbacks_run_while_the_interpreter_is_held.
    assert _late_cycles(best) <= XRUN_BOUND, "\n".join(best["reasons"])


XRUN_BOUND = 20  # per 2 minutes, JACK's and streamsep's counts each


def _late_cycles(result):
    x = result["xruns"]
    return max(x["jack_events"], x["streamsep_reported"])


def _assert_exact(result, why):
    # What the engine controls holds exactly, whatever the machine does: one latency, the one
    # it reported; no RSS growth; nothing underrun or dropped; no lasting lost or repeated
    # sample (a skipped JACK cycle may disturb the stretch around it, no more).
    assert result["latency"]["values_s"] == [round(result["latency"]["reported_s"], 9)], why
    target = result["alignment"]["target"]
    assert target["lag_minus_reported"] == 0 and target["final_offset"] == 0, why
    assert result["rss_mb"]["growth"] <= result["rss_mb"]["limit"], why
    c = result["counters"]
    assert not (c.get("underrun_s") or c.get("dropped_windows") or c.get("overrun_s")), why
    x = result["xruns"]
    assert len(target["misaligned"]) <= 2 * (x["jack_events"] + x["streamsep_reported"]), why
