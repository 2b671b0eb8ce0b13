"""Which path a virtual microphone takes (PipeWire's JACK layer or the PulseAudio layer), without
a sound server: the decisions of streamsep.audio.virtual and the duplex stream it asks for.
The paths themselves run on a real PipeWire in tests/test_virtual_mic.py."""

import sys

import pytest

from streamsep.audio import devices, virtual


@pytest.fixture
def pipewire_server(monkeypatch):
    monkeypatch.setattr(virtual, "_pw_jack_loaded", None)
    monkeypatch.delenv(virtual.VIA_ENV, raising=False)
    monkeypatch.setattr(virtual, "server_info",
                        lambda: {"Server Name": "PulseAudio (on PipeWire 0.3.65)"})


@pytest.mark.parametrize("input_spec", ["USB", "3", "pulse"])
def test_a_named_input_device_keeps_portaudio_as_it_was(pipewire_server, monkeypatch,
                                                        input_spec):
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    loads = []
    monkeypatch.setattr(virtual.ctypes, "CDLL", lambda *a, **k: loads.append(a))
    assert virtual.preload_pipewire_jack(input_spec) is False
    assert loads == []


def test_the_server_input_on_pipewire_preloads_pipewires_libjack(pipewire_server, monkeypatch):
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(virtual.shutil, "which", lambda tool: None)
    loads = []
    monkeypatch.setattr(virtual.ctypes, "CDLL", lambda path, mode=0: loads.append((path, mode)))
    assert virtual.preload_pipewire_jack(None) is True
    # pw-jack's own directory, loaded global so that PortAudio's libjack.so.0 resolves to it
    assert loads == [(virtual.PW_JACK_LIB, virtual.ctypes.RTLD_GLOBAL)]


def test_no_preload_on_pulseaudio_when_asked_or_too_late(pipewire_server, monkeypatch):
    loads = []
    monkeypatch.setattr(virtual.ctypes, "CDLL", lambda *a, **k: loads.append(a))
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(virtual, "server_info", lambda: {"Server Name": "pulseaudio"})
    assert virtual.preload_pipewire_jack(None) is False
    monkeypatch.setattr(virtual, "server_info",
                        lambda: {"Server Name": "PulseAudio (on PipeWire 1.0.5)"})
    monkeypatch.setenv(virtual.VIA_ENV, "pulse")
    assert virtual.preload_pipewire_jack("monitor") is False
    monkeypatch.delenv(virtual.VIA_ENV)
    # PortAudio already loaded a libjack: too late to choose PipeWire's
    monkeypatch.setitem(sys.modules, "sounddevice", object())
    assert virtual.preload_pipewire_jack(None) is False
    assert loads == []


def test_the_jack_path_needs_a_pipewire_server(monkeypatch):
    monkeypatch.delenv(virtual.VIA_ENV, raising=False)
    assert virtual._jack_usable({"Server Name": "pulseaudio"}) is False
    monkeypatch.setenv(virtual.VIA_ENV, "pulse")
    assert virtual._jack_usable({"Server Name": "PulseAudio (on PipeWire 0.3.65)"}) is False


class _FakeSd:
    class PortAudioError(Exception):
        pass

    def __init__(self):
        self.opened = []

    def _StreamBase(self, **kw):  # noqa: N802 (sounddevice's name)
        self.opened.append(kw["device"])
        return kw["device"]


def test_a_duplex_stream_on_one_device_plays_into_its_jack_partner(monkeypatch):
    fake = _FakeSd()
    monkeypatch.setattr(devices, "sounddevice", lambda: fake)
    monkeypatch.setattr(devices, "DUPLEX_OUTPUT", {7: 9})

    class State:
        callback = c = None

    for dev in ((7, 7), (5, 5), (7, 8)):
        devices.open_stream("duplex", dev, 48000, State(), channels=(1, 1))
    devices.open_stream("input", 7, 48000, State(), channels=1)
    # only a duplex stream asked for on the JACK input alone is redirected
    assert fake.opened == [(7, 9), (5, 5), (7, 8), 7]


def test_removing_the_microphones_forgets_the_duplex_pair(monkeypatch):
    monkeypatch.setattr(devices, "DUPLEX_OUTPUT", {7: 9})
    virtual.Setup().remove()
    assert devices.DUPLEX_OUTPUT == {}


def test_node_descriptions_are_safe_jack_client_names():
    # PortAudio finds a JACK device's ports with the client name as a regular expression, and
    # JACK port names are CLIENT:PORT: no brackets, parentheses or colons.
    mic = virtual.VirtualMic(virtual.check_name("a-b_c.9"))
    for desc in (mic.sink_description, mic.input_description):
        assert not set(desc) & set("()[]{}*+?|^$\\:"), desc
    assert mic.sink_description != mic.input_description != mic.name
