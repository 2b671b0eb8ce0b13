"""Playing a produced stream on an output device, with the device's clock pacing the producer.

`streamsep file --play` renders blocks on the main thread; ``push`` waits while more than
``lead`` samples are queued, so production runs exactly at the device's pace (no second clock to
drift against) and the callback only copies from a preallocated ring.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from streamsep.audio import devices
from streamsep.engine.ring import PlaybackRing


class DevicePlayer:
    def __init__(self, idx: int, sample_rate: int, *, lead_s: float = 0.25,
                 latency: str | float = "high"):
        sd = devices.sounddevice()
        self.sr = sample_rate
        self.lead = max(1, int(lead_s * sample_rate))
        self.ring = PlaybackRing(self.lead + 4 * sample_rate)
        self.ring.start(0)
        self.pos = 0  # samples pushed
        self.started = False
        self.underrun = 0  # samples the device asked for before they were pushed
        self.xruns = 0
        self._end: int | None = None  # set by close(): underruns past the end are the drain
        try:
            self.stream = sd.OutputStream(
                device=idx, samplerate=sample_rate, channels=devices.out_channels(idx),
                dtype="float32", latency=latency, callback=self._callback)
        except sd.PortAudioError as e:
            raise devices.DeviceError(f"cannot open output device {devices.name(idx)} for "
                                      f"playback: {e}; pick another with --play-device") from None
        self.latency_s = devices.stream_latency(float(self.stream.latency))

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status:
            self.xruns += 1
        start, missing = self.ring.read_into(outdata[:, 0])
        if missing and (self._end is None or start < self._end):
            self.underrun += missing if self._end is None else min(missing, self._end - start)
        if outdata.shape[1] > 1:
            outdata[:, 1:] = outdata[:, :1]

    def push(self, x: np.ndarray, *, timeout: float = 10.0) -> None:
        """Queue ``x``; returns once the device has room (blocks at most ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while self.started and self.ring.fill() > self.lead:
            if time.monotonic() > deadline:
                raise devices.DeviceError("the output device stopped taking audio (its stream "
                                          "stalled); check the device or sound server")
            time.sleep(min(0.005, len(x) / self.sr / 4))
        self.ring.write_at(self.pos, x)
        self.pos += len(x)
        if not self.started and self.pos >= self.lead:
            self.stream.start()
            self.started = True

    def close(self, *, drain: bool = True) -> None:
        """Play what is queued (unless ``drain`` is False), then stop and close the stream."""
        self._end = self.pos
        try:
            if drain and self.pos:
                if not self.started:
                    self.stream.start()
                    self.started = True
                wait = (self.ring.fill() / self.sr) + self.latency_s + 0.1
                deadline = time.monotonic() + wait + 2.0
                while self.ring.fill() > 0 and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(self.latency_s)  # the last block is still in the device's buffer
            if self.started:
                self.stream.stop()
        finally:
            self.stream.close()
