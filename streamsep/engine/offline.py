"""The engine fed from a file: as fast as possible, or paced at real time (``--realtime``).

The files always hold the separation of every window, written at its own input position, so
they are latency-compensated by construction and the same in both modes: the worker never skips
a window for them. Real-time mode also plays the file through the live path — worker thread,
playback ring, overload policy — on a simulated duplex device (or a real one with ``--play``);
only what is played gets the overload policy when the separator is late. Outputs have exactly
the input's length at its sample rate; an input that ends before its header says gives outputs
that end where it does (``read_blocks`` warns).

SIGINT, SIGTERM and SIGHUP (when not ignored) stop the run between windows: the files are
finalized with everything separated so far and the summary says which signal came.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from streamsep.audio.files import (
    AudioFileError,
    AudioInfo,
    ReadStats,
    ResamplingWriter,
    SafeWriter,
    check_finite,
    check_space,
    check_writable,
    probe,
    read_blocks,
)
from streamsep.engine.engine import Engine, FileSink
from streamsep.engine.metrics import Metrics
from streamsep.engine.plan import WindowPlan
from streamsep.engine.signals import signal_summary, stop_on_signals

SIM_BLOCK = 512  # simulated device block (samples) in real-time mode


def _rechunk(blocks: Iterable[np.ndarray], n: int) -> Iterator[np.ndarray]:
    """Re-chunk to blocks of exactly n samples; the last one may be shorter."""
    buf = np.zeros(0, np.float32)
    for b in blocks:
        buf = np.concatenate([buf, b])
        while len(buf) >= n:
            yield buf[:n]
            buf = buf[n:]
    if len(buf):
        yield buf


def run_fast(engine: Engine, blocks: Iterable[np.ndarray], prompt: str | None, *,
             stop: threading.Event | None = None,
             on_end: Callable[[int], None] | None = None) -> int:
    """Feed all blocks, run every window, flush the end. Returns the input length (samples).

    ``stop``, once set, ends the run at the next window, leaving the end unflushed (and then
    the length returned is what was fed); ``on_end`` gets the length when the input ends."""
    engine.begin(prompt)
    total = 0

    def stopped() -> bool:
        return stop is not None and stop.is_set()

    for b in blocks:
        if stopped():
            return total
        engine.feed(b)
        total += len(b)
        while not stopped() and engine.worker.step():
            pass
    if stopped():
        return total
    if on_end is not None:
        on_end(total)
    engine.worker.finish(total)
    while not stopped() and engine.worker.step():
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
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Separate ``in_path`` into ``out_path`` (target) and optionally ``residual_path``.

    ``player`` (an ``engine.sinks.DevicePlayer``, real-time mode only) also plays the target as
    a listener would hear it, and its device clock paces the run. ``stop`` (or a signal, see
    ``stop_on_signals``) ends the run early with the files finalized.

    The summary adds ``input_frames`` (decoded, at the input's rate), ``declared_frames``,
    ``written`` (frames per output path) and, after a signal, ``signal`` and ``exit_code``."""
    info = info or probe(in_path)
    check_finite(in_path, info)
    outputs = [(w, p) for w, p in (("target", out_path), ("residual", residual_path))
               if p is not None]
    for _, p in outputs:
        check_writable(p)
    declared = info.declared_frames or info.frames
    check_space([(p, declared) for _, p in outputs])
    stop = stop if stop is not None else threading.Event()
    with stop_on_signals(stop) as caught:
        summary = _run(separator, plan, in_path, outputs, info, declared, prompt=prompt,
                       seed=seed, realtime=realtime, budget=budget, overload=overload,
                       metrics=metrics, model_name=model_name, player=player, stop=stop)
    summary.update(signal_summary(caught))
    if metrics is not None:
        metrics.end(summary)
    return summary


def _run(separator: Any, plan: WindowPlan, in_path: str, outputs: list[tuple[str, str]],
         info: AudioInfo, declared: int, *, prompt: str, seed: int, realtime: bool, budget: int,
         overload: str, metrics: Metrics | None, model_name: str, player: Any,
         stop: threading.Event) -> dict[str, Any]:
    sr = separator.sample_rate
    writers: list[tuple[str, ResamplingWriter]] = []
    sinks: list[FileSink] = []
    stats = ReadStats.for_file(info)

    def on_end(total: int) -> None:
        # The input's real length is known only now (it may end before its header says).
        for s in sinks:
            s.end = total
        for _, w in writers:
            w.frames = stats.decoded

    failed = False
    try:
        for which, path in outputs:
            w = ResamplingWriter(SafeWriter(path, info.sample_rate, frames=declared), sr, None)
            writers.append((which, w))
            sinks.append(FileSink(w, which))
        blocks = read_blocks(in_path, sr, info=info, stats=stats)
        # Every window is separated for the files (no skip_ahead); in real-time mode only what
        # is played gets the overload policy, filled in by the playback ring.
        engine = Engine(separator, plan, seed=seed, budget=budget if realtime else 0,
                        overload=overload, metrics=metrics, skip_ahead=False,
                        model_name=model_name)
        for s in sinks:
            engine.add_sink(s)
        if realtime:
            _run_paced(engine, blocks, prompt, player, stop, on_end)
        else:
            run_fast(engine, blocks, prompt, stop=stop, on_end=on_end)
    except BaseException:
        failed = True
        raise
    finally:
        first: AudioFileError | None = None
        for _, w in writers:
            try:
                w.close(complete=not failed and not stop.is_set())
            except AudioFileError as e:  # a full disk found by the last flush
                first = first or e
        if first is not None and not failed:
            raise first
    summary = engine.summary()
    summary["input_frames"] = stats.decoded
    summary["declared_frames"] = declared
    summary["written"] = {w.writer.path: w.writer.kept for _, w in writers}
    return summary


def _run_paced(engine: Engine, blocks: Iterable[np.ndarray], prompt: str, player: Any,
               stop: threading.Event, on_end: Callable[[int], None]) -> int:
    """Feed the input at the pace of a (simulated or real) device; returns the input length."""
    sr, plan = engine.sr, engine.plan
    play = engine.add_playback("target")
    out = np.zeros(SIM_BLOCK, np.float32)
    zeros = np.zeros(SIM_BLOCK, np.float32)
    src = _rechunk(blocks, SIM_BLOCK)
    d = engine.latency_samples
    # The worker may fall behind (it skips nothing): the input keeps flowing at the device's
    # pace, as live, and playback gets the overload policy, for as long as the input ring still
    # holds the oldest window the worker has not read (about two minutes); past that the
    # simulated device waits for it, so that the files never lose audio.
    max_lag = max(plan.hop, engine.input.capacity - plan.window - 2 * plan.hop)
    fed = 0
    total: int | None = None
    engine.start(prompt)
    finished = False
    try:
        t0 = time.perf_counter()
        k = 0
        while not stop.is_set():
            if engine.error is not None:
                raise engine.error
            if fed - engine.worker.next_end > max_lag:
                waited = time.perf_counter()
                while (fed - engine.worker.next_end > max_lag and not stop.is_set()
                       and engine.error is None):
                    time.sleep(0.002)
                t0 += time.perf_counter() - waited  # the pacing clock waited too
                continue
            x = zeros
            if total is None:
                x = next(src, None)
                if x is None or len(x) < SIM_BLOCK:
                    total = fed + (0 if x is None else len(x))
                    on_end(total)
                    x = zeros if x is None else np.concatenate([x, zeros[len(x):]])
            origin = fed
            engine.feed(x)
            fed += SIM_BLOCK
            play.play(out, origin)
            lo, hi = origin - d, origin - d + SIM_BLOCK  # output positions of this block
            a, b = max(lo, 0), hi if total is None else min(hi, total)
            if player is not None and b > a:
                player.push(out[a - lo : b - lo])  # waits for the device: it sets the pace
            if total is not None and hi >= total:
                finished = True
                break
            k += 1
            delay = t0 + k * SIM_BLOCK / sr - time.perf_counter()
            # Until the device runs, the wall clock paces (prefill must not outrun the worker).
            if (player is None or not player.started) and delay > 0:
                time.sleep(delay)
        engine.stop()
        if engine.error is not None:
            raise engine.error
        if player is not None:
            p, player = player, None
            p.close(drain=finished)
        if finished:
            # Playback is over; the windows the worker had not reached yet still go to the files.
            engine.worker.finish(total)
            while not stop.is_set() and engine.worker.step():
                pass
    finally:
        engine.stop()
        if player is not None:
            player.close(drain=False)
    return fed if total is None else total


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
