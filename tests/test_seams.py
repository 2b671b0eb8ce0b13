"""Seam metrics (streamsep.seams), the continuity schemes and crossfade shapes they compare.

The metric tests drive ``seam_report`` with made-up streams whose seams are known; the model
tests run the embedded model through the engine on the demo fixture (8 s, 16 kHz) and guard the
issue-17 result: the default scheme (position-seeded noise) makes consecutive windows disagree
far less where they are crossfaded than independent noise per window (mlx-audio's scheme).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import FIXTURES

from streamsep.engine.crossfade import Crossfader, fade_weights
from streamsep.engine.noise import independent_noise, position_noise
from streamsep.engine.plan import DEFAULT_CONTINUITY, PlanError, WindowPlan
from streamsep.seams import engine_stream, seam_report, seam_spans
from streamsep.separators.simple import SIMPLE

SR = 16000
DEFAULT_KNOBS = (10.0, 2.0, 1.0, 0.4)
LOW_KNOBS = (4.0, 0.5, 0.25, 0.1)


def _plan(knobs: tuple[float, ...] = DEFAULT_KNOBS, **kw: str) -> WindowPlan:
    return WindowPlan.from_seconds(48000, 1920, *knobs, **kw)


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    """Noise bursts with a syllable-rate envelope: a signal whose level keeps changing."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    env = 0.2 + np.abs(np.sin(np.pi * 3.3 * np.arange(n) / SR))
    return (0.1 * env * rng.standard_normal(n)).astype(np.float32)


class _BlockGains:
    """A fake stream with seams: every hop-long block of the input it is given gets its own gain
    (±4 dB), ramped over the crossfade, plus a faint noise that differs between calls."""

    def __init__(self, plan: WindowPlan, jump_db: float):
        self.hop = int(plan.seconds(plan.hop) * SR)
        self.x = int(plan.seconds(plan.crossfade) * SR)
        self.jump_db = jump_db
        self.calls = 0

    def __call__(self, mix: np.ndarray) -> np.ndarray:
        n = len(mix)
        rng = np.random.default_rng(7)
        gains_db = rng.uniform(-self.jump_db, self.jump_db, n // self.hop + 2)
        g = np.repeat(10 ** (gains_db / 20), self.hop)[:n]
        for k in range(1, n // self.hop + 1):  # ramp from block k-1's gain over the crossfade
            a = k * self.hop
            ramp = np.linspace(0, 1, self.x, endpoint=False)[: max(0, min(self.x, n - a))]
            g[a : a + len(ramp)] = g[a - 1] + ramp * (g[min(a + self.x, n - 1)] - g[a - 1])
        self.calls += 1
        faint = 1e-3 * np.random.default_rng(self.calls).standard_normal(n)
        return (0.5 * g * mix + faint).astype(np.float32)


# -- the metric ------------------------------------------------------------------------------------
def test_seam_spans_are_the_crossfades_after_each_hop() -> None:
    spans = seam_spans(10 * SR, _plan(), SR)
    assert spans == [(k * 2 * SR, k * 2 * SR + int(0.4 * SR)) for k in range(1, 5)]


def test_discontinuity_ratio_sees_seams_and_only_seams() -> None:
    plan = _plan()
    pairs = [(_speechlike(10, s), _speechlike(10, s)) for s in range(3)]
    seamy = seam_report(pairs, _BlockGains(plan, 4.0), plan=plan, sample_rate=SR)
    smooth = seam_report(pairs, _BlockGains(plan, 0.0), plan=plan, sample_rate=SR)
    assert seamy["discontinuity"]["ratio"] > 3.0, seamy["discontinuity"]
    assert seamy["discontinuity"]["level_ratio"] > 3.0
    assert 0.8 < smooth["discontinuity"]["ratio"] < 1.25, smooth["discontinuity"]
    # seams at 2, 4, 6, 8 s, and at 1, 3, 5, 7, 9 s in the run shifted by half a hop
    assert seamy["discontinuity"]["seam_points"] == 3 * (4 + 5)
    assert seamy["disagreement_db"] is None  # a plain callable shows no tails and heads


def test_sisdr_near_seams_sees_damage_at_seams() -> None:
    plan = _plan()
    spans = seam_spans(10 * SR, plan, SR)

    def damaged(mix: np.ndarray) -> np.ndarray:
        out = mix.copy()
        noise = np.random.default_rng(1).standard_normal(len(mix)).astype(np.float32)
        for a, b in spans:
            out[a - SR // 5 : b + SR // 5] += 0.1 * noise[a - SR // 5 : b + SR // 5]
        return out

    pairs = [(_speechlike(10, 5), _speechlike(10, 5))]
    r = seam_report(pairs, damaged, plan=plan, sample_rate=SR, discontinuity=False)
    assert r["near_minus_elsewhere"] < -10, r
    assert r["discontinuity"]["ratio"] is None


def test_passthrough_windows_agree_exactly_with_the_amplitude_fade_only() -> None:
    sr = 48000  # the engine's own rate: no resampling between input and output
    x = np.repeat(_speechlike(2, 3), 3)  # 6 s
    for shape in ("amplitude", "power"):
        plan = _plan(LOW_KNOBS, crossfade_shape=shape)
        stream = engine_stream(SIMPLE["passthrough"](), plan, "anything", sample_rate=sr)
        r = seam_report([(x, x)], stream, plan=plan, sample_rate=sr, discontinuity=False)
        assert r["disagreement_db"] < -100  # identical windows: nothing for the fade to hide
        out = stream(x).target
        if shape == "amplitude":
            np.testing.assert_array_equal(out, x)
        else:  # equal power lifts two equal signals by up to 3 dB in the middle of the fade
            assert 1.3 < np.max(np.abs(out) / np.maximum(np.abs(x), 1e-3)) < 1.5


# -- the schemes ----------------------------------------------------------------------------------
def test_crossfade_shapes() -> None:
    for n in (1, 7, 1920):
        fi, fo = fade_weights(n, "power")
        np.testing.assert_allclose(fi**2 + fo**2, 1.0, atol=1e-12)
        fi, fo = fade_weights(n, "amplitude")
        np.testing.assert_allclose(fi + fo, 1.0, atol=1e-15)
    old, new = np.ones(100, np.float32), np.zeros(100, np.float32)
    Crossfader(100, "power").blend(old, new)
    np.testing.assert_allclose(new, fade_weights(100, "power")[1], atol=1e-6)
    with pytest.raises(ValueError, match="crossfade shape"):
        fade_weights(4, "linear")


def test_plan_carries_and_checks_the_schemes() -> None:
    assert _plan().continuity == DEFAULT_CONTINUITY == "position"
    assert _plan().crossfade_shape == "amplitude"
    assert dataclasses.replace(_plan(), continuity="inpaint").continuity == "inpaint"
    with pytest.raises(PlanError, match="--continuity"):
        _plan(continuity="random")
    with pytest.raises(PlanError, match="--crossfade-shape"):
        _plan(crossfade_shape="linear")


def test_independent_noise_differs_between_windows_and_repeats_per_window() -> None:
    a, b = independent_noise(0, 100, 50, 8), independent_noise(0, 101, 50, 8)
    np.testing.assert_array_equal(a, independent_noise(0, 100, 50, 8))
    assert abs(np.corrcoef(a[1:].ravel(), b[:-1].ravel())[0, 1]) < 0.1  # shared frames differ
    p, q = position_noise(0, 100, 50, 8), position_noise(0, 101, 50, 8)
    np.testing.assert_array_equal(p[1:], q[:-1])
    big = independent_noise(3, -7, 400, 64)
    assert abs(big.mean()) < 0.02 and abs(big.std() - 1) < 0.02


# -- on the embedded model -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sep():
    from streamsep.separators.embedded import load

    s = load(None)
    s.set_prompt("speech")
    return s


@pytest.fixture(scope="module")
def demo() -> tuple[np.ndarray, np.ndarray]:
    d = np.load(FIXTURES / "embedded_demo.npz")
    return d["mixture"].astype(np.float32), d["speech"].astype(np.float32)


@pytest.mark.parametrize(("knobs", "margin_db"), [(DEFAULT_KNOBS, 4.0), (LOW_KNOBS, 2.0)])
def test_default_scheme_disagrees_less_at_seams_than_independent_noise(
        sep, demo, knobs: tuple[float, ...], margin_db: float) -> None:
    """Measured on this clip with one step: -28.7 vs -23.6 dB at the default knobs, -23.5 vs
    -20.4 dB at the low-latency ones (tools/eval_seams.py has the table on 10 mixtures)."""
    sep.steps = 1
    score = {}
    for scheme in ("independent", DEFAULT_CONTINUITY):
        plan = _plan(knobs, continuity=scheme)
        r = seam_report([demo], engine_stream(sep, plan, "speech", sample_rate=SR), plan=plan,
                        sample_rate=SR, discontinuity=False)
        score[scheme] = r["disagreement_db"]
    assert score[DEFAULT_CONTINUITY] < score["independent"] - margin_db, score


def test_inpaint_is_position_at_one_step_and_pins_the_flow_from_two(sep, demo) -> None:
    mix = demo[0][: 4 * SR]
    out = {}
    for steps in (1, 2):
        sep.steps = steps
        for scheme in ("position", "inpaint"):
            plan = _plan(LOW_KNOBS, continuity=scheme)
            out[steps, scheme] = engine_stream(sep, plan, "speech", sample_rate=SR)(mix).target
    sep.steps = 1
    # one Euler step evaluates the network at t = 0 only, where the pinned state is the noise
    np.testing.assert_array_equal(out[1, "position"], out[1, "inpaint"])
    assert not np.array_equal(out[2, "position"], out[2, "inpaint"])


def test_inpaint_state_is_dropped_for_another_prompt(sep, demo) -> None:
    sep.steps = 2
    x = np.repeat(demo[0][: 4 * SR], 3)[: 100 * 1920].astype(np.float32)
    noise = position_noise(0, 0, 100, sep.noise_channels)
    try:
        _, _, state = sep.separate_continued(x, noise, None, start=0, keep=slice(0, 60 * 1920),
                                             previous=None)
        assert state.first == 0 and state.committed_end == 60 and state.prompt == "speech"
        fresh, _ = sep.separate(x, noise)
        pinned, _, _ = sep.separate_continued(x, noise, None, start=0, keep=slice(0, 1920),
                                              previous=state)
        assert not np.array_equal(pinned, fresh)  # the committed frames were pinned
        sep.set_prompt("music")
        music, _ = sep.separate(x, noise)
        ignored, _, _ = sep.separate_continued(x, noise, None, start=0, keep=slice(0, 1920),
                                               previous=state)
        np.testing.assert_array_equal(ignored, music)  # speech's answer is not music's
    finally:
        sep.set_prompt("speech")
        sep.steps = 1
