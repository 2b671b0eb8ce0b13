"""T5 text encoder: golden fixture, masking, buckets, weight names, tokenizer and cache."""

import json
import math

import mlx.core as mx
import numpy as np
import pytest
from conftest import FIXTURES
from mlx.utils import tree_flatten
from safetensors.numpy import load_file

from streamsep.sam_audio.t5 import (
    T5Config,
    T5Encoder,
    T5TextEncoder,
    T5Tokenizer,
    load_t5_encoder,
    relative_position_buckets,
)

T5_DIR = FIXTURES / "sam_tiny_a" / "t5"


@pytest.fixture(scope="module")
def fixture_model() -> T5Encoder:
    return load_t5_encoder(T5_DIR)


@pytest.fixture(scope="module")
def hf_weights() -> dict[str, np.ndarray]:
    return load_file(str(T5_DIR / "model.safetensors"))


def numpy_t5(w: dict[str, np.ndarray], cfg: T5Config, ids: np.ndarray, mask: np.ndarray):
    """Straight transcription of HF's T5 encoder forward, in float64 numpy."""
    w = {k: v.astype(np.float64) for k, v in w.items()}

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + cfg.layer_norm_epsilon) * g

    def act(x):
        if cfg.activation == "relu":
            return np.maximum(x, 0)
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    B, L = ids.shape
    H = cfg.num_heads
    h = w["shared.weight"][ids]
    buckets = relative_position_buckets(
        L, L, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance
    )
    table = w["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    bias = table[buckets].transpose(2, 0, 1)[None] + np.where(
        mask[:, None, None, :], 0.0, np.finfo(np.float32).min
    )
    for n in range(cfg.num_layers):
        p = f"encoder.block.{n}.layer."
        x = rms(h, w[p + "0.layer_norm.weight"])

        def heads(m, x=x, p=p):
            return (
                (x @ w[p + f"0.SelfAttention.{m}.weight"].T)
                .reshape(B, L, H, -1)
                .transpose(0, 2, 1, 3)
            )

        s = heads("q") @ heads("k").transpose(0, 1, 3, 2) + bias
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)) @ heads("v")
        h = h + a.transpose(0, 2, 1, 3).reshape(B, L, -1) @ w[p + "0.SelfAttention.o.weight"].T
        x = rms(h, w[p + "1.layer_norm.weight"])
        d = p + "1.DenseReluDense."
        if cfg.is_gated:
            f = act(x @ w[d + "wi_0.weight"].T) * (x @ w[d + "wi_1.weight"].T)
        else:
            f = act(x @ w[d + "wi.weight"].T)
        h = h + f @ w[d + "wo.weight"].T
    return rms(h, w["encoder.final_layer_norm.weight"])


def test_fixture_hidden_state_matches_reference(fixture_model):
    inputs = np.load(FIXTURES / "sam_tiny_a" / "inputs.npz")
    expected = np.load(FIXTURES / "sam_tiny_a" / "expected.npz")
    hidden = fixture_model(mx.array(inputs["token_ids"]), mx.array(inputs["token_mask"]))
    assert hidden.shape == expected["t5_hidden"].shape
    assert np.abs(np.array(hidden) - expected["t5_hidden"]).max() <= 1e-4
    # The reference hands the tokenizer's 0/1 mask on as bool.
    np.testing.assert_array_equal(expected["t5_mask"], inputs["token_mask"].astype(bool))


def test_config_from_hf_dict_and_preset():
    cfg = T5Config.from_dict(json.loads((T5_DIR / "config.json").read_text()))
    assert (cfg.d_model, cfg.d_kv, cfg.d_ff, cfg.num_heads, cfg.vocab_size) == (64, 16, 128, 4, 100)
    assert cfg.is_gated and cfg.activation == "gelu_new"
    base = T5Config.t5_base()
    assert (base.d_model, base.num_layers, base.num_heads, base.d_ff) == (768, 12, 12, 3072)
    assert not base.is_gated and base.activation == "relu"
    with pytest.raises(ValueError, match="feed_forward_proj"):
        T5Config(feed_forward_proj="gated-banana")


def test_relative_position_buckets_follow_hf_formula():
    b = relative_position_buckets(1, 300, 32, 128)[0]  # row 0: relative position = key index
    assert [int(b[r]) for r in (0, 1, 7, 8, 12, 16, 127, 299)] == [0, 17, 23, 24, 25, 26, 31, 31]
    back = relative_position_buckets(300, 1, 32, 128)[:, 0]  # column 0: relative = -query index
    assert [int(back[r]) for r in (1, 7, 8, 16, 127, 299)] == [1, 7, 8, 10, 15, 15]


@pytest.mark.parametrize("proj", ["gated-gelu", "relu"])
def test_padded_batch_matches_numpy_transcription(proj):
    cfg = T5Config(
        d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, vocab_size=50,
        relative_attention_num_buckets=8, relative_attention_max_distance=16,
        feed_forward_proj=proj,
    )  # fmt: skip
    rng = np.random.default_rng(1)
    hf = dict(_hf_names(cfg, rng))
    model = T5Encoder(cfg)
    model.load_weights([(k, mx.array(v)) for k, v in T5Encoder.sanitize(hf).items()], strict=True)
    ids = rng.integers(3, 50, size=(2, 12))
    mask = np.ones((2, 12), bool)
    mask[1, 7:] = False
    ids[1, 7:] = 0
    got = np.array(model(mx.array(ids), mx.array(mask)))
    want = numpy_t5(hf, cfg, ids, mask)
    assert np.abs(got - want).max() < 1e-4  # padded rows included, as HF computes them


def _hf_names(cfg: T5Config, rng) -> list[tuple[str, np.ndarray]]:
    inner, ffn = cfg.num_heads * cfg.d_kv, ("wi_0", "wi_1") if cfg.is_gated else ("wi",)
    out = [
        ("shared.weight", rng.standard_normal((cfg.vocab_size, cfg.d_model))),
        ("encoder.final_layer_norm.weight", 1 + 0.1 * rng.standard_normal(cfg.d_model)),
        (
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            rng.standard_normal((cfg.relative_attention_num_buckets, cfg.num_heads)),
        ),
    ]
    for n in range(cfg.num_layers):
        p = f"encoder.block.{n}.layer."
        for m in "qkv":
            out.append(
                (p + f"0.SelfAttention.{m}.weight", rng.standard_normal((inner, cfg.d_model)) * 0.2)
            )
        out.append(
            (p + "0.SelfAttention.o.weight", rng.standard_normal((cfg.d_model, inner)) * 0.2)
        )
        out.append((p + "0.layer_norm.weight", 1 + 0.1 * rng.standard_normal(cfg.d_model)))
        out.append((p + "1.layer_norm.weight", 1 + 0.1 * rng.standard_normal(cfg.d_model)))
        for m in ffn:
            out.append(
                (
                    p + f"1.DenseReluDense.{m}.weight",
                    rng.standard_normal((cfg.d_ff, cfg.d_model)) * 0.2,
                )
            )
        out.append(
            (p + "1.DenseReluDense.wo.weight", rng.standard_normal((cfg.d_model, cfg.d_ff)) * 0.2)
        )
    return [(k, v.astype(np.float32)) for k, v in out]


def test_sanitize_consumes_every_encoder_key_and_drops_the_decoder(hf_weights, fixture_model):
    extra = {
        "encoder.embed_tokens.weight": hf_weights["shared.weight"],
        "decoder.block.0.layer.0.SelfAttention.q.weight": np.zeros((64, 64), np.float32),
        "lm_head.weight": np.zeros((100, 64), np.float32),
    }
    mapped = T5Encoder.sanitize({**hf_weights, **extra})
    params = {k for k, _ in tree_flatten(fixture_model.parameters())}
    assert set(mapped) == params
    with pytest.raises(ValueError, match="unexpected T5 weight"):
        T5Encoder.sanitize({"encoder.block.0.layer.2.Foo.weight": np.zeros(1)})


def test_load_reports_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing config.json for the T5 text encoder"):
        load_t5_encoder(tmp_path)


def _tiny_tokenizer_file(tmp_path, with_template: bool) -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "dog": 4, "barking": 5, "speech": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if with_template:  # what t5-base's tokenizer.json carries
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", special_tokens=[("</s>", 1)]
        )
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return str(path)


@pytest.mark.parametrize("with_template", [False, True])
def test_tokenizer_appends_eos_pads_and_truncates(tmp_path, with_template):
    tok = T5Tokenizer(_tiny_tokenizer_file(tmp_path, with_template))
    ids, mask = tok(["a dog barking", "speech", "cat"])
    assert ids.dtype == np.int32 and mask.dtype == np.bool_
    np.testing.assert_array_equal(ids, [[3, 4, 5, 1], [6, 1, 0, 0], [2, 1, 0, 0]])
    np.testing.assert_array_equal(mask, ids != 0)
    ids, mask = tok(["a dog barking"], max_length=3)
    np.testing.assert_array_equal(ids, [[3, 4, 1]])  # EOS counts towards max_length, as in HF
    ids, mask = tok(["speech"], max_length=5, padding="max_length")
    np.testing.assert_array_equal(ids, [[6, 1, 0, 0, 0]])
    with pytest.raises(ValueError, match="padding must be"):
        tok(["speech"], padding="right")


def test_text_encoder_encodes_caches_and_explains_missing_tokenizer(tmp_path, fixture_model):
    tok = T5Tokenizer(_tiny_tokenizer_file(tmp_path, False))
    enc = T5TextEncoder(fixture_model, tok)
    hidden, mask = enc.encode(["a dog barking", "speech"])
    ids, want_mask = tok(["a dog barking", "speech"])
    np.testing.assert_array_equal(np.array(mask), want_mask)
    want = fixture_model(mx.array(ids), mx.array(want_mask))
    np.testing.assert_allclose(np.array(hidden), np.array(want), atol=1e-6)
    again, _ = enc.encode(["a dog barking", "speech"])
    assert again is hidden

    no_tok = T5TextEncoder(fixture_model, None, tokenizer_hint="/models/t5/tokenizer.json")
    with pytest.raises(
        FileNotFoundError, match="no tokenizer.json for the text encoder at /models"
    ):
        no_tok.encode(["speech"])
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        T5TextEncoder.from_dir(T5_DIR).encode(["speech"])
