"""The engine fed from a file: as fast as possible, or paced at real time (``--realtime``).

Fast mode runs every window (nothing can be late), writes each result at its own input position,
and so is latency-compensated by construction. Real-time mode plays the file through the live
path — worker thread, playback ring, overload policy — on a simulated duplex device, and records
what a listener would hear, shifted back by the engine's latency. Both write exactly the input's
length at the input's sample rate.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from streamsep.audio.files import (
    AudioInfo,
    ResamplingWriter,
    SafeWriter,
    check_finite,
    check_writable,
    probe,
    read_blocks,
)
from streamsep.engine.engine import Engine, FileSink
from streamsep.engine.metrics import Metrics
from streamsep.engine.plan import WindowPlan

SIM_BLOCK = 512  # simulated device block (samples) in real-time mode


def _exact_blocks(blocks: Iterable[np.ndarray], n: int) -> Iterator[np.ndarray]:
    """Re-chunk to blocks of exactly n samples; the last is zero-padded; then zeros forever."""
    buf = np.zeros(0, np.float32)
    for b in blocks:
        buf = np.concatenate([buf, b])
        while len(buf) >= n:
            yield buf[:n]
            buf = buf[n:]
    if len(buf):
        yield np.concatenate([buf, np.zeros(n - len(buf), np.float32)])
    while True:
        yield np.zeros(n, np.float32)


def run_fast(engine: Engine, blocks: Iterable[np.ndarray], prompt: str | None) -> int:
    """Feed all blocks, run every window, flush the end. Returns the input length (samples)."""
    engine.begin(prompt)
    total = 0
    for b in blocks:
        engine.feed(b)
        total += len(b)
        while engine.worker.step():
            pass
    engine.worker.finish(total)
    while engine.worker.step():
        pass
    return total


def run_file(
    separator: Any,
    plan: WindowPlan,
    in_path: str,
    out_path: str,
    *,
    prompt: str,
    residual_path: str | None = None,
    seed: int = 0,
    realtime: bool = False,
    budget: int = 0,
    overload: str = "dry",
    metrics: Metrics | None = None,
    model_name: str = "",
    info: AudioInfo | None = None,
    player: Any = None,
) -> dict[str, Any]:
    """Separate ``in_path`` into ``out_path`` (target) and optionally ``residual_path``.

    ``player`` (an ``audio.player.DevicePlayer``, real-time mode only) also plays the target as
    a listener would hear it, and its device clock paces the run."""
    info = info or probe(in_path)
    check_finite(in_path, info)
    for p in (out_path, residual_path):
        if p is not None:
            check_writable(p)
    sr = separator.sample_rate
    writers: list[tuple[str, ResamplingWriter]] = []
    complete = False
    try:
        for which, path in (("target", out_path), ("residual", residual_path)):
            if path is not None:
                writers.append((which, ResamplingWriter(SafeWriter(path, info.sample_rate), sr,
                                                        info.frames)))
        blocks = read_blocks(in_path, sr, info=info)
        if not realtime:
            engine = Engine(separator, plan, seed=seed, budget=0, overload=overload,
                            metrics=metrics, skip_ahead=False, model_name=model_name)
            for which, w in writers:
                engine.add_sink(FileSink(w, which))
            run_fast(engine, blocks, prompt)
        else:
            engine = Engine(separator, plan, seed=seed, budget=budget, overload=overload,
                            metrics=metrics, skip_ahead=True, model_name=model_name)
            _run_paced(engine, blocks, writers, info, prompt, player)
        complete = True
        summary = engine.summary()
        if metrics is not None:
            metrics.end(summary)
        return summary
    finally:
        for _, w in writers:
            w.close(complete=complete)


def _expected_len(info: AudioInfo, sr: int) -> int:
    # soxr's streaming output has exactly round(frames * sr / rate) samples
    return int(round(info.frames * sr / info.sample_rate))


def _run_paced(engine: Engine, blocks: Iterable[np.ndarray],
               writers: list[tuple[str, ResamplingWriter]], info: AudioInfo,
               prompt: str, player: Any = None) -> int:
    sr = engine.sr
    n48 = _expected_len(info, sr)
    sinks = [(engine.add_playback(which), w) for which, w in writers]
    if not any(which == "target" for which, _ in writers):
        sinks.insert(0, (engine.add_playback("target"), None))
    out = np.zeros(SIM_BLOCK, np.float32)
    src = _exact_blocks(blocks, SIM_BLOCK)
    d = engine.latency_samples
    engine.start(prompt)
    finished = False
    try:
        t0 = time.perf_counter()
        k = 0
        while True:
            origin = engine.input.write_pos
            engine.feed(next(src))
            lo, hi = origin - d, origin - d + SIM_BLOCK  # output positions of this block
            a, b = max(lo, 0), min(hi, n48)
            for sink, w in sinks:
                sink.play(out, origin)
                if w is not None and b > a:
                    w.write(out[a - lo : b - lo])
                if player is not None and sink.which == "target" and b > a:
                    player.push(out[a - lo : b - lo])  # waits for the device: it sets the pace
            if hi >= n48:
                break
            if engine.error is not None:
                raise engine.error
            k += 1
            delay = t0 + k * SIM_BLOCK / sr - time.perf_counter()
            # Until the device runs, the wall clock paces (prefill must not outrun the worker).
            if (player is None or not player.started) and delay > 0:
                time.sleep(delay)
        finished = True
    finally:
        engine.stop()
        if player is not None:
            player.close(drain=finished)
    return n48


def bench(separator: Any, plan: WindowPlan, audio: np.ndarray, *, prompt: str, seed: int = 0,
          metrics: Metrics | None = None, model_name: str = "") -> dict[str, Any]:
    """Run every window of ``audio`` (at the separator's rate) and summarise compute figures."""
    engine = Engine(separator, plan, seed=seed, budget=0, metrics=metrics, skip_ahead=False,
                    model_name=model_name)
    block = plan.hop
    run_fast(engine, (audio[i : i + block] for i in range(0, len(audio), block)), prompt)
    c = np.asarray(engine.worker.compute_history)
    hop_s = plan.seconds(plan.hop)
    alg = plan.seconds(plan.algorithmic_latency)
    res: dict[str, Any] = {"windows": int(len(c)), "audio_s": len(audio) / plan.sample_rate}
    if len(c):
        p95 = float(np.percentile(c, 95))
        res.update({
            "compute_mean_s": float(c.mean()), "compute_p50_s": float(np.median(c)),
            "compute_p95_s": p95, "compute_max_s": float(c.max()),
            "rtf": float(c.mean()) / hop_s, "speed": hop_s / float(c.mean()) if c.mean() else None,
            "rtf_window": float(c.mean()) / plan.seconds(plan.window),
            "realtime_ok": bool(p95 < hop_s),
            "algorithmic_latency_s": alg,
            "budget_auto_s": plan.seconds(_auto_budget(plan, p95)),
            "expected_latency_s": alg + plan.seconds(_auto_budget(plan, p95)),
        })
    return res


def _auto_budget(plan: WindowPlan, compute_s: float) -> int:
    from streamsep.engine.engine import auto_budget

    return auto_budget(plan, compute_s)
