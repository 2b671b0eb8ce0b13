"""Find a SAM-Audio model and read its config, weights and text encoder, whatever the layout.

Three layouts are understood, from the hub or a local directory:

- Meta's official one: ``config.json`` + ``checkpoint.pt`` (a torch state dict, read without torch
  by :mod:`streamsep.sam_audio.checkpoint`); T5 from a ``t5/`` subfolder when there is one, else
  from the hub repo named by ``config["text_encoder"]["name"]`` (``t5-base``).
- mlx-community's conversions made with mlx-audio: ``config.json`` + ``*.safetensors`` with
  mlx-audio's module names and MLX layouts; mapped back here to the official names and torch
  layouts, by layer type.
- Ours, written by ``tools/convert_checkpoint.py``: ``model.safetensors`` in official names and
  torch layouts (marked in its metadata), ``config.json``, and ``t5/``.

Whatever the source, :func:`resolve_model` hands the model one contract: official checkpoint names,
torch layouts (``ResolvedModel.layout == "torch"``), numpy arrays, T5 under ``text_encoder.`` with
Hugging Face names. The model's ``sanitize`` then has a single path to maintain.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamsep.sam_audio.checkpoint import (
    CheckpointError,
    load_safetensors,
    load_torch_checkpoint,
)
from streamsep.sam_audio.hub import ModelLoadError, download_file, download_snapshot

log = logging.getLogger("streamsep")

#: Weights the text-prompted path never uses; dropped before they are read.
SKIPPED_PREFIXES = (
    "vision_encoder.",
    "visual_ranker.",
    "text_ranker.",
    "span_predictor",
    "judge.",
)

#: safetensors metadata marking a file written by tools/convert_checkpoint.py.
STREAMSEP_FORMAT = "streamsep-sam-audio"

_HUB_PATTERNS = ["config.json", "checkpoint.pt", "*.safetensors", "t5/*"]
_T5_DEFAULT = "t5-base"


@dataclass
class ResolvedModel:
    """Everything needed to build a SAM-Audio model, in the official checkpoint's terms."""

    #: config.json as a dict (the reference's SAMAudioConfig schema).
    config: dict[str, Any]
    #: Official names (``audio_codec.encoder.block.0.weight_v``, ``transformer.layers.0...``,
    #: T5 as ``text_encoder.<HF name>``), torch layouts, numpy arrays.
    weights: dict[str, np.ndarray]
    #: T5's tokenizer.json, or None when the model folder ships none.
    tokenizer_path: Path | None
    #: T5's Hugging Face config.json as a dict.
    text_encoder_config: dict[str, Any]
    #: Where it came from, for messages: a repo id (with @revision) or a directory.
    source: str
    #: Always "torch": conversions from MLX layouts happen here, not in the model.
    layout: str = "torch"
    #: "meta", "mlx-community" or "streamsep": which layout the files were in.
    origin: str = "meta"
    model_dir: Path | None = None
    text_encoder_source: str = field(default="")

    @property
    def hop_length(self) -> int:
        return hop_length_of(self.config)

    @property
    def sample_rate(self) -> int:
        return sample_rate_of(self.config)


def hop_length_of(config: dict[str, Any]) -> int:
    """Samples per latent frame: the product of the codec's encoder rates (reference default)."""
    rates = (config.get("audio_codec") or {}).get("encoder_rates", [2, 8, 10, 12])
    return int(math.prod(int(r) for r in rates))


def sample_rate_of(config: dict[str, Any]) -> int:
    return int((config.get("audio_codec") or {}).get("sample_rate", 48_000))


# --------------------------------------------------------------------------------- public API
def resolve_config(
    repo_id_or_dir: str | Path, *, revision: str | None = None, token: str | None = None
) -> dict[str, Any]:
    """Only config.json (cheap: the processor needs nothing else)."""
    local = _local_dir(repo_id_or_dir)
    if local is not None:
        return _read_config(local / "config.json", str(local))
    repo = str(repo_id_or_dir)
    path = download_file(repo, "config.json", revision=revision, token=token)
    return _read_config(path, _label(repo, revision))


def resolve_model(
    repo_id_or_dir: str | Path, *, revision: str | None = None, token: str | None = None
) -> ResolvedModel:
    """Locate (downloading if needed) and read a SAM-Audio model in any supported layout."""
    local = _local_dir(repo_id_or_dir)
    if local is not None:
        model_dir, source = local, str(local)
    else:
        repo = str(repo_id_or_dir)
        source = _label(repo, revision)
        model_dir = download_snapshot(repo, _HUB_PATTERNS, revision=revision, token=token)
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(_missing_message(source, "config.json", local is not None))
    config = _read_config(config_file, source)
    if config.get("quantization") or config.get("quantization_config"):
        raise ModelLoadError(
            f"{source} holds quantized weights, which streamsep cannot load: use the unquantized "
            "repo (e.g. facebook/sam-audio-large or an mlx-community bf16/fp32 conversion)"
        )

    weights, origin = _read_weights(model_dir, config, source, local is not None)
    text_weights, t5_config, tokenizer, t5_source = _resolve_text_encoder(
        model_dir,
        config,
        need_weights=not any(k.startswith("text_encoder.") for k in weights),
        token=token,
    )
    weights.update({f"text_encoder.{k}": v for k, v in text_weights.items()})
    return ResolvedModel(
        config=config,
        weights=weights,
        tokenizer_path=tokenizer,
        text_encoder_config=t5_config,
        source=source,
        origin=origin,
        model_dir=model_dir,
        text_encoder_source=t5_source,
    )


def check_weights(
    expected: dict[str, tuple[int, ...]],
    got: dict[str, Any],
    source: str,
    *,
    strict: bool = False,
) -> None:
    """Raise a :class:`ModelLoadError` naming the first missing, misshapen (or, if strict, extra)
    tensor. ``expected`` maps names to shapes; ``got`` maps names to arrays."""
    missing = [k for k in expected if k not in got]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelLoadError(
            f"{source}: tensor {missing[0]} is missing{more}; the weights do not match "
            "config.json: re-download the model or convert it again"
        )
    for key, shape in expected.items():
        have = tuple(int(s) for s in got[key].shape)
        if have != tuple(int(s) for s in shape):
            raise ModelLoadError(
                f"{source}: tensor {key} has shape {have}, expected {tuple(shape)}; config.json "
                "does not match the weights: use the config.json that came with them"
            )
    if strict:
        extra = sorted(set(got) - set(expected))
        if extra:
            more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
            raise ModelLoadError(
                f"{source}: unexpected tensor {extra[0]}{more}; the weights belong to a different "
                "model or config"
            )


def keep_weight(name: str) -> bool:
    """False for the vision encoder, rankers and span predictor."""
    return not name.startswith(SKIPPED_PREFIXES)


# --------------------------------------------------------------------------------- locating
def _label(repo: str, revision: str | None) -> str:
    return f"{repo}@{revision}" if revision else repo


def _local_dir(repo_id_or_dir: str | Path) -> Path | None:
    text = str(repo_id_or_dir)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(
            f"{text} is a file: pass the directory that holds config.json and the weights"
        )
    looks_like_path = (
        isinstance(repo_id_or_dir, Path)
        or text.startswith(("/", ".", "~"))
        or text.count("/") > 1
        or "\\" in text
    )
    if looks_like_path:
        raise ModelLoadError(
            f"local model directory {text} does not exist: check the path, or pass a hub repo id "
            "such as facebook/sam-audio-large"
        )
    return None


def _missing_message(source: str, filename: str, local: bool) -> str:
    if local:
        return (
            f"model directory {source} has no {filename}: it needs config.json plus checkpoint.pt "
            "(Meta's layout) or *.safetensors (mlx-community, or tools/convert_checkpoint.py)"
        )
    return (
        f"{source} has no file {filename}: it is not a SAM-Audio model repo in a layout streamsep "
        "knows (config.json + checkpoint.pt, or config.json + *.safetensors)"
    )


def _read_config(path: Path, source: str) -> dict[str, Any]:
    if not path.is_file():
        raise ModelLoadError(_missing_message(source, path.name, True))
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"{path} is not valid JSON ({exc}); download or copy it again"
        ) from exc
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path} must hold a JSON object; download or copy it again")
    if str(config.get("model_type", "")).startswith("streamsep-embedded"):
        # Said here, before any weight is read, rather than as "unrecognised tensor names".
        raise ModelLoadError(
            f"{source} is streamsep's embedded model (speech, music, noise), not SAM-Audio: load "
            f"it with streamsep.load({source!r}) (or --model {source} on the command line)"
        )
    return config


# --------------------------------------------------------------------------------- weights
def _read_weights(
    model_dir: Path, config: dict, source: str, local: bool
) -> tuple[dict[str, np.ndarray], str]:
    checkpoint = model_dir / "checkpoint.pt"
    shards = sorted(model_dir.glob("*.safetensors"))
    if checkpoint.is_file():
        try:
            weights = load_torch_checkpoint(checkpoint, keep=keep_weight)
        except CheckpointError as exc:
            raise ModelLoadError(str(exc)) from exc
        return _strip_text_encoder_wrapper(weights), "meta"
    if not shards:
        raise ModelLoadError(_missing_message(source, "checkpoint.pt or *.safetensors", local))
    weights, metadata = {}, {}
    for shard in shards:
        part, meta = read_safetensors(shard, keep=keep_weight)
        weights.update(part)
        metadata.update(meta)
    if metadata.get("format") == STREAMSEP_FORMAT:
        return _strip_text_encoder_wrapper(weights), "streamsep"
    if any(k.startswith(_MLX_AUDIO_MARKERS) for k in weights):
        return from_mlx_audio(weights, config), "mlx-community"
    if any(k.startswith("audio_codec.encoder.block.") for k in weights):
        # Official names in safetensors: a plain re-save of checkpoint.pt, so torch layouts.
        return _strip_text_encoder_wrapper(weights), "meta"
    raise ModelLoadError(
        f"{source}: the safetensors files use tensor names streamsep does not recognise "
        f"(first: {next(iter(weights), 'none')}); expected Meta's checkpoint names or mlx-audio's"
    )


def read_safetensors(
    path: Path, keep=None
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors (numpy; bfloat16 widened to float32) and metadata of one safetensors file."""
    try:
        return load_safetensors(path, keep=keep)
    except CheckpointError as exc:
        raise ModelLoadError(str(exc)) from exc


def _strip_text_encoder_wrapper(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # The reference wraps HF's T5EncoderModel as text_encoder.model; a checkpoint that carries
    # it overrides the hub T5 (torch's load_state_dict would), under our text_encoder.<HF> names.
    out = {}
    for key, value in weights.items():
        if key.startswith("text_encoder.model."):
            key = "text_encoder." + key[len("text_encoder.model.") :]
        out[key] = value
    return out


# --------------------------------------------------------------------------------- mlx-audio
_MLX_AUDIO_MARKERS = (
    "audio_codec.encoder.conv_in.",
    "audio_codec.encoder.blocks.",
    "audio_codec.decoder.blocks.",
    "audio_codec.quantizer_in_proj.",
)
_RES_PARTS = {"act1": "0", "conv1": "1", "act2": "2", "conv2": "3"}


def _mlx_audio_name(name: str, n_enc: int) -> str:
    """Official name for one of mlx-audio's SAM-Audio parameter names."""
    if not name.startswith("audio_codec."):
        return name
    rest = name[len("audio_codec.") :]
    m = re.fullmatch(r"encoder\.conv_in\.(.+)", rest)
    if m:
        return f"audio_codec.encoder.block.0.{m[1]}"
    m = re.fullmatch(r"encoder\.blocks\.(\d+)\.res(\d)\.(act1|conv1|act2|conv2)\.(.+)", rest)
    if m:
        b, r = int(m[1]) + 1, int(m[2]) - 1
        return f"audio_codec.encoder.block.{b}.block.{r}.block.{_RES_PARTS[m[3]]}.{m[4]}"
    m = re.fullmatch(r"encoder\.blocks\.(\d+)\.(snake|conv)\.(.+)", rest)
    if m:
        sub = "3" if m[2] == "snake" else "4"
        return f"audio_codec.encoder.block.{int(m[1]) + 1}.block.{sub}.{m[3]}"
    m = re.fullmatch(r"encoder\.(snake_out|conv_out)\.(.+)", rest)
    if m:
        idx = n_enc + 1 if m[1] == "snake_out" else n_enc + 2
        return f"audio_codec.encoder.block.{idx}.{m[2]}"
    m = re.fullmatch(r"quantizer_(in|out)_proj\.(.+)", rest)
    if m:
        return f"audio_codec.quantizer.{m[1]}_proj.{m[2]}"
    m = re.fullmatch(r"decoder\.conv_in\.(.+)", rest)
    if m:
        return f"audio_codec.decoder.model.0.{m[1]}"
    m = re.fullmatch(r"decoder\.blocks\.(\d+)\.block_(\d+)\.(act1|conv1|act2|conv2)\.(.+)", rest)
    if m:
        b = int(m[1]) + 1
        return f"audio_codec.decoder.model.{b}.block.{m[2]}.block.{_RES_PARTS[m[3]]}.{m[4]}"
    m = re.fullmatch(r"decoder\.blocks\.(\d+)\.block_(\d+)\.(.+)", rest)
    if m:
        return f"audio_codec.decoder.model.{int(m[1]) + 1}.block.{m[2]}.{m[3]}"
    # mlx-audio shares the decoder's last Snake/conv with the watermark encoder's pre.0/pre.1.
    m = re.fullmatch(r"decoder\.(snake_out|conv_out)\.(.+)", rest)
    if m:
        idx = "0" if m[1] == "snake_out" else "1"
        return f"audio_codec.decoder.wm_model.encoder_block.pre.{idx}.{m[2]}"
    m = re.fullmatch(r"decoder\.wm_model\.(\w+_block)\.(pre|post)_(\d+)\.(.+)", rest)
    if m:
        return f"audio_codec.decoder.wm_model.{m[1]}.{m[2]}.{m[3]}.{m[4]}"
    return name


def _torch_layout(name: str, value: np.ndarray) -> np.ndarray:
    """MLX layout → torch layout for one official-named tensor, chosen by its layer type."""
    if name.startswith("audio_codec."):
        if name.endswith(".alpha"):  # Snake: (1, 1, C) → (1, C, 1)
            return value.transpose(0, 2, 1)
        if value.ndim == 3 and name.endswith((".weight", ".weight_v", ".weight_g")):
            if re.search(r"decoder\.model\.\d+\.block\.(1|3)\.", name):
                # ConvTranspose1d: (out, k, in) → (in, out, k); weight_g (1, 1, in) → (in, 1, 1)
                return value.transpose(2, 0, 1)
            return value.transpose(0, 2, 1)  # Conv1d: (out, k, in) → (out, in, k)
        return value
    if name.startswith("transformer.x_embedder.") and name.endswith(".project.weight"):
        return value.transpose(0, 2, 1)  # Conv1d
    return value


def from_mlx_audio(weights: dict[str, np.ndarray], config: dict) -> dict[str, np.ndarray]:
    """mlx-audio's SAM-Audio parameters (names and MLX layouts) → official names, torch layouts."""
    n_enc = len((config.get("audio_codec") or {}).get("encoder_rates", [2, 8, 10, 12]))
    out: dict[str, np.ndarray] = {}
    for key, value in weights.items():
        lstm = re.fullmatch(r"(.+\.lstm)\.layers\.(\d+)\.(Wx|Wh|bias)", key)
        if lstm:
            base, layer, part = lstm[1], lstm[2], lstm[3]
            base = _mlx_audio_name(base + ".x", n_enc)[: -len(".x")]
            if part == "Wx":
                out[f"{base}.weight_ih_l{layer}"] = value
            elif part == "Wh":
                out[f"{base}.weight_hh_l{layer}"] = value
            else:
                # mlx-audio keeps bias_ih + bias_hh summed; only the sum enters the LSTM.
                out[f"{base}.bias_ih_l{layer}"] = value
                out[f"{base}.bias_hh_l{layer}"] = np.zeros_like(value)
            continue
        if key == "align_masked_video.conv_weight":  # (out, 1, in) → Conv1d (out, in, 1)
            out["align_masked_video.conv.weight"] = value.transpose(0, 2, 1)
            continue
        if key == "align_masked_video.conv_bias":
            out["align_masked_video.conv.bias"] = value
            continue
        name = _mlx_audio_name(key, n_enc)
        out[name] = np.ascontiguousarray(_torch_layout(name, value))
    if "align_masked_video.gate" not in out:
        out.update(_neutral_align(config))
    return out


def _neutral_align(config: dict) -> dict[str, np.ndarray]:
    # mlx-audio drops align_masked_video, so its conversions lack it. A zero gate makes the term
    # vanish, which is exactly what mlx-audio computes; the reference's own gate may differ.
    log.warning(
        "weights lack align_masked_video (an mlx-audio conversion): its term is left out "
        "(gate 0) as mlx-audio does; Meta's checkpoint.pt gives the reference's numbers"
    )
    dim = int((config.get("transformer") or {}).get("dim", 2048))
    vision = int((config.get("vision_encoder") or {}).get("dim", 1024))
    return {
        "align_masked_video.gate": np.zeros((1,), np.float32),
        "align_masked_video.conv.weight": np.zeros((dim, vision, 1), np.float32),
        "align_masked_video.conv.bias": np.zeros((dim,), np.float32),
        "align_masked_video.layer_norm.weight": np.ones((dim,), np.float32),
        "align_masked_video.layer_norm.bias": np.zeros((dim,), np.float32),
    }


# --------------------------------------------------------------------------------- T5
def _resolve_text_encoder(
    model_dir: Path, config: dict, *, need_weights: bool, token: str | None
) -> tuple[dict[str, np.ndarray], dict[str, Any], Path | None, str]:
    """(HF-named T5 encoder weights, T5 config, tokenizer.json or None, where from)."""
    local = model_dir / "t5"
    name = str((config.get("text_encoder") or {}).get("name", _T5_DEFAULT))
    if not (local / "config.json").is_file() and Path(name).expanduser().is_dir():
        local = Path(name).expanduser()
    if (local / "config.json").is_file():
        t5_config = _read_config(local / "config.json", str(local))
        tokenizer = local / "tokenizer.json"
        weights: dict[str, np.ndarray] = {}
        if need_weights:
            weights_file = local / "model.safetensors"
            if not weights_file.is_file():
                raise ModelLoadError(
                    f"text encoder directory {local} has no model.safetensors: copy the T5 "
                    f"encoder weights ({name}'s model.safetensors) there"
                )
            weights = read_safetensors(weights_file, keep=_keep_t5)[0]
        return (
            _t5_encoder_only(weights),
            t5_config,
            tokenizer if tokenizer.is_file() else None,
            str(local),
        )

    t5_config = _read_config(download_file(name, "config.json", token=token), name)
    tokenizer = download_file(name, "tokenizer.json", token=token, missing_ok=True)
    weights = {}
    if need_weights:
        path = download_file(name, "model.safetensors", token=token, missing_ok=True)
        if path is not None:
            weights = read_safetensors(path, keep=_keep_t5)[0]
        else:
            path = download_file(name, "pytorch_model.bin", token=token)
            try:
                weights = load_torch_checkpoint(path, keep=_keep_t5)
            except CheckpointError as exc:
                raise ModelLoadError(str(exc)) from exc
    return _t5_encoder_only(weights), t5_config, tokenizer, name


def _keep_t5(name: str) -> bool:
    return name.startswith(("shared.", "encoder."))


def _t5_encoder_only(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {k: v for k, v in weights.items() if _keep_t5(k)}
    # HF ties the embedding; some files store it only as encoder.embed_tokens.
    if "shared.weight" not in out and "encoder.embed_tokens.weight" in out:
        out["shared.weight"] = out["encoder.embed_tokens.weight"]
    return out
