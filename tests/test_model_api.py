"""SAMAudio's public API on the tiny fixture: config, presets, separate / separate_long /
separate_window shapes and errors, anchors, strict loading, and the engine adapter."""

import json

import mlx.core as mx
import numpy as np
import pytest
from conftest import FIXTURES
from safetensors.numpy import load_file

from streamsep.sam_audio.checkpoint import load_torch_checkpoint
from streamsep.sam_audio.config import SAMAudioConfig, preset
from streamsep.sam_audio.model import SAMAudio, SAMAudioLoadError, anchor_tensors
from streamsep.sam_audio.t5 import T5Config
from streamsep.separators.base import Separator
from streamsep.separators.sam import SAMSeparator

FIXTURE = FIXTURES / "sam_tiny_a"
HOP = 1920
MSG = mx.array(np.arange(16) % 2, dtype=mx.float32)


class FakeTokenizer:
    """Stands in for t5-base's tokenizer.json (not part of the fixture): one id per word + EOS."""

    def __call__(self, texts, max_length=512, padding="longest"):
        rows = [[3 + len(w) % 90 for w in t.split()] + [1] for t in texts]
        width = max(map(len, rows))
        ids = np.zeros((len(rows), width), np.int32)
        mask = np.zeros((len(rows), width), bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = r, True
        return ids, mask


@pytest.fixture(scope="module")
def weights():
    w = load_torch_checkpoint(FIXTURE / "checkpoint.pt")
    for k, v in load_file(str(FIXTURE / "t5" / "model.safetensors")).items():
        w["text_encoder." + k] = v
    return w


@pytest.fixture(scope="module")
def model(weights):
    config = SAMAudioConfig.from_dict(json.loads((FIXTURE / "config.json").read_text()))
    t5 = T5Config.from_dict(json.loads((FIXTURE / "t5" / "config.json").read_text()))
    m = SAMAudio(config, t5_config=t5, tokenizer=FakeTokenizer())
    m.load_checkpoint(weights, source=str(FIXTURE))
    return m


def _audio(n, seed=0):
    return mx.array(np.random.default_rng(seed).standard_normal((1, 1, n)).astype(np.float32) * 0.1)


# ---------------------------------------------------------------- config
def test_config_reads_the_reference_schema():
    cfg = SAMAudioConfig.from_dict(json.loads((FIXTURE / "config.json").read_text()))
    assert cfg.vision_dim == 32 and cfg.text_encoder.dim == 64
    assert cfg.transformer.dim == 64 and cfg.transformer.n_layers == 2
    assert cfg.audio_codec.decoder_dim == 192 and cfg.hop_length == HOP
    assert cfg.anchor_embedding_dim == 16 and cfg.in_channels == 768
    assert cfg == preset("tiny")


@pytest.mark.parametrize(
    "name, dim, heads, layers",
    [("small", 1024, 8, 12), ("base", 1536, 12, 16), ("large", 2816, 22, 22)],
)
def test_presets(name, dim, heads, layers):
    cfg = preset(name)
    t = cfg.transformer
    assert (t.dim, t.n_heads, t.n_layers, t.context_dim) == (dim, heads, layers, dim)
    assert cfg.audio_codec.latent_dim == 1024 and cfg.audio_codec.decoder_dim == 1536
    assert cfg.text_encoder.dim == 768 and cfg.vision_dim == 1024 and cfg.sample_rate == 48000


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown SAM-Audio preset 'huge'"):
        preset("huge")


# ---------------------------------------------------------------- anchors
def test_anchor_tensors_follow_the_reference_processor():
    ids, align = anchor_tensors(
        [[("+", 0.1, 0.3)], [("-", 0.0, 0.1), ("+", 0.2, 0.25)]], 10, [10, 8], HOP, 48000
    )
    assert np.array(ids).tolist() == [[0, 3, 1, 3], [0, 3, 2, 1]]
    a = np.array(align)
    # 0.1 s → frame ceil(2.5) = 3, 0.3 s → ceil(7.5) = 8.
    assert a[0].tolist() == [0, 0, 0, 2, 2, 2, 2, 2, 0, 0]
    assert a[1].tolist() == [2, 2, 2, 0, 0, 3, 3, 0, 1, 1]  # padded frames point at <pad>
    ids, align = anchor_tensors(None, 4, [3], HOP, 48000)
    assert np.array(ids).tolist() == [[0, 3]] and np.array(align).tolist() == [[0, 0, 0, 1]]


def test_anchor_token_is_checked():
    with pytest.raises(ValueError, match=r"has token 'x': use '\+'"):
        anchor_tensors([[("x", 0, 1)]], 10, [10], HOP, 48000)


# ---------------------------------------------------------------- separate
def test_separate_returns_items_cut_to_whole_frames(model):
    audios = mx.concatenate([_audio(5 * HOP), _audio(5 * HOP, 1)], axis=0)
    res = model.separate(
        audios,
        ["speech", "dog barking"],
        sizes=[5, 3],
        ode_opt={"method": "euler", "step_size": 0.5},
        seed=1,
        wm_message=MSG,
    )
    assert [t.shape for t in res.target] == [(5 * HOP,), (3 * HOP,)]
    assert [r.shape for r in res.residual] == [(5 * HOP,), (3 * HOP,)]
    assert res.noise.shape == (2, 5, 256) and res.peak_memory >= 0
    assert all(np.isfinite(np.array(t)).all() for t in res.target)
    # Same seed, same message → same output; another seed → different.
    again = model.separate(
        audios,
        ["speech", "dog barking"],
        sizes=[5, 3],
        ode_opt={"method": "euler", "step_size": 0.5},
        seed=1,
        wm_message=MSG,
    )
    np.testing.assert_array_equal(np.array(res.target[0]), np.array(again.target[0]))
    other = model.separate(
        audios,
        ["speech", "dog barking"],
        sizes=[5, 3],
        ode_opt={"method": "euler", "step_size": 0.5},
        seed=2,
        wm_message=MSG,
    )
    assert not np.allclose(np.array(res.target[0]), np.array(other.target[0]))


def test_separate_without_sizes_rounds_up_to_a_whole_frame(model):
    res = model.separate(
        _audio(2 * HOP + 7), ["speech"], ode_opt={"method": "euler", "step_size": 0.5}
    )
    assert res.target[0].shape == (3 * HOP,)


def test_separate_errors(model):
    with pytest.raises(ValueError, match=r"audios must be \(B, 1, N\)"):
        model.separate(mx.zeros((HOP,)), ["speech"])
    with pytest.raises(ValueError, match="got 2 descriptions for 1 audio items"):
        model.separate(_audio(HOP), ["a", "b"])
    with pytest.raises(ValueError, match=r"step_size must be between 0 and 1 \(exclusive\)"):
        model.separate(_audio(HOP), ["a"], ode_opt={"method": "euler", "step_size": 1.0})
    with pytest.raises(ValueError, match="noise must have shape"):
        model.separate(_audio(HOP), ["a"], noise=mx.zeros((1, 2, 256)))
    with pytest.raises(ValueError, match="pass anchor_ids and anchor_alignment together"):
        model.separate(_audio(HOP), ["a"], anchor_ids=mx.array([[0, 3]]))


def test_anchors_change_the_result(model):
    audio = _audio(6 * HOP)
    opt = {"method": "euler", "step_size": 0.5}
    plain = model.separate(audio, ["speech"], ode_opt=opt, seed=0, wm_message=MSG)
    ids, align = anchor_tensors([[("+", 0.0, 0.08)]], 6, [6], HOP, 48000)
    anchored = model.separate(
        audio,
        ["speech"],
        anchor_ids=ids,
        anchor_alignment=align,
        ode_opt=opt,
        seed=0,
        wm_message=MSG,
    )
    assert not np.allclose(np.array(plain.target[0]), np.array(anchored.target[0]))


# ---------------------------------------------------------------- separate_long
def test_separate_long_crossfade_weights_sum_to_one(model, monkeypatch):
    # With an identity "separation" the crossfaded result must equal the input exactly.
    # separate_long runs the engine's windows through SAMSeparator (one overlap-add, the
    # engine's crossfade), so the identity stands in for that separator, not for separate.
    from streamsep.sam_audio import streaming

    class Identity:
        def __init__(self, model, steps=16, method="midpoint"):
            self.sample_rate, self.frame_hop, self.noise_channels = 48000, HOP, 256
            self.wm_message, self.step_size = MSG, 1 / steps

        def set_prompt(self, text):
            pass

        def separate(self, window, noise, anchors=None):
            return window.copy(), -window

    monkeypatch.setattr(streaming, "SAMSeparator", Identity)
    audio = _audio(37 * HOP + 100)
    res = model.separate_long(audio, ["speech"], chunk_seconds=0.4, overlap_seconds=0.12)
    np.testing.assert_array_equal(np.array(res.target[0]), np.array(audio[0, 0]))
    np.testing.assert_array_equal(np.array(res.residual[0]), -np.array(audio[0, 0]))


def test_separate_long_runs_in_chunks_and_keeps_the_length(model):
    audio = _audio(12 * HOP + 50)
    opt = {"method": "euler", "step_size": 0.5}
    res = model.separate_long(
        audio, ["speech"], chunk_seconds=0.4, overlap_seconds=0.12, ode_opt=opt
    )
    assert res.target[0].shape == (12 * HOP + 50,) and res.residual[0].shape == (12 * HOP + 50,)
    assert np.isfinite(np.array(res.target[0])).all()
    short = model.separate_long(audio, ["speech"], chunk_seconds=5.0, ode_opt=opt, seed=3)
    assert short.target[0].shape == (12 * HOP + 50,)
    with pytest.raises(ValueError, match="overlap_seconds < chunk_seconds"):
        model.separate_long(audio, ["speech"], chunk_seconds=0.2, overlap_seconds=0.3)
    with pytest.raises(ValueError, match=r"one recording at a time \(B = 1\)"):
        model.separate_long(mx.concatenate([audio, audio]), ["a", "b"])


# ---------------------------------------------------------------- window API and adapter
def test_separate_window_matches_separate(model):
    audio = _audio(4 * HOP)
    noise = mx.random.normal((1, 4, 256), key=mx.random.key(5))
    text = model.encode_text(["speech"])
    tgt, res = model.separate_window(
        audio[0, 0], text, noise, steps=2, method="euler", wm_message=MSG
    )
    ref = model.separate(
        audio,
        ["speech"],
        ode_opt={"method": "euler", "step_size": 0.5},
        noise=noise,
        wm_message=MSG,
    )
    np.testing.assert_allclose(np.array(tgt[0]), np.array(ref.target[0]), atol=1e-6)
    np.testing.assert_allclose(np.array(res[0]), np.array(ref.residual[0]), atol=1e-6)


def test_sam_separator_implements_the_engine_protocol(model):
    sep = SAMSeparator(model, steps=2, method="euler")
    assert isinstance(sep, Separator)
    assert (sep.sample_rate, sep.frame_hop, sep.noise_channels) == (48000, HOP, 256)
    with pytest.raises(RuntimeError, match="call set_prompt"):
        sep.separate(np.zeros(HOP, np.float32), np.zeros((1, 256), np.float32))
    with pytest.raises(ValueError, match="the prompt is empty"):
        sep.set_prompt("  ")
    sep.set_prompt("speech")
    window = np.array(_audio(3 * HOP)[0, 0])
    noise = np.random.default_rng(0).standard_normal((3, 256)).astype(np.float32)
    tgt, res = sep.separate(window, noise, [("+", 0.0, 0.04)])
    assert tgt.shape == res.shape == (3 * HOP,) and tgt.dtype == np.float32
    with pytest.raises(ValueError, match="noise must have shape"):
        sep.separate(window, noise[:2])
    with pytest.raises(ValueError, match="positive multiple of 1920"):
        sep.separate(window[:-1], noise)


def test_separator_bad_knobs():
    with pytest.raises(ValueError, match="steps must be an integer"):
        from streamsep.separators.sam import load

        load("/nonexistent", steps=1, method="euler")


# ---------------------------------------------------------------- loading
def test_loading_skips_vision_and_checks_every_tensor(weights):
    assert any(k.startswith("vision_encoder.") for k in weights)
    config = SAMAudioConfig.from_dict(json.loads((FIXTURE / "config.json").read_text()))
    t5 = T5Config.from_dict(json.loads((FIXTURE / "t5" / "config.json").read_text()))
    missing = {k: v for k, v in weights.items() if k != "embed_anchors.gate"}
    with pytest.raises(SAMAudioLoadError, match="missing tensor 'embed_anchors.gate'"):
        SAMAudio(config, t5_config=t5).load_checkpoint(missing, source="somewhere")
    bad = dict(weights)
    bad["memory_proj.weight"] = np.zeros((64, 63), np.float32)
    with pytest.raises(SAMAudioLoadError, match=r"'memory_proj.weight' has shape \(64, 63\)"):
        SAMAudio(config, t5_config=t5).load_checkpoint(bad, source="somewhere")


def test_separate_accepts_file_paths_like_mlx_audio(model, tmp_path):
    import soundfile as sf

    path = tmp_path / "a.wav"
    sf.write(path, np.array(_audio(3 * HOP + 10)[0, 0]), 48000)
    opt = {"method": "euler", "step_size": 0.5}
    res = model.separate([str(path)], ["speech"], ode_opt=opt, anchors=[[("+", 0.0, 0.05)]])
    assert res.target[0].shape == (4 * HOP,)
    with pytest.raises(ValueError, match="anchors apply to file-path input"):
        model.separate(_audio(HOP), ["speech"], anchors=[[("+", 0.0, 0.05)]])


def test_verbose_shows_a_progress_bar(model, capsys):
    model.separate(
        _audio(HOP), ["speech"], ode_opt={"method": "euler", "step_size": 0.5}, verbose=True
    )
    assert "ODE steps" in capsys.readouterr().err
