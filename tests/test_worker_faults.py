"""Separator faults and prompt changes in the worker, driven by hand (no threads, no clock).

A separator that raises, stalls or returns broken output on some windows must never stop the
stream or reach a sink: those windows play the overload policy, are counted and warned about.
Prompt changes are encoded while the worker idles and never count in a window's compute.
"""

import io
import sys
import threading
import time

import numpy as np
import pytest
from conftest import ROOT
from engine_sim import Duplex

from streamsep.engine.engine import Engine
from streamsep.engine.metrics import Metrics
from streamsep.engine.plan import WindowPlan
from streamsep.engine.ring import HistoryRing
from streamsep.engine.worker import PROMPT_MAX_WAIT_WINDOWS, SeparatorError, Worker
from streamsep.separators.base import ModelError, check_prompt_text
from streamsep.separators.simple import Passthrough

sys.path.insert(0, str(ROOT / "tests" / "plugins"))
from corrupt import MODES, Corrupt  # noqa: E402
from faulty import Raising, Stalling  # noqa: E402

SR, HOP = 48000, 1920
FRAMES = (25, 5, 2, 1)  # W 1 s, H 0.2 s, R 0.08 s, X 0.04 s


class Out:
    """A sink that places every emitted sample at its input position."""

    def __init__(self, n):
        self.t = np.full(n, np.nan, np.float32)
        self.r = np.full(n, np.nan, np.float32)

    def write(self, pos, target, residual):
        a, b = max(pos, 0), min(pos + len(target), len(self.t))
        if b > a:
            self.t[a:b] = target[a - pos : b - pos]
            self.r[a:b] = residual[a - pos : b - pos]


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _setup(sep, n, overload="dry", **kw):
    plan = WindowPlan(SR, HOP, *FRAMES)
    ring = HistoryRing(n + plan.window + SR)
    out = Out(n)
    w = Worker(sep, plan, ring, [out], overload=overload, skip_ahead=False, **kw)
    warnings = []
    w.on_warning = lambda key, text: warnings.append((key, text))
    return plan, ring, w, out, warnings


def _drive(w, ring, x, block=HOP):
    for i in range(0, len(x), block):
        ring.write(x[i : i + block])
        while w.step():
            pass
    w.finish(len(x))
    while w.step():
        pass


def _signal(seconds=3.0):
    return np.random.default_rng(0).uniform(-0.5, 0.5, int(seconds * SR)).astype(np.float32)


# -- a separator that raises --------------------------------------------------------------------
def test_windows_that_raise_play_dry_and_the_run_goes_on():
    x = _signal()
    sep = Raising(windows="3,5-7", exc=RuntimeError)
    plan, ring, w, out, warnings = _setup(sep, len(x))
    w.set_prompt("x")
    _drive(w, ring, x)
    # a passthrough, and the dry input where it failed, crossfaded: exactly the input
    np.testing.assert_array_equal(out.t, x)
    np.testing.assert_array_equal(out.r, 0)
    assert w.counters.failed_windows == 4 and w.index == sep.calls
    assert w.error is None
    keys = {k for k, _ in warnings}
    assert keys == {"separator-error"}
    first = warnings[0][1]
    assert first.startswith("window 3 at 0.6 s: the separator raised RuntimeError: injected "
                            "fault on window 3 (at faulty.py line")
    assert "played dry" in first and "failed windows so far: 1" in first


def test_windows_that_raise_play_silence_under_the_silence_policy():
    x = _signal()
    sep = Raising(windows=[4])
    plan, ring, w, out, _ = _setup(sep, len(x), overload="silence")
    w.set_prompt("x")
    _drive(w, ring, x)
    s4 = plan.emit_start(plan.first_end + 4 * plan.hop)
    x_ = plan.crossfade
    body = slice(s4 + x_, s4 + plan.hop)  # window 4's own stretch, past the crossfades
    np.testing.assert_array_equal(out.t[body], 0)
    np.testing.assert_array_equal(out.r[body], 0)
    # the crossfades into and out of the silent stretch only ever attenuate
    for fade in (slice(s4, s4 + x_), slice(s4 + plan.hop, s4 + plan.hop + x_)):
        assert np.all(np.abs(out.t[fade]) <= np.abs(x[fade]) + 1e-7)
    outside = np.ones(len(x), bool)
    outside[s4 : s4 + plan.hop + x_] = False
    np.testing.assert_array_equal(out.t[outside], x[outside])


def test_the_warning_is_rate_limited_by_metrics():
    x = _signal()
    status = io.StringIO()
    m = Metrics(status=status, warn_cooldown_s=60.0)
    plan, ring, w, out, _ = _setup(Raising(windows="2-9"), len(x))
    w.on_warning = m.warn
    w.set_prompt("x")
    _drive(w, ring, x)
    assert w.counters.failed_windows == 8
    assert status.getvalue().count("warning: ") == 1


def test_failing_on_every_window_for_10_s_ends_the_run_with_a_separator_error():
    x = _signal(12.0)
    plan, ring, w, out, _ = _setup(Raising(message="bad weights"), len(x))
    w.set_prompt("x")
    with pytest.raises(SeparatorError) as e:
        _drive(w, ring, x)
    windows = round(10.0 / plan.seconds(plan.hop))  # 50 windows of 0.2 s
    assert w.counters.failed_windows == windows == w.index
    msg = str(e.value)
    assert msg.startswith("the separator failed on every window for 10 s (ValueError: bad "
                          f"weights on window {windows - 1} (at faulty.py line")
    assert msg.endswith("): fix the model or use --model passthrough") and "\n" not in msg
    assert isinstance(e.value, ModelError)  # the CLI prints ModelErrors as one line
    # everything emitted until then is the dry input, aligned
    done = ~np.isnan(out.t)
    assert done.sum() > 9 * SR
    np.testing.assert_array_equal(out.t[done], x[done])


def test_the_thread_body_stores_the_separator_error():
    x = _signal(3.0)
    plan, ring, w, out, _ = _setup(Raising(), len(x), fail_limit_s=1.0)
    w.set_prompt("x")
    ring.write(x)
    w.finish(len(x))
    stop = threading.Event()
    w.run(stop, poll_s=0.001)  # returns once the error has set stop
    assert stop.is_set() and isinstance(w.error, SeparatorError)
    assert "every window for 1 s" in str(w.error)


def test_one_good_window_restarts_the_count():
    x = _signal(16.0)
    good = {30, 60}  # 0.2 s hops: never 10 s of failures in a row
    plan, ring, w, out, _ = _setup(Raising(windows=set(range(200)) - good), len(x))
    w.set_prompt("x")
    _drive(w, ring, x)
    assert w.error is None and w.counters.failed_windows == w.index - len(good) > 50
    np.testing.assert_array_equal(out.t, x)


# -- broken output ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", sorted(MODES))
def test_broken_output_is_counted_replaced_and_never_emitted(mode):
    x = _signal()
    plan, ring, w, out, warnings = _setup(Corrupt(mode, windows="2-4"), len(x))
    w.set_prompt("x")
    _drive(w, ring, x)
    np.testing.assert_array_equal(out.t, x)  # nothing broken reached the sink
    np.testing.assert_array_equal(out.r, 0)
    c = w.counters
    if MODES[mode]:  # (N, 1), (1, N) and float64 are fine
        assert c.invalid_windows == c.nonfinite_windows == 0 and not warnings
        return
    kind = "nonfinite_windows" if mode in ("nan", "inf") else "invalid_windows"
    assert getattr(c, kind) == 3 and c.failed_windows == 0
    assert c.invalid_windows + c.nonfinite_windows == 3
    assert warnings and warnings[0][0] == "separator-output"
    assert warnings[0][1].startswith("window 2 at 0.4 s: the separator returned ")


def test_output_problems_are_named():
    x = _signal(1.0)
    seen = {}
    for mode in ("short", "int16", "stereo", "nan", "none"):
        _, ring, w, _, warnings = _setup(Corrupt(mode, windows=[0]), len(x))
        w.set_prompt("x")
        _drive(w, ring, x)
        seen[mode] = warnings[0][1]
    assert "a target of 24000 samples for a window of 48000" in seen["short"]
    assert "a target of dtype int16 (use float32)" in seen["int16"]
    assert "a target of shape (2, 48000) (want (48000,), mono)" in seen["stereo"]
    assert "NaN or Inf samples" in seen["nan"]
    assert "a NoneType, not a (target, residual) pair" in seen["none"]


def test_invalid_output_on_every_window_ends_the_run_but_nan_does_not():
    x = _signal(12.0)
    _, ring, w, _, _ = _setup(Corrupt("short"), len(x))
    w.set_prompt("x")
    with pytest.raises(SeparatorError, match="returned unusable output on every window for 10 s"):
        _drive(w, ring, x)
    # NaN may depend on the audio (a muted input): it is replaced for as long as it lasts
    _, ring, w, out, _ = _setup(Corrupt("nan"), len(x))
    w.set_prompt("x")
    _drive(w, ring, x)
    assert w.counters.nonfinite_windows == w.index > 50
    np.testing.assert_array_equal(out.t, x)


# -- a separator that stalls (on the simulated live path) -------------------------------------
def test_a_stall_skips_windows_and_keeps_the_output_aligned():
    plan = WindowPlan(SR, HOP, *FRAMES)
    dev = None
    # a 1.5 s stall on window 6 moves the simulated world on while the worker is stuck
    sep = Stalling(after=6, seconds=1.5, sleep=lambda s: dev.advance(int(s * SR)))
    eng = Engine(sep, plan, budget=plan.hop, overload="dry")
    eng.add_playback("target")
    x = _signal(6.0)
    dev = Duplex(eng, x)
    eng.begin("x")
    while not dev.done:
        dev.advance(480)
        while not dev.done and eng.worker.ready():
            eng.worker.step()
    np.testing.assert_array_equal(dev.played["target"], x)  # dry everywhere it could not run
    c = eng.counters()
    assert c["dropped_windows"] >= 6 and c["underrun_s"] > 0
    assert eng.worker.error is None


# -- prompts ------------------------------------------------------------------------------------
class Staged(Passthrough):
    """target = gain(prompt) * input; encoding a prompt costs 0.5 s of the fake clock."""

    GAIN = {"a": 1.0, "b": 2.0, "c": 3.0}

    def __init__(self, clock):
        super().__init__()
        self.clock = clock
        self.log = []
        self.gain = None

    def prepare_prompt(self, text):
        self.log.append(("prepare", text))
        self.clock.t += 0.5
        if text not in self.GAIN:
            raise ValueError(f"unknown sound {text!r}")
        return self.GAIN[text]

    def apply_prompt(self, gain):
        self.log.append(("apply", gain))
        self.gain = gain

    def set_prompt(self, text):  # never used while the staged pair exists
        raise AssertionError("set_prompt called on a staged separator")

    def separate(self, window, noise=None, anchors=None):
        self.log.append(("separate", self.gain))
        self.clock.t += 0.01
        w = np.asarray(window, np.float32)
        return w * self.gain, w * (1 - self.gain)


def _prompt_worker(sep, clock, **kw):
    plan = WindowPlan(SR, HOP, *FRAMES)
    ring = HistoryRing(20 * SR)
    w = Worker(sep, plan, ring, [], skip_ahead=True, clock=clock, **kw)
    infos, warnings = [], []
    w.on_window = infos.append
    w.on_warning = lambda key, text: warnings.append((key, text))
    return plan, ring, w, infos, warnings


def test_a_new_prompt_is_encoded_while_idle_and_applied_at_the_next_window():
    clock = Clock()
    sep = Staged(clock)
    plan, ring, w, infos, _ = _prompt_worker(sep, clock)
    w.set_prompt("a")
    ring.write(np.ones(plan.first_end, np.float32))
    assert w.step() and not w.step()
    sep.log.clear()
    w.set_prompt("b")
    assert not w.step()  # no window waiting: the worker encodes now
    assert sep.log == [("prepare", "b")]
    ring.write(np.ones(plan.hop, np.float32))
    assert w.step()
    assert sep.log == [("prepare", "b"), ("apply", 2.0), ("separate", 2.0)]
    assert w.compute_history[-1] == pytest.approx(0.01)  # not 0.51: encoding is not compute
    assert infos[-1]["prompt"] == "b" and infos[-1]["prompt_changed"]
    assert infos[0]["prompt"] == "a" and not infos[0]["prompt_changed"]


def test_with_a_deadline_a_waiting_window_runs_first_and_the_prompt_follows():
    clock = Clock()
    sep = Staged(clock)
    plan, ring, w, infos, _ = _prompt_worker(sep, clock, budget=int(0.1 * SR))
    w.set_prompt("a")  # the first prompt is encoded before the first window, whatever it costs
    ring.write(np.ones(plan.first_end, np.float32))
    assert w.step() and not w.step()
    sep.log.clear()
    ring.write(np.ones(plan.hop, np.float32))
    w.set_prompt("b")  # arrives just as a window is complete: 0.5 s to encode > 0.1 s budget
    assert w.step()
    assert sep.log == [("separate", 1.0)]
    assert not w.step()  # idle now: encode
    ring.write(np.ones(plan.hop, np.float32))
    assert w.step()
    assert sep.log[1:] == [("prepare", "b"), ("apply", 2.0), ("separate", 2.0)]


def test_a_worker_that_never_idles_still_switches_after_a_few_windows():
    clock = Clock()
    sep = Staged(clock)
    plan, ring, w, infos, _ = _prompt_worker(sep, clock, budget=int(0.1 * SR))
    w.skip_ahead = False  # always a window waiting, never idle
    w.set_prompt("a")
    ring.write(np.ones(plan.first_end + 10 * plan.hop, np.float32))
    assert w.step()
    w.set_prompt("b")
    for _ in range(PROMPT_MAX_WAIT_WINDOWS + 1):
        assert w.step()
    gains = [g for ev, g in sep.log if ev == "separate"]
    assert gains == [1.0] * (1 + PROMPT_MAX_WAIT_WINDOWS) + [2.0]


def test_set_prompt_is_the_fallback_and_runs_while_idle():
    clock = Clock()

    class Plain(Passthrough):
        def set_prompt(self, text):
            clock.t += 0.3
            super().set_prompt(text)

        def separate(self, window, noise=None, anchors=None):
            clock.t += 0.02
            return super().separate(window)

    sep = Plain()
    plan, ring, w, infos, _ = _prompt_worker(sep, clock)
    w.set_prompt("a")
    ring.write(np.ones(plan.first_end, np.float32))
    assert w.step() and not w.step()
    w.set_prompt("b")
    assert not w.step() and sep.prompt == "b"
    ring.write(np.ones(plan.hop, np.float32))
    assert w.step() and infos[-1]["prompt"] == "b" and infos[-1]["prompt_changed"]
    assert w.compute_history == pytest.approx([0.02, 0.02])


def test_switching_back_before_the_new_prompt_applied_keeps_the_old_one():
    clock = Clock()
    sep = Staged(clock)
    plan, ring, w, infos, _ = _prompt_worker(sep, clock)
    w.set_prompt("a")
    ring.write(np.ones(plan.first_end, np.float32))
    assert w.step()
    w.set_prompt("b")
    assert not w.step()
    w.set_prompt("a")
    assert not w.step()
    ring.write(np.ones(plan.hop, np.float32))
    assert w.step()
    assert sep.log[-1] == ("separate", 1.0) and not infos[-1]["prompt_changed"]


def test_refused_prompts_keep_the_current_one_and_do_not_end_the_run():
    clock = Clock()
    sep = Staged(clock)
    plan, ring, w, infos, warnings = _prompt_worker(sep, clock)
    w.set_prompt("a")
    ring.write(np.ones(plan.first_end, np.float32))
    assert w.step()
    w.set_prompt("zebra")  # the model refuses it
    assert not w.step()
    w.set_prompt("sp\x1b[Aeech")  # an arrow key: refused before it reaches the model
    assert not w.step()
    ring.write(np.ones(plan.hop, np.float32))
    assert w.step() and w.prompt == "a" and sep.log[-1] == ("separate", 1.0)
    assert [k for k, _ in warnings] == ["prompt", "prompt"]
    assert "prompt 'zebra' rejected (unknown sound 'zebra'); keeping 'a'" in warnings[0][1]
    assert "control character U+001B" in warnings[1][1] and "keeping 'a'" in warnings[1][1]
    assert ("prepare", "sp\x1b[Aeech") not in sep.log


def test_a_refused_first_prompt_raises():
    clock = Clock()
    plan, ring, w, _, _ = _prompt_worker(Staged(clock), clock)
    w.set_prompt("zebra")
    ring.write(np.ones(plan.first_end, np.float32))
    with pytest.raises(ValueError, match="unknown sound"):
        w.step()


def test_all_model_calls_stay_on_the_worker_thread():
    threads = set()

    class Recorder(Passthrough):
        def prepare_prompt(self, text):
            threads.add(("prepare", threading.get_ident()))
            return text

        def apply_prompt(self, text):
            threads.add(("apply", threading.get_ident()))
            self.prompt = text

        def separate(self, window, noise=None, anchors=None):
            threads.add(("separate", threading.get_ident()))
            return super().separate(window)

    plan = WindowPlan(SR, HOP, *FRAMES)
    ring = HistoryRing(20 * SR)
    w = Worker(Recorder(), plan, ring, [])
    w.set_prompt("a")
    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(stop,), kwargs={"poll_s": 0.001})
    t.start()
    try:
        ring.write(np.ones(plan.first_end + plan.hop, np.float32))
        w.set_prompt("b")  # from this (the main) thread
        deadline = time.monotonic() + 20
        while w.prompt != "b" and time.monotonic() < deadline:
            ring.write(np.ones(plan.hop, np.float32))
            time.sleep(0.01)
    finally:
        stop.set()
        t.join()
    assert w.prompt == "b" and w.error is None
    assert {name for name, _ in threads} == {"prepare", "apply", "separate"}
    assert {ident for _, ident in threads} == {t.ident}


@pytest.mark.parametrize("text, needle", [
    ("speech", None), ("a dog barking", None), ("café au lait", None), ("鳥の声 🐦", None),
    ("piano\tand violin", None),
    ("", "empty"), ("   ", "empty"),
    ("spe\udcffech", "not valid UTF-8"), ("spe\ufffdech", "not valid UTF-8"),
    ("\x1b[A", "U+001B"), ("speech\x00", "U+0000"), ("a\x7fb", "U+007F"), ("a\x85b", "U+0085"),
    ("x" * 501, "501 characters"),
])
def test_check_prompt_text(text, needle):
    got = check_prompt_text(text)
    if needle is None:
        assert got is None
    else:
        assert got is not None and needle in got and got.startswith("prompt refused: ")
        assert "\n" not in got
