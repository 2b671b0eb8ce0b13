"""A simulated duplex device for deterministic engine tests (no threads, no clock)."""

import numpy as np


class Duplex:
    """A simulated duplex device driven by hand: input block in, output block out."""

    def __init__(self, engine, signal, block=480):
        self.e, self.x, self.block = engine, signal, block
        self.sinks = engine.playback
        self.played = {s.which: np.full(len(signal), np.nan, np.float32) for s in self.sinks}
        self._out = np.zeros(block, np.float32)

    def advance(self, samples):
        for _ in range(max(1, samples // self.block)):
            origin = self.e.input.write_pos
            blk = self.x[origin : origin + self.block]
            if len(blk) < self.block:
                blk = np.concatenate([blk, np.zeros(self.block - len(blk), np.float32)])
            self.e.feed(blk)
            for s in self.sinks:
                s.play(self._out, origin)
                lo = origin - self.e.latency_samples  # input position of out[0]
                a, b = max(lo, 0), min(lo + self.block, len(self.x))
                if b > a:
                    self.played[s.which][a:b] = self._out[a - lo : b - lo]

    @property
    def done(self):
        return self.e.input.write_pos - self.e.latency_samples >= len(self.x)


class Collect:
    """A file stand-in for FileSink: keeps what is written."""

    def __init__(self):
        self.parts = []

    def write(self, x):
        self.parts.append(np.array(x, np.float32))

    @property
    def data(self):
        return np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)
