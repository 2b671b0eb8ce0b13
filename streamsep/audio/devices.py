"""Audio devices: lookup by index or name substring (sounddevice's rules), listing, streams."""

from __future__ import annotations

import sys
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


def out_channels(idx: int) -> int:
    """Mono output is copied to the first two channels where the device has them."""
    sd = sounddevice()
    return max(1, min(2, int(sd.query_devices(idx)["max_output_channels"])))


def stream_latency(latency_s: float) -> float:
    """A stream's reported latency in seconds, 0 where PortAudio does not know it."""
    # PortAudio's JACK host API reports UINT32_MAX frames (~89478 s) when a stream is connected
    # to another client's ports instead of a hardware device: treat that as unknown (0).
    return latency_s if 0 <= latency_s < 10 else 0.0
