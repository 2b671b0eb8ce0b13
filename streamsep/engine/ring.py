"""Preallocated single-producer/single-consumer ring buffers addressed by absolute sample position.

Positions are absolute sample counts since the stream started, so the producer and the consumer
never have to agree on anything but two integers: ``write_pos`` (owned by the producer) and
``read_pos`` (owned by the consumer). The rings live in C (``rt.c``): the device callback uses
them without the interpreter, and these classes are the worker's side of the same memory, calling
the same C functions (cffi releases the GIL around each call). Nothing allocates after
construction on the callback side.
"""

from __future__ import annotations

import numpy as np

from streamsep.engine._rt import ffi, lib


def _ptr(a: np.ndarray) -> object:
    return ffi.from_buffer("float[]", a, require_writable=False)


class _Ring:
    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ValueError("ring capacity must be positive")
        # Touch every page now: np.zeros maps pages lazily (2 MiB at a time with transparent huge
        # pages), and the first write to each would be a page fault inside the device callback,
        # i.e. a missed deadline every 2**19 samples.
        self.buf = np.empty(int(capacity), np.float32)
        self.buf.fill(0.0)
        self.capacity = int(capacity)
        self.c = ffi.new("rt_ring *")
        self._buf_ptr = ffi.from_buffer("float[]", self.buf)  # keeps the memory pinned
        self.c.buf = self._buf_ptr
        self.c.capacity = self.capacity

    @property
    def write_pos(self) -> int:
        return int(lib.rt_load(ffi.addressof(self.c, "write_pos")))


class HistoryRing(_Ring):
    """The input ring: the callback appends, the worker copies any recent range.

    The writer never blocks; once the ring is full it overwrites the oldest audio. A reader that
    asked for audio that was overwritten (because it fell too far behind) is told so, which is how
    overruns are counted.
    """

    def write(self, x: np.ndarray) -> None:
        """Append samples (producer side)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        lib.rt_hist_write(self.c, _ptr(x), len(x), 1)

    def read(self, start: int, out: np.ndarray) -> int:
        """Copy positions [start, start + len(out)) into ``out`` (consumer side).

        Positions before 0 and at or after ``write_pos`` read as zeros (left padding at start-up,
        right padding after the end of a file). Returns how many requested samples that did exist
        had already been overwritten (0 when the copy is intact); those read as zeros.
        """
        if not len(out):
            return 0
        if out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError("HistoryRing.read needs a contiguous float32 output array")
        return int(lib.rt_hist_read(self.c, int(start), ffi.from_buffer("float[]", out),
                                    len(out), 1))


class PlaybackRing(_Ring):
    """The output ring: the worker writes at scheduled positions, the callback plays them in order.

    The callback's read position advances by exactly one block per callback whether or not the
    worker delivered, so lateness never turns into extra latency: a missing sample is an underrun
    (filled by the caller's policy) and samples that arrive after their slot has been played are
    dropped by the writer.
    """

    @property
    def read_pos(self) -> int | None:
        if not lib.rt_load(ffi.addressof(self.c, "started")):
            return None
        return int(lib.rt_load(ffi.addressof(self.c, "read_pos")))

    @property
    def late_samples(self) -> int:
        return int(self.c.late_samples)

    @property
    def overflow_samples(self) -> int:
        return int(self.c.overflow_samples)

    def start(self, position: int) -> None:
        """Set the first position the consumer will play (consumer side, once)."""
        lib.rt_play_start(self.c, int(position))

    def write_at(self, pos: int, x: np.ndarray) -> None:
        """Schedule samples for positions [pos, pos + len(x)) (producer side)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x):
            lib.rt_play_write_at(self.c, int(pos), _ptr(x), len(x))

    def read_into(self, out: np.ndarray) -> tuple[int, int]:
        """Fill ``out`` with the next block (consumer side).

        Returns (start, missing): the position of out[0] and how many samples at positions >= 0
        were not ready (left as zeros for the caller to fill). Positions < 0 (before the stream's
        first output) are zeros and not counted.
        """
        if out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError("PlaybackRing.read_into needs a contiguous float32 array")
        if self.read_pos is None:
            self.start(0)
        start = ffi.new("int64_t *")
        missing = lib.rt_play_read(self.c, ffi.from_buffer("float[]", out), len(out), 1, start)
        return int(start[0]), int(missing)

    def fill(self) -> int:
        """Scheduled samples not yet played (may be negative while the worker is late)."""
        r = self.read_pos
        return self.write_pos - (0 if r is None else r)
