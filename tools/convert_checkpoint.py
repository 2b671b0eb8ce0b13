#!/usr/bin/env python
"""Convert a SAM-Audio model (hub repo or directory, any supported layout) to safetensors.

    python tools/convert_checkpoint.py facebook/sam-audio-large ~/models/sam-audio-large-bf16 \
        --dtype bfloat16

OUT_DIR gets config.json, model[-0000i-of-0000n].safetensors (official tensor names, torch layouts,
marked as ours in the metadata; no vision encoder or rankers) and t5/ (config.json,
model.safetensors, tokenizer.json when the source has one). ``SAMAudio.from_pretrained(OUT_DIR)``
then loads without the pickle walk and without any download.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

# streamsep first: importing it preloads the fast BLAS, which must precede mlx.core (imported
# inside the functions below for that reason).
from streamsep.sam_audio.hub import ModelLoadError
from streamsep.sam_audio.loading import STREAMSEP_FORMAT, ResolvedModel, resolve_model

DTYPES = ("float32", "float16", "bfloat16")
SHARD_BYTES = 2 * 1024**3


def _to_mx(value: np.ndarray, dtype: str):
    import mlx.core as mx

    arr = mx.array(value)
    return arr.astype(getattr(mx, dtype)) if mx.issubdtype(arr.dtype, mx.floating) else arr


def _shards(weights: dict[str, np.ndarray]) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    size = 0
    for key in sorted(weights):
        nbytes = weights[key].nbytes
        if groups[-1] and size + nbytes > SHARD_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(key)
        size += nbytes
    return groups


def write_converted(resolved: ResolvedModel, out_dir: Path, dtype: str = "float32") -> list[Path]:
    """Write ``resolved`` to ``out_dir`` in our layout; returns the files written."""
    import mlx.core as mx

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    target = dtype
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    main = {k: v for k, v in resolved.weights.items() if not k.startswith("text_encoder.")}
    text = {
        k[len("text_encoder.") :]: v
        for k, v in resolved.weights.items()
        if k.startswith("text_encoder.")
    }
    metadata = {"format": STREAMSEP_FORMAT, "layout": "torch", "source": resolved.source,
                "dtype": dtype}
    groups = _shards(main)
    for i, keys in enumerate(groups):
        name = (
            "model.safetensors"
            if len(groups) == 1
            else f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        )
        # One shard at a time, so peak memory is one shard's worth on top of the source.
        arrays = {k: _to_mx(main[k], target) for k in keys}
        mx.save_safetensors(str(out_dir / name), arrays, metadata=metadata)
        written.append(out_dir / name)
        del arrays
    (out_dir / "config.json").write_text(json.dumps(resolved.config, indent=2) + "\n")
    written.append(out_dir / "config.json")

    t5_dir = out_dir / "t5"
    t5_dir.mkdir(exist_ok=True)
    (t5_dir / "config.json").write_text(json.dumps(resolved.text_encoder_config, indent=2) + "\n")
    written.append(t5_dir / "config.json")
    if text:
        mx.save_safetensors(
            str(t5_dir / "model.safetensors"),
            {k: _to_mx(v, target) for k, v in text.items()},
            metadata={"format": "pt", "source": resolved.text_encoder_source},
        )
        written.append(t5_dir / "model.safetensors")
    if resolved.tokenizer_path is not None:
        shutil.copyfile(resolved.tokenizer_path, t5_dir / "tokenizer.json")
        written.append(t5_dir / "tokenizer.json")
    return written


def _clear_previous(out_dir: Path) -> None:
    for pattern in ("*.safetensors", "config.json", "t5/*.safetensors", "t5/*.json"):
        for path in out_dir.glob(pattern):
            path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="hub repo id (e.g. facebook/sam-audio-large) or directory")
    parser.add_argument("out_dir", type=Path, help="directory to write")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--revision", default=None, help="hub branch, tag or commit")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier conversion")
    args = parser.parse_args(argv)

    out_dir: Path = args.out_dir.expanduser()
    if (out_dir / "config.json").exists() and not args.overwrite:
        print(
            f"error: {out_dir} already holds a model; pass --overwrite to replace it",
            file=sys.stderr,
        )
        return 2
    start = time.perf_counter()
    try:
        resolved = resolve_model(args.src, revision=args.revision)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.overwrite:
        _clear_previous(out_dir)
    files = write_converted(resolved, out_dir, args.dtype)
    size = sum(f.stat().st_size for f in files)
    print(
        f"wrote {len(resolved.weights)} tensors ({size / 1e6:.1f} MB, {args.dtype}) from "
        f"{resolved.source} ({resolved.origin} layout) to {out_dir} in "
        f"{time.perf_counter() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
