"""T5 text encoder (Hugging Face ``T5EncoderModel`` layout) and its tokenizer wrapper.

SAM-Audio conditions the DiT on the last hidden state of ``t5-base``. The reference tokenizes with
``padding="longest", truncation=True, max_length=512`` and passes the attention mask to the model,
so padded keys are excluded from attention while padded positions still get an output row.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from streamsep.configs import FromDict

_ACTIVATIONS = {
    "relu": nn.relu,
    "gelu_new": nn.gelu_approx,  # HF's NewGELUActivation: tanh approximation
    "gelu_pytorch_tanh": nn.gelu_approx,
    "gelu": nn.gelu,
    "silu": nn.silu,
}


@dataclass
class T5Config(FromDict):
    d_model: int = 768
    d_kv: int = 64
    d_ff: int = 3072
    num_layers: int = 12
    num_heads: int = 12
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"
    vocab_size: int = 32128

    def __post_init__(self) -> None:
        act = self.activation
        if act not in _ACTIVATIONS:
            raise ValueError(
                f"unsupported T5 feed_forward_proj {self.feed_forward_proj!r}; "
                f"use one of {sorted(_ACTIVATIONS)} (optionally prefixed 'gated-')"
            )

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self) -> str:
        act = self.feed_forward_proj.removeprefix("gated-")
        # HF maps "gated-gelu" to gelu_new for backwards compatibility with T5 v1.1.
        return "gelu_new" if self.feed_forward_proj == "gated-gelu" else act

    @classmethod
    def t5_base(cls) -> T5Config:
        """The numbers of Hugging Face ``t5-base`` (ReLU feed-forward, not gated)."""
        return cls()


@lru_cache(maxsize=16)
def relative_position_buckets(
    q_len: int, k_len: int, num_buckets: int, max_distance: int
) -> np.ndarray:
    """Bidirectional T5 buckets for (query, key) pairs, computed in float32 like HF."""
    rel = np.arange(k_len)[None, :] - np.arange(q_len)[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).astype(np.int64) * half
    rel = np.abs(rel)
    max_exact = half // 2
    is_small = rel < max_exact
    ratio = np.maximum(rel, 1).astype(np.float32) / np.float32(max_exact)
    large = np.log(ratio) / np.float32(math.log(max_distance / max_exact))
    large = max_exact + (large * np.float32(half - max_exact)).astype(np.int64)
    large = np.minimum(large, half - 1)
    return buckets + np.where(is_small, rel, large)


class T5Attention(nn.Module):
    def __init__(self, cfg: T5Config):
        super().__init__()
        inner = cfg.num_heads * cfg.d_kv
        self.n_heads = cfg.num_heads
        self.q = nn.Linear(cfg.d_model, inner, bias=False)
        self.k = nn.Linear(cfg.d_model, inner, bias=False)
        self.v = nn.Linear(cfg.d_model, inner, bias=False)
        self.o = nn.Linear(inner, cfg.d_model, bias=False)

    def __call__(self, x: mx.array, bias: mx.array) -> mx.array:
        B, L, _ = x.shape

        def heads(t: mx.array) -> mx.array:
            return t.reshape(B, L, self.n_heads, -1).transpose(0, 2, 1, 3)

        # T5 folds the 1/sqrt(d) scaling into its weights, hence scale 1.
        out = mx.fast.scaled_dot_product_attention(
            heads(self.q(x)), heads(self.k(x)), heads(self.v(x)), scale=1.0, mask=bias
        )
        return self.o(out.transpose(0, 2, 1, 3).reshape(B, L, -1))


class T5FeedForward(nn.Module):
    def __init__(self, cfg: T5Config):
        super().__init__()
        self.gated = cfg.is_gated
        self.act = _ACTIVATIONS[cfg.activation]
        if self.gated:
            self.wi_0 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
            self.wi_1 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        else:
            self.wi = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wo = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        if self.gated:
            return self.wo(self.act(self.wi_0(x)) * self.wi_1(x))
        return self.wo(self.act(self.wi(x)))


class T5Block(nn.Module):
    def __init__(self, cfg: T5Config):
        super().__init__()
        # T5LayerNorm is RMS norm: no mean subtraction, no bias.
        self.attention_norm = nn.RMSNorm(cfg.d_model, eps=cfg.layer_norm_epsilon)
        self.attention = T5Attention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.layer_norm_epsilon)
        self.ffn = T5FeedForward(cfg)

    def __call__(self, x: mx.array, bias: mx.array) -> mx.array:
        x = x + self.attention(self.attention_norm(x), bias)
        return x + self.ffn(self.ffn_norm(x))


class T5Encoder(nn.Module):
    def __init__(self, cfg: T5Config):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        # Only HF's first block owns the bias table; every layer adds the same bias.
        self.relative_attention_bias = nn.Embedding(
            cfg.relative_attention_num_buckets, cfg.num_heads
        )
        self.layers = [T5Block(cfg) for _ in range(cfg.num_layers)]
        self.final_norm = nn.RMSNorm(cfg.d_model, eps=cfg.layer_norm_epsilon)

    def position_bias(self, length: int) -> mx.array:
        """(1, H, L, L) relative position bias."""
        cfg = self.config
        buckets = relative_position_buckets(
            length,
            length,
            cfg.relative_attention_num_buckets,
            cfg.relative_attention_max_distance,
        )
        values = self.relative_attention_bias(mx.array(buckets))  # (L, L, H)
        return values.transpose(2, 0, 1)[None]

    def __call__(self, input_ids: mx.array, attention_mask: mx.array | None = None) -> mx.array:
        """Last hidden state (B, L, d_model) of ids (B, L); mask (B, L) is 1/True on real tokens."""
        input_ids = mx.array(input_ids)
        if input_ids.ndim != 2:
            raise ValueError(f"T5 input_ids must be (batch, length), got shape {input_ids.shape}")
        h = self.embed_tokens(input_ids)
        bias = self.position_bias(input_ids.shape[1]).astype(h.dtype)
        if attention_mask is not None:
            # HF adds finfo.min (not -inf) on padded keys, so a fully padded row stays finite.
            keep = mx.array(attention_mask).astype(mx.bool_)[:, None, None, :]
            bias = bias + mx.where(keep, 0.0, mx.finfo(h.dtype).min).astype(h.dtype)
        for layer in self.layers:
            h = layer(h, bias)
        return self.final_norm(h)

    @staticmethod
    def sanitize(weights: dict[str, Any]) -> dict[str, Any]:
        """Map HF T5 names to this module's; decoder and LM-head weights are dropped."""
        out: dict[str, Any] = {}
        for key, value in weights.items():
            if key.startswith(("decoder.", "lm_head.")):
                continue
            if key in ("shared.weight", "encoder.embed_tokens.weight"):
                out["embed_tokens.weight"] = value  # tied copies of one table
                continue
            if key == "encoder.final_layer_norm.weight":
                out["final_norm.weight"] = value
                continue
            if not key.startswith("encoder.block."):
                out[key] = value  # already in our naming (a converted checkpoint)
                continue
            parts = key.split(".")
            # encoder.block.N.layer.{0,1}.<module>....
            n, sub, rest = parts[2], parts[4], parts[5:]
            if rest[0] == "layer_norm":
                name = "attention_norm" if sub == "0" else "ffn_norm"
                out[f"layers.{n}.{name}.{rest[-1]}"] = value
            elif rest[0] == "SelfAttention" and rest[1] == "relative_attention_bias":
                out["relative_attention_bias.weight"] = value
            elif rest[0] == "SelfAttention":
                out[f"layers.{n}.attention.{'.'.join(rest[1:])}"] = value
            elif rest[0] == "DenseReluDense":
                out[f"layers.{n}.ffn.{'.'.join(rest[1:])}"] = value
            else:
                raise ValueError(f"unexpected T5 weight {key!r}; is this a T5 encoder checkpoint?")
        return out


def load_t5_encoder(path: str | Path, dtype: mx.Dtype | None = None) -> T5Encoder:
    """A T5Encoder from an HF folder holding config.json and model.safetensors."""
    path = Path(path)
    config_file, weights_file = path / "config.json", path / "model.safetensors"
    for f in (config_file, weights_file):
        if not f.is_file():
            raise FileNotFoundError(
                f"missing {f.name} for the T5 text encoder at {path}; "
                "download the t5-base repo files (config.json, model.safetensors) there"
            )
    cfg = T5Config.from_dict(json.loads(config_file.read_text()))
    model = T5Encoder(cfg)
    weights = T5Encoder.sanitize(mx.load(str(weights_file)))
    if dtype is not None:
        weights = {k: v.astype(dtype) for k, v in weights.items()}
    model.load_weights(list(weights.items()), strict=True)
    mx.eval(model.parameters())
    return model


class T5Tokenizer:
    """``tokenizers``-backed T5 tokenization matching HF's T5 tokenizer call in the reference.

    Texts are encoded without the file's post-processor and EOS is appended here, so the result
    is the same whether or not tokenizer.json carries T5's ``$A </s>`` template.
    """

    def __init__(self, path: str | Path, eos_token: str = "</s>", pad_token: str = "<pad>"):
        from tokenizers import Tokenizer

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"no tokenizer.json for the text encoder at {self.path}; download t5-base's "
                "tokenizer.json there "
                "(huggingface_hub.hf_hub_download('t5-base', 'tokenizer.json'))"
            )
        self._tok = Tokenizer.from_file(str(self.path))
        self._tok.no_padding()
        self._tok.no_truncation()
        eos, pad = self._tok.token_to_id(eos_token), self._tok.token_to_id(pad_token)
        if eos is None or pad is None:
            raise ValueError(
                f"tokenizer {self.path} lacks {eos_token!r} or {pad_token!r}; "
                "use the T5 tokenizer.json that matches the text encoder"
            )
        self.eos_id, self.pad_id = eos, pad

    def __call__(
        self, texts: list[str], max_length: int | None = 512, padding: str = "longest"
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids int32 (B, L), mask bool (B, L)); each row is tokens + EOS, right-padded."""
        if isinstance(texts, str):
            texts = [texts]
        if padding not in ("longest", "max_length"):
            raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
        if padding == "max_length" and max_length is None:
            raise ValueError("padding='max_length' needs a max_length")
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be at least 1 (room for EOS), got {max_length}")
        rows = []
        for enc in self._tok.encode_batch(list(texts), add_special_tokens=False):
            ids = enc.ids if max_length is None else enc.ids[: max_length - 1]
            rows.append([*ids, self.eos_id])
        length = max_length if padding == "max_length" else max(len(r) for r in rows)
        ids = np.full((len(rows), length), self.pad_id, dtype=np.int32)
        mask = np.zeros((len(rows), length), dtype=np.bool_)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = True
        return ids, mask


class T5TextEncoder:
    """Text prompts → (hidden (B, L, D), mask bool (B, L)), cached per prompt list.

    The cache key is the whole list, so a hit returns exactly what the reference computes
    (padded rows included); a live stream re-uses one prompt every window.
    """

    def __init__(
        self,
        model: T5Encoder,
        tokenizer: T5Tokenizer | None = None,
        *,
        max_length: int | None = 512,
        pad_mode: str = "longest",
        tokenizer_hint: str = "",
        cache_size: int = 32,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_mode = pad_mode
        self.tokenizer_hint = tokenizer_hint
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, ...], tuple[mx.array, mx.array]] = OrderedDict()

    @classmethod
    def from_dir(
        cls,
        path: str | Path,
        *,
        max_length: int | None = 512,
        pad_mode: str = "longest",
        dtype: mx.Dtype | None = None,
    ) -> T5TextEncoder:
        """Model from path/config.json + model.safetensors; tokenizer from path/tokenizer.json
        when present (a missing one only fails at the first ``encode``)."""
        path = Path(path)
        tok_file = path / "tokenizer.json"
        tokenizer = T5Tokenizer(tok_file) if tok_file.is_file() else None
        return cls(
            load_t5_encoder(path, dtype=dtype),
            tokenizer,
            max_length=max_length,
            pad_mode=pad_mode,
            tokenizer_hint=str(tok_file),
        )

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self.tokenizer is None:
            where = self.tokenizer_hint or "the text encoder's folder"
            raise FileNotFoundError(
                f"no tokenizer.json for the text encoder at {where}; download t5-base's "
                "tokenizer.json (huggingface_hub.hf_hub_download('t5-base', 'tokenizer.json')) "
                "into that folder, or pass a T5Tokenizer"
            )
        return self.tokenizer(texts, max_length=self.max_length, padding=self.pad_mode)

    def encode(self, texts: list[str]) -> tuple[mx.array, mx.array]:
        if isinstance(texts, str):
            texts = [texts]
        key = tuple(texts)
        if not key:
            raise ValueError("encode needs at least one text prompt")
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        ids, mask = self.tokenize(list(texts))
        hidden = self.model(mx.array(ids), mx.array(mask))
        result = (hidden, mx.array(mask))
        mx.eval(result)
        self._cache[key] = result
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return result

    def clear_cache(self) -> None:
        self._cache.clear()
