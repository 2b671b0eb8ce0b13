"""The C device callback (rt_callback in streamsep/engine/rt.c), called directly as PortAudio
would: interleaved buffers, status flags, first-call alignment and the overload fill."""

import numpy as np
import pytest

from streamsep.engine._rt import ffi, lib
from streamsep.engine.engine import Engine
from streamsep.engine.plan import WindowPlan
from streamsep.engine.sinks import PlayedOutput, StreamState
from streamsep.separators.simple import Passthrough

SR, HOP = 48000, 1920
PA_INPUT_OVERFLOW, PA_OUTPUT_UNDERFLOW = 0x2, 0x4


def _call(st, indata, outdata, flags=0):
    frames = len(outdata) if outdata is not None else len(indata)
    i = ffi.NULL if indata is None else ffi.from_buffer("float[]", indata)
    o = ffi.NULL if outdata is None else ffi.from_buffer("float[]", outdata)
    return lib.rt_callback(i, o, frames, ffi.NULL, flags, st.c)


def _engine(overload="dry"):
    plan = WindowPlan(SR, HOP, 25, 5, 2, 1)
    return Engine(Passthrough(), plan, budget=int(0.1 * SR), overload=overload)


def test_duplex_callback_plays_the_input_at_the_latency_when_the_worker_is_silent():
    eng = _engine("dry")
    sink = eng.add_playback("target")
    st = eng.stream_state(sink, feeds_input=True, out_channels=2)
    x = np.random.default_rng(0).standard_normal(256 * 190).astype(np.float32)
    played = []
    for k in range(0, len(x), 256):
        out = np.full((256, 2), 7.0, np.float32)
        assert _call(st, x[k : k + 256].copy(), out) == 0  # paContinue
        played.append(out.copy())
    out = np.concatenate(played)
    lat = eng.latency_samples
    # Nothing was separated: "dry" plays the input itself, exactly `latency` later, on both
    # channels; before the first input position there is silence, and it is not an underrun.
    np.testing.assert_array_equal(out[lat:, 0], x[: len(x) - lat])
    np.testing.assert_array_equal(out[:, 1], out[:, 0])
    np.testing.assert_array_equal(out[:lat], 0)
    assert sink.underrun == len(x) - lat
    assert eng.input.write_pos == len(x)
    assert st.blocks == len(x) // 256 and st.xruns()["events"] == 0


def test_silence_policy_leaves_missing_output_silent():
    eng = _engine("silence")
    sink = eng.add_playback("target")
    st = eng.stream_state(sink, feeds_input=True)
    x = np.ones(4096, np.float32)
    out = np.full(4096, 3.0, np.float32)
    _call(st, x, out)
    np.testing.assert_array_equal(out, 0)


def test_each_callback_with_flags_counts_one_xrun_event():
    eng = _engine()
    st = eng.stream_state(None, feeds_input=True)
    blk = np.zeros(256, np.float32)
    _call(st, blk, None, PA_INPUT_OVERFLOW | PA_OUTPUT_UNDERFLOW)
    _call(st, blk, None, 0)
    _call(st, blk, None, PA_OUTPUT_UNDERFLOW)
    x = st.xruns()
    assert x == {"events": 2, "input_underflow": 0, "input_overflow": 1,
                 "output_underflow": 2, "output_overflow": 0, "missed_cycles": 0,
                 "missed_frames": 0}
    assert eng.all_xruns()["events"] == 2


def test_worker_results_play_and_late_ones_are_counted():
    eng = _engine("silence")
    sink = eng.add_playback("target")
    st = eng.stream_state(sink, feeds_input=True)
    lat = eng.latency_samples
    out = np.zeros(lat + 1000, np.float32)
    _call(st, np.zeros(len(out), np.float32), out)  # ring starts at -lat, reads up to 1000
    sink.write(0, np.full(500, 0.5, np.float32), np.zeros(500, np.float32))  # too late
    sink.write(1000, np.full(500, 0.25, np.float32), np.zeros(500, np.float32))  # in time
    out = np.zeros(1000, np.float32)
    _call(st, np.zeros(1000, np.float32), out)
    np.testing.assert_array_equal(out[:500], 0.25)
    assert sink.ring.late_samples == 500


def test_own_clock_output_starts_at_the_input_position_now():
    eng = _engine()
    st_in = eng.stream_state(None, feeds_input=True)
    sink = eng.add_playback("target", own_clock=True)
    st_out = eng.stream_state(sink, feeds_input=False)
    _call(st_in, np.zeros(SR // 2, np.float32), None)
    _call(st_out, None, np.zeros(256, np.float32))
    start = sink.ring.read_pos - 256
    # the input had delivered SR/2 samples an instant ago
    assert start == pytest.approx(SR // 2 - eng.latency_samples, abs=SR // 100)
    assert st_out.silent_for() is not None and st_out.silent_for() < 1.0


def test_player_output_without_input_counts_underruns_only_before_its_end():
    out = PlayedOutput(SR)
    out.ring.start(0)
    st = StreamState(SR, source=None, feeds_input=False, sink=out)
    out.ring.write_at(0, np.ones(300, np.float32))
    buf = np.zeros(512, np.float32)
    _call(st, None, buf)
    np.testing.assert_array_equal(buf[:300], 1)
    assert out.underrun == 212
    out.set_end(300)
    _call(st, None, buf)
    assert out.underrun == 212  # past the end: the drain, not an underrun


def _timed_call(st, indata, outdata, t, flags=0):
    ti = ffi.new("double[3]", [t, t, t])  # PaStreamCallbackTimeInfo: adc, current, dac
    frames = len(outdata)
    return lib.rt_callback(ffi.from_buffer("float[]", indata),
                           ffi.from_buffer("float[]", outdata), frames, ti, flags, st.c)


def test_a_cycle_the_server_ran_without_us_is_filled_and_alignment_holds():
    """JACK skips a client's cycle at an xrun; the stream time of the callbacks after it says how
    many frames went by (a lasting step over 8 callbacks, unlike a callback that merely ran late).
    They are filled in, so positions stay on the device's clock: apart from the few blocks around
    the gap, the output is still the input delayed by exactly the latency (no lasting shift)."""
    eng = _engine("dry")
    sink = eng.add_playback("target")
    st = eng.stream_state(sink, feeds_input=True, fill_gaps=True, frame_clock=None)
    lat = eng.latency_samples
    x = np.random.default_rng(2).standard_normal(256 * 400).astype(np.float32)
    played = np.full(len(x), np.nan, np.float32)
    jitter = np.random.default_rng(3).uniform(0, 200, 400)  # late wake-ups: not gaps
    for k in range(400):
        if k == 200:
            continue  # the server ran this cycle without us: its input is lost
        out = np.zeros(256, np.float32)
        flags = PA_OUTPUT_UNDERFLOW if k == 201 else 0  # PortAudio flags the one after an xrun
        _timed_call(st, x[256 * k : 256 * (k + 1)].copy(), out, 1.0 + (256 * k + jitter[k]) / SR,
                    flags)
        played[256 * k : 256 * (k + 1)] = out
    assert st.xruns()["missed_cycles"] == 1 and st.xruns()["missed_frames"] == 256
    assert eng.input.write_pos == len(x)  # the input ring kept the device's timeline
    ok = np.ones(len(x), bool)
    ok[:lat] = False
    ok[256 * 200 : 256 * 210] = False  # played until the gap was judged
    ok[256 * 200 + lat : 256 * 201 + lat] = False  # the lost block itself, a latency later
    ref = np.concatenate([np.zeros(lat, np.float32), x[: len(x) - lat]])
    np.testing.assert_array_equal(played[ok], ref[ok])
    # the input blocks that came before the gap was judged were moved to where they belong
    assert not played[256 * 200 + lat : 256 * 201 + lat].any()


def test_late_callbacks_and_drifting_times_are_not_taken_for_missed_cycles():
    eng = _engine()
    st = eng.stream_state(None, feeds_input=True, fill_gaps=True, frame_clock=None)
    jitter = np.random.default_rng(4).uniform(0, 250, 4000)
    for k in range(4000):
        # late wake-ups, a clock running 100 ppm fast, and an xrun flag now and then
        t = 1.0 + (256 * k * (1 + 1e-4) + jitter[k]) / SR
        ti = ffi.new("double[3]", [0.0, t, 0.0])
        lib.rt_callback(ffi.from_buffer("float[]", np.zeros(256, np.float32)), ffi.NULL, 256,
                        ti, PA_INPUT_OVERFLOW if k % 500 == 499 else 0, st.c)
    assert st.xruns()["missed_cycles"] == 0 and eng.input.write_pos == 256 * 4000


class _FrameCounter:
    """JACK's frame counter as rt.c reads it (jack_last_frame_time), set by the test."""

    def __init__(self):
        self.frame = 0
        self.fn = ffi.callback("uint32_t(*)(const void *)", lambda _client: self.frame & 0xFFFFFFFF)


def _run_counted(counter, k_all, skipped, frame_of, time_of, flag_at):
    """``k_all`` callbacks of one duplex stream; ``counter`` None measures on the stream time."""
    eng = _engine("dry")
    sink = eng.add_playback("target")
    st = eng.stream_state(sink, feeds_input=True, fill_gaps=True,
                          frame_clock=None if counter is None else counter.fn)
    x = np.random.default_rng(7).standard_normal(256 * k_all).astype(np.float32)
    played = np.full(len(x), np.nan, np.float32)
    for k in range(k_all):
        if k in skipped:
            continue
        if counter is not None:
            counter.frame = frame_of(k)
        out = np.zeros(256, np.float32)
        _timed_call(st, x[256 * k : 256 * (k + 1)].copy(), out, time_of(k),
                    PA_OUTPUT_UNDERFLOW if k in flag_at else 0)
        played[256 * k : 256 * (k + 1)] = out
    ref = np.concatenate([np.zeros(eng.latency_samples, np.float32),
                          x[: len(x) - eng.latency_samples]])
    return st, eng, played, ref


def test_with_jacks_frame_counter_a_late_server_is_not_a_missed_cycle():
    """The server itself ran late (its timer woke 14 ms late; the host stole its CPU): every
    client still gets every cycle, but PortAudio's stream time, interpolated through JACK's time
    filter, is ahead by the delay from then on, and an xrun is flagged. Measured on the stream
    time, that was a missed cycle: input zeros put in and output skipped, a period of audio lost
    and the output out of line for a latency. The frame counter says nothing is missing."""
    counter = _FrameCounter()
    late = lambda k: 1.0 + (256 * k + (700 if k >= 200 else 0)) / SR  # noqa: E731
    st, eng, played, ref = _run_counted(counter, 400, (), lambda k: 4096 + 256 * k,
                                        late, {201})
    assert st.xruns()["missed_cycles"] == 0 and st.xruns()["events"] == 1
    lat = eng.latency_samples
    np.testing.assert_array_equal(played[lat:], ref[lat:])  # every sample, no block lost
    st_time, *_ = _run_counted(None, 400, (), lambda k: 4096 + 256 * k, late, {201})
    assert st_time.xruns()["missed_cycles"] == 1  # what the stream time alone made of it


def test_with_jacks_frame_counter_a_missed_cycle_is_filled_though_its_flag_comes_late():
    """The server ran cycle 200 without us; JACK's xrun notification reaches PortAudio from
    another thread, here ten callbacks late, by when the step was already in the floor the
    stream time is judged against, so the cycle was never filled. The frame counter shows the
    step at once. Callbacks that read the counter of the next cycle (they ran after it began)
    are not taken for gaps. The frame counter wraps at 2^32 in the middle of it."""
    counter = _FrameCounter()
    ahead = {50, 51, 120, 300}  # these callbacks read the next cycle's first frame
    base = 2**32 - 256 * 100

    def frame(k):
        return base + 256 * k + (256 if k in ahead else 0)

    st, eng, played, ref = _run_counted(counter, 400, {200}, frame,
                                        lambda k: 1.0 + 256 * k / SR, {211})
    assert st.xruns()["missed_cycles"] == 1 and st.xruns()["missed_frames"] == 256
    assert eng.input.write_pos == 256 * 400  # the input ring kept the device's timeline
    lat = eng.latency_samples
    ok = np.ones(len(ref), bool)
    ok[:lat] = False
    ok[256 * 200 : 256 * 210] = False  # played until the gap was judged
    ok[256 * 200 + lat : 256 * 201 + lat] = False  # the lost block, a latency later: silence
    np.testing.assert_array_equal(played[ok], ref[ok])
    assert not played[256 * 200 + lat : 256 * 201 + lat].any()
    st_time, *_ = _run_counted(None, 400, {200}, frame,
                               lambda k: 1.0 + 256 * k / SR, {211})
    assert st_time.xruns()["missed_cycles"] == 0  # the stream time judged too late: unfilled


def test_the_jack_frame_counter_is_used_only_from_jack2():
    """jack2's jack_last_frame_time reads the server's shared memory whatever its argument;
    JACK1's and PipeWire's dereference the client handle, which PortAudio does not share."""
    import ctypes
    import ctypes.util

    import sounddevice  # noqa: F401  (loads PortAudio, and with it a libjack if it links one)

    fn = lib.rt_jack_frame_clock()
    name = ctypes.util.find_library("jack")
    if name is None:
        assert fn == ffi.NULL
        return
    jack = ctypes.CDLL(name, mode=getattr(ctypes, "RTLD_NOLOAD", 4))
    jack.jack_get_version_string.restype = ctypes.c_char_p
    assert (fn != ffi.NULL) == jack.jack_get_version_string().startswith(b"1.9.")
