"""The background worker: assemble a window, separate it, crossfade, hand the result to the sinks.

One ``step()`` processes at most one window and never blocks, so the same code runs on the live
engine's thread, in the fast file loop, and inside deterministic tests that drive time by hand.

Overload policy: when a newer complete window already exists (compute fell a whole hop behind),
the worker skips straight to the newest one. The skipped stretch is filled by the policy — "dry"
(the unprocessed input as target, silence as residual, so target + residual is still the mixture)
or "silence" — crossfaded like any window, and counted. Latency never grows: playback positions
are fixed by the plan, and late results are dropped, not queued.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from streamsep.engine.crossfade import Crossfader
from streamsep.engine.noise import position_noise
from streamsep.engine.plan import WindowPlan
from streamsep.engine.ring import HistoryRing

OVERLOAD_POLICIES = ("dry", "silence")


class Sink(Protocol):
    def write(self, pos: int, target: np.ndarray, residual: np.ndarray) -> None:
        """Receive final output for input positions [pos, pos + len(target))."""


@dataclass
class Counters:
    overrun: int = 0  # input samples lost to a full input ring
    dropped_windows: int = 0
    dropped_samples: int = 0
    nonfinite_windows: int = 0


class Worker:
    def __init__(
        self,
        separator: Any,
        plan: WindowPlan,
        input_ring: HistoryRing,
        sinks: list[Sink] | None = None,
        *,
        seed: int = 0,
        overload: str = "dry",
        skip_ahead: bool = True,
        clock: Callable[[], float] = time.perf_counter,
    ):
        if overload not in OVERLOAD_POLICIES:
            raise ValueError(f"unknown overload policy {overload!r}: use one of "
                             f"{', '.join(OVERLOAD_POLICIES)}")
        self.sep = separator
        self.plan = plan
        self.ring = input_ring
        self.sinks: list[Sink] = list(sinks or [])
        self.seed = seed
        self.overload = overload
        self.skip_ahead = skip_ahead
        self.clock = clock
        self.next_end = plan.first_end
        self.index = 0  # windows separated so far
        self.input_end: int | None = None  # set when a finite source is exhausted
        self.prompt: str | None = None
        self._pending_prompt: str | None = None
        self.counters = Counters()
        self.on_window: Callable[[dict[str, Any]], None] | None = None
        self.on_warning: Callable[[str, str], None] | None = None
        self.compute_history: list[float] = []
        self._window = np.zeros(plan.window, np.float32)
        x = plan.crossfade
        self._fader = Crossfader(x)
        self._tail_t = np.zeros(x, np.float32)
        self._tail_r = np.zeros(x, np.float32)
        self._have_tail = False
        self._prompt_changed = False
        self.error: BaseException | None = None

    # -- control (any thread) -------------------------------------------------------------------
    def set_prompt(self, text: str) -> None:
        """Use ``text`` from the next window on (crossfaded in like any window boundary)."""
        self._pending_prompt = text

    def finish(self, input_end: int) -> None:
        """The source ended at ``input_end``: process the remaining windows with right padding."""
        self.input_end = input_end

    @property
    def done(self) -> bool:
        return self.input_end is not None and self.plan.emit_start(self.next_end) >= self.input_end

    # -- processing -----------------------------------------------------------------------------
    def ready(self) -> bool:
        if self.input_end is not None:
            return not self.done
        return self.ring.write_pos >= self.next_end

    def step(self) -> bool:
        """Process one window if its audio is complete. Returns whether it did."""
        if not self.ready():
            return False
        plan = self.plan
        skipped = 0
        w_in = self.ring.write_pos
        if self.skip_ahead and self.input_end is None and w_in - self.next_end >= plan.hop:
            skipped = (w_in - self.next_end) // plan.hop
            self._emit_fallback(skipped)

        end = self.next_end
        t0 = self.clock()
        if self._pending_prompt is not None:
            text, self._pending_prompt = self._pending_prompt, None
            if text != self.prompt:
                try:
                    self.sep.set_prompt(text)
                except (ValueError, RuntimeError, OSError) as e:
                    if self.prompt is None:
                        raise
                    # a bad prompt typed while running must not stop the stream
                    if self.on_warning is not None:
                        self.on_warning("prompt", f"prompt {text!r} rejected ({e}); keeping "
                                        f"{self.prompt!r}")
                else:
                    self._prompt_changed = self.prompt is not None
                    self.prompt = text
        win = self._window
        self.counters.overrun += self.ring.read(end - plan.window, win)
        if not np.isfinite(win).all():
            np.nan_to_num(win, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        nch = int(getattr(self.sep, "noise_channels", 0) or 0)
        noise = None
        if nch:
            noise = position_noise(self.seed, (end - plan.window) // plan.frame_hop,
                                   plan.window_frames, nch)
        target, residual = self.sep.separate(win, noise, None)
        target = self._check(target, "target")
        residual = self._check(residual, "residual")
        off = plan.emit_offset
        seg_t = np.array(target[off : off + plan.hop + plan.crossfade], np.float32)
        seg_r = np.array(residual[off : off + plan.hop + plan.crossfade], np.float32)
        compute = self.clock() - t0
        self._emit(plan.emit_start(end), seg_t, seg_r)
        self.next_end = end + plan.hop
        self.index += 1
        self.compute_history.append(compute)
        if self.on_window is not None:
            self.on_window({"window": self.index - 1, "end": end, "compute": compute,
                            "skipped": skipped, "prompt": self.prompt,
                            "prompt_changed": self._prompt_changed, "input_pos": w_in})
        self._prompt_changed = False
        return True

    def _check(self, x: Any, name: str) -> np.ndarray:
        a = np.asarray(x)
        if a.ndim != 1:
            a = a.reshape(-1)
        if a.shape[0] != self.plan.window:
            raise RuntimeError(f"separator returned a {name} of {a.shape[0]} samples for a "
                               f"window of {self.plan.window}: the adapter is broken")
        if not np.isfinite(a).all():
            self.counters.nonfinite_windows += 1
            a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        return a

    def _emit_fallback(self, windows: int) -> None:
        """Fill ``windows`` skipped hops (plus a tail to crossfade from) per the overload policy."""
        plan = self.plan
        start = plan.emit_start(self.next_end)
        n = windows * plan.hop
        seg_t = np.zeros(n + plan.crossfade, np.float32)
        seg_r = np.zeros(n + plan.crossfade, np.float32)
        if self.overload == "dry":
            self.counters.overrun += self.ring.read(start, seg_t)
        self._emit(start, seg_t, seg_r)
        self.next_end += n
        self.counters.dropped_windows += windows
        self.counters.dropped_samples += n

    def _emit(self, start: int, seg_t: np.ndarray, seg_r: np.ndarray) -> None:
        x = self.plan.crossfade
        if x and self._have_tail:
            self._fader.blend(self._tail_t, seg_t[:x])
            self._fader.blend(self._tail_r, seg_r[:x])
        n = len(seg_t) - x
        self._tail_t[:] = seg_t[n:]
        self._tail_r[:] = seg_r[n:]
        self._have_tail = True
        body_t, body_r = seg_t[:n], seg_r[:n]
        if self.input_end is not None:  # never emit past the end of a finite source
            keep = max(0, min(n, self.input_end - start))
            body_t, body_r = body_t[:keep], body_r[:keep]
        for sink in self.sinks:
            sink.write(start, body_t, body_r)

    # -- thread ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event, poll_s: float = 0.005,
            idle: Callable[[], None] | None = None) -> None:
        """Thread body: step whenever a window is complete, until ``stop`` is set."""
        try:
            while not stop.is_set():
                if self.step():
                    continue
                if idle is not None:
                    idle()
                stop.wait(poll_s)
        except BaseException as e:  # reported by the engine on the main thread
            self.error = e
            stop.set()
