"""streamsep.load: one Python API for every model, the same samples as `streamsep file`; the
SAM-Audio loader's messages for an embedded folder and for an offline hub."""

import socket

import huggingface_hub
import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf
from cli_util import run_cli
from conftest import ROOT, sam_tiny_with_tokenizer
from huggingface_hub import errors as hf_errors

import streamsep
from streamsep.sam_audio import hub

SR = 48000
DEMO = ROOT / "model" / "demo.wav"
FAST = dict(window=4.0, hop=1.0, lookahead=0.5, crossfade=0.2)
FAST_ARGS = ["--window", "4", "--hop", "1", "--lookahead", "0.5", "--crossfade", "0.2"]


@pytest.fixture(scope="module")
def model() -> streamsep.Model:
    return streamsep.load("embedded")


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    x, sr = sf.read(DEMO, dtype="float32")
    assert sr == SR and x.ndim == 1
    return x[: 5 * SR]


def _np(a) -> np.ndarray:
    return np.asarray(a)


def test_separate_is_what_streamsep_file_writes(model, clip, tmp_path, capsys) -> None:
    src = tmp_path / "in.wav"
    sf.write(src, clip, SR, subtype="FLOAT")
    code, err = run_cli(capsys, "-q", "file", str(src), "-p", "speech", "-o",
                        str(tmp_path / "t.wav"), "--residual", str(tmp_path / "r.wav"),
                        *FAST_ARGS)
    assert code == 0, err
    plan = model.plan(**FAST)
    for audio in (clip, str(src)):  # an array, and the same file by path
        res = model.separate(audio, prompt="speech", plan=plan)
        assert isinstance(res, streamsep.SeparationResult) and isinstance(res.target, mx.array)
        assert res.sample_rate == SR and res.target.shape == clip.shape
        np.testing.assert_array_equal(_np(res.target), sf.read(tmp_path / "t.wav",
                                                               dtype="float32")[0])
        np.testing.assert_array_equal(_np(res.residual), sf.read(tmp_path / "r.wav",
                                                                 dtype="float32")[0])
    np.testing.assert_allclose(_np(res.target) + _np(res.residual), clip, atol=1e-6)


def test_streaming_chunks_join_to_separate(model, clip) -> None:
    plan = model.plan(**FAST)
    whole = _np(model.separate(clip, SR, prompt="music", plan=plan).target)
    chunks = list(model.separate_streaming(clip, SR, prompt="music", plan=plan))
    assert [c.chunk_idx for c in chunks] == list(range(len(chunks))) and len(chunks) > 2
    assert [c.is_last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    np.testing.assert_array_equal(np.concatenate([_np(c.target) for c in chunks]), whole)
    # live-like input: any iterator of blocks, here of uneven sizes
    blocks = (clip[i:i + 7000] for i in range(0, len(clip), 7000))
    again = np.concatenate([_np(c.target) for c in model.separate_streaming(
        blocks, prompt="music", plan=plan)])
    np.testing.assert_array_equal(again, whole)


def test_channels_and_other_sample_rates(model, clip, tmp_path) -> None:
    plan = model.plan(**FAST)
    stereo = np.stack([clip, 0.5 * clip[::-1]], axis=1)
    res = model.separate(stereo, SR, prompt="speech", plan=plan)
    assert res.target.shape == stereo.shape
    for ch in range(2):  # each channel on its own, as --channels keep
        mono = model.separate(np.ascontiguousarray(stereo[:, ch]), SR, prompt="speech",
                              plan=plan)
        np.testing.assert_array_equal(_np(res.target)[:, ch], _np(mono.target))
    x44 = clip[: 2 * 44100]
    path = tmp_path / "cd.flac"
    sf.write(path, np.stack([x44, x44], 1), 44100)
    for audio, rate in ((x44, 44100), (str(path), None)):
        r = model.separate(audio, rate, prompt="speech", plan=plan)
        assert r.sample_rate == 44100 and r.target.shape[0] == len(x44)
        t = _np(r.target).reshape(len(x44), -1)[:, 0]
        assert np.isfinite(t).all() and 0 < np.abs(t).max() < 2


def test_every_kind_of_spec_loads_through_the_one_resolver(clip, tmp_path) -> None:
    folder = streamsep.load(str(ROOT / "model"))
    assert folder.kind == "embedded" and folder.known_prompts["speech"][0] == "speech"
    passthrough = streamsep.load("passthrough")
    assert passthrough.kind == "simple" and passthrough.known_prompts is None
    res = passthrough.separate(clip, prompt="a dog barking")  # no vocabulary to check
    np.testing.assert_array_equal(_np(res.target), clip)
    plugin = tmp_path / "gain.py"
    plugin.write_text(
        "import numpy as np\n\n\nclass Gain:\n    sample_rate = 48000\n    frame_hop = 1920\n"
        "    noise_channels = 0\n\n    def set_prompt(self, text):\n        self.g = 0.5\n\n"
        "    def separate(self, window, noise, anchors=None):\n"
        "        t = (self.g * window).astype(np.float32)\n        return t, window - t\n")
    mine = streamsep.load(f"{plugin}:Gain")
    assert mine.kind == "plugin"
    np.testing.assert_allclose(_np(mine.separate(clip, prompt="x").target), 0.5 * clip,
                               atol=1e-7)


def test_sam_audio_through_load_takes_any_text(tmp_path) -> None:
    sam = streamsep.load(str(sam_tiny_with_tokenizer(tmp_path)))
    assert sam.kind == "sam-audio" and sam.known_prompts is None
    x = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    res = sam.separate(x, prompt="a dog barking", plan=sam.plan(**FAST))
    assert res.target.shape == x.shape and np.isfinite(_np(res.target)).all()


def test_bad_calls_are_one_clear_line(model, clip) -> None:
    cases = [
        (lambda: model.separate(clip), "no prompt: pass prompt="),
        (lambda: model.separate(clip, prompt="drums"), "cannot isolate 'drums'"),
        (lambda: model.separate(clip, prompt="music", prompt_policy="any"),
         "unknown prompt_policy"),
        (lambda: model.separate(clip.reshape(1, 1, -1), prompt="speech"), "(N,) mono"),
        (lambda: model.separate((clip * 1000).astype(np.int16), prompt="speech"), "float"),
        (lambda: model.separate(clip, 0, prompt="speech"), "sample_rate"),
        (lambda: model.separate_streaming(np.stack([clip, clip], 1), prompt="speech"),
         "mono audio"),
        (lambda: model.separate_streaming(clip, prompt="a dog barking"), "knows only speech"),
        (lambda: streamsep.load("nosuchmodel"), "unknown model 'nosuchmodel'"),
        (lambda: streamsep.load("embedded", prompt_policy="loose"), "unknown prompt policy"),
    ]
    for call, needle in cases:
        with pytest.raises(ValueError) as info:
            call()
        assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)
    # the nearest policy, per call, leaves the model's own policy as it was
    model.separate(clip[:SR], prompt="drums", prompt_policy="nearest")
    assert model.separator.prompt_policy == "strict"


def test_sam_from_pretrained_on_the_embedded_folder_says_what_to_call() -> None:
    from streamsep import SAMAudio, SAMAudioProcessor

    for load in (SAMAudio.from_pretrained, SAMAudioProcessor.from_pretrained):
        with pytest.raises(ValueError) as info:
            load(str(ROOT / "model"))
        msg = str(info.value)
        assert "is streamsep's embedded model" in msg and "streamsep.load(" in msg, msg


def test_the_readme_example_runs(tmp_path, monkeypatch, capsys) -> None:
    import re

    section = (ROOT / "README.md").read_text().split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert code.startswith("import streamsep") and "streamsep.load(" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("model/demo.wav", str(DEMO)), "README.md", "exec"), {})
    out, sr = sf.read(tmp_path / "speech.wav", dtype="float32")
    assert sr == SR and len(out) == sf.info(DEMO).frames
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("0 ") and printed[-1].endswith(" True")


# -- the hub, offline ------------------------------------------------------------------------------
def _no_network(monkeypatch) -> list:
    calls = []

    def fake_download(*args, **kwargs):
        calls.append(kwargs.get("local_files_only"))
        raise hf_errors.LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    monkeypatch.setattr(hub, "_probe", None)
    return calls


def test_an_unreachable_hub_is_not_retried(monkeypatch) -> None:
    from streamsep import SAMAudio

    calls = _no_network(monkeypatch)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    probes = []

    def refuse(address, timeout=None):
        probes.append((address, timeout))
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(ValueError) as info:
        SAMAudio.from_pretrained("facebook/sam-audio-small")
    msg = str(info.value)
    assert msg.startswith("cannot download facebook/sam-audio-small: the Hugging Face Hub is "
                          "unreachable (cannot connect to huggingface.co:443")
    assert "`hf download facebook/sam-audio-small`" in msg
    assert calls == [True]  # asked the local cache only: no request, so no retries
    assert probes == [(("huggingface.co", 443), hub.PROBE_TIMEOUT_S)]


def test_hf_hub_offline_skips_even_the_probe(monkeypatch) -> None:
    from streamsep import SAMAudioProcessor

    calls = _no_network(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection",
                        lambda *a, **k: pytest.fail("probed the network with HF_HUB_OFFLINE"))
    with pytest.raises(ValueError, match=r"unreachable \(HF_HUB_OFFLINE is set\)"):
        SAMAudioProcessor.from_pretrained("facebook/sam-audio-small")
    assert calls == [True]


def test_no_message_or_doc_names_the_retired_huggingface_cli() -> None:
    """Current huggingface_hub ships `hf` (hf auth login, hf download), not huggingface-cli."""
    files = [*ROOT.glob("*.md"), *ROOT.glob("model/*.md"), *(ROOT / "streamsep").rglob("*.py"),
             *(ROOT / "tools").rglob("*.py")]
    hits = [str(f.relative_to(ROOT)) for f in files
            if "huggingface-cli" in f.read_text(encoding="utf-8", errors="replace")]
    assert len(files) > 20 and hits == [], hits
