"""A separator slower than real time: latency stays fixed, skips are counted, audio stays aligned.

Time is simulated: the slow separator advances the simulated duplex device by its "compute time"
while it runs, so the test is deterministic and takes no wall-clock time.
"""

import time

import numpy as np
import pytest
from engine_sim import Duplex

from streamsep.engine.engine import Engine
from streamsep.engine.plan import WindowPlan
from streamsep.separators.simple import Passthrough

SR, HOP = 48000, 1920


class SlowPassthrough(Passthrough):
    def __init__(self, cost):
        super().__init__()
        self.cost = cost
        self.device = None
        self.ends = []

    def separate(self, window, noise=None, anchors=None):
        self.device.advance(self.cost)  # the world moves on while we compute
        return super().separate(window)


def _run(policy, cost_hops, seconds=40.0, budget_hops=1.0):
    plan = WindowPlan(SR, HOP, 25, 5, 2, 1)  # W 1 s, H 0.2 s
    sep = SlowPassthrough(int(cost_hops * plan.hop))
    eng = Engine(sep, plan, budget=int(budget_hops * plan.hop), overload=policy)
    eng.add_playback("target")
    x = np.random.default_rng(0).standard_normal(int(seconds * SR)).astype(np.float32)
    dev = Duplex(eng, x)
    sep.device = dev
    ends = []
    while not dev.done:
        dev.advance(480)
        while not dev.done and eng.worker.ready():
            end = eng.worker.next_end
            w_in = eng.input.write_pos
            eng.worker.step()
            ends.append((end, w_in, eng.worker.next_end))
    return plan, eng, x, dev, ends


@pytest.mark.parametrize("cost_hops", [1.7, 3.2])
def test_dry_policy_keeps_output_aligned_with_constant_latency(cost_hops):
    plan, eng, x, dev, _ = _run("dry", cost_hops)
    # Identity output, dry fallback and dry underrun fill are all the input itself, so the played
    # stream must be the input delayed by exactly the reported latency, from start to end.
    np.testing.assert_array_equal(dev.played["target"], x)
    c = eng.counters()
    assert c["dropped_windows"] > 0
    assert c["dropped_s"] == pytest.approx(c["dropped_windows"] * plan.seconds(plan.hop))
    # about (1 - 1/cost) of the audio cannot be separated; most of it must be skipped, not late
    total = len(x) / SR
    assert c["dropped_s"] + c["underrun_s"] >= 0.5 * (1 - 1 / cost_hops) * total


def test_silence_policy_emits_only_aligned_input_or_silence_and_counts_drops():
    plan, eng, x, dev, ends = _run("silence", 2.5, budget_hops=3.0)
    y = dev.played["target"]
    exact = y == x
    silent = y == 0
    # every output sample is either the input at exactly the reported delay, a crossfade into or
    # out of silence (|y| <= |x|, same sign), or silence: nothing plays late or early
    fade = ~exact & ~silent
    assert np.all(np.abs(y[fade]) <= np.abs(x[fade]) + 1e-6)
    assert np.all(np.sign(y[fade]) == np.sign(x[fade]))
    assert exact.mean() > 0.2 and silent.mean() > 0.2
    c = eng.counters()
    assert c["dropped_windows"] > 10
    assert c["late_s"] == 0  # budget > compute: every separated window arrived in time
    # after each skip the worker separated the newest complete window (never stale audio)
    for end, w_in, _ in ends:
        assert end <= w_in + plan.hop
    # latency never drifts: the reported total is the same in every window's metrics
    assert eng.latency()["total_s"] == pytest.approx(eng.latency_samples / SR)


def test_skip_ahead_picks_the_newest_complete_window():
    plan, eng, x, dev, ends = _run("dry", 3.2, seconds=10.0)
    skipped = [(end, w_in, nxt) for end, w_in, nxt in ends if nxt - end > plan.hop]
    assert skipped
    for _end, w_in, nxt in skipped:
        processed = nxt - plan.hop
        assert processed <= w_in < processed + plan.hop


def test_a_budget_shorter_than_compute_plays_the_fallback_and_counts_late_results():
    plan, eng, x, dev, _ = _run("silence", 1.5, seconds=10.0, budget_hops=1.0)
    c = eng.counters()
    assert c["late_s"] > 0 and c["underrun_s"] > 0
    y = dev.played["target"]
    assert np.all((y == x) | (np.abs(y) <= np.abs(x) + 1e-6))


def test_auto_budget_grows_with_compute_but_stays_within_reason():
    from streamsep.engine.engine import auto_budget

    plan = WindowPlan.from_seconds(SR, HOP)  # hop 2 s
    assert auto_budget(plan, 0.0) == int(0.1 * SR)
    assert auto_budget(plan, 0.5) == SR  # 2x compute
    assert auto_budget(plan, 1.5) == 2 * SR  # capped at the hop
    assert auto_budget(plan, 4.0) == 5 * SR  # slower than real time: 1.25x compute


def test_warm_up_times_real_work_not_silence():
    """Separators may skip silent frames (the embedded one does); the warm-up that sets the
    budget must hand them full windows of signal, or it measures nothing."""
    from streamsep.engine.engine import warm_up

    seen = []

    class Recorder(Passthrough):
        def separate(self, window, noise=None, anchors=None):
            seen.append((window.size, int(np.count_nonzero(window))))
            return super().separate(window)

    plan = WindowPlan.from_seconds(SR, HOP)
    warm_up(Recorder(), plan)
    assert seen and all(size == nz == plan.window for size, nz in seen)


def test_warm_up_returns_the_slowest_steady_window_and_drives_region_separators_in_order():
    from streamsep.engine.engine import warm_up

    class Timed(Passthrough):
        def __init__(self, delays):
            self.delays, self.starts = list(delays), []

        def separate_region(self, window, noise, anchors, *, start, emit):
            self.starts.append(start)
            time.sleep(self.delays.pop(0) if self.delays else 0.0)
            return window[emit], np.zeros(emit.stop - emit.start, np.float32)

    plan = WindowPlan.from_seconds(SR, HOP)
    sep = Timed([0.3, 0.01, 0.12, 0.01])  # the first (compiling) window does not count
    t = warm_up(sep, plan, settle_s=0.2)
    assert 0.12 <= t < 0.3
    assert sep.starts == [i * plan.hop for i in range(len(sep.starts))]
