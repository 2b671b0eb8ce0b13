"""Live streams: open PortAudio streams around an Engine, run until stopped, clean up.

One duplex stream when input and output are the same device (one clock, no drift); otherwise an
input stream and an output stream, whose clock drift the engine measures and corrects. An optional
second output stream carries the residual. Every stream runs the engine's C callback.

Stopping (duration, a signal, ``stop``, a dead device or a worker error) always ends the same
way: the streams are closed (with a time limit, since PortAudio can hang once a sound server is
gone), the worker separates what is left of the received input for the files (again with a time
limit, so a stuck separator cannot hold the process), and the summary says why it stopped.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from streamsep import runtime
from streamsep.audio import devices
from streamsep.engine.engine import Engine
from streamsep.engine.signals import signal_summary, stop_on_signals
from streamsep.separators.base import check_prompt_text

#: Seconds without a device callback after which the device counts as gone.
DEVICE_TIMEOUT_S = 2.0
#: Seconds a stop may spend closing streams, and then draining the worker.
CLOSE_TIMEOUT_S = 2.0
DRAIN_TIMEOUT_S = 2.5


class StreamsAbandoned:
    """Set when PortAudio did not let go of a stream: the process must leave with os._exit,
    because PortAudio's own exit handler would hang on it too."""

    abandoned = False


def _latency_arg(latency: str | float) -> str | float:
    try:
        return float(latency)
    except (TypeError, ValueError):
        return latency


def open_streams(engine: Engine, in_idx: int, out_idx: int | None,
                 residual_idx: int | None = None, *, blocksize: int = 0,
                 latency: str | float = "high", duplex: bool = True,
                 routes: dict[str, dict[str, str]] | None = None) -> list[Any]:
    """Create (not start) the streams; registers the engine's playback sinks.

    ``duplex=False`` opens separate input and output streams even on one device (tests use it to
    exercise the drift-corrected path). ``routes``: for "input", "target" and "residual", the
    PulseAudio sink/source the stream is pointed at (``devices.open_stream(route=...)``)."""
    sr = engine.sr
    lat = _latency_arg(latency)
    streams: list[Any] = []
    routes = routes or {}
    # PortAudio's JACK stream times count the server's frames, so a cycle that skipped us can
    # be found and filled in (rt.c); other host APIs' times are wall clocks: left alone.
    gaps = {"fill_gaps": devices.host_api(in_idx) == "JACK Audio Connection Kit"}
    try:
        if duplex and out_idx is not None and out_idx == in_idx:
            sink = engine.add_playback("target", own_clock=False)
            ch = _channels(out_idx, routes.get("target"))
            st = engine.stream_state(sink, feeds_input=True, out_channels=ch, **gaps)
            s = devices.open_stream("duplex", (in_idx, out_idx), sr, st, channels=(1, ch),
                                    blocksize=blocksize, latency=lat,
                                    route={**routes.get("input", {}),
                                           **routes.get("target", {})})
            engine.input_latency_s, sink.latency_s = (devices.stream_latency(float(v))
                                                      for v in s.latency)
            streams.append(s)
        else:
            st = engine.stream_state(None, feeds_input=True, **gaps)
            s = devices.open_stream("input", in_idx, sr, st, channels=1, blocksize=blocksize,
                                    latency=lat, route=routes.get("input"))
            engine.input_latency_s = devices.stream_latency(float(s.latency))
            streams.append(s)
            if out_idx is not None:
                streams.append(_output_stream(engine, "target", out_idx, blocksize, lat,
                                              routes.get("target")))
        if residual_idx is not None:
            streams.append(_output_stream(engine, "residual", residual_idx, blocksize, lat,
                                          routes.get("residual")))
    except devices.DeviceError:
        for s in streams:
            s.close()
        raise
    return streams


def _channels(idx: int, route: dict[str, str] | None) -> int:
    # A virtual microphone is a mono sink: mono in, so the server converts nothing and the
    # recording program gets our samples unchanged (a stereo pair would be downmixed).
    return 1 if route and "PULSE_SINK" in route else devices.out_channels(idx)


def _output_stream(engine: Engine, which: str, idx: int, blocksize: int,
                   lat: str | float, route: dict[str, str] | None = None) -> Any:
    """An output stream on its own clock, playing the engine's ``which`` signal."""
    sink = engine.add_playback(which, own_clock=True)
    ch = _channels(idx, route)
    st = engine.stream_state(sink, feeds_input=False, out_channels=ch,
                             fill_gaps=devices.host_api(idx) == "JACK Audio Connection Kit")
    s = devices.open_stream("output", idx, engine.sr, st, channels=ch, blocksize=blocksize,
                            latency=lat, route=route)
    sink.latency_s = devices.stream_latency(float(s.latency))
    return s


def command(engine: Engine, text: str) -> str | None:
    """Carry out one typed line; returns the note that says what it did.

    ``mix M`` and ``gate on|off|DB`` change the mix and the gate from the next window; ``prompt
    TEXT`` and any other text become the prompt from the first window after it is ready. For a
    prompt the note is None when the worker reports the outcome (``engine.worker.on_prompt``,
    set by ``run``): only the model knows whether it can serve the text (the embedded model
    refuses a sound it cannot isolate), and it says so once it has encoded it, in one line."""
    why = check_prompt_text(text)
    if why is not None:
        return why
    text = text.strip()
    word, _, arg = text.partition(" ")
    word, arg = word.lower(), arg.strip()
    mg = engine.mixgate
    if word == "mix" and arg:
        try:
            mg.set_mix(float(arg))
        except ValueError:
            return (f"mix must be a number between 0 (the input) and 1 (the target only), got "
                    f"{arg!r}; keeping {mg.requested[0]:g}")
        return f"mix -> {mg.requested[0]:g} from the next window"
    if word == "gate" and arg:
        low = arg.lower()
        if low in ("on", "off"):
            mg.set_gate(on=low == "on")
        else:
            try:
                db = float(low.removesuffix("db"))
            except ValueError:
                return f"gate takes on, off or a threshold in dB (e.g. gate -24), got {arg!r}"
            try:
                mg.set_gate(on=True, threshold_db=db)
            except ValueError as e:
                return f"{e}; keeping {mg.requested[2]:g} dB"
        _, on, thr = mg.requested
        return f"gate -> {'on' if on else 'off'} (threshold {thr:g} dB) from the next window"
    if word == "prompt" and arg:
        text = arg
    engine.set_prompt(text)
    if engine.worker.on_prompt is not None:
        return None
    return f"prompt -> {text!r} from the next window"


def _say(engine: Engine, text: str) -> None:
    if engine.metrics is not None:
        engine.metrics.note(text)  # keeps the status line in its place on a terminal
    else:
        print(f"note: {text}", file=sys.stderr)


def _prompt_outcome(engine: Engine) -> Callable[[str, str | None], None]:
    def tell(text: str, problem: str | None) -> None:
        _say(engine, problem or f"prompt -> {text!r} from the next window")
    return tell


def _stdin_commands(engine: Engine, stop: threading.Event) -> None:
    """Each stdin line is a command (``command``): a new prompt, ``mix M``, ``gate ...``."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:
        return
    for raw in stream:
        if stop.is_set():
            return
        # Undecodable bytes become lone surrogates, which check_prompt_text names.
        text = raw.decode("utf-8", errors="surrogateescape").strip("\r\n")
        said = command(engine, text)
        if said is not None:
            _say(engine, said)


def _device_problem(engine: Engine, streams: list[Any], started_at: float) -> str | None:
    """A reason to stop when a device stopped calling back (server killed, device unplugged)."""
    now = time.monotonic()
    for s, st in zip(streams, engine.streams, strict=False):
        silent = st.silent_for()
        if silent is None:
            if now - started_at > max(5.0, 4 * DEVICE_TIMEOUT_S):
                return "the audio device never started delivering audio"
            continue
        lat = getattr(s, "latency", 0.0)
        lat = max(lat) if isinstance(lat, tuple) else lat
        limit = max(DEVICE_TIMEOUT_S, 4.0 * devices.stream_latency(float(lat)))
        if silent > limit:
            return (f"the audio device stopped delivering audio {silent:.1f} s ago (the sound "
                    "server quit or the device was removed)")
    return None


def run(engine: Engine, streams: list[Any], *, prompt: str, duration: float | None = None,
        read_stdin: bool = True, stop: threading.Event | None = None) -> dict[str, Any]:
    """Start the worker and the streams; return the summary when stopped.

    The summary's ``stop`` says why: ``duration``, ``requested`` (``stop`` was set), or
    ``signal`` with ``exit_code`` (130 SIGINT, 143 SIGTERM, 129 SIGHUP). A worker error is
    re-raised and a vanished device raises DeviceError, in both cases after the files' data has
    been flushed through as far as possible."""
    stop = stop or threading.Event()
    with stop_on_signals(stop) as caught:
        return _run(engine, streams, prompt, duration, read_stdin, stop, caught)


def _run(engine: Engine, streams: list[Any], prompt: str, duration: float | None,
         read_stdin: bool, stop: threading.Event, caught: list[int]) -> dict[str, Any]:
    # The audio threads must find a free core: leave one to them while the model computes.
    blas_before = runtime.limit_blas_threads(max(1, (os.cpu_count() or 2) - 1))
    locked = runtime.lock_memory()
    engine.start(prompt)
    started: list[Any] = []
    device_error: str | None = None
    reason = "requested"
    try:
        for s in streams:
            s.start()
            started.append(s)
        t_start = time.monotonic()
        if read_stdin and sys.stdin is not None and not sys.stdin.closed:
            engine.worker.on_prompt = _prompt_outcome(engine)
            threading.Thread(target=_stdin_commands, args=(engine, stop),
                             daemon=True).start()
        t_end = None if duration is None else t_start + duration
        while not stop.is_set():
            if engine.error is not None:
                break
            if t_end is not None and time.monotonic() >= t_end:
                reason = "duration"
                break
            device_error = _device_problem(engine, streams, t_start)
            if device_error is not None:
                break
            stop.wait(0.05)
    finally:
        stop.set()
        if not devices.close_streams(streams, CLOSE_TIMEOUT_S):
            StreamsAbandoned.abandoned = True
        # Separate the received input that is still in the ring, for the files; a second
        # signal (or a stuck separator) cuts this short.
        n_caught = len(caught)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        finished = False
        if engine.error is None:
            engine.worker.finish(engine.input.write_pos)
        while time.monotonic() < deadline and len(caught) == n_caught:
            if engine.worker.done or engine.error is not None or not engine.running:
                finished = True
                break
            time.sleep(0.01)
        engine.stop(timeout=0.5 if finished else 0.0)
        runtime.limit_blas_threads(blas_before)
        if locked:
            runtime.unlock_memory()
    if engine.error is not None:
        raise engine.error
    summary = engine.summary()
    summary["flushed"] = finished
    if caught:
        reason = "signal"
        summary.update(signal_summary(caught))
    summary["stop"] = reason if device_error is None else "device"
    if engine.metrics is not None:
        engine.metrics.end(summary)
    if device_error is not None:
        raise devices.DeviceError(f"{device_error}; the files hold everything up to then. "
                                  "Restart the sound server or reconnect the device, then run "
                                  "again")
    return summary
