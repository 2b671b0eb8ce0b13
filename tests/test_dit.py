"""SAM-Audio DiT: config sizes, weight loading, RoPE, t-embedder, masks, against a numpy
transcription of the reference transformer (sam_audio/model/transformer.py, rope.py, patcher.py)."""

import json
import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from conftest import FIXTURES
from mlx.utils import tree_flatten

from streamsep.sam_audio import dit as dit_module
from streamsep.sam_audio.checkpoint import load_torch_checkpoint
from streamsep.sam_audio.dit import DiT, DiTConfig
from streamsep.sam_audio.rope import RotaryEmbedding

FIXTURE = FIXTURES / "sam_tiny_a"


@pytest.fixture(scope="module")
def torch_weights() -> dict[str, np.ndarray]:
    w = load_torch_checkpoint(FIXTURE / "checkpoint.pt")
    return {k.removeprefix("transformer."): v for k, v in w.items() if k.startswith("transformer.")}


@pytest.fixture(scope="module")
def config() -> DiTConfig:
    return DiTConfig.from_dict(json.loads((FIXTURE / "config.json").read_text())["transformer"])


@pytest.fixture(scope="module")
def model(config, torch_weights) -> DiT:
    dit = DiT(config)
    dit.load_weights(
        [(k, mx.array(v)) for k, v in DiT.sanitize(torch_weights).items()], strict=True
    )
    return dit


# ---------------------------------------------------------------- numpy transcription (float64)
def np_rms(x, g, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g


def np_rope(x, theta, dtype=np.float64):
    """The reference's 2x2-matrix form on (B, H, T, D); float32 reproduces torch's rounding."""
    D, T = x.shape[-1], x.shape[-2]
    freqs = 1.0 / (dtype(theta) ** (np.arange(0, D, 2, dtype=dtype)[: D // 2] / dtype(D)))
    ang = np.outer(np.arange(T, dtype=dtype), freqs.astype(dtype)).astype(dtype)
    cos, sin = np.cos(ang), np.sin(ang)
    rot = np.stack([cos, -sin, sin, cos], -1).reshape(T, D // 2, 2, 2)
    pairs = x.reshape(*x.shape[:-1], D // 2, 1, 2)
    return (pairs * rot).sum(-1).reshape(x.shape)


def np_timestep_embedding(t, dim, max_period=10000):
    half = dim // 2
    freqs = np.exp(-math.log(max_period) * np.arange(half) / half)
    args = t[:, None] * freqs[None]
    return np.concatenate([np.cos(args), np.sin(args)], -1)


def np_silu(x):
    return x / (1 + np.exp(-x))


def np_swiglu(w, p, x):
    return (np_silu(x @ w[p + "w1.weight"].T) * (x @ w[p + "w3.weight"].T)) @ w[p + "w2.weight"].T


def np_attention(w, p, cfg, x, kv, key_mask, rope_theta):
    H = cfg.n_heads

    def heads(y):  # (B, T, C) -> (B, T, C/H, H) -> (B, H, T, C/H), the reference's order
        B, T, C = y.shape
        return y.reshape(B, T, C // H, H).transpose(0, 3, 1, 2)

    q, k, v = (heads(y @ w[p + m + ".weight"].T) for m, y in (("wq", x), ("wk", kv), ("wv", kv)))
    q, k = (
        np_rms(q, w[p + "q_norm.weight"], cfg.norm_eps),
        np_rms(k, w[p + "k_norm.weight"], cfg.norm_eps),
    )
    if rope_theta is not None:
        q, k = np_rope(q, rope_theta), np_rope(k, rope_theta)
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
    if key_mask is not None:
        s = np.where(key_mask[:, None, None, :], s, -np.inf)
    s = np.exp(s - s.max(-1, keepdims=True))
    o = (s / s.sum(-1, keepdims=True)) @ v
    B, _, T, _ = o.shape
    return o.transpose(0, 2, 1, 3).reshape(B, T, -1) @ w[p + "wo.weight"].T


def np_conv_block(w, p, x):
    """GroupNorm(1) over (C, T) per item, SiLU, Conv1d k=3 zero-padded 1 each side. x (B, T, C)."""
    mu = x.mean((1, 2), keepdims=True)
    var = ((x - mu) ** 2).mean((1, 2), keepdims=True)
    x = (x - mu) / np.sqrt(var + 1e-5) * w[p + "groupnorm.weight"] + w[p + "groupnorm.bias"]
    x = np.pad(np_silu(x), ((0, 0), (1, 1), (0, 0)))
    kernel = w[p + "project.weight"]  # torch (out, in, k)
    T = x.shape[1] - 2
    return sum(x[:, j : j + T] @ kernel[:, :, j].T for j in range(3)) + w[p + "project.bias"]


def np_dit(w, cfg, x, time, memory, pad_mask, mem_mask):
    w = {k: v.astype(np.float64) for k, v in w.items()}
    B, D = x.shape[0], cfg.dim
    h = x + np_conv_block(
        w, "x_embedder.block.block2.", np_conv_block(w, "x_embedder.block.block1.", x)
    )
    t = np_swiglu(
        w, "t_embedder.projection.", np_timestep_embedding(time, cfg.frequency_embedding_dim)
    )
    t0 = np_silu(t) @ w["t_block.weight"].T + w["t_block.bias"]
    y = np_swiglu(w, "y_embedder.projection.", memory)
    theta = max(10000, 2 * cfg.max_positions)
    for n in range(cfg.n_layers):
        p = f"layers.{n}."
        mod = w[p + "scale_shift_table"][None] + t0.reshape(B, 6, D)
        sh1, sc1, g1, sh2, sc2, g2 = (mod[:, i : i + 1] for i in range(6))
        a = np_rms(h, w[p + "attention_norm.weight"], cfg.norm_eps) * (1 + sc1) + sh1
        h = h + np_attention(w, p + "attention.", cfg, a, a, pad_mask, theta) * g1
        h = h + np_attention(w, p + "cross_attention.", cfg, h, y, mem_mask, None)
        f = np_rms(h, w[p + "ffn_norm.weight"], cfg.norm_eps) * (1 + sc2) + sh2
        h = h + np_swiglu(w, p + "feed_forward.", f) * g2
    mod = w["final_layer_scale_shift_table"][None] + t[:, None]
    h = np_rms(h, w["norm.weight"], cfg.norm_eps) * (1 + mod[:, 1:2]) + mod[:, 0:1]
    return h @ w["output.weight"].T


# ---------------------------------------------------------------- tests
def test_config_sizes_follow_reference(config):
    assert config.ffn_hidden_dim == 176  # int(2 * 4 * 64 / 3) = 170, rounded up to 16
    assert config.rope_theta == 20000  # max(10000, 2 * max_positions)
    big = DiTConfig(dim=2048, n_heads=16)
    assert big.ffn_hidden_dim == 5504 and big.head_dim == 128
    with pytest.raises(ValueError, match="not divisible"):
        DiTConfig(dim=60, n_heads=8)
    with pytest.raises(ValueError, match="non_linearity"):
        DiTConfig(non_linearity="tanhish")


def test_sanitize_round_trip_consumes_every_key(model, torch_weights):
    mapped = DiT.sanitize({"transformer." + k: v for k, v in torch_weights.items()})
    params = dict(tree_flatten(model.parameters()))
    assert set(mapped) == set(params)
    for k, v in mapped.items():
        assert tuple(params[k].shape) == v.shape, k
    # Conv1d (out, in, k) -> (out, k, in), decided by layer type, not shape.
    conv = torch_weights["x_embedder.block.block1.project.weight"]
    np.testing.assert_array_equal(
        np.array(model.x_embedder.block.block1.project.weight), conv.transpose(0, 2, 1)
    )


def test_rope_matches_reference_matrix_form():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 300, 32)).astype(np.float32)
    got = np.array(RotaryEmbedding(32, 20000, 10000)(mx.array(x)))
    # Angles are rounded in float32 as torch does; a kernel-derived (base=theta) frequency table
    # would be ~1e-4 off at these positions.
    assert np.abs(got - np_rope(x, 20000, np.float32)).max() < 2e-6
    with pytest.raises(ValueError, match="max_positions"):
        RotaryEmbedding(32, 20000, 100)(mx.array(x))


def test_timestep_embedder_matches_reference(model, config, torch_weights):
    t = np.array([0.0, 0.25, 0.5, 1.0])
    emb = np.array(model.t_embedder.embedding(mx.array(t.astype(np.float32))))
    want = np_timestep_embedding(t, config.frequency_embedding_dim)
    assert np.abs(emb - want).max() < 1e-6
    w = {k: v.astype(np.float64) for k, v in torch_weights.items()}
    got = np.array(model.t_embedder(mx.array(t.astype(np.float32))))
    assert np.abs(got - np_swiglu(w, "t_embedder.projection.", want)).max() < 1e-4


def _inputs(config, B=2, T=37, L=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, config.dim)).astype(np.float32)
    memory = rng.standard_normal((B, L, config.context_dim)).astype(np.float32)
    time = np.array([0.0, 0.7][:B], np.float32)
    return x, time, memory


def test_forward_shape_and_numpy_transcription_with_masks(model, config, torch_weights):
    x, time, memory = _inputs(config)
    pad = np.ones((2, 37), bool)
    pad[1, 30:] = False
    mem_mask = np.ones((2, 5), bool)
    mem_mask[0, 3:] = False
    out = model(
        mx.array(x),
        mx.array(time),
        memory=mx.array(memory),
        padding_mask=mx.array(pad),
        memory_padding_mask=mx.array(mem_mask),
    )
    assert out.shape == (2, 37, config.out_channels)
    want = np_dit(torch_weights, config, x, time.astype(np.float64), memory, pad, mem_mask)
    assert np.abs(np.array(out) - want).max() < 1e-4


def test_padding_masks_change_what_they_should(model, config):
    x, time, memory = _inputs(config)
    X, M, tm = mx.array(x), mx.array(memory), mx.array(time)
    base = np.array(model(X, tm, memory=M))
    all_valid = np.array(model(X, tm, memory=M, padding_mask=mx.ones((2, 37), dtype=mx.bool_)))
    np.testing.assert_allclose(all_valid, base, atol=1e-6)

    pad = np.ones((2, 37), bool)
    pad[1, 30:] = False
    masked = np.array(model(X, tm, memory=M, padding_mask=mx.array(pad)))
    np.testing.assert_allclose(masked[0], base[0], atol=1e-6)  # only item 1 is padded
    assert np.abs(masked[1] - base[1]).max() > 1e-3

    # Masked memory tokens are invisible: changing them changes nothing.
    mem_mask = np.ones((2, 5), bool)
    mem_mask[:, 3:] = False
    other = memory.copy()
    other[:, 3:] = 100.0
    a = model(X, tm, memory=M, memory_padding_mask=mx.array(mem_mask))
    b = model(X, tm, memory=mx.array(other), memory_padding_mask=mx.array(mem_mask))
    np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-6)


def test_scalar_time_broadcasts_and_bad_shapes_are_named(model, config):
    x, _, memory = _inputs(config)
    a = model(mx.array(x), 0.7, memory=mx.array(memory))
    b = model(mx.array(x), mx.array([0.7, 0.7]), memory=mx.array(memory))
    np.testing.assert_array_equal(np.array(a), np.array(b))
    with pytest.raises(ValueError, match="expected dim=64"):
        model(mx.zeros((1, 4, 32)), 0.0, memory=mx.array(memory[:1]))
    with pytest.raises(ValueError, match="DiT memory must be"):
        model(mx.array(x), 0.0, memory=mx.array(memory[:1]))


# ---------------------------------------------------------------- CPU compute forms
# The CPU forms (polynomial exp in SwiGLU/SiLU and the attention softmax, tabled RoPE) must give
# the native kernels' function to float32 rounding: every comparison below is ≤ 1e-5.


def test_cpu_exp_is_within_two_ulp_and_flushes_to_zero():
    x = np.linspace(-87.0, 88.0, 400_001, dtype=np.float32)
    got = np.array(mx.compile(dit_module._exp)(mx.array(x))).astype(np.float64)
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(got - want) / want) < 2.5e-7
    edges = np.array(dit_module._exp(mx.array([-np.inf, -1e4, -88.0, 88.0, 1e4], mx.float32)))
    np.testing.assert_array_equal(edges[:3], 0.0)  # masked scores get exactly no weight
    assert np.all(np.isfinite(edges[3:])) and edges[3] > 1e38


def test_cpu_elementwise_forms_match_mlx():
    rng = np.random.default_rng(1)
    a = mx.array(rng.standard_normal((3, 7, 50)).astype(np.float32) * 6)
    b = mx.array(rng.standard_normal((3, 7, 50)).astype(np.float32))
    np.testing.assert_allclose(dit_module._silu_cpu(a), nn.silu(a), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dit_module._swiglu_cpu(a, b), nn.silu(a) * b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        dit_module._softmax_cpu(a), mx.softmax(a, axis=-1, precise=True), rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("masked", [False, True])
def test_cpu_attention_matches_fused_kernel(monkeypatch, masked):
    rng = np.random.default_rng(2)
    q, k, v = (mx.array(rng.standard_normal((2, 3, n, 16)).astype(np.float32)) for n in (9, 11, 11))
    mask = None
    if masked:
        keep = np.ones((2, 11), bool)
        keep[1, 6:] = False
        mask = mx.array(keep)[:, None, None, :]
    want = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask=mask)
    monkeypatch.setattr(dit_module, "COMPUTE_PATH", "cpu")
    got = dit_module.attention(q, k, v, 0.25, mask)
    assert np.abs(np.array(got) - np.array(want)).max() < 1e-6


def test_tabled_rope_matches_the_kernel_to_the_last_position():
    rope = RotaryEmbedding(32, 20000, 10000)
    x = mx.array(np.random.default_rng(3).standard_normal((1, 2, 10000, 32)).astype(np.float32))
    assert np.abs(np.array(rope.tabled(10000)(x)) - np.array(rope(x))).max() < 1e-6
    with pytest.raises(ValueError, match="max_positions"):
        RotaryEmbedding(32, 20000, 100).tabled(101)


def _random_dit(seed: int) -> DiT:
    # Odd sizes on purpose: head_dim 12, 5 heads, an FFN width that is not a multiple of 64.
    cfg = DiTConfig(
        dim=60, n_heads=5, n_layers=3, context_dim=60, out_channels=24,
        frequency_embedding_dim=20, multiple_of=8,
    )  # fmt: skip
    mx.random.seed(seed)
    dit = DiT(cfg)
    mx.eval(dit.parameters())
    return dit


@pytest.mark.parametrize("which", ["fixture", "random"])
def test_cpu_forms_match_native_forward(monkeypatch, model, config, which):
    dit = model if which == "fixture" else _random_dit(0)
    cfg = config if which == "fixture" else dit.config
    x, time, memory = _inputs(cfg, T=41, L=6, seed=4)
    pad = np.ones((2, 41), bool)
    pad[0, 33:] = False
    mem_mask = np.ones((2, 6), bool)
    mem_mask[1, 4:] = False
    args = (mx.array(x), mx.array(time))
    kw = dict(
        memory=mx.array(memory),
        padding_mask=mx.array(pad),
        memory_padding_mask=mx.array(mem_mask),
    )
    monkeypatch.setattr(dit_module, "COMPUTE_PATH", "native")
    want = np.array(dit(*args, **kw))
    monkeypatch.setattr(dit_module, "COMPUTE_PATH", "cpu")
    got = np.array(dit(*args, **kw))
    compiled = np.array(mx.compile(lambda a, b: dit(a, b, **kw))(*args))
    assert np.abs(want).max() > 0.1  # a live output, not a vanishing one
    assert np.abs(got - want).max() < 1e-5
    assert np.abs(compiled - want).max() < 1e-5


def test_default_dtype_is_float32_on_cpu_and_bfloat16_on_gpus():
    assert dit_module.default_dtype(mx.cpu) == mx.float32
    assert dit_module.default_dtype(mx.gpu) == mx.bfloat16
