"""Finding and loading the embedded model's files (config.json, model.safetensors, prompt cache).

The bundled model lives in the repository's model/ folder; an installed wheel carries the same
files under <prefix>/share/streamsep/model (pyproject data-files). STREAMSEP_EMBEDDED_MODEL
overrides both.
"""

from __future__ import annotations

import json
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from streamsep.embedded.model import MaskFlowDiT, ModelArgs

REQUIRED = ("config.json", "model.safetensors")


def candidate_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent.parent.parent  # checkout root (…/streamsep/..)
    dirs = []
    if os.environ.get("STREAMSEP_EMBEDDED_MODEL"):
        dirs.append(Path(os.environ["STREAMSEP_EMBEDDED_MODEL"]))
    dirs.append(here / "model")
    for prefix in (sys.prefix, sysconfig.get_config_var("userbase") or "", sys.base_prefix):
        if prefix:
            dirs.append(Path(prefix) / "share" / "streamsep" / "model")
    return dirs


def find_model_dir(spec: str | os.PathLike | None = None) -> Path:
    """The model directory for a spec (a directory path), or the bundled one for None."""
    if spec is not None:
        d = Path(spec).expanduser()
        missing = [f for f in REQUIRED if not (d / f).exists()]
        if missing:
            raise FileNotFoundError(
                f"{d} is not an embedded model directory (missing {', '.join(missing)}); "
                "pass a folder written by tools/train.py --export, or omit it for the bundled model"
            )
        return d
    for d in candidate_dirs():
        if all((d / f).exists() for f in REQUIRED):
            return d
    raise FileNotFoundError(
        "the bundled embedded model was not found (looked in "
        + ", ".join(str(d) for d in candidate_dirs())
        + "); reinstall streamsep or set STREAMSEP_EMBEDDED_MODEL to a model folder"
    )


@dataclass
class EmbeddedModel:
    net: MaskFlowDiT
    config: dict
    path: Path
    prompt_cache: dict[str, np.ndarray]


def load_model(path: Path, dtype: mx.Dtype = mx.float32) -> EmbeddedModel:
    """Load weights (stored float16) and compute in ``dtype``."""
    config = json.loads((path / "config.json").read_text())
    if config.get("model_type") != "streamsep-embedded-maskflow":
        raise ValueError(f"{path}/config.json is not an embedded streamsep model "
                         f"(model_type={config.get('model_type')!r})")
    net = MaskFlowDiT(ModelArgs.from_dict(config["model"]))
    weights = mx.load(str(path / "model.safetensors"))
    net.load_weights([(k, v.astype(dtype)) for k, v in weights.items()])
    net.eval()
    mx.eval(net.parameters())
    cache: dict[str, np.ndarray] = {}
    if (path / "prompt_cache.json").exists():
        words = json.loads((path / "prompt_cache.json").read_text())
        vecs = np.load(path / "prompt_cache.npy").astype(np.float32)
        cache = dict(zip(words, vecs, strict=True))
    return EmbeddedModel(net, config, path, cache)
