"""Preallocated single-producer/single-consumer ring buffers addressed by absolute sample position.

Positions are absolute sample counts since the stream started, so the producer and the consumer
never have to agree on anything but two integers: ``write_pos`` (owned by the producer) and
``read_pos`` (owned by the consumer). Python int assignment is atomic under the GIL, and each side
publishes its counter only after its copy is complete, so no lock is needed and the audio callback
never waits. Nothing here allocates arrays after construction.
"""

from __future__ import annotations

import numpy as np


class HistoryRing:
    """The input ring: the callback appends, the worker copies any recent range.

    The writer never blocks; once the ring is full it overwrites the oldest audio. A reader that
    asked for audio that was overwritten (because it fell too far behind) is told so, which is how
    overruns are counted.
    """

    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ValueError("ring capacity must be positive")
        self.buf = np.zeros(capacity, np.float32)
        self.capacity = capacity
        self.write_pos = 0

    def write(self, x: np.ndarray) -> None:
        """Append samples (producer side; safe in an audio callback)."""
        n = len(x)
        if n >= self.capacity:  # only the newest capacity samples can be kept
            x = x[n - self.capacity :]
            start = self.write_pos + n - self.capacity
            m = self.capacity
        else:
            start, m = self.write_pos, n
        i = start % self.capacity
        k = min(m, self.capacity - i)
        self.buf[i : i + k] = x[:k]
        self.buf[: m - k] = x[k:]
        self.write_pos += n  # publish after the copy

    def read(self, start: int, out: np.ndarray) -> int:
        """Copy positions [start, start + len(out)) into ``out`` (consumer side).

        Positions before 0 and at or after ``write_pos`` read as zeros (left padding at start-up,
        right padding after the end of a file). Returns how many requested samples that did exist
        had already been overwritten (0 when the copy is intact).
        """
        n = len(out)
        end = start + n
        w0 = self.write_pos
        lo, hi = max(start, 0), min(end, w0)
        out[: max(0, min(lo - start, n))] = 0.0
        if hi < end:
            out[max(hi - start, 0) :] = 0.0
        if hi > lo:
            self._copy_out(lo, hi, out[lo - start : hi - start])
        # Seqlock-style check: anything older than (write_pos - capacity) may have been overwritten
        # while we copied; those samples are reported as lost and zeroed.
        oldest = self.write_pos - self.capacity
        lost = max(0, min(hi, oldest) - lo)
        if lost:
            out[lo - start : lo - start + lost] = 0.0
        return lost

    def _copy_out(self, lo: int, hi: int, dst: np.ndarray) -> None:
        m = hi - lo
        i = lo % self.capacity
        k = min(m, self.capacity - i)
        dst[:k] = self.buf[i : i + k]
        dst[k:] = self.buf[: m - k]


class PlaybackRing:
    """The output ring: the worker writes at scheduled positions, the callback plays them in order.

    The callback's read position advances by exactly one block per callback whether or not the
    worker delivered, so lateness never turns into extra latency: a missing sample is an underrun
    (filled by the caller's policy) and samples that arrive after their slot has been played are
    dropped by the writer.
    """

    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ValueError("ring capacity must be positive")
        self.buf = np.zeros(capacity, np.float32)
        self.capacity = capacity
        self.write_pos = 0  # one past the last scheduled sample (producer)
        self.read_pos: int | None = None  # next position to play; None until playback starts
        self.late_samples = 0  # producer-side count of samples that missed their slot
        self.overflow_samples = 0  # producer-side count of samples with no room (consumer stalled)

    def start(self, position: int) -> None:
        """Set the first position the consumer will play (consumer side, once)."""
        self.read_pos = position

    def write_at(self, pos: int, x: np.ndarray) -> None:
        """Schedule samples for positions [pos, pos + len(x)) (producer side)."""
        n = len(x)
        r = self.read_pos
        skip = 0 if r is None else max(0, min(n, r - pos))  # already played: too late
        self.late_samples += skip
        floor = (0 if r is None else r) + self.capacity
        room = max(0, min(n, floor - pos))  # never overwrite what has not been played yet
        if room < n:
            self.overflow_samples += n - room
        if room > skip:
            lo = pos + skip
            m = room - skip
            i = lo % self.capacity
            k = min(m, self.capacity - i)
            self.buf[i : i + k] = x[skip : skip + k]
            self.buf[: m - k] = x[skip + k : skip + m]
        self.write_pos = max(self.write_pos, pos + n)  # publish after the copy

    def read_into(self, out: np.ndarray) -> tuple[int, int]:
        """Fill ``out`` with the next block (consumer side; safe in an audio callback).

        Returns (start, missing): the position of out[0] and how many samples at positions >= 0
        were not ready (left as zeros for the caller to fill). Positions < 0 (before the stream's
        first output) are zeros and not counted.
        """
        n = len(out)
        r = self.read_pos if self.read_pos is not None else 0
        w = self.write_pos
        lo = max(r, 0)
        hi = min(r + n, w)
        missing = (r + n) - max(lo, min(r + n, w))
        if lo > r:
            out[: lo - r] = 0.0
        if hi > lo:
            m = hi - lo
            i = lo % self.capacity
            k = min(m, self.capacity - i)
            dst = out[lo - r : hi - r]
            dst[:k] = self.buf[i : i + k]
            dst[k:] = self.buf[: m - k]
            out[hi - r :] = 0.0
        else:
            out[lo - r :] = 0.0
        self.read_pos = r + n  # advance even on underrun: latency stays constant
        return r, max(0, missing)

    def fill(self) -> int:
        """Scheduled samples not yet played (may be negative while the worker is late)."""
        r = self.read_pos
        return self.write_pos - (0 if r is None else r)
