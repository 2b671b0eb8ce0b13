"""Live streams: open PortAudio streams around an Engine, run until stopped, clean up.

One duplex stream when input and output are the same device (one clock, no drift); otherwise an
input stream and an output stream, whose clock drift the engine measures and corrects. An optional
second output stream carries the residual.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any

from streamsep.audio import devices
from streamsep.engine.engine import Engine


def _latency_arg(latency: str | float) -> str | float:
    try:
        return float(latency)
    except (TypeError, ValueError):
        return latency


def _output_stream(sd: Any, engine: Engine, which: str, idx: int, blocksize: int,
                   lat: str | float) -> Any:
    """An output stream on its own clock, playing the engine's ``which`` signal."""
    sink = engine.add_playback(which, own_clock=True)
    s = sd.OutputStream(device=idx, samplerate=engine.sr, blocksize=blocksize,
                        channels=devices.out_channels(idx), dtype="float32",
                        latency=lat, callback=sink.output_callback)
    sink.latency_s = devices.stream_latency(float(s.latency))
    return s


def open_streams(engine: Engine, in_idx: int, out_idx: int | None,
                 residual_idx: int | None = None, *, blocksize: int = 0,
                 latency: str | float = "high", duplex: bool = True) -> list[Any]:
    """Create (not start) the streams; registers the engine's playback sinks.

    ``duplex=False`` opens separate input and output streams even on one device (tests use it to
    exercise the drift-corrected path)."""
    sd = devices.sounddevice()
    sr = engine.sr
    lat = _latency_arg(latency)
    streams: list[Any] = []
    try:
        if duplex and out_idx is not None and out_idx == in_idx:
            sink = engine.add_playback("target", own_clock=False)
            s = sd.Stream(device=(in_idx, out_idx), samplerate=sr, blocksize=blocksize,
                          channels=(1, devices.out_channels(out_idx)), dtype="float32",
                          latency=lat, callback=engine.duplex_callback)
            engine.input_latency_s, sink.latency_s = (devices.stream_latency(float(v))
                                                      for v in s.latency)
            streams.append(s)
        else:
            s = sd.InputStream(device=in_idx, samplerate=sr, blocksize=blocksize, channels=1,
                               dtype="float32", latency=lat, callback=engine.input_callback)
            engine.input_latency_s = devices.stream_latency(float(s.latency))
            streams.append(s)
            if out_idx is not None:
                streams.append(_output_stream(sd, engine, "target", out_idx, blocksize, lat))
        if residual_idx is not None:
            streams.append(_output_stream(sd, engine, "residual", residual_idx, blocksize, lat))
    except sd.PortAudioError as e:
        for s in streams:
            s.close()
        raise devices.DeviceError(f"cannot open the audio stream: {e}; check the device with "
                                  "`streamsep devices`, or try another --blocksize/--latency") \
            from None
    return streams


def _stdin_prompts(engine: Engine, stop: threading.Event) -> None:
    """Each non-empty stdin line becomes the prompt from the next window on."""
    for line in sys.stdin:
        if stop.is_set():
            return
        text = line.strip()
        if not text:
            print("note: empty prompt ignored; type a sound to extract", file=sys.stderr)
            continue
        engine.set_prompt(text)
        print(f"note: prompt -> {text!r} from the next window", file=sys.stderr)


def run(engine: Engine, streams: list[Any], *, prompt: str, duration: float | None = None,
        read_stdin: bool = True, stop: threading.Event | None = None) -> dict[str, Any]:
    """Start the worker and the streams; return the summary when stopped (duration, Ctrl-C,
    ``stop`` set, or a worker error, which is re-raised)."""
    stop = stop or threading.Event()
    old_term = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (kill, systemd, CI timeouts) stops as cleanly as Ctrl-C: files are finalized.
        old_term = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    engine.start(prompt)
    started: list[Any] = []
    try:
        for s in streams:
            s.start()
            started.append(s)
        if read_stdin and sys.stdin is not None and not sys.stdin.closed:
            threading.Thread(target=_stdin_prompts, args=(engine, stop), daemon=True).start()
        t_end = None if duration is None else time.monotonic() + duration
        while not stop.is_set():
            if engine.error is not None:
                break
            if t_end is not None and time.monotonic() >= t_end:
                break
            stop.wait(0.05)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for s in streams:
            try:
                if s in started:
                    s.stop()
                s.close()
            except Exception:  # closing must not hide the reason we stopped
                pass
        engine.stop()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    if engine.error is not None:
        raise engine.error
    summary = engine.summary()
    if engine.metrics is not None:
        engine.metrics.end(summary)
    return summary
