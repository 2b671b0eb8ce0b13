"""Run every stage of a golden fixture through the port and save the results.

    python tools/run_fixture.py tests/fixtures/sam_tiny_a OUT.npz

The model is loaded through the public loader (``SAMAudio.from_pretrained(FIXTURE_DIR)``); every
input comes from the fixture's inputs.npz and meta.json, and the results are written under
expected.npz's key names, so ``compare`` (or any npz diff) checks the port stage by stage. Nothing
here assumes a batch size, lengths, prompts or anchors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamsep import runtime  # noqa: E402  (BLAS preload: before mlx.core is imported)

runtime.preload_blas()

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from streamsep.sam_audio.model import SAMAudio  # noqa: E402


def run_fixture(fixture_dir: str | Path) -> dict[str, np.ndarray]:
    fixture_dir = Path(fixture_dir)
    inputs = dict(np.load(fixture_dir / "inputs.npz"))
    meta = json.loads((fixture_dir / "meta.json").read_text())
    model = SAMAudio.from_pretrained(fixture_dir)

    audios = mx.array(inputs["audios"].astype(np.float32))
    sizes = inputs["sizes"].astype(np.int64)
    pad_mask = mx.array(inputs["audio_pad_mask"].astype(bool))
    anchor_ids = mx.array(inputs["anchor_ids"].astype(np.int32))
    anchor_alignment = mx.array(inputs["anchor_alignment"].astype(np.int32))
    noise = mx.array(inputs["noise"].astype(np.float32))
    message = mx.array(inputs["wm_message"].astype(np.float32))
    out: dict[str, np.ndarray] = {}

    features = model.audio_codec.encode(audios)
    out["codec_features"] = np.array(features)
    out["codec_decode"] = np.array(model.audio_codec.decode(features, message=message))

    text_mask = mx.array(inputs["token_mask"].astype(bool))
    hidden = model.text_encoder(mx.array(inputs["token_ids"].astype(np.int32)), text_mask)
    out["t5_hidden"], out["t5_mask"] = np.array(hidden), np.array(text_mask)
    text = (hidden, text_mask)

    mixture = mx.concatenate([features, features], axis=-1)
    for t, key in ((0.0, "velocity_t00"), (0.5, "velocity_t05")):
        v = model.velocity(
            noise, mixture, hidden, text_mask, t, anchor_ids, anchor_alignment, pad_mask
        )
        out[key] = np.array(v)

    cond = model.conditioning(mixture, text, sizes, anchor_ids, anchor_alignment)
    for name, opt in meta["ode"].items():
        method, step_size = opt["method"], opt["step_size"]
        out[f"{name}_features"] = np.array(model.solve(cond, noise, method, step_size))
        result = model.separate(
            audios,
            meta.get("descriptions"),
            sizes=sizes,
            anchor_ids=anchor_ids,
            anchor_alignment=anchor_alignment,
            ode_opt={"method": method, "step_size": step_size},
            noise=noise,
            wm_message=message,
            text_features=text,
        )
        for i, (tgt, res) in enumerate(zip(result.target, result.residual, strict=True)):
            out[f"{name}_target_{i}"] = np.array(tgt)
            out[f"{name}_residual_{i}"] = np.array(res)
    return out


def compare(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> dict[str, float]:
    """Max absolute error per expected key (inf for a missing key or a shape mismatch)."""
    errors = {}
    for key, want in expected.items():
        have = got.get(key)
        if have is None or have.shape != want.shape:
            errors[key] = float("inf")
        else:
            diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
            errors[key] = float(diff.max()) if diff.size else 0.0
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fixture_dir", type=Path)
    parser.add_argument("out", type=Path, help="where to write the results (.npz)")
    args = parser.parse_args(argv)
    if not (args.fixture_dir / "inputs.npz").is_file():
        parser.error(f"{args.fixture_dir} has no inputs.npz; pass a fixture folder")
    results = run_fixture(args.fixture_dir)
    np.savez(args.out, **results)
    expected_file = args.fixture_dir / "expected.npz"
    if expected_file.is_file():
        errors = compare(results, dict(np.load(expected_file)))
        width = max(map(len, errors))
        for key, err in errors.items():
            print(f"{key:<{width}}  max abs err {err:.3g}")
        print(f"worst: {max(errors.values()):.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
