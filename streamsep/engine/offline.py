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

Channels (``channels``): the model is mono, and sees what it was trained on, a mono mixture.
"keep" separates every channel of a stereo or multichannel file on its own, one engine per
channel stepped in lockstep on this thread, and writes the outputs with the input's channels;
"midside" separates (L+R)/2 and (L-R)/2 of a stereo file instead and turns the results back into
L and R (better only where the target sits in the centre and the rest is wide: see
``ChannelLayout``); "mono" downmixes first. Real-time mode is mono: it is the one live path.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from streamsep.audio.files import (
    AudioFileError,
    AudioInfo,
    OutputSpec,
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
from streamsep.separators.base import RegionSeparator

SIM_BLOCK = 512  # simulated device block (samples) in real-time mode
CHANNEL_MODES = ("keep", "mono", "midside")


class ChannelLayout:
    """How a file's channels become the mono streams ("lanes") the model separates, and back.

    Per channel is the default because it is never much worse and mostly better: on stereo
    mixtures built from the demo's sources (tools/measure_channels.py, embedded model, 8 s)
    it scored 6.85 dB SI-SDR for speech against mid/side's 6.88 and 4.80 dB for music against
    4.61. Mid/side won only with the target in the centre and the rest wide (+1.0 dB speech,
    +0.6 dB music) and lost with panned sources (-0.4 to -1.0 dB): the side signal is a
    difference of two mixtures, not a mixture the model has seen. It also exists only for
    stereo, while per channel takes any channel count."""

    def __init__(self, mode: str, channels: int):
        if mode not in CHANNEL_MODES:
            raise ValueError(f"channels must be one of {', '.join(CHANNEL_MODES)} (got {mode!r})")
        self.in_channels = int(channels)
        if mode == "mono" or channels == 1:
            mode, self.lanes, self.out_channels = "mono", 1, 1
        elif mode == "midside" and channels != 2:
            mode = "keep"  # mid/side is a stereo notion; more channels go one by one
        if mode != "mono":
            self.lanes = self.out_channels = self.in_channels
        self.mode = mode

    @property
    def reads_channels(self) -> bool:
        """Whether the reader must keep the channels (mono reads the downmix as always)."""
        return self.lanes > 1

    def split(self, x: np.ndarray) -> list[np.ndarray]:
        """(frames, channels) input at the model's rate -> one contiguous array per lane."""
        if self.mode == "midside":
            left, right = x[:, 0], x[:, 1]
            return [np.ascontiguousarray(0.5 * (left + right), np.float32),
                    np.ascontiguousarray(0.5 * (left - right), np.float32)]
        return [np.ascontiguousarray(x[:, i]) for i in range(self.lanes)]

    def join(self, lanes: np.ndarray) -> np.ndarray:
        """(frames, lanes) separated -> (frames, output channels)."""
        if self.mode == "midside":
            mid, side = lanes[:, 0], lanes[:, 1]
            return np.stack([mid + side, mid - side], axis=1)
        return lanes


class _Joiner:
    """Collects each lane's output (in position order, as the engines emit it) and writes the
    stretch all lanes have, joined into channels, to one writer; lanes run in lockstep, so at
    most about a hop per lane waits here."""

    def __init__(self, layout: ChannelLayout, writer: Any):
        self.layout = layout
        self.writer = writer
        self.bufs: list[deque[np.ndarray]] = [deque() for _ in range(layout.lanes)]
        self.have = [0] * layout.lanes

    def lane(self, i: int) -> _LaneWriter:
        return _LaneWriter(self, i)

    def put(self, i: int, x: np.ndarray) -> None:
        if len(x):
            self.bufs[i].append(np.array(x, np.float32))
            self.have[i] += len(x)
            self._flush()

    def _take(self, i: int, n: int) -> np.ndarray:
        parts, got, buf = [], 0, self.bufs[i]
        while got < n:
            b = buf.popleft()
            if got + len(b) > n:
                buf.appendleft(b[n - got :])
                b = b[: n - got]
            parts.append(b)
            got += len(b)
        self.have[i] -= n
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _flush(self) -> None:
        n = min(self.have)
        if n:
            lanes = np.stack([self._take(i, n) for i in range(self.layout.lanes)], axis=1)
            self.writer.write(self.layout.join(lanes))


class _LaneWriter:
    def __init__(self, joiner: _Joiner, i: int):
        self.joiner, self.i = joiner, i

    def write(self, x: np.ndarray) -> None:
        self.joiner.put(self.i, x)


class _ProgressSink:
    """Reports how far the output has got (seconds of input), window by window."""

    def __init__(self, report: Callable[[float], None], sample_rate: int):
        self.report, self.sr = report, sample_rate

    def write(self, pos: int, target: np.ndarray, residual: np.ndarray) -> None:
        self.report((pos + len(target)) / self.sr)


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


def run_lanes(engines: Sequence[Engine], blocks: Iterable[list[np.ndarray]],
              prompt: str | None, *, stop: threading.Event | None = None,
              on_end: Callable[[int], None] | None = None) -> int:
    """``run_fast`` for several engines fed in lockstep (one per channel), on this thread: each
    block holds one array per engine, and every engine runs the windows it can before the
    next block is read, so that no lane gets ahead of the others by more than a block."""
    for e in engines:
        e.begin(prompt)
    total = 0

    def stopped() -> bool:
        return stop is not None and stop.is_set()

    def step_all() -> None:
        busy = True
        while busy and not stopped():
            busy = False
            for e in engines:
                if stopped():
                    return
                busy = e.worker.step() or busy

    for parts in blocks:
        if stopped():
            return total
        for e, x in zip(engines, parts, strict=True):
            e.feed(x)
        total += len(parts[0])
        step_all()
    if stopped():
        return total
    if on_end is not None:
        on_end(total)
    for e in engines:
        e.worker.finish(total)
    step_all()
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
    channels: str = "keep",
    subtype: str | None = None,
    progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Separate ``in_path`` into ``out_path`` (target) and optionally ``residual_path``.

    ``player`` (an ``engine.sinks.DevicePlayer``, real-time mode only) also plays the target as
    a listener would hear it, and its device clock paces the run. ``stop`` (or a signal, see
    ``stop_on_signals``) ends the run early with the files finalized.

    ``channels`` is "keep", "midside" or "mono" (module docstring); with more than one channel
    to separate, ``separator`` is shared by the channels' engines, or a list of one separator
    per channel: a ``RegionSeparator`` keeps per-stream caches, so it needs its own per channel.
    Real-time mode separates the mono downmix. ``subtype`` is the outputs' (default: the
    input's, where the format allows; see ``output_format``). ``progress`` gets the seconds of
    input separated so far, after every window.

    The summary adds ``input_frames`` (decoded, at the input's rate), ``declared_frames``,
    ``written`` (frames per output path), ``channels`` (the outputs') and, after a signal,
    ``signal`` and ``exit_code``."""
    info = info or probe(in_path)
    check_finite(in_path, info)
    if realtime and channels != "mono" and info.channels > 1:
        raise ValueError("real-time mode separates one channel: give channels='mono'")
    layout = ChannelLayout(channels, info.channels)
    seps = list(separator) if isinstance(separator, (list, tuple)) else [separator]
    if len(seps) == 1 and layout.lanes > 1:
        if isinstance(seps[0], RegionSeparator):
            raise ValueError(f"{type(seps[0]).__name__} keeps per-stream caches: give one "
                             f"separator per channel ({layout.lanes}), or channels='mono'")
        seps = seps * layout.lanes
    if len(seps) < layout.lanes:
        raise ValueError(f"{layout.lanes} channels to separate but {len(seps)} separators")
    outputs = [(w, p) for w, p in (("target", out_path), ("residual", residual_path))
               if p is not None]
    for _, p in outputs:
        check_writable(p, subtype=subtype)
    declared = info.declared_frames or info.frames
    check_space([OutputSpec(p, declared, layout.out_channels, subtype, info.subtype)
                 for _, p in outputs])
    stop = stop if stop is not None else threading.Event()
    with stop_on_signals(stop) as caught:
        summary = _run(seps[: layout.lanes], plan, in_path, outputs, info, declared,
                       prompt=prompt, seed=seed, realtime=realtime, budget=budget,
                       overload=overload, metrics=metrics, model_name=model_name,
                       player=player, stop=stop, layout=layout, subtype=subtype,
                       progress=progress)
    summary.update(signal_summary(caught))
    if metrics is not None:
        metrics.end(summary)
    return summary


def _run(separators: list[Any], plan: WindowPlan, in_path: str,
         outputs: list[tuple[str, str]], info: AudioInfo, declared: int, *, prompt: str,
         seed: int, realtime: bool, budget: int, overload: str, metrics: Metrics | None,
         model_name: str, player: Any, stop: threading.Event, layout: ChannelLayout,
         subtype: str | None, progress: Callable[[float], None] | None) -> dict[str, Any]:
    sr = separators[0].sample_rate
    writers: list[tuple[str, ResamplingWriter]] = []
    sinks: list[FileSink] = []
    stats = ReadStats.for_file(info)
    engines: list[Engine] = []

    def on_end(total: int) -> None:
        # The input's real length is known only now (it may end before its header says).
        for s in sinks:
            s.end = total
        for _, w in writers:
            w.frames = stats.decoded

    failed = False
    try:
        lane_sinks: list[list[FileSink]] = [[] for _ in range(layout.lanes)]
        for which, path in outputs:
            w = ResamplingWriter(SafeWriter(path, info.sample_rate, frames=declared,
                                            channels=layout.out_channels, subtype=subtype,
                                            like=info.subtype), sr, None)
            writers.append((which, w))
            if layout.lanes == 1:
                lane_sinks[0].append(FileSink(w, which))
            else:
                joiner = _Joiner(layout, w)
                for i in range(layout.lanes):
                    lane_sinks[i].append(FileSink(joiner.lane(i), which))
        sinks.extend(s for lane in lane_sinks for s in lane)
        blocks = read_blocks(in_path, sr, info=info, stats=stats,
                             keep_channels=layout.reads_channels)
        # Every window is separated for the files (no skip_ahead); in real-time mode only what
        # is played gets the overload policy, filled in by the playback ring. The metrics (and
        # the status line) follow the first channel: the others run the same windows.
        for i in range(layout.lanes):
            e = Engine(separators[i], plan, seed=seed, budget=budget if realtime else 0,
                       overload=overload, metrics=metrics if i == 0 else None,
                       skip_ahead=False, model_name=model_name)
            for s in lane_sinks[i]:
                e.add_sink(s)
            engines.append(e)
        engine = engines[0]
        if progress is not None:
            engine.add_sink(_ProgressSink(progress, sr))
        if realtime:
            _run_paced(engine, blocks, prompt, player, stop, on_end)
        elif layout.lanes == 1:
            run_fast(engine, blocks, prompt, stop=stop, on_end=on_end)
        else:
            run_lanes(engines, (layout.split(b) for b in blocks), prompt, stop=stop,
                      on_end=on_end)
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
    summary["channels"] = layout.out_channels
    summary["channel_mode"] = layout.mode
    if len(engines) > 1:
        # the first channel's figures above; what all of them cost together here
        lanes = [e.summary() for e in engines]
        summary["lane_windows"] = sum(x["windows"] for x in lanes)
        summary["lane_compute_mean_s"] = [x["compute_mean_s"] for x in lanes]
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
