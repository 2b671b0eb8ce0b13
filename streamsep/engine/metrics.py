"""Per-window figures: a rate-limited, compact status line on stderr and JSON lines.

JSON lines schema (``--metrics-json PATH|-``): one object per line.

``{"type": "start", ...}`` once, before audio flows:
    ``sample_rate`` (Hz), ``plan`` (``window_s``, ``hop_s``, ``lookahead_s``, ``crossfade_s``,
    ``continuity``, ``crossfade_shape``), ``model``, ``prompt``, ``budget_s`` (compute budget),
    ``overload`` (policy: "dry" or "silence"), ``latency`` (the latency object below, with
    ``compute_s`` = the budget), ``gap_clock`` (per device stream on JACK, what missed cycles
    are measured with: "jack frames", JACK's frame counter, or "stream time", PortAudio's
    interpolated time where the libjack is not jack2's).

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
    ``output_overflow`` count the flags; on JACK, ``missed_cycles`` / ``missed_frames``: cycles
    the server ran without a stream, filled in to keep positions on the device's clock),
    ``drift_ppm`` (input clock minus output clock, null without a separate output clock),
    ``drift_corrected_samples`` (samples repeated (+) or dropped (-) to hold latency),
    ``skipped`` (windows skipped right before this one),
    ``mix`` (the dry/wet mix in force for this window's block: 1 = target only),
    ``gate``: ``on``, ``open``, ``gain`` (0..1 at the block's end), ``threshold_db`` (relative to
    the input), ``closed_s`` (cumulative seconds emitted with the gate fully closed),
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
import shutil
import sys
import threading
import time
from collections import deque
from typing import IO, Any

KEEP_WINDOWS = 600


#: The status line never gets wider than this (or the terminal, if narrower): it is redrawn in
#: place, and a line that wraps cannot be.
STATUS_WIDTH = 80


def _fmt_status(m: dict[str, Any], width: int = STATUS_WIDTH) -> str:
    """The compact status line, at most ``width - 1`` characters: the least important figures are
    left out when it would not fit (the full record is in --metrics-json)."""
    lat = m["latency"]
    c = m["counters"]
    gate = m.get("gate") or {}
    # (priority, text): lower is kept first; shown in list order.
    parts = [
        (0, f"win {m['window']}"),
        (0, f"rtf {m['rtf']:.2f}"),
        (0, f"lat {lat['total_s']:.2f} s"),
        (3, f"(buffer {lat['buffer_s']:+.2f})"),
        (2, f"drops {c['dropped_windows']}"),
        (1, f"under {c['underrun_s']:.2f} s"),
        (1, f"xruns {m['xruns']['events']}"),
    ]
    if m.get("drift_ppm") is not None:
        parts.append((4, f"drift {m['drift_ppm']:+.0f} ppm"))
    if m.get("mix", 1.0) != 1.0:
        parts.append((1, f"mix {m['mix']:.2f}"))
    if gate.get("on"):
        parts.append((1, "gate " + ("open" if gate.get("open") else "closed")))
    keep: set[int] = set()
    used = -2
    for i in sorted(range(len(parts)), key=lambda i: parts[i][0]):
        if used + 2 + len(parts[i][1]) <= width - 1:
            keep.add(i)
            used += 2 + len(parts[i][1])
    return "  ".join(text for i, (_, text) in enumerate(parts) if i in keep)


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
        self._status_shown = False  # the status line is the line just above the cursor
        self._last_line = ""
        self._lock = threading.Lock()  # the worker (status, warnings) and stdin (notes) write
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
            self._last_line = _fmt_status(m, self._width())
            self._draw(self._last_line)

    def _width(self) -> int:
        if not self._tty:
            return STATUS_WIDTH
        return max(20, min(STATUS_WIDTH, shutil.get_terminal_size((STATUS_WIDTH, 24)).columns))

    def _draw(self, line: str) -> None:
        """On a terminal the status line sits on the line above the cursor, and the cursor stays
        where it is: the line below is the user's, who may be typing a prompt there (echoed by
        the terminal), and redrawing never touches it. Elsewhere each status is a line."""
        with self._lock:
            if not self._tty:
                self.status.write(line + "\n")
            elif self._status_shown:
                # save the cursor, up one line, clear it, write, restore the cursor
                self.status.write("\0337\033[1A\r\033[2K" + line + "\0338")
            else:
                self.status.write(line + "\n")
                self._status_shown = True
            self.status.flush()

    def note(self, text: str, kind: str = "note") -> None:
        """A line that stays (``kind: text``), then the status line again below it."""
        if self.status is None:
            return
        with self._lock:
            self.status.write(f"{kind}: {text}\n")
            self.status.flush()
            # The lines written since moved the status line out of reach above the cursor.
            self._status_shown = False
        if self._tty and self._last_line:
            self._draw(self._last_line)

    def warn(self, key: str, text: str) -> None:
        """A warning on stderr, at most once per cooldown for the same key."""
        now = time.monotonic()
        if now - self._last_warn.get(key, -1e9) < self.warn_cooldown_s or self.status is None:
            return
        self._last_warn[key] = now
        self.note(text, "warning")

    def _newline(self) -> None:
        # The cursor is already on a line of its own below the status line.
        self._status_shown = False

    def end(self, summary: dict[str, Any]) -> None:
        self._emit_json({"type": "end", **summary})
        if self.status is not None:
            self._newline()
