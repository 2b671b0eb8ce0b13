"""Audio devices: lookup by index or name substring (sounddevice's rules), listing, and the one
place where streams are opened and closed.

Every stream runs the engine's C callback (``rt_callback`` in streamsep/engine/rt.c) with a
``StreamState`` as its userdata, so no device deadline ever waits for the Python interpreter.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any


class DeviceError(ValueError):
    """A device problem; the message says what to do."""


def sounddevice() -> Any:
    """Import sounddevice, turning a missing PortAudio into a clear error."""
    try:
        import sounddevice as sd
    except OSError as e:
        fix = ("apt-get install libportaudio2" if sys.platform.startswith("linux")
               else "pip install --force-reinstall sounddevice")
        raise DeviceError(f"PortAudio is not available ({e}): install it ({fix})") from None
    return sd


def _describe(sd: Any, i: int, d: dict[str, Any]) -> str:
    api = sd.query_hostapis(d["hostapi"])["name"]
    return (f"[{i}] {d['name']}, {api} ({d['max_input_channels']} in, "
            f"{d['max_output_channels']} out)")


def list_devices() -> str:
    """A device table in sounddevice's style: '>' marks the default input, '<' the output."""
    sd = sounddevice()
    devs = sd.query_devices()
    if not len(devs):
        return "no audio devices found (is a sound server such as JACK or PipeWire running?)"
    din, dout = _defaults(sd)
    lines = []
    for i, d in enumerate(devs):
        mark = (">" if i == din else " ") + ("<" if i == dout else " ")
        lines.append(f"{mark} {_describe(sd, i, d)}, {d['default_samplerate']:g} Hz")
    lines.append("> default input, < default output")
    return "\n".join(lines)


def _defaults(sd: Any) -> tuple[int, int]:
    d = sd.default.device
    try:
        return int(d[0]), int(d[1])
    except (TypeError, ValueError, IndexError):
        return -1, -1


def _choices(sd: Any, kind: str) -> str:
    key = f"max_{kind}_channels"
    found = [_describe(sd, i, d) for i, d in enumerate(sd.query_devices()) if d[key] > 0]
    return "; ".join(found) if found else "none"


def resolve(spec: str | int | None, kind: str, option: str | None = None) -> int:
    """Device index for ``spec`` (None = the default; an int or digits = an index; otherwise
    whitespace-separated name parts matched in order against 'name, host API'). ``option`` is
    the command-line option that chooses the device, named in the error messages."""
    sd = sounddevice()
    if kind not in ("input", "output"):
        raise ValueError(kind)
    key = f"max_{kind}_channels"
    if spec is None or spec == "":
        idx = _defaults(sd)[0 if kind == "input" else 1]
        if idx < 0:
            option = option or ("-i" if kind == "input" else "-o")
            raise DeviceError(f"no default {kind} device; choose one with {option} from: "
                              f"{_choices(sd, kind)}")
        return idx
    if isinstance(spec, str) and spec.strip().isdigit():
        spec = int(spec)
    if isinstance(spec, int) and not 0 <= spec < len(sd.query_devices()):
        raise DeviceError(f"there is no device with index {spec}; choose an {kind} device from: "
                          f"{_choices(sd, kind)}")
    try:
        d = sd.query_devices(spec, kind)
    except ValueError as e:
        what = "several" if "Multiple" in str(e) else "no"
        raise DeviceError(f"{what} {kind} devices match {spec!r}; choose one (index or name "
                          f"part) from: {_choices(sd, kind)}") from None
    except sd.PortAudioError as e:
        raise DeviceError(f"{kind} device {spec!r}: {e}; choose from: {_choices(sd, kind)}") \
            from None
    if d[key] <= 0:
        raise DeviceError(f"device {spec!r} has no {kind} channels; choose from: "
                          f"{_choices(sd, kind)}")
    return int(d["index"])


def host_api(idx: int) -> str:
    """The name of the host API a device belongs to (e.g. "JACK Audio Connection Kit")."""
    sd = sounddevice()
    return str(sd.query_hostapis(sd.query_devices(idx)["hostapi"])["name"])


def name(idx: int) -> str:
    sd = sounddevice()
    return _describe(sd, idx, sd.query_devices(idx))


def check_rate(idx: int, kind: str, sample_rate: int) -> None:
    sd = sounddevice()
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    try:
        check(device=idx, channels=1, samplerate=sample_rate, dtype="float32")
    except Exception as e:  # PortAudioError or ValueError, depending on the host API
        raise DeviceError(
            f"{kind} device {name(idx)} cannot run at {sample_rate} Hz ({e}): set the device "
            f"or sound server to {sample_rate} Hz (macOS: Audio MIDI Setup; JACK: jackd -r "
            f"{sample_rate}; PipeWire: default.clock.rate)") from None


def follows_server_default(idx: int) -> bool:
    """Whether a device is ALSA's door to a sound server's default sink and source (``pulse``,
    ``pipewire``, ``default``) rather than one particular device."""
    sd = sounddevice()
    d = sd.query_devices(idx)
    return host_api(idx) == "ALSA" and d["name"] in ("pulse", "pipewire", "default",
                                                     "sysdefault")


def out_channels(idx: int) -> int:
    """Mono output is copied to the first two channels where the device has them."""
    sd = sounddevice()
    return max(1, min(2, int(sd.query_devices(idx)["max_output_channels"])))


def stream_latency(latency_s: float) -> float:
    """A stream's reported latency in seconds, 0 where PortAudio does not know it."""
    # PortAudio's JACK host API reports UINT32_MAX frames (~89478 s) when a stream is connected
    # to another client's ports instead of a hardware device: treat that as unknown (0).
    return latency_s if 0 <= latency_s < 10 else 0.0


ROUTE_VARS = ("PULSE_SINK", "PULSE_SOURCE")

#: Input devices whose duplex stream plays into another device of the same JACK graph (one
#: clock): a duplex stream asked for on (i, i) opens (i, DUPLEX_OUTPUT[i]). Set by
#: streamsep.audio.virtual for a virtual microphone on PipeWire's JACK layer, whose input and
#: output are two JACK clients.
DUPLEX_OUTPUT: dict[int, int] = {}


@contextlib.contextmanager
def _routed(route: dict[str, str] | None) -> Iterator[None]:
    """Point the PulseAudio streams opened inside at a given sink/source.

    ALSA's ``pulse`` device connects to the sink and source that libpulse's ``PULSE_SINK`` /
    ``PULSE_SOURCE`` name, read when the device is opened (a stream reconnecting at start keeps
    them). PortAudio has no other way to name a PulseAudio node; the variables are set only
    while the stream opens, before any other thread of ours runs, and restored after."""
    if not route:
        yield
        return
    old = {k: os.environ.get(k) for k in ROUTE_VARS}
    try:
        for k in ROUTE_VARS:
            if k in route:
                os.environ[k] = route[k]
            else:
                os.environ.pop(k, None)
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def open_stream(kind: str, device: int | tuple[int, int], sample_rate: int, state: Any, *,
                channels: int | tuple[int, int], blocksize: int = 0,
                latency: str | float = "high", route: dict[str, str] | None = None) -> Any:
    """Create (not start) a PortAudio stream of ``kind`` ("duplex", "input" or "output") whose
    callback is the C ``rt_callback`` over ``state`` (an engine.sinks.StreamState).

    ``route``: ``PULSE_SINK`` / ``PULSE_SOURCE`` for a stream on ALSA's ``pulse`` device (the
    virtual microphone, a sink's monitor; see streamsep.audio.virtual)."""
    sd = sounddevice()
    if kind == "duplex" and isinstance(device, tuple) and device[0] == device[1]:
        device = (device[0], DUPLEX_OUTPUT.get(device[0], device[1]))
    try:
        with _routed(route):
            return sd._StreamBase(kind=kind, samplerate=sample_rate, blocksize=blocksize,
                                  device=device, channels=channels, dtype="float32",
                                  latency=latency, callback=state.callback, userdata=state.c)
    except sd.PortAudioError as e:
        raise DeviceError(f"cannot open the audio stream: {e}; check the device with "
                          "`streamsep devices`, or try another --blocksize/--latency") from None


def open_output(idx: int, sample_rate: int, out: Any, *, latency: str | float = "high",
                purpose: str = "output", blocksize: int = 0) -> tuple[Any, Any]:
    """An output-only stream playing ``out`` (an engine.sinks.PlayedOutput) with no input.
    Returns (state, stream)."""
    from streamsep.engine.sinks import StreamState

    ch = out_channels(idx)
    state = StreamState(sample_rate, source=None, feeds_input=False, sink=out, out_channels=ch)
    try:
        stream = open_stream("output", idx, sample_rate, state, channels=ch,
                             blocksize=blocksize, latency=latency)
    except DeviceError as e:
        raise DeviceError(f"cannot open output device {name(idx)} for {purpose}: "
                          f"{str(e).split(': ', 1)[-1]}") from None
    return state, stream


def close_streams(streams: list[Any], timeout: float = 3.0) -> bool:
    """Stop and close ``streams``; False when PortAudio did not return within ``timeout``
    seconds (it can hang in Pa_StopStream once the sound server is gone), in which case the
    streams are abandoned so that the caller can still finalize its files and exit."""

    def close() -> None:
        for s in streams:
            try:
                if s.active:
                    s.stop()
                s.close()
            except Exception:  # closing must not hide the reason we stopped
                pass

    t = threading.Thread(target=close, name="streamsep-close", daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive()
