"""Per-stage timings of the SAM-Audio port with random weights (no checkpoint needed).

    python tools/bench_model.py [--preset small] [--seconds 10] [--out bench.json]
    python tools/bench_model.py --dit [--dtypes float32,bfloat16] [--out dit.json]

Stages on one window: codec encode, T5 on an 8-token prompt, one DiT forward (one vector-field
evaluation, the unit an ODE step costs once for euler, twice for midpoint) and the decode of target
and residual (the 2-item batch ``separate`` decodes). Each stage is warmed up once and timed as the
best of ``--reps`` runs, in float32 and bfloat16. The DiT forward is also timed in a subprocess with
``STREAMSEP_NO_BLAS_PRELOAD=1`` to show what the OpenBLAS preload buys on Linux.

``--dit`` reports the DiT against the machine instead: float32 GEMM throughput measured through
``mx.matmul`` at the DiT's own shapes and at 2048³, the analytic FLOPs of one vector-field
evaluation (every matmul and convolution, attention included), and each way of running it (MLX's
native kernels op by op, the CPU forms op by op, the compiled ODE step, the pipelined solve) in
ms, GFLOP/s and as a fraction of the GEMM figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamsep import runtime  # noqa: E402  (BLAS preload: before mlx.core is imported)

runtime.preload_blas()

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from streamsep.sam_audio import dit as dit_module  # noqa: E402
from streamsep.sam_audio.config import PRESETS, SAMAudioConfig, preset  # noqa: E402
from streamsep.sam_audio.model import SAMAudio  # noqa: E402
from streamsep.sam_audio.ode import CompiledSteps, step_times  # noqa: E402
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


# ---------------------------------------------------------------------------- DiT vs the machine
TEXT_TOKENS = 8


def dit_flops(config: SAMAudioConfig, frames: int, text_tokens: int = TEXT_TOKENS) -> dict:
    """FLOPs (2 per multiply-add) of one vector-field evaluation for one item, by part: the input
    projection, the x-embedder's two k=3 convolutions, the DiT layers' projections, FFN and
    attention (q kᵀ and p v), the output head, and the small time/text paths."""
    c = config.transformer
    T, L, D, F = frames, text_tokens, c.dim, c.ffn_hidden_dim
    parts = {
        "input_proj": 2 * T * config.in_channels * D,
        "x_embedder": 2 * (2 * T * 3 * D * D),
        "projections": c.n_layers * (4 * 2 * T * D * D + 2 * 2 * T * D * D + 2 * 2 * L * D * D),
        "ffn": c.n_layers * 3 * 2 * T * D * F,
        "attention": c.n_layers * (2 * 2 * T * T * D + 2 * 2 * T * L * D),
        "output": 2 * T * D * c.out_channels,
        "time_and_text": 2 * c.frequency_embedding_dim * D * 2
        + 2 * D * D
        + 2 * D * 6 * D
        + 2 * L * config.text_encoder.dim * D
        + 3 * 2 * L * c.context_dim * D,
    }
    parts["total"] = sum(parts.values())
    return parts


def _seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Gemm:
    """float32 ``mx.matmul`` (activations @ weightᵀ, as nn.Linear) at the DiT's shapes and at
    2048³; ``dit_mix`` is their FLOP-weighted mix as in one evaluation (6 T×D×D, 2 T×D×F and
    one T×F×D per layer), the figure the DiT's matmuls could reach at best."""

    def __init__(self, config: SAMAudioConfig, frames: int):
        c = config.transformer
        T, D, F = frames, c.dim, c.ffn_hidden_dim
        # name: (M, K, N, count per layer)
        self.shapes = {
            "TxDxD": (T, D, D, 6),
            "TxDxF": (T, D, F, 2),
            "TxFxD": (T, F, D, 1),
            "2048^3": (2048, 2048, 2048, 0),
        }
        rng = np.random.default_rng(0)
        self.arrays = {}
        for name, (m, k, n, _) in self.shapes.items():
            a = mx.array(rng.standard_normal((m, k)).astype(np.float32))
            w = mx.array(rng.standard_normal((n, k)).astype(np.float32))
            mx.eval(a, w, a @ w.T)
            self.arrays[name] = (a, w)
        self.best = dict.fromkeys(self.shapes, math.inf)

    def probe(self) -> None:
        """Time each shape once more, keeping the best."""
        for name, (a, w) in self.arrays.items():
            self.best[name] = min(self.best[name], _seconds(lambda a=a, w=w: mx.eval(a @ w.T)))

    def gflops(self) -> dict[str, float]:
        out = {}
        mix_flops = mix_seconds = 0.0
        for name, (m, k, n, count) in self.shapes.items():
            flops = 2.0 * m * k * n
            out[name] = round(flops / self.best[name] / 1e9, 1)
            mix_flops += count * flops
            mix_seconds += count * self.best[name]
        out["dit_mix"] = round(mix_flops / mix_seconds / 1e9, 1)
        # The larger of the two, so the fraction below is the conservative one.
        out["reference"] = max(out["dit_mix"], out["2048^3"])
        return out


def dit_variants(model: SAMAudio, frames: int) -> list[tuple[str, str, Callable[[], Any], int]]:
    """(name, DiT compute path, run once, vector-field evaluations per run) for each way of
    running one evaluation of ``model`` on a ``frames``-long window."""
    rng = np.random.default_rng(0)
    text_dim = model.text_encoder.config.d_model
    hidden = mx.array(rng.standard_normal((1, TEXT_TOKENS, text_dim)).astype(np.float32))
    half = rng.standard_normal((1, frames, model.noise_channels // 2)).astype(np.float32)
    feats = mx.array(np.concatenate([half, half], axis=-1))
    cond = model.conditioning(feats, (hidden, mx.ones((1, TEXT_TOKENS), dtype=mx.bool_)))
    noise = mx.array(rng.standard_normal((1, frames, model.noise_channels)).astype(np.float32))
    args = cond.tensors
    mx.eval(noise, *args)

    def field(t: mx.array, y: mx.array, *a: mx.array) -> mx.array:
        return model.velocity(y, a[0], a[1], a[2], t, a[3], a[4], a[5])

    def velocity() -> None:
        mx.eval(field(mx.array(0.5), noise, *args))

    compiled = CompiledSteps(field, inputs=model.state)
    times = mx.array(step_times(0.25)[1])

    def compiled_step() -> None:
        mx.eval(compiled("euler", key=dit_module.cpu_forms())(noise, times, *args))

    steps = 4

    def solve() -> None:
        mx.eval(model.solve(cond, noise, "euler", 1 / steps))

    if mx.default_device().type != mx.DeviceType.cpu:
        return [
            ("native_eager", "native", velocity, 1),
            ("native_compiled_step", "native", compiled_step, 1),
            (f"solve_euler_{steps}_steps", "auto", solve, steps),
        ]
    return [
        # MLX's kernels op by op: the code before the CPU forms.
        ("native_eager", "native", velocity, 1),
        ("cpu_forms_eager", "cpu", velocity, 1),
        ("cpu_forms_compiled_step", "cpu", compiled_step, 1),
        # What separate/the engine run: compiled steps, one in flight behind the next.
        (f"solve_euler_{steps}_steps", "auto", solve, steps),
    ]


def dit_main(args: argparse.Namespace, dtypes: list[str]) -> dict:
    """Rounds that alternate the GEMM probe with every variant, keeping the best of each: on a
    shared machine both see the same quiet moments, so their ratio stays meaningful."""
    config = preset(args.preset)
    frames = max(1, round(args.seconds * config.sample_rate / config.hop_length))
    flops = dit_flops(config, frames)
    gemm = Gemm(config, frames)
    verbose = not args.quiet
    runs = []
    saved = dit_module.COMPUTE_PATH
    try:
        for dtype_name in dtypes:
            model = build(args.preset, DTYPES[dtype_name])
            variants = dit_variants(model, frames)
            if DTYPES[dtype_name] != mx.float32:
                # The CPU forms are float32-only (in bfloat16 they are the native path), and a
                # whole solve adds nothing the single evaluations do not show.
                variants = [v for v in variants if "eager" in v[0] or "compiled" in v[0]]
                variants = [v for v in variants if not v[0].startswith("cpu_forms")]
            best = {}
            for round_ in range(args.reps + 1):  # round 0 warms up (traces, JIT kernels)
                gemm.probe()
                for name, path, fn, evaluations in variants:
                    if name in best and best[name] * evaluations > args.budget:
                        continue  # a run this slow is dominated by compute already
                    dit_module.COMPUTE_PATH = path
                    took = _seconds(fn) / evaluations
                    if round_ > 0 or took * evaluations > args.budget:
                        best[name] = min(best.get(name, math.inf), took)
                    if verbose:
                        print(
                            f"  round {round_} {dtype_name:<9} {name:<26} {took * 1e3:8.1f} ms",
                            file=sys.stderr,
                            flush=True,
                        )
            runs.append(
                {
                    "dtype": dtype_name,
                    "frames": frames,
                    "flops": flops,
                    "variants": {
                        name: {
                            "ms_per_evaluation": round(t * 1e3, 1),
                            "gflops": round(flops["total"] / t / 1e9, 1),
                        }
                        for name, t in best.items()
                    },
                }
            )
    finally:
        dit_module.COMPUTE_PATH = saved
    gflops = gemm.gflops()
    for run in runs:
        for v in run["variants"].values():
            v["fraction_of_sgemm"] = round(v["gflops"] / gflops["reference"], 3)
    return {
        "preset": args.preset,
        "window_seconds": args.seconds,
        "backend": runtime.backend_description(),
        "load_average": _load(),
        "rounds": args.reps,
        "sgemm_gflops": gflops,
        "dit_runs": runs,
    }


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _print_dit_table(report: dict) -> None:
    gemm = report["sgemm_gflops"]
    print(
        f"SAM-Audio {report['preset']} DiT, {report['window_seconds']:g} s window "
        f"({report['dit_runs'][0]['frames']} frames); {report['backend']}; "
        f"load {report['load_average']}"
    )
    print(
        "float32 GEMM GFLOP/s: "
        + ", ".join(f"{k} {v:g}" for k, v in gemm.items() if k != "reference")
        + f"; reference {gemm['reference']:g}"
    )
    for run in report["dit_runs"]:
        print(f"{run['dtype']}: {run['flops']['total'] / 1e9:.1f} GFLOP per evaluation")
        print(f"  {'variant':<28}{'ms/eval':>10}{'GFLOP/s':>10}{'of sgemm':>10}")
        for name, v in run["variants"].items():
            print(
                f"  {name:<28}{v['ms_per_evaluation']:>10.1f}{v['gflops']:>10.1f}"
                f"{100 * v['fraction_of_sgemm']:>9.1f}%"
            )


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
    parser.add_argument(
        "--dit", action="store_true", help="DiT throughput against measured sgemm (see above)"
    )
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
    if args.dit:
        report = dit_main(args, dtypes)
        if not args.quiet:
            _print_dit_table(report)
        _write(report, args.out)
        return 0

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
    _write(report, args.out)
    return 0


def _write(report: dict, out: str | None) -> None:
    if out == "-":
        print(json.dumps(report, indent=2))
    elif out:
        Path(out).write_text(json.dumps(report, indent=2) + "\n")


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
