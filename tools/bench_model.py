"""Per-stage timings of the SAM-Audio port with random weights (no checkpoint needed).

    python tools/bench_model.py [--preset small] [--seconds 10] [--out bench.json]

Stages on one window: codec encode, T5 on an 8-token prompt, one DiT forward (one vector-field
evaluation, the unit an ODE step costs once for euler, twice for midpoint) and the decode of target
and residual (the 2-item batch ``separate`` decodes). Each stage is warmed up once and timed as the
best of ``--reps`` runs, in float32 and bfloat16. The DiT forward is also timed in a subprocess with
``STREAMSEP_NO_BLAS_PRELOAD=1`` to show what the OpenBLAS preload buys on Linux.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamsep import runtime  # noqa: E402  (BLAS preload: before mlx.core is imported)

runtime.preload_blas()

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from streamsep.sam_audio.config import PRESETS, preset  # noqa: E402
from streamsep.sam_audio.model import SAMAudio  # noqa: E402
from streamsep.sam_audio.t5 import T5Config  # noqa: E402

STAGES = ("codec_encode", "t5", "dit_forward", "decode")
DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16}


def build(preset_name: str, dtype: mx.Dtype) -> SAMAudio:
    config = preset(preset_name)
    if preset_name == "tiny":
        t5 = T5Config(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, vocab_size=100)
    else:
        t5 = T5Config.t5_base()
    mx.random.seed(0)
    model = SAMAudio(config, t5_config=t5)
    if dtype != mx.float32:
        model.set_dtype(dtype)
    mx.eval(model.parameters())
    return model


def _best(fn: Callable[[], mx.array], reps: int, budget: float) -> tuple[float, int]:
    """Best of ``reps`` timed runs after a warm-up; (seconds, runs). When the warm-up alone
    exceeds ``budget`` seconds its time is reported instead (runs = 1): a stage that slow is
    dominated by compute, not by first-call set-up."""
    start = time.perf_counter()
    mx.eval(fn())
    first = time.perf_counter() - start
    if first > budget:
        return first, 1
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        mx.eval(fn())
        times.append(time.perf_counter() - start)
    return min(times), reps


def bench(
    preset_name: str,
    seconds: float,
    dtype_name: str,
    reps: int,
    stages,
    verbose: bool = False,
    budget: float = 60.0,
) -> dict:
    dtype = DTYPES[dtype_name]
    model = build(preset_name, dtype)
    hop, sr = model.hop_length, model.sample_rate
    frames = max(1, round(seconds * sr / hop))
    rng = np.random.default_rng(0)
    audio = mx.array(0.1 * rng.standard_normal((1, 1, frames * hop)).astype(np.float32))
    ids = mx.array(rng.integers(2, model.text_encoder.config.vocab_size, (1, 8)).astype(np.int32))
    mask = mx.ones((1, 8), dtype=mx.bool_)
    # Timings do not depend on values: random stand-ins for T5 output and codec features keep the
    # set-up from paying for an extra encode.
    text_dim = model.text_encoder.config.d_model
    hidden = mx.array(rng.standard_normal((1, 8, text_dim)).astype(np.float32)).astype(dtype)
    half = rng.standard_normal((1, frames, model.noise_channels // 2)).astype(np.float32)
    feats = mx.array(np.concatenate([half, half], axis=-1)).astype(dtype)
    noise = mx.array(rng.standard_normal((1, frames, model.noise_channels)).astype(np.float32))
    noise = noise.astype(dtype)
    cond = model.conditioning(feats, (hidden, mask))
    message = mx.zeros((16,))
    mx.eval(hidden, feats, noise)

    def dit() -> mx.array:
        return model.velocity(
            noise,
            cond.mixture,
            cond.text_hidden,
            cond.text_mask,
            0.5,
            cond.anchor_ids,
            cond.anchor_alignment,
            cond.pad_mask,
        )

    fns = {
        "codec_encode": lambda: model.audio_codec.encode(audio.astype(dtype)),
        "t5": lambda: model.text_encoder(ids, mask),
        "dit_forward": dit,
        "decode": lambda: model.decode_pair(noise, None, message)[0],
    }
    times, runs = {}, {}
    for name in stages:
        times[name], runs[name] = _best(fns[name], reps, budget)
        if verbose:
            print(f"  {dtype_name:<9} {name:<13} {times[name]:.3f} s", file=sys.stderr, flush=True)
    params = sum(v.size for _, v in tree_flatten(model.parameters()))
    dit_params = sum(v.size for _, v in tree_flatten(model.transformer.parameters()))
    return {
        "dtype": dtype_name,
        "frames": frames,
        "params_millions": round(params / 1e6, 1),
        "dit_params_millions": round(dit_params / 1e6, 1),
        "seconds": times,
        "timed_runs": runs,
    }


def _no_blas_dit(preset_name: str, seconds: float, reps: int) -> float | None:
    env = dict(os.environ, STREAMSEP_NO_BLAS_PRELOAD="1")
    cmd = [
        sys.executable,
        __file__,
        "--preset",
        preset_name,
        "--seconds",
        str(seconds),
        "--reps",
        str(reps),
        "--dtypes",
        "float32",
        "--stages",
        "dit_forward",
        "--no-blas-compare",
        "off",
        "--out",
        "-",
        "--quiet",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"no-BLAS run failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    report = json.loads(proc.stdout)
    return report["runs"][0]["seconds"]["dit_forward"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=PRESETS)
    parser.add_argument("--seconds", type=float, default=10.0, help="window length (default 10)")
    parser.add_argument("--reps", type=int, default=2, help="timed runs per stage (best is kept)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help="seconds; a stage whose warm-up run takes longer is reported from that run alone",
    )
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--no-blas-compare", choices=("on", "off"), default="on")
    parser.add_argument("--out", help="write the JSON report here ('-' for stdout)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    dtypes = [d for d in args.dtypes.split(",") if d]
    for s in stages:
        if s not in STAGES:
            parser.error(f"unknown stage {s!r}; choose from {', '.join(STAGES)}")
    for d in dtypes:
        if d not in DTYPES:
            parser.error(f"unknown dtype {d!r}; choose from {', '.join(DTYPES)}")
    if args.seconds <= 0 or args.reps < 1:
        parser.error("--seconds must be > 0 and --reps ≥ 1")

    report = {
        "preset": args.preset,
        "window_seconds": args.seconds,
        "backend": runtime.backend_description(),
        "runs": [
            bench(args.preset, args.seconds, d, args.reps, stages, not args.quiet, args.budget)
            for d in dtypes
        ],
    }
    preloaded = (
        os.environ.get("STREAMSEP_NO_BLAS_PRELOAD") != "1"
        and "BLAS preloaded" in (report["backend"])
    )
    if args.no_blas_compare == "on" and "dit_forward" in stages and preloaded:
        with_blas = next(r for r in report["runs"] if r["dtype"] == "float32")
        without = _no_blas_dit(args.preset, args.seconds, 1)
        if without is not None and "float32" in dtypes:
            report["dit_forward_blas_preload"] = {
                "with_seconds": with_blas["seconds"]["dit_forward"],
                "without_seconds": without,
                "speedup": without / with_blas["seconds"]["dit_forward"],
            }

    if not args.quiet:
        _print_table(report)
    if args.out == "-":
        print(json.dumps(report, indent=2))
    elif args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _print_table(report: dict) -> None:
    print(
        f"SAM-Audio {report['preset']}, {report['window_seconds']:g} s window; {report['backend']}"
    )
    runs = report["runs"]
    if runs:
        print(f"params: {runs[0]['params_millions']} M (DiT {runs[0]['dit_params_millions']} M)")
    header = f"{'stage':<14}" + "".join(f"{r['dtype']:>12}" for r in runs)
    print(header)
    print("-" * len(header))
    for stage in runs[0]["seconds"] if runs else []:
        print(f"{stage:<14}" + "".join(f"{r['seconds'][stage]:>11.3f}s" for r in runs))
    blas = report.get("dit_forward_blas_preload")
    if blas:
        print(
            f"one DiT forward, float32: {blas['with_seconds']:.3f} s with the OpenBLAS preload, "
            f"{blas['without_seconds']:.3f} s without ({blas['speedup']:.1f}x)"
        )


if __name__ == "__main__":
    sys.exit(main())
