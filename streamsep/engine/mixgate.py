"""Dry/wet mix and a gate on the final target: the last step before the sinks (worker thread).

Both run on the worker, on blocks that are already final (crossfaded) and in position order, and
read the dry input from the input ring at exactly the block's positions. The blend is therefore
time-aligned to the sample: ``mix`` m gives ``m * target + (1 - m) * input`` with no comb
filtering, whatever the latency. Nothing here touches the device callbacks; what is played is what
the playback ring holds, as for any result.

Mix: 1 = target only (the default, and then nothing is computed: the output is the separator's
own, bit for bit); 0 = the dry input. A change applies from the next block the worker emits (the
next window), ramped over ``RAMP_S`` so that it does not click.

Gate: fades the target to silence while it holds nothing worth keeping, and back in. Every
``FRAME_S`` of audio the RMS of the target is compared with the RMS of the input at the same
positions. The gate opens when the target is at least ``threshold_db`` relative to the input
(default -24 dB: the target carries at least 6 % of the input's amplitude) and the input is above
``FLOOR_DB`` dBFS; it closes once the target has stayed below ``threshold_db - HYSTERESIS_DB`` for
``hold_s`` (default 0.3 s; the hysteresis keeps a target hovering at the threshold from
chattering). Opening fades in over ``ATTACK_S``, closing fades out over ``RELEASE_S``. It starts
open. With ``mix`` below 1 the gate scales the target's share only: the dry part stays.

Residual: ``residual + (target - output)``: what the mix or the gate takes out of the target goes
to the residual, so ``output + residual`` stays what the separator's pair summed to (the input,
for every separator whose target and residual sum to it: then the residual is exactly
``input - output``). At mix 1 with the gate open it is the separator's residual unchanged.
"""

from __future__ import annotations

import math
import threading

import numpy as np

RAMP_S = 0.01
FRAME_S = 0.02
HYSTERESIS_DB = 6.0
ATTACK_S = 0.01
RELEASE_S = 0.1
FLOOR_DB = -70.0
DEFAULT_THRESHOLD_DB = -24.0
DEFAULT_HOLD_S = 0.3
THRESHOLD_RANGE_DB = (-80.0, 0.0)


def check_mix(m: float) -> float:
    """``m`` as a mix, or ValueError with the accepted range."""
    m = float(m)
    if not 0.0 <= m <= 1.0:  # also refuses nan
        raise ValueError(f"mix must be between 0 and 1 (got {m:g})")
    return m


def check_threshold(db: float) -> float:
    db = float(db)
    lo, hi = THRESHOLD_RANGE_DB
    if not lo <= db <= hi:
        raise ValueError(f"the gate threshold must be between {lo:g} and {hi:g} dB relative to "
                         f"the input (got {db:g})")
    return db


class MixGate:
    """The mix and the gate, with their state across blocks. ``set_mix`` / ``set_gate`` may be
    called from any thread; ``process`` only from the worker."""

    def __init__(self, sample_rate: int, *, mix: float = 1.0, gate: bool = False,
                 threshold_db: float = DEFAULT_THRESHOLD_DB, hold_s: float = DEFAULT_HOLD_S):
        self.sr = int(sample_rate)
        self._lock = threading.Lock()
        self._mix_next = check_mix(mix)
        self._gate_next = (bool(gate), check_threshold(threshold_db))
        self.mix = self._mix_next  # in force (worker side)
        self.gate_on, self.threshold_db = self._gate_next
        if not 0 <= hold_s < 60:
            raise ValueError(f"the gate hold must be between 0 and 60 s (got {hold_s:g})")
        self.hold = int(round(hold_s * self.sr))
        self.frame = max(1, int(round(FRAME_S * self.sr)))
        self.ramp = max(1, int(round(RAMP_S * self.sr)))
        self.attack_step = 1.0 / max(1, int(round(ATTACK_S * self.sr)))
        self.release_step = 1.0 / max(1, int(round(RELEASE_S * self.sr)))
        self.open = True
        self.gain = 1.0  # the gate's gain at the last sample processed
        self._below = 0  # samples the target has been below the closing threshold
        self.closed_samples = 0  # samples emitted with the gate fully closed (counter)

    # -- control (any thread) -------------------------------------------------------------------
    def set_mix(self, m: float) -> None:
        m = check_mix(m)
        with self._lock:
            self._mix_next = m

    def set_gate(self, on: bool | None = None, threshold_db: float | None = None) -> None:
        with self._lock:
            g, t = self._gate_next
            self._gate_next = (g if on is None else bool(on),
                               t if threshold_db is None else check_threshold(threshold_db))

    @property
    def requested(self) -> tuple[float, bool, float]:
        """(mix, gate on, threshold) as last set: what applies from the next block."""
        with self._lock:
            return (self._mix_next, *self._gate_next)

    @property
    def needs_dry(self) -> bool:
        """Whether the next block needs processing at all (then the worker reads its input)."""
        with self._lock:
            m, gate = self._mix_next, self._gate_next[0]
        return m != 1.0 or self.mix != 1.0 or gate or self.gain < 1.0

    # -- worker ---------------------------------------------------------------------------------
    def process(self, target: np.ndarray, residual: np.ndarray, dry: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """The output and residual for one final block; ``dry`` is the input at its positions."""
        with self._lock:
            mix_new = self._mix_next
            gate_on, self.threshold_db = self._gate_next
        mix_old, self.mix = self.mix, mix_new
        if not gate_on and self.gate_on:
            self.open, self._below = True, 0  # off: fade back to unity over the attack
        self.gate_on = gate_on
        n = len(target)
        if n == 0:
            return target, residual
        g = None
        if gate_on or self.gain < 1.0:
            g = self._gate_gains(target, dry)
            if g.min() >= 1.0:
                g = None  # open all through: unity
        if mix_old == mix_new == 1.0 and g is None:
            return target, residual  # nothing to do: the separator's output, bit for bit
        m = np.full(n, mix_new, np.float32)
        if mix_old != mix_new:
            k = min(n, self.ramp)
            m[:k] = mix_old + (mix_new - mix_old) * (np.arange(1, k + 1, dtype=np.float64) / k)
        wet = m if g is None else m * g
        out = wet * target
        if mix_old != 1.0 or mix_new != 1.0:
            out += (np.float32(1.0) - m) * dry
        out = out.astype(np.float32, copy=False)
        res = (residual + (target - out)).astype(np.float32, copy=False)
        return out, res

    def _gate_gains(self, target: np.ndarray, dry: np.ndarray) -> np.ndarray:
        """Per-sample gate gain for the block, frame by frame (state carried across blocks)."""
        n = len(target)
        out = np.empty(n, np.float32)
        open_ratio = 10.0 ** (self.threshold_db / 20.0)
        close_ratio = 10.0 ** ((self.threshold_db - HYSTERESIS_DB) / 20.0)
        floor = 10.0 ** (FLOOR_DB / 20.0)
        g = self.gain
        for a in range(0, n, self.frame):
            b = min(n, a + self.frame)
            if self.gate_on:
                lt = math.sqrt(float(np.mean(np.square(target[a:b], dtype=np.float64))))
                li = math.sqrt(float(np.mean(np.square(dry[a:b], dtype=np.float64))))
                present = li > floor
                if self.open:
                    if present and lt >= close_ratio * li:
                        self._below = 0
                    else:
                        self._below += b - a
                        if self._below > self.hold:
                            self.open = False
                elif present and lt >= open_ratio * li:
                    self.open, self._below = True, 0
            goal = 1.0 if (self.open or not self.gate_on) else 0.0
            length = b - a
            if g == goal:
                out[a:b] = g
            else:
                step = self.attack_step if goal > g else -self.release_step
                ramp = g + step * np.arange(1, length + 1, dtype=np.float64)
                ramp = np.minimum(ramp, 1.0) if step > 0 else np.maximum(ramp, 0.0)
                out[a:b] = ramp
                g = float(ramp[-1])
            if g == 0.0:
                self.closed_samples += length
        self.gain = g
        return out
