"""Virtual microphones and "what the computer plays" as input: create, find and remove our nodes.

Linux (PipeWire with its PulseAudio layer, or PulseAudio): a virtual microphone is a null sink that
streamsep plays into plus a remap source on that sink's monitor. The remap source is a real source
(``media.class`` Audio/Source), which is what other programs list as a microphone: browsers and
many call apps hide monitor sources.

How streamsep's streams reach them, in order of preference:

* PipeWire's JACK layer (on PipeWire, when PortAudio has its JACK host API and PipeWire's
  ``libjack`` is installed: package pipewire-jack; ``preload_pipewire_jack`` loads it before
  PortAudio does, as ``pw-jack`` would). The input (the default source, or the default sink's
  monitor for ``--input monitor``) is first remapped to a mono source of ours, so that both ends
  are JACK clients whose names we chose; one duplex JACK stream reads that source and plays into
  the virtual microphone's sink. Everything then runs inside one PipeWire graph cycle: the
  microphone carries the input exactly streamsep's internal latency later, on every start, and
  that is the latency reported (PortAudio reports no device latency for such a stream).
* PortAudio's ALSA ``pulse`` device (PulseAudio, or PipeWire without its JACK layer), the
  stream pointed at one sink or source with libpulse's ``PULSE_SINK`` / ``PULSE_SOURCE`` while it
  is opened (``devices.open_stream(route=...)``). The PulseAudio-protocol streams buffer more
  than PortAudio can see, and differently on every start (tens of ms): the reported latency is
  then only right to within that.

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
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
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
#: "pulse" keeps the virtual microphones on the PulseAudio layer even where PipeWire's JACK layer
#: could serve them (for comparison, or a system where it misbehaves).
VIA_ENV = "STREAMSEP_VIRTUAL_MIC_VIA"
JACK_API = "JACK Audio Connection Kit"
#: Where pw-jack points the dynamic linker (its LD_LIBRARY_PATH; ld.so expands $LIB).
PW_JACK_LIB = "/usr/$LIB/pipewire-0.3/jack/libjack.so.0"
#: Seconds for the JACK ports of newly created nodes to appear (WirePlumber configures them).
JACK_PORTS_TIMEOUT_S = 3.0
_pw_jack_loaded: str | None = None
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
    input_module: int | None = None  # the JACK path's input source (add_input)

    @property
    def sink(self) -> str:
        return f"{PREFIX}{self.name}.sink"

    @property
    def source(self) -> str:
        return f"{PREFIX}{self.name}"

    @property
    def sink_description(self) -> str:
        # Also the JACK client name under PipeWire's JACK layer, which PortAudio matches as a
        # regular expression: no brackets or parentheses (NAME is letters, digits, . _ -).
        return f"{self.name} - streamsep output"

    @property
    def input_description(self) -> str:
        return f"{self.name} - streamsep input"

    def add_input(self, master: str) -> None:
        """A mono source of ours on ``master`` (the JACK path's input: a JACK client with a name
        we chose, downmixed by the server), removed with the microphone (first)."""
        self.input_module = int(_pactl(
            "load-module", "module-remap-source", f"source_name={self.source}.input",
            f"master={master}", "channels=1",
            f"source_properties='device.description=\"{self.input_description}\" "
            f"{PID_KEY}={os.getpid()}'").split()[0])
        self.modules.append(self.input_module)

    def remove_input(self) -> None:
        if self.input_module in self.modules:
            self.modules.remove(self.input_module)
            with contextlib.suppress(DeviceError):
                _pactl("unload-module", str(self.input_module))
        self.input_module = None

    def create(self) -> VirtualMic:
        pid = os.getpid()
        # float32, mono, 48 kHz: the engine's own format, so the server converts nothing and
        # the recording client gets streamsep's samples bit for bit.
        self.modules.append(int(_pactl(
            "load-module", "module-null-sink", f"sink_name={self.sink}",
            f"rate={SAMPLE_RATE}", "channels=1", "format=float32le",
            f"sink_properties='device.description=\"{self.sink_description}\" "
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
    #: "jack": the streams will run on PipeWire's JACK layer (``prepare`` found it usable);
    #: "pulse": on the PulseAudio layer through ALSA's pulse device.
    via: str = "pulse"

    def create(self, in_idx: int | None = None, out_idx: int | None = None,
               res_idx: int | None = None, *,
               note: Callable[[str], None] | None = None) -> tuple[int | None, ...]:
        """Create the microphones; returns the PortAudio indices of the input, target and
        residual devices to open (PortAudio is re-scanned on the JACK path, which renumbers
        its devices: pass the indices chosen so far). ``note`` is told which path serves."""
        for which, mic in self.mics.items():
            mic.create()
            self.routes[which] = {"PULSE_SINK": mic.sink}
        if self.via != "jack":
            return in_idx, out_idx, res_idx
        keys = _device_keys(in_idx, out_idx, res_idx)  # before a re-scan renumbers them
        try:
            return self._on_jack(keys, note)
        except (DeviceError, ValueError, IndexError, OSError, AttributeError) as e:
            # Undo the JACK path's input source and fall back to the PulseAudio layer.
            self.via = "pulse"
            self.mics["target"].remove_input()
            if note is not None:
                note(f"PipeWire's JACK layer cannot serve the virtual microphone ({e}): using "
                     "its PulseAudio layer, whose delay may differ from the reported latency "
                     "by some tens of ms")
            _rescan()
            return _find_devices(keys)

    def _on_jack(self, keys: list[tuple[str, str] | None],
                 note: Callable[[str], None] | None) -> tuple[int | None, ...]:
        from streamsep.audio import devices

        target = self.mics["target"]
        target.add_input(self.routes["input"]["PULSE_SOURCE"])
        want = {"input": (target.input_description, "input")}
        want.update({which: (mic.sink_description, "output")
                     for which, mic in self.mics.items()})

        def jack_devices(sd: Any) -> dict[str, list[int]]:
            return {which: [int(d["index"]) for d in sd.query_devices()
                            if d["name"] == desc and d[f"max_{kind}_channels"] > 0
                            and sd.query_hostapis(d["hostapi"])["name"] == JACK_API]
                    for which, (desc, kind) in want.items()}

        # PortAudio lists JACK clients as devices when it initializes: re-scan until the new
        # nodes' ports are there (WirePlumber configures them within ~0.1 s).
        _rescan(until=lambda sd: all(len(v) == 1 for v in jack_devices(sd).values()))
        _, _, res_idx = _find_devices(keys)
        sd = devices.sounddevice()
        found = jack_devices(sd)
        missing = [want[w][0] for w, v in found.items() if len(v) != 1]
        if missing:
            raise DeviceError(f"the JACK ports of {', '.join(map(repr, missing))} did not "
                              f"appear within {JACK_PORTS_TIMEOUT_S:g} s")
        idx = {which: v[0] for which, v in found.items()}
        for which, (_desc, kind) in want.items():
            check = sd.check_input_settings if kind == "input" else sd.check_output_settings
            try:
                check(device=idx[which], channels=1, samplerate=SAMPLE_RATE, dtype="float32")
            except Exception as e:  # the graph runs at another rate: JACK does not resample
                raise DeviceError(f"the graph does not run at {SAMPLE_RATE} Hz ({e})") from None
        # One duplex stream from our input source to the microphone's sink, two JACK clients of
        # one graph: one stream, one clock, nothing buffered between them.
        devices.DUPLEX_OUTPUT[idx["input"]] = idx["target"]
        if note is not None:
            note("virtual microphone on PipeWire's JACK layer: it carries the output at "
                 "exactly the reported latency")
        return idx["input"], idx["input"], idx.get("residual", res_idx)


    def remove(self) -> None:
        for mic in self.mics.values():
            mic.remove()
        devices = sys.modules.get("streamsep.audio.devices")
        if devices is not None:
            devices.DUPLEX_OUTPUT.clear()


def _device_keys(*idx: int | None) -> list[tuple[str, str] | None]:
    """(name, host API) of PortAudio devices: what finds them again after a re-scan."""
    from streamsep.audio import devices

    sd = devices.sounddevice()
    return [None if i is None else (str(sd.query_devices(i)["name"]), devices.host_api(i))
            for i in idx]


def _rescan(until: Callable[[Any], bool] | None = None) -> None:
    """Re-initialize PortAudio (which lists JACK clients only when it initializes; no stream
    may be open); with ``until``, again until it holds (at most JACK_PORTS_TIMEOUT_S)."""
    from streamsep.audio import devices

    sd = devices.sounddevice()
    deadline = time.monotonic() + JACK_PORTS_TIMEOUT_S
    while True:
        sd._terminate()
        sd._initialize()
        if until is None or until(sd) or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def _find_devices(keys: list[tuple[str, str] | None]) -> tuple[int | None, ...]:
    from streamsep.audio import devices

    sd = devices.sounddevice()
    out: list[int | None] = []
    for key in keys:
        if key is None:
            out.append(None)
            continue
        found = [int(d["index"]) for d in sd.query_devices()
                 if (d["name"], sd.query_hostapis(d["hostapi"])["name"]) == key]
        if not found:
            raise DeviceError(f"device {key[0]!r} vanished while the virtual microphone was "
                              "created")
        out.append(found[0])
    return tuple(out)


def preload_pipewire_jack(input_spec: str | None) -> bool:
    """Load PipeWire's libjack before PortAudio loads a libjack (what ``pw-jack`` does with
    LD_LIBRARY_PATH), so that PortAudio's JACK host API reaches PipeWire's graph. Only for a
    virtual microphone whose input is the server's (the default source, or ``--input monitor``:
    a device named with -i keeps its PortAudio device list as it was), on a PipeWire server,
    and before sounddevice is imported. True when PipeWire's libjack is loaded."""
    global _pw_jack_loaded
    if _pw_jack_loaded is not None:
        return True
    if (not sys.platform.startswith("linux") or os.environ.get(VIA_ENV) == "pulse"
            or input_spec not in (None, "monitor") or "sounddevice" in sys.modules):
        return False
    try:
        if "PipeWire" not in server_info().get("Server Name", ""):
            return False
    except DeviceError:
        return False  # prepare() says what is wrong
    paths = [PW_JACK_LIB]
    tool = shutil.which("pw-jack")  # a PipeWire installed elsewhere: its pw-jack knows where
    if tool:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            with open(tool, encoding="utf-8") as f:
                m = re.search(r"LD_LIBRARY_PATH='([^'\"]+)'", f.read())
            if m:
                paths.insert(0, m.group(1).replace("${LIB}", "$LIB") + "/libjack.so.0")
    for path in paths:
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        _pw_jack_loaded = path
        return True
    return False


def _jack_usable(info: dict[str, str]) -> bool:
    """Whether PortAudio's JACK host API talks to this PipeWire server (PipeWire's libjack was
    preloaded, or is the system's libjack, as on distributions that replace JACK with it)."""
    from streamsep.audio import devices

    if os.environ.get(VIA_ENV) == "pulse" or "PipeWire" not in info.get("Server Name", ""):
        return False
    sd = devices.sounddevice()
    if not any(a["name"] == JACK_API for a in sd.query_hostapis()):
        return False
    if _pw_jack_loaded is not None:
        return True
    # No preload: is the libjack that PortAudio loaded PipeWire's (it links libpipewire), or
    # JACK's own, which talks to a jackd that knows nothing of our microphones?
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            return "libpipewire-0.3" in f.read()
    except OSError:
        return False


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
    # The JACK path needs the server's input (a route to remap) and a target microphone (the
    # duplex stream's output); a residual microphone alone keeps the PulseAudio layer.
    if "target" in setup.mics and "input" in setup.routes and _jack_usable(info):
        setup.via = "jack"


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
