"""Where the worker's results go: files, and outputs played by a device callback.

A played output is a playback ring plus its C-side state (``rt_out`` in rt.c): the callback reads
the ring and, where a result is missing, fills in the unprocessed input at exactly the planned
latency (overload policy "dry"), all without the interpreter. The Python side here only writes
results into the ring and reads counters.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from streamsep.engine._rt import ffi, lib
from streamsep.engine.clock import DriftCorrector, adjust_length
from streamsep.engine.ring import HistoryRing, PlaybackRing

INT64_MAX = 2**63 - 1
XRUN_FLAGS = ("input_underflow", "input_overflow", "output_underflow", "output_overflow")


def now_s() -> float:
    """The callbacks' clock (CLOCK_MONOTONIC), in seconds."""
    return lib.rt_now_ns() * 1e-9


def read_snapshot(snap: Any) -> tuple[int, float] | None:
    """A (position, seconds) pair published by a callback, or None before the first one."""
    pos, ns = ffi.new("int64_t *"), ffi.new("int64_t *")
    if not lib.rt_snap_read(snap, pos, ns):
        return None
    return int(pos[0]), ns[0] * 1e-9


class InputState:
    """The engine's input: a history ring plus the (position, time) of its newest block."""

    def __init__(self, capacity: int):
        self.ring = HistoryRing(capacity)
        self.c = ffi.new("rt_in *")
        self.c.ring = self.ring.c

    def feed(self, x: np.ndarray) -> None:
        x = np.ascontiguousarray(x, dtype=np.float32)
        lib.rt_in_feed(self.c, ffi.from_buffer("float[]", x, require_writable=False), len(x),
                       1, lib.rt_now_ns())

    @property
    def snapshot(self) -> tuple[int, float] | None:
        return read_snapshot(ffi.addressof(self.c, "snap"))


class FileSink:
    """Writes one output stream, in position order, to something with ``write(np.ndarray)``."""

    def __init__(self, writer: Any, which: str = "target", end: int | None = None):
        self.writer = writer
        self.which = which
        self.end = end
        self.pos = 0  # next position expected

    def write(self, pos: int, target: np.ndarray, residual: np.ndarray) -> None:
        x = target if self.which == "target" else residual
        lo = max(pos, self.pos)
        hi = pos + len(x) if self.end is None else min(pos + len(x), self.end)
        if lo > self.pos:  # a gap can only come from a bug upstream; keep the file aligned
            self.writer.write(np.zeros(lo - self.pos, np.float32))
            self.pos = lo
        if hi > lo:
            self.writer.write(x[lo - pos : hi - pos])
            self.pos = hi


class PlayedOutput:
    """A playback ring and its callback-side state: what one output stream plays."""

    def __init__(self, capacity: int, *, latency: int = 0, source: InputState | None = None,
                 dry: bool = False):
        self.ring = PlaybackRing(capacity)
        self.c = ffi.new("rt_out *")
        self.c.ring = self.ring.c
        self.c.input = source.c if source is not None else ffi.NULL
        self.c.dry = int(bool(dry and source is not None))
        self.c.latency = int(latency)
        self.c.end = INT64_MAX
        self.latency_s = 0.0  # the device's own output latency, once a stream is opened

    def set_delta(self, delta: int) -> None:
        lib.rt_store(ffi.addressof(self.c, "delta"), int(delta))

    def set_end(self, end: int) -> None:
        lib.rt_store(ffi.addressof(self.c, "end"), int(end))

    @property
    def underrun(self) -> int:
        return int(lib.rt_load(ffi.addressof(self.c, "underrun")))

    @property
    def snapshot(self) -> tuple[int, float] | None:
        return read_snapshot(ffi.addressof(self.c, "snap"))

    def play(self, out: np.ndarray, origin: int) -> None:
        """Fill ``out`` (1-D float32) as a device callback would; ``origin`` is the input
        position matching out[0] the first time playback runs. For simulated devices."""
        lib.rt_out_play(self.c, ffi.from_buffer("float[]", out), len(out), 1, int(origin),
                        lib.rt_now_ns())


class PlaybackSink(PlayedOutput):
    """One output of the engine (target or residual), optionally on its own clock, whose drift
    against the input it corrects by nudging where future blocks are written."""

    def __init__(self, capacity: int, which: str, *, source: InputState, sample_rate: int,
                 latency: int, dry: bool, own_clock: bool, max_step: int):
        super().__init__(capacity, latency=latency, source=source, dry=dry)
        self.which = which
        self.corrector = None
        if own_clock:
            self.corrector = DriftCorrector(sample_rate, latency, max_step)
        self.shift = 0  # samples the latency was raised by since the start (re-planning)
        self._source = source
        self._ring_end: int | None = None  # ring position after the newest write

    @property
    def delta(self) -> int:
        return self.shift + (0 if self.corrector is None else self.corrector.delta)

    def raise_latency(self, samples: int) -> None:
        """Play everything written from now on ``samples`` later (worker side, between writes).

        The ``samples`` ring slots this opens after the newest write are filled like any late
        result (the dry input under the new timing for a "dry" target, else silence): the ring
        counts a slot as ready once anything was written past it, so it must not stay stale."""
        samples = int(samples)
        if samples <= 0:
            return
        self.shift += samples
        if self.corrector is not None:
            self.corrector.target_gap += samples
        self.set_delta(self.delta)
        if self._ring_end is not None:
            gap = np.zeros(samples, np.float32)
            if self.c.dry:
                self._source.ring.read(self._ring_end - self.delta, gap)
            self.ring.write_at(self._ring_end, gap)
            self._ring_end += samples

    # worker side
    def write(self, pos: int, target: np.ndarray, residual: np.ndarray) -> None:
        x = target if self.which == "target" else residual
        change = 0
        if self.corrector is not None and len(x):
            change = self.corrector.plan_change()
            if change:
                x = adjust_length(x, change)
        self.ring.write_at(pos + self.delta, x)
        self._ring_end = pos + self.delta + len(x)
        if change:
            self.corrector.applied(change)
            self.set_delta(self.delta)


class StreamState:
    """The userdata of one PortAudio stream running ``rt_callback``: what it reads and writes,
    and its counters (xrun events, blocks, the callback's worst duration, a heartbeat)."""

    def __init__(self, sample_rate: int, *, source: InputState | None, feeds_input: bool,
                 sink: PlayedOutput | None, in_channels: int = 1, out_channels: int = 1,
                 fill_gaps: bool = False, frame_clock: Any = "jack"):
        """``fill_gaps``: the host API counts frames exactly (JACK), so a cycle the server ran
        without this stream is detected and filled in (see rt.c). ``frame_clock`` is what
        counts them: "jack" is JACK's frame counter where PortAudio's libjack is jack2's,
        None the stream time, or a C function ``uint32_t (const void *)`` (a test's clock)."""
        self.c = ffi.new("rt_stream *")
        self.c.fill_gaps = int(fill_gaps)
        if fill_gaps and frame_clock is not None:
            if frame_clock == "jack":
                self.c.frame_clock = lib.rt_jack_frame_clock()
            else:
                self.c.frame_clock = ffi.cast("void *", frame_clock)
                self._clock = frame_clock  # a cffi callback lives as long as its object
        self.c.source = source.c if source is not None else ffi.NULL
        self.c.sink = sink.c if sink is not None else ffi.NULL
        self.c.feeds_input = int(feeds_input)
        self.c.in_channels = int(in_channels)
        self.c.out_channels = int(out_channels)
        self.c.sample_rate = int(sample_rate)
        self._keep = (source, sink)  # the C structs point into these

    @property
    def callback(self) -> Any:
        return ffi.addressof(lib, "rt_callback")

    def _get(self, name: str) -> int:
        return int(lib.rt_load(ffi.addressof(self.c, name)))

    def xruns(self) -> dict[str, int]:
        return {"events": self._get("xrun_events"), **{f: self._get(f) for f in XRUN_FLAGS},
                "missed_cycles": self._get("gap_events"), "missed_frames": self._get("gap_frames")}

    @property
    def clock(self) -> str | None:
        """What missed cycles are measured with: "jack frames", "stream time", or None."""
        if not self.c.fill_gaps:
            return None
        return "jack frames" if self.c.frame_clock != ffi.NULL else "stream time"

    @property
    def blocks(self) -> int:
        return self._get("blocks")

    @property
    def max_callback_s(self) -> float:
        return self._get("max_callback_ns") * 1e-9

    def silent_for(self) -> float | None:
        """Seconds since the last callback ended (None before the first)."""
        hb = self._get("heartbeat_ns")
        return None if hb == 0 else (lib.rt_now_ns() - hb) * 1e-9


class DevicePlayer:
    """Plays a produced stream on an output device, the device's clock pacing the producer.

    ``streamsep file --play`` renders blocks on the main thread; ``push`` waits while more than
    ``lead`` samples are queued, so production runs at the device's pace (no second clock to
    drift against). The callback is ``rt_callback``: it only copies from the ring.
    """

    def __init__(self, idx: int, sample_rate: int, *, lead_s: float = 0.25,
                 latency: str | float = "high"):
        from streamsep.audio import devices

        self.sr = sample_rate
        self.lead = max(1, int(lead_s * sample_rate))
        self.out = PlayedOutput(self.lead + 4 * sample_rate)
        self.out.ring.start(0)
        self.pos = 0  # samples pushed
        self.started = False
        self.stream_state, self.stream = devices.open_output(idx, sample_rate, self.out,
                                                             latency=latency, purpose="playback")
        self.latency_s = devices.stream_latency(float(self.stream.latency))

    @property
    def underrun(self) -> int:
        """Samples the device asked for before they were pushed (the drain excluded)."""
        return self.out.underrun

    @property
    def xruns(self) -> int:
        return self.stream_state.xruns()["events"]

    def push(self, x: np.ndarray, *, timeout: float = 10.0) -> None:
        """Queue ``x``; returns once the device has room (blocks at most ``timeout`` s)."""
        from streamsep.audio.devices import DeviceError

        deadline = time.monotonic() + timeout
        while self.started and self.out.ring.fill() > self.lead:
            if time.monotonic() > deadline:
                raise DeviceError("the output device stopped taking audio (its stream "
                                  "stalled); check the device or sound server")
            time.sleep(min(0.005, len(x) / self.sr / 4))
        self.out.ring.write_at(self.pos, x)
        self.pos += len(x)
        if not self.started and self.pos >= self.lead:
            self.stream.start()
            self.started = True

    def close(self, *, drain: bool = True) -> None:
        """Play what is queued (unless ``drain`` is False), then stop and close the stream."""
        self.out.set_end(self.pos)
        try:
            if drain and self.pos:
                if not self.started:
                    self.stream.start()
                    self.started = True
                wait = (self.out.ring.fill() / self.sr) + self.latency_s + 0.1
                deadline = time.monotonic() + wait + 2.0
                while self.out.ring.fill() > 0 and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(self.latency_s)  # the last block is still in the device's buffer
            if self.started:
                self.stream.stop()
        finally:
            self.stream.close()
