"""DAC-VAE codec: golden-fixture parity, shapes, layouts and checkpoint errors."""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from streamsep.sam_audio import codec as codec_module
from streamsep.sam_audio.checkpoint import load_torch_checkpoint
from streamsep.sam_audio.codec import (
    DACVAE,
    Conv1d,
    ConvTranspose1d,
    DACVAEConfig,
    Snake1d,
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


@pytest.fixture(params=["cpu", "native"])
def path(request, monkeypatch):
    """Runs a test once with the CPU GEMM forms and once with MLX's native kernels."""
    monkeypatch.setattr(codec_module, "COMPUTE_PATH", request.param)
    return request.param


def test_fixture_parity_on_both_compute_paths(path, codec, data):
    # Both paths sit at float32 rounding of the reference (~3e-7), far inside TOL.
    inputs, expected = data
    features = np.array(codec.encode(mx.array(inputs["audios"])))
    assert np.abs(features - expected["codec_features"]).max() <= 2e-6
    wav = codec.decode(mx.array(expected["codec_features"]), mx.array(inputs["wm_message"]))
    assert np.abs(np.array(wav) - expected["codec_decode"]).max() <= 2e-6


def _with_path(monkeypatch, name, fn):
    monkeypatch.setattr(codec_module, "COMPUTE_PATH", name)
    return np.array(fn())


@pytest.mark.parametrize(
    "cin, cout, k, stride, dilation, pad_mode, causal",
    [
        (6, 5, 7, 1, 1, "none", False),
        (6, 5, 7, 1, 3, "none", False),
        (6, 5, 7, 1, 9, "none", False),
        (16, 2, 7, 1, 1, "none", False),  # narrow output: GEMM then shifted adds
        (16, 2, 3, 1, 3, "none", False),  # narrow and dilated
        (1, 8, 7, 1, 1, "none", False),  # single input channel
        (6, 5, 1, 1, 1, "none", False),
        (6, 5, 8, 4, 1, "none", False),  # strided downsampling
        (6, 5, 10, 5, 1, "auto", True),  # watermark's causal strided conv
        (6, 5, 3, 1, 1, "auto", True),
        (6, 5, 7, 1, 1, "auto", False),
    ],
)
def test_conv_gemm_form_matches_native(
    monkeypatch, cin, cout, k, stride, dilation, pad_mode, causal
):
    layer = Conv1d(cin, cout, k, stride=stride, dilation=dilation, causal=causal, pad_mode=pad_mode)
    layer.weight = mx.random.normal(layer.weight.shape, key=mx.random.key(1))
    layer.bias = mx.random.normal(layer.bias.shape, key=mx.random.key(5))
    x = mx.random.normal((2, 104, cin), key=mx.random.key(2))
    # Time-sliced views (offset into their buffer, strided across the batch) as layers get them.
    for view in (x[:, 3:], x[1:, 3:]):
        native = _with_path(monkeypatch, "native", lambda: layer(view))  # noqa: B023
        gemm = _with_path(monkeypatch, "cpu", lambda: layer(view))  # noqa: B023
        assert gemm.shape == native.shape
        assert np.abs(gemm - native).max() <= 1e-5 * max(1.0, np.abs(native).max())


def test_conv_gemm_time_slices_match_one_piece(monkeypatch):
    layer = Conv1d(6, 5, 7, dilation=3)
    layer.weight = mx.random.normal(layer.weight.shape, key=mx.random.key(1))
    layer.bias = mx.random.normal(layer.bias.shape, key=mx.random.key(5))
    x = mx.random.normal((2, 101, 6), key=mx.random.key(2))
    whole = _with_path(monkeypatch, "cpu", lambda: layer(x))
    monkeypatch.setattr(codec_module, "_IM2COL_MAX_FLOATS", 2 * 7 * 6 * 10)  # 10-row slices
    sliced = _with_path(monkeypatch, "cpu", lambda: layer(x))
    assert np.abs(sliced - whole).max() <= 1e-6 * np.abs(whole).max()


@pytest.mark.parametrize("pad_mode, causal", [("none", False), ("auto", True), ("auto", False)])
@pytest.mark.parametrize("stride, steps", [(2, 9), (3, 9), (8, 1), (2, 2)])  # (2, 2): few frames
def test_conv_transpose_gemm_form_matches_native(monkeypatch, pad_mode, causal, stride, steps):
    layer = ConvTranspose1d(5, 4, stride, causal=causal, pad_mode=pad_mode)
    layer.weight = mx.random.normal(layer.weight.shape, key=mx.random.key(1))
    layer.bias = mx.random.normal(layer.bias.shape, key=mx.random.key(5))
    x = mx.random.normal((2, steps, 5), key=mx.random.key(2))
    native = _with_path(monkeypatch, "native", lambda: layer(x))
    gemm = _with_path(monkeypatch, "cpu", lambda: layer(x))
    assert gemm.shape == native.shape
    assert np.abs(gemm - native).max() <= 1e-5 * np.abs(native).max()


def test_conv_transpose_native_matches_torch_padding(monkeypatch):
    # "none" mode must equal torch's ConvTranspose1d(padding=(s+1)//2, output_padding=s%2).
    layer = ConvTranspose1d(5, 4, 3)
    layer.weight = mx.random.normal(layer.weight.shape, key=mx.random.key(1))
    x = mx.random.normal((2, 9, 5), key=mx.random.key(2))
    expected = mx.conv_transpose1d(x, layer.weight, stride=3, padding=2, output_padding=1)
    got = _with_path(monkeypatch, "cpu", lambda: layer(x))
    assert np.allclose(got, np.array(expected), atol=1e-5)


def test_snake_polynomial_matches_sine(monkeypatch):
    alpha = mx.array(np.linspace(0.05, 8.0, 8, dtype=np.float32))[None, None]
    # alpha * x reaches ~1300: the range reduction must hold for hundreds of periods.
    x = mx.random.normal((1, 4096, 8), key=mx.random.key(6)) * 40
    z = (np.array(x) * np.array(alpha)).astype(np.float64)  # the float32 product, as torch
    sin2 = np.array(codec_module._sin_squared(x, alpha, alpha / np.pi))
    assert np.abs(sin2 - np.sin(z) ** 2).max() <= 4e-7

    snake = Snake1d(8)
    snake.alpha = alpha
    poly = _with_path(monkeypatch, "cpu", lambda: snake(x))
    sine = _with_path(monkeypatch, "native", lambda: snake(x))
    # Beyond the sin^2 error, only the rounding of x + term (|x| ~ 160) separates the two.
    assert np.abs(poly - sine).max() <= 2 * np.spacing(np.float32(np.abs(sine).max()))


def test_compute_path_rejects_unknown_name(monkeypatch):
    monkeypatch.setattr(codec_module, "COMPUTE_PATH", "metal")
    with pytest.raises(ValueError, match="COMPUTE_PATH"):
        Snake1d(2)(mx.zeros((1, 3, 2)))


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


def test_snake_cpu_form_keeps_low_precision_dtypes(monkeypatch):
    snake = Snake1d(4)
    snake.alpha = mx.array([[[0.5, 1.0, 2.0, 3.0]]])
    x = mx.random.normal((1, 64, 4), key=mx.random.key(7)) * 3
    exact = _with_path(monkeypatch, "native", lambda: snake(x))
    snake.alpha = snake.alpha.astype(mx.bfloat16)
    monkeypatch.setattr(codec_module, "COMPUTE_PATH", "cpu")
    y = snake(x.astype(mx.bfloat16))
    assert y.dtype == mx.bfloat16
    assert np.abs(np.array(y.astype(mx.float32)) - exact).max() <= 0.1
