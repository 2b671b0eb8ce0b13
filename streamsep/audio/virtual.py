"""Virtual microphones and "what the computer plays" as input: create, find and remove our nodes.

Linux (PipeWire with its PulseAudio layer, or PulseAudio): a virtual microphone is a null sink that
streamsep plays into plus a remap source on that sink's monitor. The remap source is a real source
(``media.class`` Audio/Source), which is what other programs list as a microphone: browsers and
many call apps hide monitor sources. streamsep reaches both through PortAudio's ALSA ``pulse``
device; the stream is pointed at one sink or source with libpulse's ``PULSE_SINK`` /
``PULSE_SOURCE`` while it is opened (``devices.open_stream(route=...)``).

Why ``pactl`` and not ``pw-cli``/``pw-loopback`` or ``pulsectl``: one tool and one code path
serve PulseAudio and PipeWire alike (PipeWire's pulse layer implements the same modules);
``pw-loopback`` would need a child process that outlives us after ``kill -9`` and does not exist
on PulseAudio; ``pulsectl`` would be a new dependency binding the same libpulse that ``pactl``
already drives, for the four calls made here. ``pactl list short modules`` is tab-separated and,
under ``LC_ALL=C``, not translated.

Clean-up: every node we load is named ``streamsep.<NAME>...`` and carries ``streamsep.pid=<our
pid>`` in its properties. ``VirtualMic.remove`` unloads them on every normal exit path (the CLI
calls it from ``finally``; SIGTERM/SIGHUP become SystemExit while they exist, see
``exit_on_signals``); after ``kill -9`` the next start finds nodes whose process is gone
(``remove_stale``) and unloads them. A sound server that restarts takes our modules with it.

macOS: there is no API to create a CoreAudio device from user space; BlackHole (a loopback
driver) is found by name and used as the output device. Untested here (no macOS machine).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from streamsep.audio.devices import DeviceError

#: Node names we create start with this; with the pid property it identifies stale nodes.
PREFIX = "streamsep."
PID_KEY = "streamsep.pid"
DEFAULT_NAME = "streamsep"
DEFAULT_RESIDUAL_NAME = "streamsep-residual"
#: pactl answers in milliseconds; a server that takes longer is hung, and a stuck clean-up must
#: not hold the process at exit.
PACTL_TIMEOUT_S = 5.0
SAMPLE_RATE = 48000
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")
_MODULE_RE = re.compile(r"^(\d+)\t(module-[\w-]+)\t(.*)$")
START_SERVER_HINT = (
    "start PipeWire with its PulseAudio layer (systemctl --user start pipewire pipewire-pulse "
    "wireplumber) or PulseAudio (pulseaudio --start)")


def _pactl(*args: str, timeout: float = PACTL_TIMEOUT_S) -> str:
    """Run pactl; a missing tool or an unreachable server becomes one DeviceError line."""
    if shutil.which("pactl") is None:
        raise DeviceError("pactl is not installed (it manages the virtual devices on PipeWire "
                          "and PulseAudio): apt-get install pulseaudio-utils (Fedora: dnf "
                          "install pulseaudio-utils)")
    env = dict(os.environ, LC_ALL="C")  # labels and errors untranslated: they are parsed
    try:
        r = subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=timeout,
                           env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise DeviceError(f"the sound server did not answer `pactl {args[0]}` within "
                          f"{timeout:g} s: restart it (systemctl --user restart pipewire "
                          "pipewire-pulse, or pulseaudio -k)") from None
    if r.returncode != 0:
        err = " ".join((r.stderr or r.stdout).split())
        if "Connection" in err or "connect" in err:
            raise DeviceError(f"no sound server is running (pactl cannot connect): "
                              f"{START_SERVER_HINT}")
        raise DeviceError(f"pactl {' '.join(args[:2])} failed: {err}")
    return r.stdout


def server_info() -> dict[str, str]:
    """``pactl info`` as a dict ("Server Name", "Default Sink", "Default Source", ...)."""
    out: dict[str, str] = {}
    for line in _pactl("info").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _modules() -> list[tuple[int, str, str]]:
    """(index, name, arguments) of the loaded modules. PipeWire's own modules have arguments
    over several lines: only the lines that start a module are read."""
    found = []
    for line in _pactl("list", "short", "modules").splitlines():
        m = _MODULE_RE.match(line)
        if m:
            found.append((int(m.group(1)), m.group(2), m.group(3)))
    return found


def _names(kind: str) -> list[str]:
    """Names of the sinks or sources (``kind`` "sinks"/"sources")."""
    return [ln.split("\t")[1] for ln in _pactl("list", "short", kind).splitlines()
            if ln.count("\t") >= 1]


def _owner_pid(args: str) -> int | None:
    m = re.search(re.escape(PID_KEY) + r"=(\d+)", args)
    return int(m.group(1)) if m else None


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running streamsep process (a reused pid of another program is not)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: leave its nodes alone
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"streamsep" in f.read()
    except OSError:
        return True  # no /proc: trust the signal check


def _ours(args: str) -> bool:
    return PID_KEY in args and f"_name={PREFIX}" in args


def remove_stale() -> list[str]:
    """Unload the modules of streamsep processes that no longer run (killed with -9, crashed);
    returns the node names removed."""
    removed = []
    # The remap source first: it holds the sink's monitor.
    mods = sorted(_modules(), key=lambda m: m[1] != "module-remap-source")
    for idx, _name, args in mods:
        if not _ours(args):
            continue
        pid = _owner_pid(args)
        if pid is not None and not _alive(pid):
            with contextlib.suppress(DeviceError):
                _pactl("unload-module", str(idx))
                m = re.search(r"(?:sink|source)_name=(\S+)", args)
                removed.append(m.group(1) if m else str(idx))
    return removed


def check_name(name: str, option: str = "--virtual-mic") -> str:
    if not _NAME_RE.match(name or ""):
        raise DeviceError(f"{option} {name!r}: use 1 to 48 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit")
    return name


@dataclass
class VirtualMic:
    """A virtual microphone ``name`` on a PulseAudio-compatible server: streamsep plays into
    ``sink``; other programs record from ``source`` (listed as ``name``)."""

    name: str
    modules: list[int] = field(default_factory=list)

    @property
    def sink(self) -> str:
        return f"{PREFIX}{self.name}.sink"

    @property
    def source(self) -> str:
        return f"{PREFIX}{self.name}"

    def create(self) -> VirtualMic:
        pid = os.getpid()
        # float32, mono, 48 kHz: the engine's own format, so the server converts nothing and
        # the recording client gets streamsep's samples bit for bit.
        self.modules.append(int(_pactl(
            "load-module", "module-null-sink", f"sink_name={self.sink}",
            f"rate={SAMPLE_RATE}", "channels=1", "format=float32le",
            f"sink_properties='device.description=\"{self.name} (streamsep output)\" "
            f"{PID_KEY}={pid}'").split()[0]))
        try:
            self.modules.append(int(_pactl(
                "load-module", "module-remap-source", f"source_name={self.source}",
                f"master={self.sink}.monitor", "channels=1",
                f"source_properties='device.description={self.name} {PID_KEY}={pid}'"
            ).split()[0]))
        except (DeviceError, ValueError, IndexError):
            self.remove()
            raise
        return self

    def remove(self) -> bool:
        """Unload our modules (the source first); False if the server refused or was gone
        (a server that went away took them with it)."""
        while self.modules:
            idx = self.modules.pop()
            try:
                _pactl("unload-module", str(idx))
            except DeviceError:
                # The server is gone or hung: the others would fail the same way (each after
                # a timeout); a server that comes back has none of them, a hung one is cleaned
                # by the next start (remove_stale).
                self.modules.clear()
                return False
        return True


@dataclass
class Setup:
    """What the virtual devices make of `run`'s devices: PortAudio device specs for the input,
    the target and the residual, the PulseAudio sink/source each stream must be pointed at,
    and the microphones to create (``create``) and remove (``remove``)."""

    input_spec: str | None = None
    target_spec: str | None = None
    residual_spec: str | None = None
    routes: dict[str, dict[str, str]] = field(default_factory=dict)
    mics: dict[str, VirtualMic] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def create(self) -> None:
        for which, mic in self.mics.items():
            mic.create()
            self.routes[which] = {"PULSE_SINK": mic.sink}

    def remove(self) -> None:
        for mic in self.mics.values():
            mic.remove()


def pulse_device_spec() -> str:
    """The PortAudio device that reaches a PulseAudio-compatible server: ALSA's ``pulse``."""
    from streamsep.audio import devices

    sd = devices.sounddevice()
    for d in sd.query_devices():
        api = sd.query_hostapis(d["hostapi"])["name"]
        if d["name"] == "pulse" and api == "ALSA":
            return str(d["index"])
    raise DeviceError("PortAudio cannot reach the sound server: its ALSA 'pulse' device is "
                      "missing; install ALSA's PulseAudio plugin (apt-get install "
                      "libasound2-plugins; Fedora: dnf install alsa-plugins-pulseaudio) and run "
                      "again")


def _prepare_linux(setup: Setup, input_spec: str | None, target: str | None,
                   residual: str | None, output_is_default: bool,
                   residual_is_default: bool) -> None:
    try:
        server_info()  # fails with the "start a server" line when none runs
    except DeviceError as e:
        if input_spec == "monitor" and not (target or residual):
            raise DeviceError(f"--input monitor: {e}; on JACK alone, connect the playing "
                              "program's output ports to streamsep's input instead (jack_connect "
                              "someapp:out_1 PortAudio:in_0; README: Use it as a microphone)"
                              ) from None
        raise
    removed = remove_stale()
    info = server_info()  # the defaults may have pointed at what was just removed
    if removed:
        setup.notes.append(f"removed virtual devices left by a streamsep that was killed: "
                           f"{', '.join(removed)}")
    pulse = pulse_device_spec()
    sources = set(_names("sources"))
    for which, name in (("target", target), ("residual", residual)):
        if name is None:
            continue
        mic = VirtualMic(name)
        if mic.source in sources or mic.sink in set(_names("sinks")):
            raise DeviceError(f"a virtual microphone named {name!r} is already in use by "
                              "another streamsep: choose another name (--virtual-mic NAME)")
        setup.mics[which] = mic
        setup.target_spec = pulse if which == "target" else setup.target_spec
        setup.residual_spec = pulse if which == "residual" else setup.residual_spec
    ours = {m.source for m in setup.mics.values()} | {m.sink + ".monitor"
                                                      for m in setup.mics.values()}
    if input_spec == "monitor":
        sink = info.get("Default Sink", "")
        if not sink or sink.startswith(PREFIX):
            raise DeviceError(f"--input monitor: the default output is {sink or 'not set'!r}, "
                              "not a device that plays what the computer plays: set the default "
                              "output in the sound settings (pactl set-default-sink SINK)")
        monitor = f"{sink}.monitor"
        if monitor not in sources:
            raise DeviceError(f"--input monitor: the default output {sink!r} has no monitor "
                              "source to record from")
        if output_is_default or residual_is_default:
            raise DeviceError(
                "--input monitor records what the default output plays: sending the target "
                "or residual there too would feed it back; use --virtual-mic, another output "
                "(-o DEVICE, --residual-out DEVICE) or -o none with --record-target FILE")
        setup.input_spec = pulse
        setup.routes["input"] = {"PULSE_SOURCE": monitor}
        setup.notes.append(f"input: what {sink!r} plays (its monitor {monitor!r})")
    elif input_spec is None and setup.mics:
        # Pin the input to the default source as it is now: a stream left to follow the default
        # would move onto our own microphone if the user made that the default, a feedback loop.
        # PULSE_SOURCE, where set, is this process's default source (libpulse's own rule).
        src = os.environ.get("PULSE_SOURCE") or info.get("Default Source", "")
        if src in ours or src.startswith(PREFIX):
            raise DeviceError(f"the default microphone is streamsep's own virtual microphone "
                              f"{src!r}: choose the real one in the sound settings or with -i")
        if src:
            setup.input_spec = pulse
            setup.routes["input"] = {"PULSE_SOURCE": src}


def _blackhole(sd: Any, kind: str, taken: set[int], want: str | None) -> int | None:
    key = f"max_{kind}_channels"
    for d in sd.query_devices():
        n = d["name"]
        if "blackhole" in n.lower() and d[key] > 0 and d["index"] not in taken and (
                want is None or want.lower() in n.lower()):
            return int(d["index"])
    return None


BLACKHOLE_HINT = ("install BlackHole (brew install --cask blackhole-2ch, or from "
                  "existential.audio), restart CoreAudio (sudo killall coreaudiod) and run again")


def _prepare_macos(setup: Setup, input_spec: str | None, target: str | None,
                   residual: str | None) -> None:
    from streamsep.audio import devices

    sd = devices.sounddevice()
    taken: set[int] = set()
    for which, name in (("target", target), ("residual", residual)):
        if name is None:
            continue
        # A NAME that names a BlackHole device ("BlackHole 16ch") picks it; our default names
        # pick the first free one.
        want = name if "blackhole" in name.lower() else None
        idx = _blackhole(sd, "output", taken, want)
        if idx is None:
            what = "a second BlackHole device for the residual (blackhole-16ch)" \
                if which == "residual" and taken else "BlackHole"
            raise DeviceError(f"--virtual-mic on macOS needs {what}: {BLACKHOLE_HINT}")
        taken.add(idx)
        spec = str(idx)
        if which == "target":
            setup.target_spec = spec
        else:
            setup.residual_spec = spec
        setup.notes.append(f"{which} -> {sd.query_devices(idx)['name']}: pick it as the "
                           "microphone in the other program")
    if input_spec == "monitor":
        idx = _blackhole(sd, "input", taken, None)
        if idx is None:
            raise DeviceError(f"--input monitor on macOS records from BlackHole: "
                              f"{BLACKHOLE_HINT}")
        setup.input_spec = str(idx)
        setup.notes.append(f"input: {sd.query_devices(idx)['name']}; set the system output "
                           "(or a Multi-Output Device) to it so that what the Mac plays arrives")


def prepare(input_spec: str | None, target: str | None, residual: str | None, *,
            output_is_default: bool = False, residual_is_default: bool = False) -> Setup:
    """Check the sound server and plan the devices for ``--input monitor`` (``input_spec``
    "monitor") and virtual microphones named ``target`` / ``residual`` (None: not wanted).
    Creates nothing yet: ``Setup.create`` does, right before the streams open.

    ``output_is_default`` / ``residual_is_default``: the target / residual would play on the
    server's default output (a loop with ``--input monitor``)."""
    for name, option in ((target, "--virtual-mic"), (residual, "--virtual-mic-residual")):
        if name is not None:
            check_name(name, option)
    if target is not None and target == residual:
        raise DeviceError("--virtual-mic and --virtual-mic-residual need two different names")
    setup = Setup(input_spec=None if input_spec == "monitor" else input_spec)
    if sys.platform.startswith("linux"):
        _prepare_linux(setup, input_spec, target, residual, output_is_default,
                       residual_is_default)
    elif sys.platform == "darwin":
        _prepare_macos(setup, input_spec, target, residual)
    else:
        raise DeviceError("--virtual-mic and --input monitor support Linux (PipeWire, "
                          "PulseAudio) and macOS (BlackHole); elsewhere install a virtual "
                          "audio cable and choose it with -i/-o")
    return setup


@contextlib.contextmanager
def exit_on_signals() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise SystemExit (exit codes 143, 129) instead of killing
    the process, so that ``finally`` blocks remove the virtual devices. The live run replaces
    this with its own handlers (which stop the stream cleanly) while it runs."""
    old = {}

    def on_signal(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError):  # not the main thread: leave the defaults
            if signal.getsignal(sig) is not signal.SIG_IGN:
                old[sig] = signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
