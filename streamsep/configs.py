"""The one way a model config dataclass is read from a checkpoint's config.json."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, Self


class FromDict:
    """Mixed into the config dataclasses of both models (SAM-Audio's codec, DiT and T5, the
    embedded DiT and its text encoder). Keys a config does not know are dropped: checkpoints
    carry fields of other versions and of training only; missing keys keep their defaults."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
