"""Wires the input ring, the worker, the playback rings and the sinks; owns the live counters.

Latency contract: output position p (in input samples) plays exactly
``latency_samples = hop + lookahead + crossfade + budget`` samples after input position p arrived
(plus what the devices add). ``budget`` is the compute allowance: a window's result must be
written within ``budget`` of its last input sample arriving, or the part that missed its slot is
filled by the overload policy and counted (underrun / late), never queued up.

The audio callbacks (``duplex_callback``, ``input_callback``, ``PlaybackSink.output_callback``)
only copy between preallocated rings, record a timestamp and count PortAudio's status flags.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from streamsep.engine.clock import DriftCorrector, adjust_length
from streamsep.engine.metrics import Metrics
from streamsep.engine.plan import WindowPlan
from streamsep.engine.ring import HistoryRing, PlaybackRing
from streamsep.engine.worker import Worker

XRUN_FLAGS = ("input_underflow", "input_overflow", "output_underflow", "output_overflow")
MIN_BUDGET_S = 0.1


def auto_budget(plan: WindowPlan, compute_s: float) -> int:
    """Compute budget in samples: twice the measured window compute, at least 0.1 s (scheduling
    and device-block jitter), at most one hop; if one window takes longer than a hop, 1.25x the
    compute, so that the windows the engine does separate (it skips the others) arrive in time."""
    hop_s = plan.seconds(plan.hop)
    b = min(max(hop_s, 1.25 * compute_s), max(MIN_BUDGET_S, 2.0 * compute_s))
    return int(round(b * plan.sample_rate))


def warm_up(separator: Any, plan: WindowPlan, runs: int = 2) -> float:
    """Run the separator on full windows (MLX compiles on the first call); return the last
    run's wall time in seconds.

    The windows hold quiet noise, not silence: a separator may skip silent frames (the embedded
    one does), and a warm-up that skips its work would set the budget far too low.
    """
    win = (1e-3 * np.random.default_rng(0).standard_normal(plan.window)).astype(np.float32)
    nch = int(getattr(separator, "noise_channels", 0) or 0)
    noise = np.zeros((plan.window_frames, nch), np.float32) if nch else None
    dt = 0.0
    for _ in range(runs):
        t0 = time.perf_counter()
        separator.separate(win, noise, None)
        dt = time.perf_counter() - t0
    return dt


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


class PlaybackSink:
    """One output stream: a playback ring, its callback, and (for its own clock) drift control."""

    def __init__(self, engine: Engine, which: str, own_clock: bool):
        self.engine = engine
        self.which = which
        cap = engine.latency_samples + engine.plan.window + 2 * engine.plan.hop + engine.sr
        self.ring = PlaybackRing(cap)
        self.corrector = None
        if own_clock:
            self.corrector = DriftCorrector(engine.sr, engine.latency_samples,
                                            max_step=max(1, engine.plan.hop // 1000))
        self.underrun = 0
        self.snapshot: tuple[int, float] | None = None
        self.xruns = dict.fromkeys(XRUN_FLAGS, 0)
        self.latency_s = 0.0

    @property
    def delta(self) -> int:
        return 0 if self.corrector is None else self.corrector.delta

    # worker side
    def write(self, pos: int, target: np.ndarray, residual: np.ndarray) -> None:
        x = target if self.which == "target" else residual
        change = 0
        if self.corrector is not None and len(x):
            change = self.corrector.plan_change()
            if change:
                x = adjust_length(x, change)
        self.ring.write_at(pos + self.delta, x)
        if change:
            self.corrector.applied(change)

    # callback side
    def play(self, out: np.ndarray, origin: int) -> None:
        """Fill ``out`` (a 1-D view); ``origin`` is the input position matching out[0] the first
        time playback runs."""
        ring = self.ring
        if ring.read_pos is None:
            ring.start(origin - self.engine.latency_samples)
        start, missing = ring.read_into(out)
        if missing:
            self.underrun += missing
            if self.which == "target" and self.engine.overload == "dry":
                n = len(out)
                self.engine.input.read(start + n - missing - self.delta, out[n - missing :])
        self.snapshot = (start, time.perf_counter())  # position handed to the device now

    def output_callback(self, outdata, frames, time_info, status) -> None:  # noqa: ANN001
        if status:
            _count_flags(self.xruns, status)
        origin = 0
        if self.ring.read_pos is None:  # first call: where is the input clock right now?
            snap = self.engine.in_snapshot
            origin = self.engine.input.write_pos if snap is None else int(
                snap[0] + (time.perf_counter() - snap[1]) * self.engine.sr)
        self.play(outdata[:, 0], origin)
        if outdata.shape[1] > 1:
            outdata[:, 1:] = outdata[:, :1]


def _count_flags(counts: dict[str, int], status: Any) -> None:
    for f in XRUN_FLAGS:
        if getattr(status, f, False):
            counts[f] += 1


class Engine:
    def __init__(
        self,
        separator: Any,
        plan: WindowPlan,
        *,
        seed: int = 0,
        budget: int = 0,
        overload: str = "dry",
        metrics: Metrics | None = None,
        skip_ahead: bool = True,
        model_name: str = "",
    ):
        self.sep = separator
        self.plan = plan
        self.sr = plan.sample_rate
        self.budget = int(budget)
        self.overload = overload
        self.metrics = metrics
        self.model_name = model_name
        self.latency_samples = plan.algorithmic_latency + self.budget
        cap = plan.window + self.latency_samples + 4 * plan.hop + 2 * self.sr
        self.input = HistoryRing(cap)
        self.worker = Worker(separator, plan, self.input, seed=seed, overload=overload,
                             skip_ahead=skip_ahead)
        self.worker.on_window = self._on_window
        if metrics is not None:
            self.worker.on_warning = metrics.warn
        self.playback: list[PlaybackSink] = []
        self.in_snapshot: tuple[int, float] | None = None
        self.xruns = dict.fromkeys(XRUN_FLAGS, 0)
        self.input_latency_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()
        self._last_late = 0

    # -- wiring ---------------------------------------------------------------------------------
    def add_sink(self, sink: Any) -> None:
        self.worker.sinks.append(sink)

    def add_playback(self, which: str = "target", own_clock: bool = False) -> PlaybackSink:
        sink = PlaybackSink(self, which, own_clock)
        self.playback.append(sink)
        self.worker.sinks.append(sink)
        return sink

    def set_prompt(self, text: str) -> None:
        self.worker.set_prompt(text)

    @property
    def device_latency_s(self) -> float:
        out = max((p.latency_s for p in self.playback if p.which == "target"), default=0.0)
        return self.input_latency_s + out

    def latency(self) -> dict[str, float]:
        """The planned latency, by component, in seconds (compute = the budget)."""
        s = self.plan.seconds
        alg, bud, dev = s(self.plan.algorithmic_latency), s(self.budget), self.device_latency_s
        return {"algorithmic_s": alg, "compute_s": bud, "buffer_s": 0.0, "device_s": dev,
                "total_s": alg + bud + dev}

    # -- audio callbacks ------------------------------------------------------------------------
    def feed(self, x: np.ndarray) -> None:
        self.input.write(x)
        self.in_snapshot = (self.input.write_pos, time.perf_counter())

    def input_callback(self, indata, frames, time_info, status) -> None:  # noqa: ANN001
        if status:
            _count_flags(self.xruns, status)
        self.feed(indata[:, 0])

    def duplex_callback(self, indata, outdata, frames, time_info, status) -> None:  # noqa: ANN001
        if status:
            _count_flags(self.xruns, status)
        origin = self.input.write_pos
        self.feed(indata[:, 0])
        self.playback[0].play(outdata[:, 0], origin)
        if outdata.shape[1] > 1:
            outdata[:, 1:] = outdata[:, :1]

    # -- worker thread --------------------------------------------------------------------------
    def begin(self, prompt: str | None = None) -> None:
        """Set the prompt and emit the metrics' start record (no thread)."""
        if prompt is not None:
            self.worker.set_prompt(prompt)
        if self.metrics is not None:
            p = self.plan
            self.metrics.start({
                "sample_rate": self.sr, "model": self.model_name, "prompt": prompt,
                "plan": {"window_s": p.seconds(p.window), "hop_s": p.seconds(p.hop),
                         "lookahead_s": p.seconds(p.lookahead),
                         "crossfade_s": p.seconds(p.crossfade)},
                "budget_s": p.seconds(self.budget), "overload": self.overload,
                "latency": self.latency()})
        self._t0 = time.monotonic()

    def start(self, prompt: str | None = None) -> None:
        """Begin and run the worker on its own thread."""
        self.begin(prompt)
        self._stop.clear()
        self._thread = threading.Thread(target=self.worker.run, name="streamsep-worker",
                                        args=(self._stop,), kwargs={"idle": self._observe_clocks},
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def error(self) -> BaseException | None:
        return self.worker.error

    def _observe_clocks(self) -> None:
        snap_in = self.in_snapshot
        if snap_in is None:
            return
        now = time.perf_counter()
        in_pos = snap_in[0] + (now - snap_in[1]) * self.sr
        for p in self.playback:
            if p.corrector is not None and p.snapshot is not None:
                out_pos = p.snapshot[0] + (now - p.snapshot[1]) * self.sr
                p.corrector.observe(now, in_pos, out_pos)

    # -- metrics --------------------------------------------------------------------------------
    def counters(self) -> dict[str, Any]:
        s = self.plan.seconds
        c = self.worker.counters
        return {
            "underrun_s": s(sum(p.underrun for p in self.playback)),
            "late_s": s(sum(p.ring.late_samples for p in self.playback)),
            "overrun_s": s(c.overrun),
            "dropped_windows": c.dropped_windows,
            "dropped_s": s(c.dropped_samples),
            "nonfinite_windows": c.nonfinite_windows,
        }

    def all_xruns(self) -> dict[str, int]:
        out = dict(self.xruns)
        for p in self.playback:
            for k, v in p.xruns.items():
                out[k] += v
        return out

    def drift(self) -> tuple[float | None, int]:
        cs = [p.corrector for p in self.playback if p.corrector is not None]
        if not cs:
            return None, 0
        return cs[0].est.ppm(), cs[0].corrected

    def _on_window(self, info: dict[str, Any]) -> None:
        if self.metrics is None:
            return
        s = self.plan.seconds
        hop_s = s(self.plan.hop)
        compute = info["compute"]
        lat = self.latency()
        lat["compute_s"] = compute
        lat["buffer_s"] = s(self.budget) - compute
        ppm, corrected = self.drift()
        counters = self.counters()
        m = {
            "t": time.monotonic() - self._t0,
            "window": info["window"],
            "prompt": info["prompt"],
            "prompt_changed": info["prompt_changed"],
            "start_s": s(self.plan.emit_start(info["end"])),
            "end_s": s(info["end"]),
            "compute_s": compute,
            "audio_s": hop_s,
            "rtf": compute / hop_s,
            "speed": hop_s / compute if compute > 0 else None,
            "latency": lat,
            # A finite source's last windows reach past its end (right padding): nothing waits.
            "ring": {"input_s": s(max(0, self.input.write_pos - info["end"])),
                     "playback_s": s(self.playback[0].ring.fill()) if self.playback else 0.0},
            "counters": counters,
            "xruns": self.all_xruns(),
            "drift_ppm": ppm,
            "drift_corrected_samples": corrected,
            "skipped": info["skipped"],
        }
        self.metrics.window(m)
        if info["skipped"]:
            n = info["skipped"]
            self.metrics.warn(
                "overload",
                f"falling behind: compute {compute:.2f} s per window vs hop {hop_s:.2f} s; "
                f"skipped {n} window(s) ({n * hop_s:.1f} s, played {self.overload}); raise "
                "--hop or lower --steps/--window")
        late = sum(p.ring.late_samples for p in self.playback)
        if late > self._last_late:
            self._last_late = late
            self.metrics.warn(
                "late", f"results arrived after their playback slot ({s(late):.2f} s so far); "
                "raise --budget")

    def summary(self) -> dict[str, Any]:
        hist = self.worker.compute_history
        hop_s = self.plan.seconds(self.plan.hop)
        ppm, corrected = self.drift()
        return {
            "windows": len(hist),
            "counters": self.counters(),
            "xruns": self.all_xruns(),
            "compute_mean_s": float(np.mean(hist)) if hist else None,
            "compute_max_s": float(np.max(hist)) if hist else None,
            "rtf_mean": float(np.mean(hist)) / hop_s if hist else None,
            "drift_ppm": ppm,
            "drift_corrected_samples": corrected,
            "latency": self.latency(),
        }
