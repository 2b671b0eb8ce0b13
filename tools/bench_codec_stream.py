"""Per-window codec cost in the live engine, before and after the incremental codec.

    python tools/bench_codec_stream.py [--preset reduced] [--paths cpu,native] [--windows 3]

Before: what every window cost until now, a full-window ``encode`` and a full-window ``decode`` of
target and residual. After: ``WindowEncoder`` (only the new hop plus margins) and
``RegionDecoder`` (only the emitted hop + crossfade plus margins, watermark state carried), both
in their steady state (the first window, which builds the caches, is not timed). The codec has
random weights with the reference's init statistics (``DACVAE.randomize``).

Each timed window's features are the stream's features plus fresh noise, as consecutive
windows' DiT outputs differ on the frames they share; the report gives how far the streamed
region decode is from the per-window decode (which restarts the watermark at the window start),
next to the size of the watermark term itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamsep import runtime  # noqa: E402  (BLAS preload: before mlx.core is imported)

runtime.preload_blas()

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from streamsep.sam_audio import codec as codec_module  # noqa: E402
from streamsep.sam_audio.codec import DACVAE, DACVAEConfig  # noqa: E402
from streamsep.sam_audio.codec_stream import RegionDecoder, WindowEncoder  # noqa: E402

CODECS = {
    "tiny": {"encoder_dim": 8, "latent_dim": 32, "decoder_dim": 192},
    "reduced": {"encoder_dim": 16, "decoder_dim": 384},  # the quick codec
    "small": {},  # the reference codec, as in every released preset
}


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    mx.eval(out)
    return time.perf_counter() - start, out


def bench(preset: str, path: str, geometry: dict[str, float], windows: int, seed: int) -> dict:
    codec_module.COMPUTE_PATH = path
    codec = DACVAE(DACVAEConfig(**CODECS[preset])).randomize(seed)
    hop, sr = codec.hop_length, codec.sample_rate
    w, h, r, x = (round(geometry[k] * sr / hop) for k in ("window", "hop", "lookahead",
                                                          "crossfade"))
    e0 = w - (h + r + x)
    rng = np.random.default_rng(seed)
    frames = w + windows * h
    t = np.arange(frames * hop) / sr
    audio = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.7 * t))
    audio = (audio + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    base = rng.standard_normal((2, frames, codec.config.codebook_dim)).astype(np.float32)
    message = mx.array(rng.integers(0, 2, 16).astype(np.float32))
    enc, dec = WindowEncoder(codec), RegionDecoder(codec, message, history=12)
    bare = RegionDecoder(codec, watermark=False)
    rows = []
    for k in range(windows + 1):
        s = k * h
        wav = mx.array(audio[s * hop : (s + w) * hop])[None]
        feats = base[:, s : s + w] + 0.3 * rng.standard_normal(base[:, s : s + w].shape)
        feats = mx.array(feats.astype(np.float32))
        region = (e0, e0 + h + x)
        t_enc, got_f = _timed(lambda: enc(wav, h if k else None))  # noqa: B023
        t_dec, got = _timed(lambda: dec(feats, region, h if k else None))  # noqa: B023
        if k == 0:  # builds the caches (and compiles): not the steady state
            continue
        t_enc0, ref_f = _timed(lambda: codec.encode(wav))  # noqa: B023
        t_dec0, full = _timed(lambda: codec.decode(feats, message))  # noqa: B023
        ref = full[:, 0, e0 * hop : (e0 + h + x) * hop]
        wm = ref - bare(feats, region)
        diff = np.array(got - ref)
        rows.append({
            "encode_full_s": t_enc0, "encode_stream_s": t_enc,
            "decode_full_s": t_dec0, "decode_region_s": t_dec,
            "encode_max_abs_diff": float(mx.abs(got_f - ref_f).max()),
            "region_max_abs_diff": float(np.abs(diff).max()),
            "region_snr_db": float(10 * np.log10(np.sum(np.array(ref) ** 2)
                                                 / max(np.sum(diff**2), 1e-30))),
            "watermark_term_max_abs": float(mx.abs(wm).max()),
            "encoded_frames": enc.encoded, "decoded_frames": dec.decoded_frames,
        })
    best = {k: min(row[k] for row in rows) for k in rows[0] if k.endswith("_s")}
    worst = {k: max(row[k] for row in rows) for k in rows[0] if not k.endswith("_s")}
    worst["region_snr_db"] = min(row["region_snr_db"] for row in rows)
    return {"preset": preset, "path": path, "frames": {"window": w, "hop": h, "lookahead": r,
            "crossfade": x}, "best_s": best, "worst": worst, "windows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="reduced", choices=CODECS)
    parser.add_argument("--paths", default="cpu,native")
    parser.add_argument("--windows", type=int, default=3, help="timed windows (after one more)")
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--hop", type=float, default=2.0)
    parser.add_argument("--lookahead", type=float, default=1.0)
    parser.add_argument("--crossfade", type=float, default=0.4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    geometry = {k: getattr(args, k) for k in ("window", "hop", "lookahead", "crossfade")}
    reports = []
    for path in args.paths.split(","):
        rep = bench(args.preset, path, geometry, args.windows, args.seed)
        reports.append(rep)
        b, wst = rep["best_s"], rep["worst"]
        print(f"{args.preset} codec, {path} kernels, {rep['frames']} frames, best of "
              f"{args.windows} steady windows:")
        print(f"  encode {b['encode_full_s']:.2f} s -> {b['encode_stream_s']:.2f} s "
              f"({wst['encoded_frames']} of {rep['frames']['window']} frames)")
        print(f"  decode target+residual {b['decode_full_s']:.2f} s -> {b['decode_region_s']:.2f}"
              f" s ({wst['decoded_frames']} frames)")
        print(f"  streamed vs per-window region: max |diff| {wst['region_max_abs_diff']:.2e}, "
              f"SNR >= {wst['region_snr_db']:.1f} dB; watermark term max "
              f"{wst['watermark_term_max_abs']:.2e}; encode max |diff| "
              f"{wst['encode_max_abs_diff']:.2e}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()
