import numpy as np
import pytest

from streamsep.engine.clock import DriftCorrector, DriftEstimator, adjust_length

SR = 48000


def test_estimator_reads_drift_in_ppm():
    est = DriftEstimator(SR)
    for i in range(400):
        t = i * 0.05
        est.add(t, 1000 + t * SR * 80e-6)  # output 80 ppm slow
    assert est.ppm() == pytest.approx(80, abs=1)
    short = DriftEstimator(SR)
    for i in range(40):
        short.add(i * 0.05, 1000.0)
    assert short.ppm() is None  # 2 s is too short to report a drift


@pytest.mark.parametrize("ppm", [-150.0, 60.0])
def test_corrector_holds_latency_against_drift(ppm):
    target = 9600
    c = DriftCorrector(SR, target, max_step=48)
    rng = np.random.default_rng(0)
    errs = []
    t = 0.0
    for step in range(24000):  # 20 simulated minutes; the worker observes every 50 ms
        t = step * 0.05
        in_pos = t * SR
        out_pos = t * SR * (1 - ppm * 1e-6) - target + rng.integers(-256, 256)  # block jitter
        c.observe(t, in_pos, out_pos)  # the read position runs on the output clock alone
        if step % 40 == 0:  # one emitted block every 2 s
            c.applied(c.plan_change())
        errs.append(in_pos - out_pos - target)
    assert c.est.ppm() == pytest.approx(ppm, abs=10)
    # latency = gap + delta. Uncorrected, drift moves the gap by ppm * 1200 s (up to 180 ms);
    # delta cancels it to within the block jitter of a few ms.
    drift_only = ppm * 1e-6 * t * SR
    assert abs(errs[-1] - drift_only) < 300
    late = np.array(errs[-200:]) + c.delta
    assert np.abs(late).max() < 400 and abs(late.mean()) < 100


def test_adjust_length_drops_and_repeats_at_quiet_samples():
    x = np.array([5, 4, 0.01, 3, 2, 6, 7, -0.02, 8], np.float32)
    assert len(adjust_length(x, -2)) == 7
    dropped = adjust_length(x, -1)
    assert 0.01 not in dropped and -0.02 in dropped
    rep = adjust_length(x, 2)
    assert len(rep) == 11 and list(rep).count(np.float32(0.01)) == 2
    np.testing.assert_array_equal(adjust_length(x, 0), x)
