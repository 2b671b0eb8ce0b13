"""The background worker: assemble a window, separate it, crossfade, hand the result to the sinks.

One ``step()`` processes at most one window and never blocks, so the same code runs on the live
engine's thread, in the fast file loop, and inside deterministic tests that drive time by hand.

Overload policy: when a newer complete window already exists (compute fell a whole hop behind),
the worker skips straight to the newest one. The skipped stretch is filled by the policy — "dry"
(the unprocessed input as target, silence as residual, so target + residual is still the mixture)
or "silence" — crossfaded like any window, and counted. Latency never grows: playback positions
are fixed by the plan, and late results are dropped, not queued.

Separator faults: a window whose ``separate`` raises, or returns NaN/Inf, the wrong length, a
non-float dtype or more than one channel, gets the same policy output as a skipped window (it is
never played or written), is counted (``failed_windows``, ``invalid_windows``,
``nonfinite_windows``) and warned about through ``on_warning``; the stream goes on. Only a
separator that raises or returns unusable output on every window for ``fail_limit_s`` of audio
ends the run, with a ``SeparatorError``.

Prompt changes: ``set_prompt`` (any thread) only records the text. The worker thread encodes it
when no window is waiting (MLX must be driven from one thread, so it cannot happen elsewhere) and
switches at the first window after that, so encoding never counts in a window's compute. When
a window is already waiting, the prompt is encoded first only if it fits the deadline (``budget``;
always without one, and after ``PROMPT_MAX_WAIT_WINDOWS`` windows without an idle moment). A
separator may split the change into ``prepare_prompt`` / ``apply_prompt`` (see
``streamsep.separators.base.StagedPrompt``); otherwise ``set_prompt`` runs at that idle moment.

Continuity between windows (``plan.continuity``): "position" hands every window the
position-seeded noise of its frames (``engine.noise.position_noise``), "independent" fresh noise
per window (``independent_noise``, mlx-audio's scheme). "inpaint" is "position" plus, for a
separator with ``separate_continued`` (``separators.base.ContinuedSeparator``), the state that
separator returned for the previous window, which it uses to pin the frames both windows share;
the worker keeps that state (so one separator can serve several streams) and drops it when the
prompt changes.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from streamsep.engine.crossfade import Crossfader
from streamsep.engine.noise import independent_noise, position_noise
from streamsep.engine.plan import WindowPlan
from streamsep.engine.ring import HistoryRing
from streamsep.runtime import cpu_stolen_s
from streamsep.separators.base import (
    ContinuedSeparator,
    ModelError,
    RegionSeparator,
    check_prompt_text,
    exception_summary,
)

OVERLOAD_POLICIES = ("dry", "silence")
#: Window compute times kept for percentiles (20 000: over an hour at 0.2 s hops).
COMPUTE_HISTORY = 20000
#: Audio seconds of consecutive failed windows after which the run ends: long enough that a
#: separator failing on a few unlucky windows plays through, short enough that a broken one is
#: reported before the user wonders why everything sounds dry.
DEFAULT_FAIL_LIMIT_S = 10.0
#: Windows a pending prompt may wait for an idle moment before it is encoded anyway (a worker that
#: is permanently behind never idles, and the prompt must still switch).
PROMPT_MAX_WAIT_WINDOWS = 2


class SeparatorError(ModelError):
    """The separator failed on every window for too long; the message says what and the fix."""


class Sink(Protocol):
    def write(self, pos: int, target: np.ndarray, residual: np.ndarray) -> None:
        """Receive final output for input positions [pos, pos + len(target))."""


@dataclass
class Counters:
    overrun: int = 0  # input samples lost to a full input ring
    dropped_windows: int = 0
    dropped_samples: int = 0
    nonfinite_windows: int = 0  # results with NaN/Inf, replaced by the overload policy
    failed_windows: int = 0  # separate() raised; the window played the overload policy
    invalid_windows: int = 0  # wrong length, shape or dtype; the window played the policy


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
        budget: int | None = None,
        fail_limit_s: float | None = DEFAULT_FAIL_LIMIT_S,
    ):
        """budget: the compute allowance per window in samples when results have a deadline
        (live, --realtime); None when they have none (files as fast as possible). With a
        deadline a prompt is encoded before a waiting window only if it fits.
        fail_limit_s: audio seconds of consecutive failed windows that end the run (None:
        never)."""
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
        self.budget = budget
        self.fail_limit_s = fail_limit_s
        self.next_end = plan.first_end
        self.index = 0  # windows separated so far
        self.input_end: int | None = None  # set when a finite source is exhausted
        self.prompt: str | None = None
        self._pending_prompt: str | None = None
        self._pending_lock = threading.Lock()
        self._pending_waited = 0  # windows run while a prompt waited to be encoded
        # (text, prepared object, whether apply_prompt must still run) for the next window
        self._ready_prompt: tuple[str, Any, bool] | None = None
        self._prompt_cost = 0.0  # seconds the last prompt encoding took
        self._fail_since: int | None = None  # start of the current run of failed windows
        # where the separator's code lives: its frames, not numpy's, locate a failure
        self._sep_file = getattr(sys.modules.get(type(separator).__module__), "__file__", None)
        # A separator that can compute just the emitted stretch (SAM-Audio's codec) is asked for
        # that alone; it keeps its own per-stream caches keyed by the window's absolute start.
        self._region = isinstance(separator, RegionSeparator)
        self._continued = (plan.continuity == "inpaint" and not self._region
                           and isinstance(separator, ContinuedSeparator))
        self._continuity_state: Any = None  # what separate_continued returned last
        self.counters = Counters()
        self.on_window: Callable[[dict[str, Any]], None] | None = None
        self.on_warning: Callable[[str, str], None] | None = None
        # (position, previous window's target tail, this window's target head) before each blend:
        # what the crossfade has to hide (streamsep.seams measures it); must not keep the arrays.
        self.on_seam: Callable[[int, np.ndarray, np.ndarray], None] | None = None
        #: Told the outcome of every prompt change after the first, on the worker thread, as
        #: (text, None) once it is ready for the next window or (text, the one line saying why
        #: it was refused and what stays); refusals then go here instead of to ``on_warning``.
        self.on_prompt: Callable[[str, str | None], None] | None = None
        # Bounded, so that a run of days keeps constant memory; benchmarks read the newest.
        self.compute_history: deque[float] = deque(maxlen=COMPUTE_HISTORY)
        self._window = np.zeros(plan.window, np.float32)
        x = plan.crossfade
        self._fader = Crossfader(x, plan.crossfade_shape)
        self._tail_t = np.zeros(x, np.float32)
        self._tail_r = np.zeros(x, np.float32)
        self._have_tail = False
        self._prompt_changed = False
        self.error: BaseException | None = None
        # --mix / --gate (streamsep.engine.mixgate.MixGate), applied to each final block.
        self.post: Any = None

    # -- control (any thread) -------------------------------------------------------------------
    def set_prompt(self, text: str) -> None:
        """Use ``text`` from the next window on (crossfaded in like any window boundary).

        Once a prompt is in use, text that ``check_prompt_text`` refuses is ignored with a
        warning and the prompt in use stays."""
        # The first prompt is the caller's to check (the CLI does): there is none to keep.
        first = self.prompt is None and self._pending_prompt is None and self._ready_prompt is None
        problem = None if first else check_prompt_text(text)
        if problem is not None:
            self._warn("prompt", f"{problem}; keeping {self.prompt or self._pending_prompt!r}")
            return
        with self._pending_lock:
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
        """Process one window if its audio is complete. Returns whether it did.

        With no window waiting, it encodes a pending prompt instead (and returns False)."""
        if not self.ready():
            self.prepare_pending_prompt()
            return False
        if self._pending_prompt is not None and self._prompt_fits():
            self.prepare_pending_prompt()
        self._apply_prompt()
        if self._pending_prompt is not None:
            self._pending_waited += 1
        plan = self.plan
        skipped = 0
        w_in = self.ring.write_pos
        if self.skip_ahead and self.input_end is None and w_in - self.next_end >= plan.hop:
            skipped = (w_in - self.next_end) // plan.hop
            self._emit_fallback(skipped)

        end = self.next_end
        t0 = self.clock()
        stolen0 = cpu_stolen_s()
        win = self._window
        self.counters.overrun += self.ring.read(end - plan.window, win)
        if not np.isfinite(win).all():
            np.nan_to_num(win, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        nch = int(getattr(self.sep, "noise_channels", 0) or 0)
        noise = None
        if nch:
            make = independent_noise if plan.continuity == "independent" else position_noise
            noise = make(self.seed, (end - plan.window) // plan.frame_hop, plan.window_frames,
                         nch)
        fault, why, error = None, "", None
        start = plan.emit_start(end)
        n = plan.hop + plan.crossfade
        off = plan.emit_offset
        try:
            if self._region:
                out = self.sep.separate_region(win, noise, None, start=end - plan.window,
                                               emit=slice(off, off + n))
            elif self._continued:
                if self._prompt_changed:
                    self._continuity_state = None  # the last result answered another prompt
                *out, state = self.sep.separate_continued(
                    win, noise, None, start=end - plan.window, keep=slice(off, off + n),
                    previous=self._continuity_state)
                out = tuple(out)
            else:
                out = self.sep.separate(win, noise, None)
        except Exception as e:  # a broken window must not stop the stream (KeyboardInterrupt does)
            fault, why, error = "failed", exception_summary(e, self._sep_file), e
        else:
            fault, why, target, residual = self._check_output(out, n if self._region else None)
            if fault is None and self._continued:
                self._continuity_state = state
        if fault is None:
            if not self._region:
                target, residual = target[off : off + n], residual[off : off + n]
            seg_t = np.array(target, np.float32)
            seg_r = np.array(residual, np.float32)
        else:
            # the overrun was counted when the window was read
            seg_t, seg_r = self._policy_output(start, n, count_overrun=False)
        compute = self.clock() - t0
        stolen1 = cpu_stolen_s()
        stolen = stolen1 - stolen0 if stolen0 is not None and stolen1 is not None else 0.0
        self._emit(start, seg_t, seg_r)
        self.next_end = end + plan.hop
        self.index += 1
        self.compute_history.append(compute)
        if self.on_window is not None:
            self.on_window({"window": self.index - 1, "end": end, "compute": compute,
                            "stolen": stolen,
                            "skipped": skipped, "prompt": self.prompt,
                            "prompt_changed": self._prompt_changed, "input_pos": w_in,
                            "fault": fault})
        self._prompt_changed = False
        self._account(fault, why, end, error)
        return True

    def _account(self, fault: str | None, why: str, end: int,
                 error: BaseException | None) -> None:
        """Count and report a faulty window; end the run when the separator is plainly broken."""
        if fault is None:
            self._fail_since = None
            return
        c = self.counters
        hop_s = self.plan.seconds(self.plan.hop)
        where = f"window {self.index - 1} at {self.plan.seconds(self.plan.emit_start(end)):.1f} s"
        played = f"its {hop_s:g} s played {self.overload}"
        if fault == "failed":
            c.failed_windows += 1
            self._warn("separator-error", f"{where}: the separator raised {why}; {played} "
                       f"(failed windows so far: {c.failed_windows})")
        else:
            if fault == "nonfinite":
                c.nonfinite_windows += 1
                total, kind = c.nonfinite_windows, "non-finite"
            else:
                c.invalid_windows += 1
                total, kind = c.invalid_windows, "invalid"
            self._warn("separator-output", f"{where}: the separator returned {why}; {played} "
                       f"({kind} windows so far: {total})")
        if fault == "nonfinite":
            return  # NaN can depend on the audio (silence, clipping): never a reason to stop
        if self._fail_since is None:
            self._fail_since = end - self.plan.hop
        limit = self.fail_limit_s
        if limit is not None and limit > 0 and \
                end - self._fail_since >= limit * self.plan.sample_rate:
            what = "failed" if fault == "failed" else "returned unusable output"
            raise SeparatorError(f"the separator {what} on every window for {limit:g} s "
                                 f"({why}): fix the model or use --model passthrough") from error

    def _check_output(self, out: Any, length: int | None = None
                      ) -> tuple[str | None, str, np.ndarray, np.ndarray]:
        """(fault, why, target, residual): fault None, "invalid" or "nonfinite".

        length: the samples expected (default: the window's)."""
        empty = np.zeros(0, np.float32)
        if not isinstance(out, tuple | list) or len(out) != 2:
            kind = type(out).__name__
            return "invalid", f"a {kind}, not a (target, residual) pair", empty, empty
        arrays = []
        for x, name in zip(out, ("target", "residual"), strict=True):
            a, why = self._check_array(x, name, length)
            if a is None:
                return "invalid", why, empty, empty
            arrays.append(a)
        target, residual = arrays
        if not (np.isfinite(target).all() and np.isfinite(residual).all()):
            return "nonfinite", "NaN or Inf samples", empty, empty
        return None, "", target, residual

    def _check_array(self, x: Any, name: str, length: int | None = None
                     ) -> tuple[np.ndarray | None, str]:
        want = self.plan.window if length is None else length
        try:
            a = np.asarray(x)
        except Exception:  # anything numpy cannot read is as wrong as a wrong shape
            return None, f"a {name} that is not an array ({type(x).__name__})"
        if a.dtype.kind != "f":
            # ints may be PCM of any scale and complex has no meaning here: refuse, not guess
            return None, f"a {name} of dtype {a.dtype} (use float32)"
        if a.ndim == 2 and 1 in a.shape:
            a = a.reshape(-1)  # mono as a column (mlx-audio's (N, 1)) or a row
        if a.ndim != 1:
            return None, f"a {name} of shape {a.shape} (want ({want},), mono)"
        if a.shape[0] != want:
            what = "a window" if length is None else "an emitted region"
            return None, f"a {name} of {a.shape[0]} samples for {what} of {want}"
        return a, ""

    def _policy_output(self, start: int, n: int, count_overrun: bool = True
                       ) -> tuple[np.ndarray, np.ndarray]:
        """``n`` samples from input position ``start`` as the overload policy plays them.

        Read from the ring, not from the window buffer: a separator may have written into the
        window it was given before it failed."""
        seg_t = np.zeros(n, np.float32)
        seg_r = np.zeros(n, np.float32)
        if self.overload == "dry":
            lost = self.ring.read(start, seg_t)
            if count_overrun:
                self.counters.overrun += lost
            if not np.isfinite(seg_t).all():
                np.nan_to_num(seg_t, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        return seg_t, seg_r

    def _warn(self, key: str, text: str) -> None:
        if self.on_warning is not None:
            self.on_warning(key, text)

    # -- prompts (worker thread) ----------------------------------------------------------------
    def _prompt_fits(self) -> bool:
        """Whether a pending prompt may be encoded before the waiting window."""
        if self.prompt is None or self.budget is None:
            return True  # the first window needs a prompt; without a deadline nothing is late
        if self._pending_waited >= PROMPT_MAX_WAIT_WINDOWS:
            return True  # never idle: switch late rather than never
        lag = self.ring.write_pos - self.next_end  # how long the window's audio has waited
        recent = list(itertools.islice(reversed(self.compute_history), 4))
        need = (self._prompt_cost + (max(recent) if recent else 0.0)) * self.plan.sample_rate
        return lag + need <= self.budget

    def prepare_pending_prompt(self) -> bool:
        """Encode a pending prompt now (worker thread only); it applies at the next window.

        Returns whether there was one. A prompt the separator refuses is reported through
        ``on_warning`` and the prompt in use stays, except for the very first prompt, whose
        error propagates (there is nothing to keep)."""
        with self._pending_lock:
            text, self._pending_prompt = self._pending_prompt, None
        if text is None:
            return False
        self._pending_waited = 0
        if text == self.prompt:
            self._ready_prompt = None  # switched back before the other one was applied
            self._tell_prompt(text, None)
            return True
        if self._ready_prompt is not None and self._ready_prompt[0] == text:
            self._tell_prompt(text, None)
            return True
        sep = self.sep
        staged = callable(getattr(sep, "prepare_prompt", None)) and callable(
            getattr(sep, "apply_prompt", None))
        t0 = self.clock()
        try:
            if staged:
                self._ready_prompt = (text, sep.prepare_prompt(text), True)
            else:
                sep.set_prompt(text)
                self._ready_prompt = (text, None, False)
        except Exception as e:
            if self.prompt is None:
                raise
            # a bad prompt typed while running must not stop the stream
            line = f"prompt {text!r} rejected ({_reason(e)}); keeping {self.prompt!r}"
            if self.on_prompt is not None:
                self.on_prompt(text, line)
            else:
                self._warn("prompt", line)
        else:
            self._tell_prompt(text, None)
        finally:
            self._prompt_cost = self.clock() - t0
        return True

    def _tell_prompt(self, text: str, problem: str | None) -> None:
        if self.on_prompt is not None and self.prompt is not None:
            self.on_prompt(text, problem)

    def _apply_prompt(self) -> None:
        if self._ready_prompt is None:
            return
        text, prepared, staged = self._ready_prompt
        self._ready_prompt = None
        if staged:
            try:
                self.sep.apply_prompt(prepared)
            except Exception as e:
                if self.prompt is None:
                    raise
                self._warn("prompt", f"prompt {text!r} could not be applied ({_reason(e)}); "
                           f"keeping {self.prompt!r}")
                return
        self._prompt_changed = self.prompt is not None
        self.prompt = text

    def _emit_fallback(self, windows: int) -> None:
        """Fill ``windows`` skipped hops (plus a tail to crossfade from) per the overload policy."""
        plan = self.plan
        start = plan.emit_start(self.next_end)
        n = windows * plan.hop
        seg_t, seg_r = self._policy_output(start, n + plan.crossfade)
        self._emit(start, seg_t, seg_r)
        self.next_end += n
        self.counters.dropped_windows += windows
        self.counters.dropped_samples += n

    def _emit(self, start: int, seg_t: np.ndarray, seg_r: np.ndarray) -> None:
        x = self.plan.crossfade
        if x and self._have_tail:
            if self.on_seam is not None:
                self.on_seam(start, self._tail_t, seg_t[:x])
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
        if self.post is not None and len(body_t) and self.post.needs_dry:
            # The final block's own input positions: the dry blend is aligned to the sample.
            dry = np.zeros(len(body_t), np.float32)
            self.ring.read(start, dry)
            if not np.isfinite(dry).all():
                np.nan_to_num(dry, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
            body_t, body_r = self.post.process(body_t, body_r, dry)
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


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__
