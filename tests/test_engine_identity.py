"""The engine with deterministic separators: exact output, exact latency, file mode length."""

import numpy as np
import pytest
import soundfile as sf
from engine_sim import Collect, Duplex

from streamsep.engine.engine import Engine, FileSink
from streamsep.engine.offline import run_fast, run_file
from streamsep.engine.plan import WindowPlan
from streamsep.separators.simple import Passthrough, Silence

SR, HOP = 48000, 1920


PLANS = [  # (window, hop, lookahead, crossfade) in latent frames
    (25, 5, 2, 1),
    (250, 50, 25, 10),  # the defaults
    (10, 10, 0, 0),  # no overlap at all
    (12, 3, 0, 3),  # crossfade as long as the hop
    (40, 1, 3, 1),  # one-frame hop
]


def _plan(w, h, r, x):
    return WindowPlan(SR, HOP, w, h, r, x)


def _signal(n, seed=0):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


@pytest.mark.parametrize("frames", PLANS)
def test_fast_mode_identity_is_bit_exact_and_latency_compensated(frames):
    plan = _plan(*frames)
    x = _signal(plan.window * 2 + 12345)
    eng = Engine(Passthrough(), plan, skip_ahead=False)
    tgt, res = Collect(), Collect()
    eng.add_sink(FileSink(tgt, "target"))
    eng.add_sink(FileSink(res, "residual"))
    n = run_fast(eng, (x[i : i + 7000] for i in range(0, len(x), 7000)), "speech")
    assert n == len(x)
    np.testing.assert_array_equal(tgt.data, x)
    np.testing.assert_array_equal(res.data, 0)


@pytest.mark.parametrize("frames", PLANS[:3])
def test_live_path_plays_input_delayed_by_exactly_the_reported_latency(frames):
    plan = _plan(*frames)
    budget = 4800
    eng = Engine(Passthrough(), plan, budget=budget)
    eng.add_playback("target")
    x = _signal(plan.window * 3)
    dev = Duplex(eng, x)
    while not dev.done:
        dev.advance(480)
        while eng.worker.step():
            pass
    assert eng.latency_samples == plan.hop + plan.lookahead + plan.crossfade + budget
    assert eng.latency()["total_s"] == pytest.approx(eng.latency_samples / SR)
    # dev.played is indexed by input position: output == input shifted by latency_samples.
    np.testing.assert_array_equal(dev.played["target"], x)
    assert eng.counters()["underrun_s"] == 0 and eng.counters()["dropped_windows"] == 0


def test_file_mode_output_has_input_length_and_rate(tmp_path):
    sr_in = 44100
    t = np.arange(int(2.3 * sr_in) + 7) / sr_in
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    stereo = np.stack([x, x], axis=1)
    src = tmp_path / "in.flac"
    sf.write(src, stereo, sr_in)
    plan = WindowPlan.from_seconds(SR, HOP, 2.0, 0.4, 0.2, 0.08)
    out, res = tmp_path / "out.wav", tmp_path / "res.wav"
    run_file(Passthrough(), plan, str(src), str(out), prompt="x", residual_path=str(res),
             channels="mono")  # the downmix path; channels="keep" is in test_file_batch.py
    y, sr = sf.read(out, dtype="float32")
    r, _ = sf.read(res, dtype="float32")
    assert sr == sr_in and y.ndim == 1 and len(y) == len(x) == len(r)
    ref, _ = sf.read(src, dtype="float32")
    # 440 Hz survives the 44.1 -> 48 -> 44.1 kHz round trip; alignment is sample-exact
    mid = slice(1000, len(x) - 1000)
    np.testing.assert_allclose(y[mid], ref[mid, 0], atol=2e-3)
    np.testing.assert_array_equal(r, 0)


def test_file_mode_realtime_matches_fast_mode_for_identity(tmp_path):
    x = _signal(int(1.5 * SR)) * 0.1
    src = tmp_path / "in.wav"
    sf.write(src, x, SR, subtype="FLOAT")
    plan = WindowPlan.from_seconds(SR, HOP, 0.4, 0.08, 0.04, 0.04)
    out = tmp_path / "out.wav"
    # the deterministic separator never overloads, so every sample comes from a window
    run_file(Silence(), plan, str(src), str(out), prompt="x", realtime=True, budget=9600,
             residual_path=str(tmp_path / "res.wav"))
    y, _ = sf.read(out, dtype="float32")
    r, _ = sf.read(tmp_path / "res.wav", dtype="float32")
    assert len(y) == len(r) == len(x)
    np.testing.assert_array_equal(y, 0)
    np.testing.assert_array_equal(r, x)


class PromptGain(Passthrough):
    """target = gain(prompt) * input: which prompt produced a sample is visible in the output."""

    GAIN = {"a": 1.0, "b": 2.0}

    def __init__(self):
        super().__init__()
        self.calls = []

    def separate(self, window, noise=None, anchors=None):
        self.calls.append(self.prompt)
        w = np.asarray(window, np.float32)
        return w * self.GAIN[self.prompt], w * (1 - self.GAIN[self.prompt])


def test_prompt_change_takes_effect_at_the_next_window_with_a_crossfade():
    plan = _plan(25, 5, 2, 2)
    sep = PromptGain()
    eng = Engine(sep, plan, skip_ahead=False)
    tgt = Collect()
    eng.add_sink(FileSink(tgt, "target"))
    x = np.ones(plan.window * 2, np.float32)
    eng.begin("a")
    eng.feed(x[: plan.first_end + 3 * plan.hop])
    for _ in range(4):
        assert eng.worker.step()
    eng.set_prompt("b")  # windows 0..3 ran with "a"
    eng.feed(x[plan.first_end + 3 * plan.hop :])
    while eng.worker.step():
        pass
    assert sep.calls[:4] == ["a"] * 4 and set(sep.calls[4:]) == {"b"}
    y = tgt.data
    s4 = plan.emit_start(plan.first_end + 4 * plan.hop)  # first sample of window 4
    np.testing.assert_array_equal(y[:s4], 1.0)  # everything before window 4: old prompt
    fade = y[s4 : s4 + plan.crossfade]
    assert np.all(np.diff(fade) > 0) and 1.0 <= fade[0] < 1.01 and 1.99 < fade[-1] <= 2.0
    np.testing.assert_array_equal(y[s4 + plan.crossfade :], 2.0)


class NoiseRecorder(Passthrough):
    noise_channels = 6

    def __init__(self):
        super().__init__()
        self.noises = []

    def separate(self, window, noise=None, anchors=None):
        self.noises.append(np.array(noise))
        return super().separate(window)


def test_overlapping_windows_receive_identical_noise_on_shared_frames():
    plan = _plan(25, 5, 2, 1)
    sep = NoiseRecorder()
    eng = Engine(sep, plan, seed=3, skip_ahead=False)
    x = _signal(plan.window * 3)
    run_fast(eng, [x], "x")
    first = [plan.first_end // HOP + k * plan.hop_frames - plan.window_frames
             for k in range(len(sep.noises))]
    assert len(sep.noises) > 6
    for i in range(len(sep.noises)):
        for j in range(i + 1, len(sep.noises)):
            lo = max(first[i], first[j])
            hi = min(first[i], first[j]) + plan.window_frames
            if hi > lo:
                a = sep.noises[i][lo - first[i] : hi - first[i]]
                b = sep.noises[j][lo - first[j] : hi - first[j]]
                np.testing.assert_array_equal(a, b)
    assert not np.array_equal(sep.noises[0], sep.noises[1])


class _Windowed:
    """Output depends on the whole window (a running mean), so a wrong slice shows."""

    sample_rate, frame_hop, noise_channels = SR, HOP, 0

    def set_prompt(self, text):
        pass

    def separate(self, window, noise=None, anchors=None):
        t = np.cumsum(window) / (1 + np.arange(len(window)))
        return t.astype(np.float32), (window - t).astype(np.float32)


class _Region(_Windowed):
    def __init__(self):
        self.starts = []

    def separate_region(self, window, noise, anchors, *, start, emit):
        self.starts.append(start)
        t, r = self.separate(window)
        return t[emit], r[emit]


@pytest.mark.parametrize("frames", PLANS[:2])
def test_region_separator_gets_stream_positions_and_matches_whole_window_path(frames):
    plan = _plan(*frames)
    x = _signal(plan.window * 2 + 777)
    outs = []
    for sep in (_Windowed(), _Region()):
        eng = Engine(sep, plan, skip_ahead=False)
        tgt = Collect()
        eng.add_sink(FileSink(tgt, "target"))
        run_fast(eng, (x[i : i + 5000] for i in range(0, len(x), 5000)), "speech")
        outs.append(tgt.data)
    np.testing.assert_array_equal(outs[0], outs[1])
    starts = np.asarray(sep.starts)
    assert starts[0] == plan.first_end - plan.window  # the padded first window starts before 0
    assert (np.diff(starts) == plan.hop).all()


def test_region_separator_returning_a_whole_window_is_an_invalid_window():
    class Wrong(_Region):
        def separate_region(self, window, noise, anchors, *, start, emit):
            return self.separate(window)

    plan = _plan(25, 5, 2, 1)
    x = _signal(plan.window * 2)
    eng = Engine(Wrong(), plan, skip_ahead=False)
    tgt = Collect()
    eng.add_sink(FileSink(tgt, "target"))
    run_fast(eng, (x[i : i + 5000] for i in range(0, len(x), 5000)), "speech")
    assert eng.worker.counters.invalid_windows > 0
    np.testing.assert_array_equal(tgt.data, x)  # the dry policy, exactly
