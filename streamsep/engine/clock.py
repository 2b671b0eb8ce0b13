"""Clock drift between an input device and an output device, and its correction.

Two devices run from two crystals, so an output may consume, say, 48 000.5 samples per input
second. Left alone, the playback ring slowly fills or drains and latency creeps. The worker samples
the gap ``input_count - output_count`` (both extrapolated to the same instant) a few times a
second, fits a line over the last ``span_s`` seconds, and reads the drift (ppm) from its slope and
the current latency error from its value now. It then drops or repeats a few samples per emitted
block, each at the quietest spot of a short stretch, which keeps latency constant without an
audible resampler. With one duplex stream there is one clock and nothing to correct.
"""

from __future__ import annotations

from collections import deque

import numpy as np


class DriftEstimator:
    def __init__(self, sample_rate: int, span_s: float = 60.0, min_interval_s: float = 0.05):
        self.sample_rate = sample_rate
        self.span_s = span_s
        self.min_interval_s = min_interval_s
        self._pts: deque[tuple[float, float]] = deque()

    def add(self, t: float, gap: float) -> None:
        """Record the gap (input position - output position, samples) observed at time t."""
        if self._pts and t - self._pts[-1][0] < self.min_interval_s:
            return
        self._pts.append((t, gap))
        while self._pts and t - self._pts[0][0] > self.span_s:
            self._pts.popleft()

    def _fit(self) -> tuple[float, float, float] | None:
        if len(self._pts) < 4:
            return None
        a = np.asarray(self._pts, dtype=np.float64)
        t0 = a[-1, 0]
        t = a[:, 0] - t0
        if t[-1] - t[0] < 1.0:  # too short a baseline for a slope
            return None
        slope, icept = np.polyfit(t, a[:, 1], 1)
        return slope, icept, t0

    def ppm(self) -> float | None:
        """Input rate minus output rate, in parts per million (positive: output runs slow);
        None until 10 s of observations make the slope meaningful."""
        fit = self._fit()
        if fit is None or self._pts[-1][0] - self._pts[0][0] < 10.0:
            return None
        return 1e6 * fit[0] / self.sample_rate

    def gap_now(self) -> float | None:
        """The fitted gap at the newest sample time, or None before enough data."""
        fit = self._fit()
        if fit is None:
            return None if not self._pts else float(np.median([g for _, g in self._pts]))
        return fit[1]


def adjust_length(x: np.ndarray, change: int) -> np.ndarray:
    """Drop (change < 0) or repeat (change > 0) |change| samples, each at a quiet spot.

    The block is cut into |change| equal stretches; in each, the sample with the smallest
    magnitude (where a one-sample jump is least audible) is removed or doubled.
    """
    n = abs(int(change))
    if n == 0 or len(x) == 0:
        return x
    bounds = np.linspace(0, len(x), n + 1).astype(int)
    pairs = zip(bounds[:-1], bounds[1:], strict=True)
    idx = [b0 + int(np.argmin(np.abs(x[b0:b1]))) for b0, b1 in pairs if b1 > b0]
    if change < 0:
        return np.delete(x, idx)
    return np.insert(x, idx, x[idx])


class DriftCorrector:
    """Keeps one output's latency at its target by nudging where future blocks are written."""

    def __init__(self, sample_rate: int, target_gap: int, max_step: int):
        self.est = DriftEstimator(sample_rate)
        self.target_gap = target_gap  # input - output positions that gives the planned latency
        self.max_step = max(1, max_step)
        self.threshold = max(1, sample_rate // 500)  # act beyond 2 ms of error (block jitter)
        self.delta = 0  # playback position = input position + delta
        self.corrected = 0  # total samples dropped (-) or repeated (+)

    def observe(self, t: float, in_pos: float, out_pos: float) -> None:
        self.est.add(t, in_pos - out_pos)

    def plan_change(self) -> int:
        """Samples to add (+) or drop (-) in the next emitted block."""
        gap = self.est.gap_now()
        if gap is None:
            return 0
        # Played position = input position + delta, so the sample being played arrived
        # (gap + delta) samples ago; the plan wants target_gap.
        err = gap + self.delta - self.target_gap
        if abs(err) <= self.threshold:
            return 0
        return int(np.clip(-round(err), -self.max_step, self.max_step))

    def applied(self, change: int) -> None:
        self.delta += change
        self.corrected += change
