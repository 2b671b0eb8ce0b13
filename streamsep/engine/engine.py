"""Wires the input ring, the worker, the playback rings and the sinks; owns the live counters.

Latency contract: output position p (in input samples) plays exactly
``latency_samples = hop + lookahead + crossfade + budget`` samples after input position p arrived
(plus what the devices add). ``budget`` is the compute allowance: a window's result must be
written within ``budget`` of its last input sample arriving, or the part that missed its slot is
filled by the overload policy and counted (underrun / late), never queued up.

The audio callback is C (``rt_callback`` in rt.c): it copies between preallocated rings, fills
late output by the overload policy, records timestamps and counts xrun events, and never waits for
the interpreter. Everything here runs on the worker thread or the main thread.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from streamsep.engine.metrics import Metrics
from streamsep.engine.mixgate import MixGate
from streamsep.engine.plan import WindowPlan
from streamsep.engine.sinks import (
    XRUN_FLAGS,
    FileSink,
    InputState,
    PlaybackSink,
    StreamState,
    now_s,
)
from streamsep.engine.worker import Worker
from streamsep.separators.base import RegionSeparator

__all__ = ["Engine", "FileSink", "PlaybackSink", "auto_budget", "warm_up"]

MIN_BUDGET_S = 0.1
#: The adaptive budget looks at this many recent windows ...
BUDGET_WINDOWS = 50
#: ... and is raised when their 95th-percentile compute passes this fraction of it ...
BUDGET_RAISE_AT = 0.9
#: ... once this many windows are known, the first few (still warming up) left out.
BUDGET_MIN_WINDOWS = 20
BUDGET_SKIP_FIRST = 5
#: Windows during which the hypervisor took more than this fraction of their wall time from the
#: machine's CPUs are left out of the percentile.
STOLEN_FRACTION = 0.1


def auto_budget(plan: WindowPlan, compute_s: float) -> int:
    """Compute budget in samples: twice the measured window compute, at least 0.1 s (scheduling
    and device-block jitter), at most one hop; if one window takes longer than a hop, 1.25x the
    compute, so that the windows the engine does separate (it skips the others) arrive in time."""
    hop_s = plan.seconds(plan.hop)
    b = min(max(hop_s, 1.25 * compute_s), max(MIN_BUDGET_S, 2.0 * compute_s))
    return int(round(b * plan.sample_rate))


def warm_up(separator: Any, plan: WindowPlan, runs: int = 2, settle_s: float = 1.0) -> float:
    """Run the separator on full windows (MLX compiles on the first call); return the slowest
    steady-state window's wall time in seconds.

    The windows hold quiet noise, not silence: a separator may skip silent frames (the embedded
    one does), and a warm-up that skips its work would set the budget far too low. A fast
    separator runs a few more windows (up to ``settle_s`` seconds of them) and the slowest
    counts: one quick window is a poor estimate of the tail that the budget must cover. A
    separator with ``separate_region`` is driven as the engine drives it, on consecutive
    windows, so that its per-stream caches are warm as they will be live.
    """
    most = runs + 8
    stream = (1e-3 * np.random.default_rng(0).standard_normal(plan.window + most * plan.hop))
    stream = stream.astype(np.float32)
    nch = int(getattr(separator, "noise_channels", 0) or 0)
    noise = np.zeros((plan.window_frames, nch), np.float32) if nch else None
    region = isinstance(separator, RegionSeparator)
    off = plan.emit_offset
    emit = slice(off, off + plan.hop + plan.crossfade)
    times: list[float] = []
    spent = 0.0
    i = 0
    while i < runs or (spent < settle_s and i < most):
        win = stream[i * plan.hop : i * plan.hop + plan.window]
        t0 = time.perf_counter()
        if region:
            separator.separate_region(win, noise, None, start=i * plan.hop, emit=emit)
        else:
            separator.separate(win, noise, None)
        dt = time.perf_counter() - t0
        if i > 0:  # the first window compiles and builds caches
            times.append(dt)
            spent += dt
        i += 1
    return max(times) if times else dt


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
        adaptive_budget: bool = False,
    ):
        self.sep = separator
        self.plan = plan
        self.sr = plan.sample_rate
        self.budget = int(budget)
        self.overload = overload
        self.metrics = metrics
        self.model_name = model_name
        self.adaptive_budget = adaptive_budget
        self.latency_samples = plan.algorithmic_latency + self.budget
        # The callback plays the dry input from here when a result is late, so the ring spans
        # the largest latency the budget can grow to; beyond that it is cheap insurance (2 min,
        # 23 MB) that a long stall still finds the audio it skipped, for the files.
        cap = max(plan.window + plan.algorithmic_latency + 6 * plan.hop + 2 * self.sr,
                  120 * self.sr)
        self.source = InputState(cap)
        self.input = self.source.ring
        self.worker = Worker(separator, plan, self.input, seed=seed, overload=overload,
                             skip_ahead=skip_ahead, budget=self.budget if skip_ahead else None)
        self.worker.on_window = self._on_window
        # --mix / --gate: off (mix 1, gate off) costs nothing; set from the CLI or stdin.
        self.mixgate = MixGate(self.sr)
        self.worker.post = self.mixgate
        if metrics is not None:
            self.worker.on_warning = metrics.warn
        self.playback: list[PlaybackSink] = []
        self.streams: list[StreamState] = []
        self.input_latency_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()
        self._last_late = 0
        self._recent: deque[float] = deque(maxlen=BUDGET_WINDOWS)
        self.over_budget_windows = 0
        self.stolen_windows = 0  # left out of the budget: the host stole their CPU time
        self._budget_seen = 0
        self._n, self._sum, self._max = 0, 0.0, 0.0  # compute per window, bounded memory
        self.latency_raises: list[dict[str, float]] = []
        self._gc_t: float | None = None
        self._gc_max = 0.0  # longest collection since the last window record, seconds
        self.gc_pause_max_s = 0.0
        self._gc_frozen = False

    # -- wiring ---------------------------------------------------------------------------------
    def add_sink(self, sink: Any) -> None:
        self.worker.sinks.append(sink)

    def add_playback(self, which: str = "target", own_clock: bool = False) -> PlaybackSink:
        p = self.plan
        cap = self.latency_samples + p.window + 4 * p.hop + 2 * self.sr
        sink = PlaybackSink(cap, which, source=self.source, sample_rate=self.sr,
                            latency=self.latency_samples,
                            dry=which == "target" and self.overload == "dry",
                            own_clock=own_clock, max_step=max(1, p.hop // 1000))
        self.playback.append(sink)
        self.worker.sinks.append(sink)
        return sink

    def stream_state(self, sink: PlaybackSink | None, *, feeds_input: bool,
                     out_channels: int = 1, fill_gaps: bool = False,
                     frame_clock: Any = "jack") -> StreamState:
        """The userdata for one device stream that runs the C callback over this engine."""
        st = StreamState(self.sr, source=self.source, feeds_input=feeds_input, sink=sink,
                         out_channels=out_channels, fill_gaps=fill_gaps, frame_clock=frame_clock)
        self.streams.append(st)
        return st

    def set_prompt(self, text: str) -> None:
        self.worker.set_prompt(text)

    def use_mixgate(self, mixgate: MixGate) -> None:
        """Use these --mix / --gate settings (before the run starts)."""
        self.mixgate = self.worker.post = mixgate

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

    # -- input (simulated devices and files; live devices feed it from the C callback) ---------
    def feed(self, x: np.ndarray) -> None:
        self.source.feed(x)

    @property
    def in_snapshot(self) -> tuple[int, float] | None:
        return self.source.snapshot

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
                         "crossfade_s": p.seconds(p.crossfade),
                         "continuity": p.continuity, "crossfade_shape": p.crossfade_shape},
                "budget_s": p.seconds(self.budget), "overload": self.overload,
                "latency": self.latency(),
                "gap_clock": [st.clock for st in self.streams if st.clock is not None]})
        self._t0 = time.monotonic()

    def start(self, prompt: str | None = None) -> None:
        """Begin and run the worker on its own thread."""
        self.begin(prompt)
        # Everything allocated so far (model, rings, imports) lives for the whole run: moving it
        # out of the collector's reach keeps full collections short however long the run is.
        gc.collect()
        gc.freeze()
        self._gc_frozen = True
        gc.callbacks.append(self._gc_hook)
        self._stop.clear()
        self._thread = threading.Thread(target=self.worker.run, name="streamsep-worker",
                                        args=(self._stop,), kwargs={"idle": self._observe_clocks},
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the worker; False when it did not stop within ``timeout`` seconds."""
        self._stop.set()
        ok = True
        if self._thread is not None:
            self._thread.join(timeout)
            ok = not self._thread.is_alive()
            self._thread = None
        if self._gc_hook in gc.callbacks:
            gc.callbacks.remove(self._gc_hook)
        if self._gc_frozen:
            gc.unfreeze()
            self._gc_frozen = False
        return ok

    def _gc_hook(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_t = time.perf_counter()
        elif self._gc_t is not None:
            d = time.perf_counter() - self._gc_t
            self._gc_t = None
            self._gc_max = max(self._gc_max, d)
            self.gc_pause_max_s = max(self.gc_pause_max_s, d)

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
        now = now_s()
        in_pos = snap_in[0] + (now - snap_in[1]) * self.sr
        for p in self.playback:
            snap = p.snapshot
            if p.corrector is not None and snap is not None:
                out_pos = snap[0] + (now - snap[1]) * self.sr
                p.corrector.observe(now, in_pos, out_pos)

    # -- compute budget -------------------------------------------------------------------------
    def _follow_budget(self, compute: float, stolen: float = 0.0) -> None:
        """Raise the budget (and so the latency, once, announced) when recent compute needs it.

        The budget is never lowered during a run: latency is a contract, and lowering it would
        make every later sample play earlier than promised."""
        s = self.plan.seconds
        if self.budget and compute > s(self.budget):
            self.over_budget_windows += 1
        self._budget_seen += 1
        if self._budget_seen <= BUDGET_SKIP_FIRST:
            return  # first real windows still compile and fault memory in: not the steady state
        if stolen > STOLEN_FRACTION * compute:
            # The host held our CPUs off for part of this window (a virtual machine's steal
            # time): the model did not get slower, so this window says nothing about the budget.
            self.stolen_windows += 1
            return
        self._recent.append(compute)
        if not self.adaptive_budget or len(self._recent) < BUDGET_MIN_WINDOWS:
            return
        p95 = float(np.percentile(self._recent, 95))
        hop = self.plan.hop
        if p95 <= BUDGET_RAISE_AT * s(self.budget) or self.budget >= hop:
            return
        new = min(hop, int(round(2.0 * p95 * self.sr)))
        if new <= self.budget:
            return
        grow = new - self.budget
        old_total = self.latency()["total_s"]
        self.budget = new
        if self.worker.budget is not None:
            self.worker.budget = new
        self.latency_samples += grow
        for p in self.playback:
            p.raise_latency(grow)
        rec = {"t": time.monotonic() - self._t0, "p95_compute_s": p95, "budget_s": s(new),
               "latency_s": self.latency()["total_s"], "previous_latency_s": old_total}
        self.latency_raises.append(rec)
        if self.metrics is not None:
            self.metrics.warn("budget", f"compute grew (95th percentile {p95:.3f} s of the last "
                              f"{len(self._recent)} windows): compute budget raised to "
                              f"{s(new):.2f} s, latency {old_total:.2f} -> "
                              f"{rec['latency_s']:.2f} s from now on")

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
            "failed_windows": c.failed_windows,
            "invalid_windows": c.invalid_windows,
            "over_budget_windows": self.over_budget_windows,
            "stolen_windows": self.stolen_windows,
        }

    def all_xruns(self) -> dict[str, int]:
        """PortAudio's xrun reports over all streams: ``events`` counts each callback that
        carried any flag once; the flags are also counted one by one. ``missed_cycles`` and
        ``missed_frames``: server cycles that never reached a stream (JACK), filled in."""
        out = {"events": 0, **dict.fromkeys(XRUN_FLAGS, 0), "missed_cycles": 0,
               "missed_frames": 0}
        for st in self.streams:
            for k, v in st.xruns().items():
                out[k] += v
        return out

    def drift(self) -> tuple[float | None, int]:
        cs = [p.corrector for p in self.playback if p.corrector is not None]
        if not cs:
            return None, 0
        return cs[0].est.ppm(), cs[0].corrected

    def _on_window(self, info: dict[str, Any]) -> None:
        compute = info["compute"]
        self._n += 1
        self._sum += compute
        self._max = max(self._max, compute)
        self._follow_budget(compute, info.get("stolen", 0.0))
        if self.metrics is None:
            return
        s = self.plan.seconds
        hop_s = s(self.plan.hop)
        lat = self.latency()
        lat["compute_s"] = compute
        lat["buffer_s"] = s(self.budget) - compute
        ppm, corrected = self.drift()
        counters = self.counters()
        gc_max, self._gc_max = self._gc_max, 0.0
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
            "mix": self.mixgate.mix,
            "gate": {"on": self.mixgate.gate_on, "open": self.mixgate.open,
                     "gain": self.mixgate.gain, "threshold_db": self.mixgate.threshold_db,
                     "closed_s": s(self.mixgate.closed_samples)},
            "gc_pause_max_ms": 1000.0 * gc_max,
            "callback_max_ms": 1000.0 * max((st.max_callback_s for st in self.streams),
                                            default=0.0),
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
        hop_s = self.plan.seconds(self.plan.hop)
        ppm, corrected = self.drift()
        mean = self._sum / self._n if self._n else None
        return {
            "windows": self._n,
            "input_samples": self.input.write_pos,
            "counters": self.counters(),
            "xruns": self.all_xruns(),
            "compute_mean_s": mean,
            "compute_max_s": self._max if self._n else None,
            "rtf_mean": mean / hop_s if mean is not None else None,
            "drift_ppm": ppm,
            "drift_corrected_samples": corrected,
            "latency": self.latency(),
            "latency_raises": self.latency_raises,
            "gc_pause_max_ms": 1000.0 * self.gc_pause_max_s,
        }
