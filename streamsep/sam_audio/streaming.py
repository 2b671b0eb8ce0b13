"""SAM-Audio's chunked API, ``separate_streaming`` and ``separate_long``, on the live engine's path.

Both drive the engine's worker over the recording (``Engine(..., skip_ahead=False)``, stepped by
hand as ``engine.offline.run_fast`` does): every window starts from position-seeded noise, goes
through ``SAMSeparator`` (and so through its incremental codec, when it has one) and is blended
into the previous one by the engine's crossfade. The project has one overlap-add, and with the
same plan and seed a recording separated here, by ``streamsep file`` or live gives the same
windows.

mlx-audio's knobs map onto a window plan that runs mlx-audio's own chunks (``chunk_plan``):
window = chunk_seconds and a window every chunk − overlap seconds, both in whole latent frames;
the overlap is the crossfade, up to one hop (the engine's limit), and any overlap beyond that is
lookahead. The window therefore ends at hop + lookahead + crossfade = chunk: the first window is
[0, chunk), unpadded, exactly mlx-audio's first chunk, and window k is its chunk k. An explicit
``WindowPlan`` (the engine's window / hop / lookahead / crossfade) may be passed instead.

An input that ends within the first window (at most ``plan.first_end`` samples: chunk_seconds
with mlx-audio's knobs) is separated in one plain ``separate`` call on exactly its frames, as
mlx-audio and the old chunk loop did, so a short clip gives what ``separate`` gives.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from streamsep.engine.engine import Engine
from streamsep.engine.noise import position_noise
from streamsep.engine.plan import WindowPlan
from streamsep.sam_audio.model import (
    SAMAudio,
    SeparationResult,
    _peak_memory_gb,
    anchor_tensors,
    wired_limit,
)
from streamsep.sam_audio.ode import parse_ode_opt
from streamsep.sam_audio.processor import ANCHOR_IDS, _check_anchor
from streamsep.separators.base import RegionSeparator
from streamsep.separators.sam import SAMSeparator

Span = tuple[str, float, float]
#: An anchor painted on absolute latent frames [lo, hi) of the recording; later runs win, as in
#: the processor, where a later span re-points the frames it covers.
Run = tuple[str, int, int]
#: mlx-audio's defaults; ``plan=`` may only be combined with these.
CHUNK_S, OVERLAP_S = 10.0, 3.0
_TOKENS = {ANCHOR_IDS["+"]: "+", ANCHOR_IDS["-"]: "-"}


def chunk_plan(
    sample_rate: int, frame_hop: int, chunk_seconds: float, overlap_seconds: float
) -> WindowPlan:
    """The engine plan that runs mlx-audio's ``(chunk_seconds, overlap_seconds)`` chunks."""
    for name, v in (("chunk_seconds", chunk_seconds), ("overlap_seconds", overlap_seconds)):
        if not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number of seconds; got {v!r}")
    chunk = max(1, round(chunk_seconds * sample_rate / frame_hop))
    overlap = round(overlap_seconds * sample_rate / frame_hop)
    if chunk_seconds <= 0 or overlap_seconds < 0 or overlap >= chunk:
        raise ValueError(
            f"need chunk_seconds > 0 and 0 ≤ overlap_seconds < chunk_seconds (in whole "
            f"{1000 * frame_hop / sample_rate:g} ms frames); got chunk_seconds={chunk_seconds}, "
            f"overlap_seconds={overlap_seconds}"
        )
    hop = chunk - overlap
    crossfade = min(overlap, hop)
    plan = WindowPlan(sample_rate, frame_hop, chunk, hop, overlap - crossfade, crossfade)
    plan.validate()
    return plan


def resolve_plan(
    model: SAMAudio, chunk_seconds: float, overlap_seconds: float, plan: WindowPlan | None
) -> WindowPlan:
    if plan is None:
        return chunk_plan(model.sample_rate, model.hop_length, chunk_seconds, overlap_seconds)
    if (chunk_seconds, overlap_seconds) != (CHUNK_S, OVERLAP_S):
        raise ValueError("pass either plan= or chunk_seconds / overlap_seconds, not both")
    if (plan.sample_rate, plan.frame_hop) != (model.sample_rate, model.hop_length):
        raise ValueError(
            f"plan is for {plan.sample_rate} Hz and {plan.frame_hop}-sample frames; the model "
            f"runs at {model.sample_rate} Hz with {model.hop_length}-sample frames"
        )
    plan.validate()
    return plan


# ---------------------------------------------------------------------- anchors
def anchor_runs(
    anchors: Sequence[Any] | None,
    anchor_ids: Any,
    anchor_alignment: Any,
    sample_rate: int,
    frame_hop: int,
) -> list[Run]:
    """The recording's anchors as frame runs, from spans in seconds or the processor's tensors."""
    if anchors is not None and (anchor_ids is not None or anchor_alignment is not None):
        raise ValueError("pass anchors or anchor_ids / anchor_alignment, not both")
    if (anchor_ids is None) != (anchor_alignment is None):
        raise ValueError("pass anchor_ids and anchor_alignment together (both from the processor)")
    runs: list[Run] = []
    if anchors is not None:
        spans = list(anchors)
        if len(spans) == 1 and isinstance(spans[0], list | tuple) and not isinstance(
            spans[0][0] if spans[0] else None, str
        ):
            spans = list(spans[0])  # the processor's per-item nesting, [[...]], for B = 1
        for j, span in enumerate(spans):
            token, start, end = _check_anchor(span, 0, j)
            # The processor's own rounding: frames [ceil(start·sr/hop), ceil(end·sr/hop)).
            lo = math.ceil(start * sample_rate / frame_hop)
            hi = math.ceil(end * sample_rate / frame_hop)
            if lo < hi:
                runs.append((token, lo, hi))
        return runs
    if anchor_ids is None:
        return runs
    ids = np.array(anchor_ids).astype(np.int64)
    align = np.array(anchor_alignment).astype(np.int64)
    if ids.ndim != 2 or align.ndim != 2 or ids.shape[0] != 1 or align.shape[0] != 1:
        raise ValueError(
            f"anchor_ids must be (1, K) and anchor_alignment (1, T) for one recording; got "
            f"{ids.shape} and {align.shape}"
        )
    tokens = ids[0][align[0]]  # what the model embeds per frame
    return [(_TOKENS[t], lo, hi) for t, lo, hi in _token_runs(tokens) if t in _TOKENS]


def _token_runs(tokens: np.ndarray) -> list[tuple[int, int, int]]:
    """(token, lo, hi) for each run of equal values."""
    if not len(tokens):
        return []
    edges = [0, *(np.flatnonzero(np.diff(tokens)) + 1).tolist(), len(tokens)]
    return [(int(tokens[a]), a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def window_spans(runs: Sequence[Run], first_frame: int, frames: int, frame_s: float) -> list[Span]:
    """The runs that fall in frames [first_frame, first_frame + frames), as spans in seconds
    relative to the window start (what ``Separator.separate`` takes).

    Each boundary sits half a frame before its frame, so that the processor's ceil(t·sr/hop)
    lands back on exactly that frame whatever the float rounding."""
    tokens = np.zeros(frames, np.int64)
    for token, lo, hi in runs:
        a, b = max(lo - first_frame, 0), min(hi - first_frame, frames)
        if a < b:
            tokens[a:b] = ANCHOR_IDS[token]
    return [
        (_TOKENS[t], 0.0 if a == 0 else (a - 0.5) * frame_s, (b - 0.5) * frame_s)
        for t, a, b in _token_runs(tokens)
        if t in _TOKENS
    ]


# ---------------------------------------------------------------------- the engine's separator
class _Window:
    """The separator as this call's engine sees it: anchors cut per window, faults kept.

    The worker turns a separator that raises into the overload policy's dry output, which is
    right live and wrong here: the first fault is kept and re-raised by the driving loop."""

    def __init__(self, inner: Any, runs: Sequence[Run],
                 window_start: Callable[[], int] | None = None):
        self.inner = inner
        self.sample_rate: int = inner.sample_rate
        self.frame_hop: int = inner.frame_hop
        self.noise_channels: int = inner.noise_channels
        self.runs = list(runs)
        self.window_start = window_start
        self.error: BaseException | None = None

    def __getattr__(self, name: str) -> Any:
        # prepare_prompt / apply_prompt, when the separator stages prompt changes
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def set_prompt(self, text: str) -> None:
        self.inner.set_prompt(text)

    def _anchors(self, start: int, n: int) -> list[Span] | None:
        if not self.runs:
            return None
        hop = self.frame_hop
        return window_spans(self.runs, start // hop, n // hop, hop / self.sample_rate) or None

    def _run(self, fn: Callable[..., Any], at: int, window: np.ndarray,
             noise: np.ndarray | None, **kwargs: Any) -> Any:
        try:
            out = fn(window, noise, self._anchors(at, len(window)), **kwargs)
            if not all(np.isfinite(np.asarray(x)).all() for x in out):
                raise FloatingPointError(
                    f"SAM-Audio returned NaN or Inf for the window at "
                    f"{at / self.sample_rate:.2f} s"
                )
        except Exception as e:
            self.error = self.error or e
            raise
        return out

    def separate(self, window: np.ndarray, noise: np.ndarray | None,
                 anchors: Any = None) -> tuple[np.ndarray, np.ndarray]:
        return self._run(self.inner.separate, self.window_start(), window, noise)


class _RegionWindow(_Window):
    def separate_region(self, window: np.ndarray, noise: np.ndarray | None, anchors: Any, *,
                        start: int, emit: slice) -> tuple[np.ndarray, np.ndarray]:
        return self._run(self.inner.separate_region, start, window, noise, start=start, emit=emit)


class _Chunks:
    """Engine sink: the final blocks, in order, as the worker writes them."""

    def __init__(self) -> None:
        self.blocks: list[tuple[int, np.ndarray, np.ndarray]] = []

    def write(self, pos: int, target: np.ndarray, residual: np.ndarray) -> None:
        if len(target):
            self.blocks.append((pos, target.copy(), residual.copy()))

    def take(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        out, self.blocks = self.blocks, []
        return out


# ---------------------------------------------------------------------- input
def audio_blocks(audios: Any, sample_rate: int, name: str) -> tuple[Iterable[Any], int | None]:
    """(the audio as blocks, its length when known up front); arrays are checked here.

    A list or tuple is a batch of items, as in mlx-audio (one path or array: B = 1); any other
    iterable is a stream of blocks."""
    if isinstance(audios, list | tuple):
        if len(audios) != 1:
            raise ValueError(f"{name} handles one recording at a time (B = 1); loop over items")
        audios = audios[0]
    if isinstance(audios, str | Path):
        from streamsep.audio.files import read_blocks

        return read_blocks(str(audios), sample_rate), None
    if isinstance(audios, mx.array | np.ndarray):
        a = _as_numpy(audios)
        if a.ndim == 3 and a.shape[0] != 1:
            raise ValueError(f"{name} handles one recording at a time (B = 1); loop over items")
        if a.ndim not in (1, 3) or (a.ndim == 3 and a.shape[1] != 1):
            raise ValueError(
                f"audios must be (1, 1, N) mono at {sample_rate} Hz (the processor's "
                f"batch.audios) or (N,); got shape {a.shape}"
            )
        if a.size == 0:
            raise ValueError("audios is empty (0 samples)")
        return [a.reshape(-1)], a.size
    if isinstance(audios, Iterable):
        return audios, None
    raise ValueError(
        f"audios must be an array, a path or an iterator of audio blocks; got "
        f"{type(audios).__name__}"
    )


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, mx.array):
        x = x.astype(mx.float32)  # numpy cannot take bfloat16
    return np.asarray(x, dtype=np.float32)


def _pieces(blocks: Iterable[Any], piece: int) -> Iterator[np.ndarray]:
    """Mono float32 pieces of at most ``piece`` samples: no longer than a hop, they keep the
    engine's input ring (two minutes) from overflowing whatever the block size."""
    for b in blocks:
        b = _as_numpy(b)
        if b.ndim == 2 and 1 in b.shape:
            b = b.reshape(-1)  # mono as a column or a row
        if b.ndim != 1:
            raise ValueError(f"audio blocks must be mono (n,); got shape {b.shape}")
        for i in range(0, len(b), piece):
            yield b[i : i + piece]


# ---------------------------------------------------------------------- driving loop
def stream(
    model: SAMAudio,
    audios: Any,
    descriptions: Sequence[str] | str,
    *,
    chunk_seconds: float,
    overlap_seconds: float,
    plan: WindowPlan | None,
    anchors: Sequence[Any] | None,
    anchor_ids: Any,
    anchor_alignment: Any,
    ode_opt: Mapping[str, Any] | None,
    seed: int,
    ode_decode_chunk_size: int | None,
    verbose: bool,
    name: str,
) -> Iterator[SeparationResult]:
    """Check everything now (in the old ``separate_long``'s order), then return the generator
    of chunks: as in mlx-audio, a bad argument raises at the call, not at the first chunk."""
    blocks, total = audio_blocks(audios, model.sample_rate, name)
    if isinstance(descriptions, str):
        descriptions = [descriptions]
    if len(descriptions) != 1:
        raise ValueError(f"{name} needs one description; got {len(descriptions)}")
    description = descriptions[0]
    if not isinstance(description, str) or not description.strip():
        raise ValueError("the description is empty; describe the sound to extract, e.g. 'speech'")
    plan = resolve_plan(model, chunk_seconds, overlap_seconds, plan)
    method, step_size = parse_ode_opt(ode_opt)
    runs = anchor_runs(anchors, anchor_ids, anchor_alignment, model.sample_rate,
                       model.hop_length)
    if total is not None and anchor_alignment is not None:
        frames = -(-total // model.hop_length)
        if anchor_alignment.shape[-1] < frames:
            raise ValueError(
                f"anchor_alignment covers {anchor_alignment.shape[-1]} frames; the audio has "
                f"{frames}"
            )
    return _chunks(model, _pieces(blocks, plan.hop), description.strip(), plan, method,
                   step_size, int(seed), runs, ode_decode_chunk_size, verbose, total)


def _chunks(
    model: SAMAudio,
    pieces: Iterator[np.ndarray],
    description: str,
    plan: WindowPlan,
    method: str,
    step_size: float,
    seed: int,
    runs: Sequence[Run],
    ode_decode_chunk_size: int | None,
    verbose: bool,
    total: int | None,
) -> Iterator[SeparationResult]:
    sep = SAMSeparator(model, steps=max(2, round(1 / step_size)), method=method)
    sep.step_size = step_size  # ode_opt may ask for any 0 < step_size < 1, not only 1/steps

    def single(engine: Engine, fed: int) -> SeparationResult:
        return _single(model, engine, fed, description, method, step_size, seed, runs,
                       sep.wm_message, ode_decode_chunk_size, verbose)

    with wired_limit(model):
        yield from engine_chunks(sep, pieces, description, plan, seed, runs=runs, total=total,
                                 verbose=verbose, label="SAM-Audio", single=single)


def engine_chunks(
    separator: Any,
    pieces: Iterable[np.ndarray],
    prompt: str,
    plan: WindowPlan,
    seed: int,
    *,
    runs: Sequence[Run] = (),
    total: int | None = None,
    verbose: bool = False,
    label: str = "the separator",
    single: Callable[[Engine, int], SeparationResult] | None = None,
) -> Iterator[SeparationResult]:
    """Any separator's chunks over a recording, on the engine's offline path: the worker stepped
    by hand with ``budget=0`` and ``skip_ahead=False`` (every window runs, as for the files).

    ``pieces``: mono float32 blocks at the separator's rate, none longer than ``plan.hop``.
    A separator error is raised here rather than filled by the overload policy. ``single``,
    when given, separates an input that ends within the first window in one call instead."""
    proxy = (_RegionWindow if isinstance(separator, RegionSeparator) else _Window)(separator, runs)
    engine = Engine(proxy, plan, seed=seed, budget=0, skip_ahead=False)
    # The worker moves next_end on only after the call: during it, it is this window's end.
    proxy.window_start = lambda: engine.worker.next_end - plan.window
    sink = _Chunks()
    engine.add_sink(sink)
    faults: list[tuple[str, str]] = []
    engine.worker.on_warning = lambda key, text: faults.append((key, text))
    engine.begin(prompt)
    bar: Any = None  # made at the first window: a short input is one plain pass, with its own
    idx = 0

    def chunk(block: tuple[int, np.ndarray, np.ndarray], last: bool) -> SeparationResult:
        nonlocal idx
        res = SeparationResult(target=mx.array(block[1]), residual=mx.array(block[2]),
                               chunk_idx=idx, is_last=last)
        if last:
            frames = -(-fed // plan.frame_hop)
            # Position-seeded: every window that covered input frame f started from row f.
            if proxy.noise_channels:
                res.noise = mx.array(position_noise(seed, 0, frames, proxy.noise_channels))[None]
            res.peak_memory = _peak_memory_gb()
        idx += 1
        return res

    def run_windows() -> list[tuple[int, np.ndarray, np.ndarray]]:
        nonlocal bar
        if bar is None:
            bar = _bar(verbose, None if total is None else -(-total // plan.hop))
        while engine.worker.step():
            if proxy.error is not None:
                raise proxy.error
            if faults:  # anything else the worker refused (a wrong shape or dtype)
                raise RuntimeError(f"{label} failed: {faults[0][1]}")
            mx.clear_cache()
            bar.update(1)
        return sink.take()

    fed = 0
    # A block that ends where the input so far ends is the last one if the input ends there:
    # it waits for the next input (or the end) to say so; every other block goes out at once.
    held: tuple[int, np.ndarray, np.ndarray] | None = None
    def close_bar() -> None:
        if bar is not None:
            bar.close()

    with contextlib.ExitStack() as stack:
        stack.callback(close_bar)
        for x in pieces:
            engine.feed(x)
            fed += len(x)
            if single is not None and fed <= plan.first_end:
                continue  # the input may still end within the first window: one plain pass
            for block in run_windows():
                if held is not None:
                    yield chunk(held, False)
                held = block
            if held is not None and held[0] + len(held[1]) < fed:
                yield chunk(held, False)
                held = None
        if fed == 0:
            raise ValueError("audios is empty (0 samples)")
        if single is not None and fed <= plan.first_end:
            yield single(engine, fed)
            return
        engine.worker.finish(fed)
        # Frames past the input's end are the last windows' right padding: no anchor there,
        # as the old loop cut the alignment at the input's last frame.
        end_frame = -(-fed // plan.frame_hop)
        proxy.runs = [(t, lo, min(hi, end_frame)) for t, lo, hi in proxy.runs if lo < end_frame]
        for block in run_windows():
            if held is not None:
                yield chunk(held, False)
            held = block
        assert held is not None  # the input is not empty: the last window emitted its end
        yield chunk(held, True)


def _single(
    model: SAMAudio,
    engine: Engine,
    n: int,
    description: str,
    method: str,
    step_size: float,
    seed: int,
    runs: Sequence[Run],
    wm_message: mx.array,
    ode_decode_chunk_size: int | None,
    verbose: bool,
) -> SeparationResult:
    """An input within the first window: one ``separate`` call on its own frames, with the old
    ``separate_long`` noise (``make_noise(seed)``) and the engine path's watermark message."""
    audio = np.zeros(n, np.float32)
    engine.input.read(0, audio)
    hop = model.hop_length
    frames = -(-n // hop)
    ids = align = None
    spans = window_spans(runs, 0, frames, hop / model.sample_rate)
    if spans:
        ids, align = anchor_tensors([spans], frames, [frames], hop, model.sample_rate)
    noise = model.make_noise(1, frames, seed)
    res = model.separate(
        mx.array(audio)[None, None],
        [description],
        [frames],
        ids,
        align,
        {"method": method, "step_size": step_size},
        ode_decode_chunk_size,
        noise=noise,
        wm_message=wm_message,
        verbose=verbose,
    )
    return SeparationResult(
        target=res.target[0][:n], residual=res.residual[0][:n], noise=noise,
        peak_memory=res.peak_memory, chunk_idx=0, is_last=True,
    )


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(verbose: bool, total: int | None) -> Any:
    if not verbose:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="windows")
