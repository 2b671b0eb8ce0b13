"""SAM-Audio configuration: the reference's config.json schema as dataclasses, plus presets.

``SAMAudioConfig.from_dict`` reads the official ``config.json`` (keys ``audio_codec``,
``text_encoder``, ``vision_encoder``, ``transformer``, ``in_channels``, ``num_anchors``,
``anchor_embedding_dim``, plus ranker/span-predictor keys that the text-prompted path ignores).
Unknown keys inside a component are dropped, so newer config files still load.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from streamsep.configs import FromDict
from streamsep.sam_audio.codec import DACVAEConfig
from streamsep.sam_audio.dit import DiTConfig


@dataclass
class TextEncoderConfig(FromDict):
    """How the reference runs T5: which model, its width, and tokenizer truncation/padding."""

    name: str = "t5-base"
    dim: int = 768
    max_length: int | None = 512
    pad_mode: str = "longest"


def _build(cls: type[FromDict], values: dict[str, Any] | None) -> Any:
    return cls.from_dict(dict(values or {}))


@dataclass
class SAMAudioConfig:
    audio_codec: DACVAEConfig = field(default_factory=DACVAEConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    #: Channels of the (masked) video features; the text path feeds zeros of this width.
    vision_dim: int = 1024
    transformer: DiTConfig = field(default_factory=DiTConfig)
    #: 6 × codebook_dim: [noisy (2C), zeros (2C), mixture features stacked twice (2C)].
    in_channels: int = 768
    num_anchors: int = 3
    anchor_embedding_dim: int = 128

    @property
    def codebook_dim(self) -> int:
        return self.audio_codec.codebook_dim

    @property
    def hop_length(self) -> int:
        rates = self.audio_codec.encoder_rates
        hop = 1
        for r in rates:
            hop *= int(r)
        return hop

    @property
    def sample_rate(self) -> int:
        return int(self.audio_codec.sample_rate)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> SAMAudioConfig:
        if not isinstance(config, dict):
            raise ValueError(f"SAM-Audio config must be a JSON object; got {type(config).__name__}")
        codec = _build(DACVAEConfig, config.get("audio_codec"))
        text = _build(TextEncoderConfig, config.get("text_encoder"))
        vision = config.get("vision_encoder") or {}
        transformer = _build(DiTConfig, config.get("transformer"))
        return cls(
            audio_codec=codec,
            text_encoder=text,
            vision_dim=int(vision.get("dim", 1024)),
            transformer=transformer,
            in_channels=int(config.get("in_channels", 6 * codec.codebook_dim)),
            num_anchors=int(config.get("num_anchors", 3)),
            anchor_embedding_dim=int(config.get("anchor_embedding_dim", 128)),
        )

    def to_dict(self) -> dict[str, Any]:
        """The reference's config.json schema (vision encoder reduced to its width)."""
        return {
            "in_channels": self.in_channels,
            "audio_codec": dataclasses.asdict(self.audio_codec),
            "text_encoder": dataclasses.asdict(self.text_encoder),
            "vision_encoder": {"dim": self.vision_dim},
            "transformer": dataclasses.asdict(self.transformer),
            "num_anchors": self.num_anchors,
            "anchor_embedding_dim": self.anchor_embedding_dim,
        }


# Presets. The codec, T5, vision width, in_channels and anchor settings are shared by all three
# published models: the reference's defaults in facebookresearch/sam-audio
# sam_audio/model/config.py (DACVAEConfig: encoder_dim 64, rates 2/8/10/12, latent 1024, decoder
# 1536, codebook_dim 128, 48 kHz; T5EncoderConfig t5-base dim 768; PerceptionEncoderConfig dim
# 1024; SAMAudioConfig in_channels 768, num_anchors 3, anchor_embedding_dim 128). The DiT sizes
# come from mlx-audio mlx_audio/sts/models/sam_audio/config.py (SAM_AUDIO_{SMALL,BASE,LARGE}_CONFIG,
# transcribed from the hub repos facebook/sam-audio-{small,base,large}); the large one also
# matches a published copy of facebook/sam-audio-large's config.json (dim 2816, 22 heads, 22
# layers, context_dim 2816). The remaining DiT fields are the reference TransformerConfig defaults.
_DIT_SIZES = {
    "small": {"dim": 1024, "n_heads": 8, "n_layers": 12, "context_dim": 1024},
    "base": {"dim": 1536, "n_heads": 12, "n_layers": 16, "context_dim": 1536},
    "large": {"dim": 2816, "n_heads": 22, "n_layers": 22, "context_dim": 2816},
}

_REFERENCE_CODEC = {
    "encoder_dim": 64,
    "encoder_rates": [2, 8, 10, 12],
    "latent_dim": 1024,
    "decoder_dim": 1536,
    "decoder_rates": [12, 10, 8, 2],
    "n_codebooks": 16,
    "codebook_size": 1024,
    "codebook_dim": 128,
    "sample_rate": 48000,
}

# The golden fixture tests/fixtures/sam_tiny_a/config.json (random weights, tiny widths).
_TINY = {
    "in_channels": 768,
    "audio_codec": {
        "encoder_dim": 8,
        "encoder_rates": [2, 8, 10, 12],
        "latent_dim": 32,
        "decoder_dim": 192,
        "decoder_rates": [12, 10, 8, 2],
        "n_codebooks": 16,
        "codebook_size": 1024,
        "codebook_dim": 128,
        "sample_rate": 48000,
    },
    "text_encoder": {"name": "t5-base", "dim": 64, "max_length": 512, "pad_mode": "longest"},
    "vision_encoder": {"dim": 32},
    "transformer": {
        "dim": 64,
        "n_heads": 4,
        "n_layers": 2,
        "context_dim": 64,
        "out_channels": 256,
        "frequency_embedding_dim": 32,
        "multiple_of": 16,
    },
    "num_anchors": 3,
    "anchor_embedding_dim": 16,
}

PRESETS = ("tiny", "small", "base", "large")


def preset_dict(name: str) -> dict[str, Any]:
    """The config.json dict of a named preset."""
    if name == "tiny":
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in _TINY.items()}
    if name not in _DIT_SIZES:
        raise ValueError(f"unknown SAM-Audio preset {name!r}; choose one of {', '.join(PRESETS)}")
    return {
        "in_channels": 768,
        "audio_codec": dict(_REFERENCE_CODEC),
        "text_encoder": {"name": "t5-base", "dim": 768, "max_length": 512, "pad_mode": "longest"},
        "vision_encoder": {"dim": 1024},
        "transformer": {**_DIT_SIZES[name], "out_channels": 256},
        "num_anchors": 3,
        "anchor_embedding_dim": 128,
    }


def preset(name: str) -> SAMAudioConfig:
    """``tiny`` (the fixture's sizes), ``small``, ``base`` or ``large``."""
    return SAMAudioConfig.from_dict(preset_dict(name))
