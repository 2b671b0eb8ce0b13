"""DAC-VAE codec: golden-fixture parity, shapes, layouts and checkpoint errors."""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from streamsep.sam_audio.checkpoint import load_torch_checkpoint
from streamsep.sam_audio.codec import (
    DACVAE,
    ConvTranspose1d,
    DACVAEConfig,
    _dilated_conv1d,
)

FIXTURE = Path(__file__).parent / "fixtures" / "sam_tiny_a"
TOL = 1e-4


@pytest.fixture(scope="module")
def codec_weights() -> dict[str, np.ndarray]:
    weights = load_torch_checkpoint(FIXTURE / "checkpoint.pt")
    prefix = "audio_codec."
    return {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def config() -> DACVAEConfig:
    return DACVAEConfig.from_dict(json.loads((FIXTURE / "config.json").read_text())["audio_codec"])


@pytest.fixture(scope="module")
def codec(config, codec_weights) -> DACVAE:
    return DACVAE(config).load_checkpoint(codec_weights)


@pytest.fixture(scope="module")
def data():
    return np.load(FIXTURE / "inputs.npz"), np.load(FIXTURE / "expected.npz")


def test_encode_matches_reference(codec, data):
    inputs, expected = data
    features = np.array(codec.encode(mx.array(inputs["audios"])))
    assert features.shape == expected["codec_features"].shape
    assert np.abs(features - expected["codec_features"]).max() <= TOL


@pytest.fixture(scope="module")
def decoded(codec, data) -> np.ndarray:
    inputs, expected = data
    wav = codec.decode(mx.array(expected["codec_features"]), mx.array(inputs["wm_message"]))
    return np.array(wav)


def test_decode_matches_reference(decoded, data):
    expected = data[1]["codec_decode"]
    assert decoded.shape == expected.shape
    assert np.abs(decoded - expected).max() <= TOL


def test_watermark_term_matches_reference(codec, decoded, data):
    # The tiny model blends the watermark with weight 4/128, so its term is ~3e-3 and a wrong
    # watermark branch could hide under the absolute tolerance; compare the term itself.
    unmarked = np.array(codec.decode(mx.array(data[1]["codec_features"]), watermark=False))
    ours, reference = decoded - unmarked, data[1]["codec_decode"] - unmarked
    assert np.abs(reference).max() > 1e-3
    assert np.abs(ours - reference).max() <= 1e-3 * np.abs(reference).max()


def test_decode_chunked_matches_decode(codec, data):
    inputs, expected = data
    features = mx.array(expected["codec_features"][:, :20])
    message = mx.array(inputs["wm_message"])
    whole = np.array(codec.decode(features, message))
    chunked = np.array(codec.decode_chunked(features, 7, message, context=8))
    assert chunked.shape == whole.shape
    assert np.abs(chunked - whole).max() <= TOL


def test_round_trip_shapes_and_message_forms(codec):
    n = 5000  # not a multiple of the hop: reflect-padded to 3 frames
    wav = mx.random.normal((2, n), key=mx.random.key(0)) * 0.1
    features = codec.encode(wav)
    assert features.shape == (2, 3, codec.config.codebook_dim)
    assert np.array_equal(np.array(codec.encode(wav[:, None, :])), np.array(features))

    bits = mx.array([1.0, 0.0] * 8)
    one = codec.decode(features, bits)
    per_item = codec.decode(features, mx.broadcast_to(bits, (2, 16)))
    assert one.shape == (2, 1, 3 * codec.hop_length)
    assert np.array_equal(np.array(one), np.array(per_item))
    assert codec.decode(features).shape == (2, 1, 3 * codec.hop_length)

    # Per-item messages reach their own item only.
    messages = mx.stack([bits, 1.0 - bits])
    both = np.array(codec.decode(features, messages))
    for i in range(2):
        alone = np.array(codec.decode(features[i : i + 1], messages[i]))
        assert np.allclose(both[i : i + 1], alone, atol=1e-6)
    assert not np.allclose(both[1:], np.array(one[1:]), atol=1e-7)
    with pytest.raises(ValueError, match="watermark message"):
        codec.decode(features, mx.zeros((3, 16)))
    with pytest.raises(ValueError, match=r"\(batch, frames, 128\)"):
        codec.decode(features.transpose(0, 2, 1))


def test_reflect_pad_matches_torch_reflect(codec):
    hop = codec.hop_length
    for n in (hop + 7, 2 * hop - 1):
        x = np.random.default_rng(n).standard_normal((1, n)).astype(np.float32)
        padded = np.array(codec._reflect_pad(mx.array(x)))
        assert np.array_equal(padded, np.pad(x, ((0, 0), (0, -n % hop)), mode="reflect"))


@pytest.mark.parametrize("stride, steps", [(2, 9), (3, 9), (2, 2)])  # (2, 2): batch * steps < cin
def test_conv_transpose_matches_mlx_reference_op(stride, steps):
    layer = ConvTranspose1d(5, 4, stride)
    layer.weight = mx.random.normal(layer.weight.shape, key=mx.random.key(1))
    x = mx.random.normal((2, steps, 5), key=mx.random.key(2))
    expected = mx.conv_transpose1d(
        x, layer.weight, stride=stride, padding=(stride + 1) // 2, output_padding=stride % 2
    )
    assert np.allclose(np.array(layer(x)), np.array(expected), atol=1e-5)


@pytest.mark.parametrize("dilation", [3, 9])
def test_dilated_conv_matches_mlx_reference_op(dilation):
    x = mx.random.normal((2, 101, 6), key=mx.random.key(3))
    w = mx.random.normal((5, 7, 6), key=mx.random.key(4))
    expected = mx.conv1d(x, w, padding=3 * dilation, dilation=dilation)
    got = _dilated_conv1d(x, w, dilation, 3 * dilation)
    assert np.allclose(np.array(got), np.array(expected), atol=1e-4)


def test_sanitize_converts_by_layer_type(codec_weights):
    out = DACVAE.sanitize(codec_weights)
    # Conv1d (out, in, k) -> (out, k, in), including in == k cases.
    assert out["encoder.block.1.block.4.weight"].shape == (16, 4, 8)
    # ConvTranspose1d (in, out, k) -> (out, k, in), weight-normed or not.
    assert out["decoder.model.1.block.1.weight"].shape == (96, 24, 192)
    assert out["decoder.model.1.block.3.weight"].shape == (32, 16, 64)
    assert out["encoder.block.5.alpha"].shape == (1, 1, 128)
    assert out["decoder.wm_model.encoder_block.post.0.lstm.weight_ih_l0"].shape == (256, 64)
    assert not any(k.endswith(("weight_g", "weight_v")) for k in out)


def test_sanitize_names_missing_weight_norm_half(codec_weights):
    weights = dict(codec_weights)
    del weights["decoder.model.2.block.1.weight_v"]
    with pytest.raises(ValueError, match=r"decoder\.model\.2\.block\.1\.weight_v"):
        DACVAE.sanitize(weights)


def test_sanitize_names_misshaped_alpha(codec_weights):
    weights = dict(codec_weights)
    weights["encoder.block.5.alpha"] = np.ones((128,), np.float32)
    with pytest.raises(ValueError, match=r"encoder\.block\.5\.alpha"):
        DACVAE.sanitize(weights)


def test_load_names_missing_and_misshaped_tensors(config, codec_weights):
    weights = dict(codec_weights)
    del weights["quantizer.out_proj.bias"]
    with pytest.raises(ValueError, match=r"quantizer\.out_proj\.bias"):
        DACVAE(config).load_checkpoint(weights)
    weights = dict(codec_weights)
    weights["encoder.block.6.bias"] = np.zeros((31,), np.float32)
    with pytest.raises(ValueError, match=r"encoder\.block\.6\.bias"):
        DACVAE(config).load_checkpoint(weights)


def test_config_defaults_and_index_helpers(codec):
    cfg = DACVAEConfig.from_dict({"latent_dim": 1024, "unknown_key": 1})
    assert cfg.hop_length == 1920 and cfg.decoder_dim == 1536 and cfg.codebook_dim == 128
    assert (cfg.wm_channels, cfg.wm_hidden) == (32, 512)
    assert codec.wav_idx_to_feature_idx(96000) == 50
    assert codec.wav_idx_to_feature_idx(96001) == 51
    assert codec.wav_idx_to_feature_idx(16000, sample_rate=16000) == 25
    assert codec.feature_idx_to_wav_idx(50) == 96000
    assert codec.feature_idx_to_wav_idx(mx.array([3])).tolist() == [5760]
