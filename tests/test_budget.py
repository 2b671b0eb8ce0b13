"""The adaptive compute budget, bounded records and the worker-side housekeeping of live runs."""

import gc
import io

import numpy as np
from engine_sim import Duplex

from streamsep.engine.engine import BUDGET_MIN_WINDOWS, BUDGET_SKIP_FIRST, Engine
from streamsep.engine.metrics import KEEP_WINDOWS, Metrics
from streamsep.engine.plan import WindowPlan
from streamsep.separators.simple import Passthrough

SR, HOP = 48000, 1920


def _engine(adaptive=True, budget_s=0.1, status=None):
    plan = WindowPlan(SR, HOP, 25, 5, 2, 1)  # W 1 s, H 0.2 s
    metrics = Metrics(status=status) if status is not None else None
    eng = Engine(Passthrough(), plan, budget=int(budget_s * SR), adaptive_budget=adaptive,
                 metrics=metrics)
    return plan, eng


def test_budget_is_raised_once_when_recent_compute_needs_it_and_never_lowered():
    status = io.StringIO()
    plan, eng = _engine(status=status)
    sink = eng.add_playback("target")
    lat0 = eng.latency_samples
    for _ in range(5):
        eng._follow_budget(0.5)  # the first windows still warm up: left out
    for _ in range(30):
        eng._follow_budget(0.085)  # below 90 % of 0.1 s: nothing changes
    assert eng.latency_samples == lat0 and not eng.latency_raises
    for _ in range(30):
        eng._follow_budget(0.095)  # 95 % of the budget: raised to 2 x p95 = 0.19 s
    assert eng.budget == int(round(0.19 * SR))
    assert eng.latency_samples == lat0 + eng.budget - int(0.1 * SR)
    assert sink.delta == eng.budget - int(0.1 * SR)
    assert len(eng.latency_raises) == 1
    assert "compute budget raised to 0.19 s" in status.getvalue()
    for _ in range(60):
        eng._follow_budget(0.001)  # faster again: the latency promise stands
    assert eng.budget == int(round(0.19 * SR))
    for _ in range(60):
        eng._follow_budget(5.0)  # slower than a hop: the budget stops at one hop
    assert eng.budget == plan.hop
    assert eng.counters()["over_budget_windows"] == 5 + 60  # the first 0.5 s and the 5 s ones


def test_windows_slowed_by_the_host_stealing_cpu_time_do_not_raise_the_budget():
    plan, eng = _engine()
    lat0 = eng.latency_samples
    for _ in range(BUDGET_SKIP_FIRST + BUDGET_MIN_WINDOWS):
        eng._follow_budget(0.05)
    for _ in range(30):
        eng._follow_budget(0.3, stolen=0.2)  # a VM stall: two thirds of the window stolen
    assert eng.latency_samples == lat0 and not eng.latency_raises
    c = eng.counters()
    assert c["stolen_windows"] == 30 and c["over_budget_windows"] == 30
    for _ in range(30):
        eng._follow_budget(0.3, stolen=0.001)  # slower for real
    assert eng.latency_raises


def test_worker_reports_stolen_time_per_window():
    plan, eng = _engine()
    seen = []
    eng.worker.on_window = seen.append
    eng.begin("speech")
    eng.feed(np.zeros(plan.window * 2, np.float32))
    while eng.worker.step():
        pass
    assert seen and all(isinstance(w["stolen"], float) and w["stolen"] >= 0 for w in seen)


def test_fixed_budget_is_never_changed():
    _, eng = _engine(adaptive=False)
    for _ in range(60):
        eng._follow_budget(0.5)
    assert eng.budget == int(0.1 * SR) and not eng.latency_raises
    assert eng.counters()["over_budget_windows"] == 60


def test_output_stays_aligned_across_a_latency_raise():
    """Before and after a raise the played stream is the input at the latency in force; only the
    stretch around the raise (one budget ahead of playback) differs, and nothing stale plays."""
    plan, eng = _engine()
    eng.add_playback("target")
    x = np.random.default_rng(0).standard_normal(12 * SR).astype(np.float32)
    dev = Duplex(eng, x)
    raised_at = None
    while not dev.done:
        dev.advance(480)
        while not dev.done and eng.worker.ready():
            eng.worker.step()
            if raised_at is None and eng.input.write_pos > 6 * SR:
                for _ in range(BUDGET_SKIP_FIRST + BUDGET_MIN_WINDOWS):
                    eng._follow_budget(0.15)
                raised_at = eng.input.write_pos - eng.latency_samples
    assert eng.latency_raises
    played = dev.played["target"]
    lo, hi = raised_at - plan.hop, raised_at + 2 * eng.latency_samples
    np.testing.assert_array_equal(played[:lo], x[:lo])
    np.testing.assert_array_equal(played[hi:], x[hi : len(played)])
    # Around the raise each sample is the input under the old or the new timing (a stretch is
    # heard twice), never stale ring content from a capacity ago.
    g = eng.latency_raises[0]["budget_s"] * SR - 0.1 * SR
    g = int(round(g))
    p = np.arange(lo, hi)
    ok = (played[p] == x[p]) | (played[p] == x[p + g])
    assert ok.all(), f"{(~ok).sum()} samples are neither, first at {p[~ok][:3]}"


def test_metrics_keep_a_bounded_number_of_window_records():
    m = Metrics(status=None)
    for i in range(KEEP_WINDOWS + 50):
        m.window({"window": i})
    assert len(m.windows) == KEEP_WINDOWS and m.windows[-1]["window"] == KEEP_WINDOWS + 49


def test_live_worker_freezes_the_heap_and_measures_collections():
    _, eng = _engine()
    eng.start("speech")
    try:
        assert gc.get_freeze_count() > 0
        gc.collect()
        assert eng.gc_pause_max_s > 0
    finally:
        eng.stop()
    assert gc.get_freeze_count() == 0
    assert eng.summary()["gc_pause_max_ms"] > 0
