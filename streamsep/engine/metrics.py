"""Per-window figures: a rate-limited status line on stderr and JSON lines.

JSON lines schema (``--metrics-json PATH|-``): one object per line.

``{"type": "start", ...}`` once, before audio flows:
    ``sample_rate`` (Hz), ``plan`` (``window_s``, ``hop_s``, ``lookahead_s``, ``crossfade_s``),
    ``model``, ``prompt``, ``budget_s`` (compute budget), ``overload`` (policy: "dry" or
    "silence"), ``latency`` (the latency object below, with ``compute_s`` = the budget).

``{"type": "window", ...}`` after every separated window:
    ``t`` (s since start, wall clock), ``window`` (index k), ``prompt`` (in force),
    ``start_s`` / ``end_s`` (input time of the first emitted sample / of the window's end),
    ``compute_s`` (separator wall time for this window; a new prompt is encoded outside it),
    ``audio_s`` (new audio per window = hop), ``rtf`` (compute_s / audio_s; < 1 keeps up),
    ``speed`` (audio_s / compute_s),
    ``latency``: ``algorithmic_s`` (hop + lookahead + crossfade), ``compute_s`` (this window's
    compute), ``buffer_s`` (budget - compute: how long the result waits before it plays;
    negative means it was late), ``device_s`` (PortAudio input + output latency, 0 for files),
    ``total_s`` (their sum = the constant end-to-end latency),
    ``ring``: ``input_s`` (audio received but not yet in a window), ``playback_s`` (scheduled
    output not yet played),
    ``counters`` (cumulative): ``underrun_s`` (output played before it was ready, filled by the
    overload policy), ``late_s`` (results that arrived after their slot), ``overrun_s`` (input lost
    to a full ring), ``dropped_windows`` / ``dropped_s`` (windows skipped to catch up),
    ``nonfinite_windows`` (windows with NaN/Inf output, replaced by the overload policy),
    ``failed_windows`` (the separator raised; the policy played instead), ``invalid_windows``
    (wrong length, shape or dtype, replaced by the policy), ``over_budget_windows`` (compute
    exceeded the budget in force),
    ``xruns`` (cumulative PortAudio reports: ``events`` counts each callback that carried any
    flag once; ``input_underflow``, ``input_overflow``, ``output_underflow``,
    ``output_overflow`` count the flags),
    ``drift_ppm`` (input clock minus output clock, null without a separate output clock),
    ``drift_corrected_samples`` (samples repeated (+) or dropped (-) to hold latency),
    ``skipped`` (windows skipped right before this one),
    ``gc_pause_max_ms`` (longest Python garbage collection since the previous record),
    ``callback_max_ms`` (longest device callback so far; the callbacks are C).

``{"type": "end", ...}`` once: ``windows``, ``counters``, ``xruns``, ``compute_mean_s``,
    ``compute_max_s``, ``rtf_mean``, ``drift_ppm``, ``latency`` (as planned at the end),
    ``latency_raises`` (each time the adaptive budget raised the latency: ``t``,
    ``p95_compute_s``, ``budget_s``, ``latency_s``, ``previous_latency_s``),
    ``gc_pause_max_ms``.

Only the newest ``KEEP_WINDOWS`` window records stay in memory (``Metrics.windows``); the JSON
stream has them all.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from typing import IO, Any

KEEP_WINDOWS = 600


def _fmt_status(m: dict[str, Any]) -> str:
    lat = m["latency"]
    c = m["counters"]
    x = m["xruns"]["events"]
    speed = m["speed"]
    parts = [
        f"win {m['window']}",
        f"rtf {m['rtf']:.2f} ({speed:.1f}x)" if speed is not None else f"rtf {m['rtf']:.2f}",
        f"latency {lat['total_s']:.2f} s = alg {lat['algorithmic_s']:.2f} + compute "
        f"{lat['compute_s']:.2f} + buffer {lat['buffer_s']:.2f} + device {lat['device_s']:.3f}",
        f"ring in {m['ring']['input_s']:.2f} out {m['ring']['playback_s']:.2f} s",
        f"drops {c['dropped_windows']} ({c['dropped_s']:.1f} s)",
        f"underrun {c['underrun_s']:.2f} s",
        f"xruns {x}",
    ]
    if m.get("drift_ppm") is not None:
        parts.append(f"drift {m['drift_ppm']:+.0f} ppm")
    return " | ".join(parts)


class Metrics:
    """Collects window records; writes JSON lines and a status line no more than every interval."""

    def __init__(self, json_out: IO[str] | None = None, status: IO[str] | None | bool = True,
                 interval_s: float = 1.0, warn_cooldown_s: float = 2.0):
        """status: a stream for the status line, True for the current stderr, None for none."""
        self.json_out = json_out
        status = sys.stderr if status is True else (status or None)
        self.status = status
        self.interval_s = interval_s
        self.warn_cooldown_s = warn_cooldown_s
        self._last_status = -1e9
        self._last_warn: dict[str, float] = {}
        self._tty = bool(status is not None and getattr(status, "isatty", lambda: False)())
        self._status_shown = False
        # Bounded: a run of days at 40 ms hops must not grow (the JSON stream keeps everything).
        self.windows: deque[dict[str, Any]] = deque(maxlen=KEEP_WINDOWS)

    def _emit_json(self, obj: dict[str, Any]) -> None:
        if self.json_out is not None:
            self.json_out.write(json.dumps(obj) + "\n")
            self.json_out.flush()

    def start(self, info: dict[str, Any]) -> None:
        self._emit_json({"type": "start", **info})

    def window(self, m: dict[str, Any]) -> None:
        m = {"type": "window", **m}
        self.windows.append(m)
        self._emit_json(m)
        now = time.monotonic()
        if self.status is not None and now - self._last_status >= self.interval_s:
            self._last_status = now
            line = _fmt_status(m)
            if self._tty:
                self.status.write("\r\033[K" + line)
            else:
                self.status.write(line + "\n")
            self.status.flush()
            self._status_shown = True

    def warn(self, key: str, text: str) -> None:
        """A warning on stderr, at most once per cooldown for the same key."""
        now = time.monotonic()
        if now - self._last_warn.get(key, -1e9) < self.warn_cooldown_s or self.status is None:
            return
        self._last_warn[key] = now
        self._newline()
        self.status.write(f"warning: {text}\n")
        self.status.flush()

    def _newline(self) -> None:
        if self._tty and self._status_shown:
            self.status.write("\n")
            self._status_shown = False

    def end(self, summary: dict[str, Any]) -> None:
        self._emit_json({"type": "end", **summary})
        if self.status is not None:
            self._newline()
