"""`streamsep batch IN_DIR OUT_DIR`: separate an archive on a local process pool or a Ray cluster.

Every file is a task, run by ``streamsep file``'s own path (``engine.offline.run_file``: read
block by block, written under a hidden ``.partial`` name and renamed at the end), named by the
same templates (``audio.inputs``) and with the same ``--channels`` / ``--subtype``. A file longer
than ``segment_s`` is split on window boundaries into segments (``split``, ``Segment``), each
a task that runs the engine over its stretch from one window early, so that the joined outputs
(``join``, in the coordinator) are exactly what one pass writes. A worker is a process (or a
Ray actor) that loads the model once and then takes task after task.

Resuming: ``OUT_DIR/streamsep-batch.jsonl`` (the manifest, JSON lines, appended and fsynced by
the coordinating process alone, so it stays consistent whatever happens to a worker) records a
``started`` line when a file is handed to a worker and a ``done``, ``failed`` or ``interrupted``
line when it comes back. A file counts as finished when its last line is ``done`` for the same
input size and mtime and the same settings, and its outputs still have the sizes recorded then;
everything else is separated again, replacing what an interrupted or killed attempt left.

A worker that dies mid-file (killed, out of memory) loses only that file's attempt: its
``.partial`` files are removed and the file is given to a new worker, up to ``retries`` times
(on Ray, the actor is restarted and the task retried by Ray itself). SIGINT, SIGTERM and SIGHUP
stop the batch: running files are finalized with what was separated so far and recorded as
``interrupted`` (they are redone next time), nothing new starts, and one line says how far it got.

With Ray, the outputs are written by the actors to OUT_DIR, so OUT_DIR (and IN_DIR) must be the
same path on every node: a local cluster, or a shared file system.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from streamsep import console
from streamsep.audio.files import AudioFileError

MANIFEST = "streamsep-batch.jsonl"
#: A worker dies mid-file this many times (per file) before the file is recorded as failed: a
#: file that kills every worker it meets (a decoder crash) must not stop the archive.
DEFAULT_RETRIES = 2
#: OpenBLAS threads per worker. One, whatever the number of workers or cores: OpenBLAS sums in
#: an order that depends on its thread count, so this keeps every output the same to the bit
#: whatever --workers, --segment or the cluster (and a worker per core uses every core anyway).
#: `streamsep file` uses every core: its outputs differ from batch's by float rounding (the
#: embedded model: at most one 16-bit step).
WORKER_THREADS = 1
#: After a stop request, how long running files may take to finalize before their workers are
#: killed (finalizing is a flush and a rename: seconds, unless a window is mid-compute).
STOP_GRACE_S = 30.0


class BatchError(AudioFileError):
    """The batch cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class Settings:
    """Everything that decides the outputs' contents and names: a file done under other
    settings is done again."""

    prompt: str
    model: str = "embedded"
    steps: int | None = None
    method: str | None = None
    seed: int = 0
    window: float = 10.0
    hop: float = 2.0
    lookahead: float = 1.0
    crossfade: float = 0.4
    overload: str = "dry"
    channels: str = "keep"
    subtype: str | None = None
    name: str = "{stem}_{prompt}.{ext}"
    residual_name: str | None = None

    def key(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Task:
    index: int
    input: str  # absolute path
    rel: str  # path under IN_DIR, the manifest's key
    size: int
    mtime_ns: int
    seconds: float  # audio duration
    target: str
    residual: str | None
    attempts: int = 0

    @property
    def outputs(self) -> list[str]:
        return [p for p in (self.target, self.residual) if p is not None]


@dataclass
class Segment:
    """A stretch of a long file, run as a task of its own: the output of windows ``k0`` to
    ``k1 - 1`` (positions ``k0 * hop`` to ``k1 * hop`` at the model's rate), computed from
    window ``k0 - 1`` on, whose tail the first of them crossfades with, so that joined in order
    the segments hold exactly what one pass over the whole file writes."""

    task: Task
    i: int
    n: int
    k0: int
    k1: int
    parts: list[str]  # the raw float32 output of each of the task's outputs, in part_dir
    seconds: float
    index: int
    attempts: int = 0

    @property
    def rel(self) -> str:
        return f"{self.task.rel} (segment {self.i + 1} of {self.n})"

    @property
    def outputs(self) -> list[str]:
        return self.parts


#: Files longer than this are split into segments of it (where splitting is exact: below).
DEFAULT_SEGMENT_S = 300.0
#: Models whose windows depend on nothing but their own input, position and seed (no state from
#: window to window, as SAM-Audio's codec caches are), at 48 kHz with 40 ms frames.
_SPLIT_MODELS = ("embedded", "passthrough", "silence", "bandpass")
#: Formats whose seek lands on the exact sample (MP3 and OGG decoders resynchronise instead).
_SEEKABLE = ("WAV", "WAVEX", "RF64", "W64", "FLAC", "AIFF", "CAF", "AU")
SPLIT_RATE, SPLIT_FRAME = 48000, 1920
PARTS = ".streamsep-parts"


def split(tasks: list[Task], settings: Settings, out_dir: str,
          segment_s: float | None) -> list[Task | Segment]:
    """The units of work: a file, or its segments when it is longer than ``segment_s`` and
    the split is exact (a stateless built-in model, a 48 kHz input in a seekable format that
    holds what its header says)."""
    from streamsep.audio.files import probe
    from streamsep.engine.plan import WindowPlan

    if not segment_s or settings.model.split(":")[0] not in _SPLIT_MODELS:
        return list(tasks)
    plan = WindowPlan.from_seconds(SPLIT_RATE, SPLIT_FRAME, settings.window, settings.hop,
                                   settings.lookahead, settings.crossfade)
    per = max(1, round(segment_s * SPLIT_RATE / plan.hop))  # windows per segment
    units: list[Task | Segment] = []
    index = len(tasks)
    for t in tasks:
        info = probe(t.input)
        windows = -(-info.frames // plan.hop)
        n = -(-windows // per)
        if (t.seconds <= segment_s or n < 2 or info.sample_rate != SPLIT_RATE
                or info.format not in _SEEKABLE or info.declared_frames != info.frames):
            units.append(t)
            continue
        folder = os.path.join(out_dir, PARTS, f"{t.index}-{_short_hash(t.rel)}")
        for i in range(n):
            k0, k1 = i * per, min(windows, (i + 1) * per)
            parts = [os.path.join(folder, f"{i:04d}.{j}.f32") for j in range(len(t.outputs))]
            units.append(Segment(t, i, n, k0, k1, parts,
                                 (k1 - k0) * plan.hop / SPLIT_RATE, index))
            index += 1
    return units


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def join(task: Task, segments: list[Segment], settings: Settings) -> None:
    """Write the task's outputs from its segments' parts, as ``run_file`` writes them."""
    import numpy as np

    from streamsep.audio.files import SafeWriter, probe
    from streamsep.engine.offline import ChannelLayout

    info = probe(task.input)
    nch = ChannelLayout(settings.channels, info.channels).out_channels
    block = SPLIT_RATE * nch
    remove_partials(task.outputs)
    for j, path in enumerate(task.outputs):
        with SafeWriter(path, info.sample_rate, frames=info.declared_frames, channels=nch,
                        subtype=settings.subtype, like=info.subtype) as w:
            for seg in sorted(segments, key=lambda s: s.i):
                with open(seg.parts[j], "rb") as f:
                    while True:
                        x = np.fromfile(f, np.float32, block)
                        if not len(x):
                            break
                        w.write(x if nch == 1 else x.reshape(-1, nch))
        if w.kept != info.frames:
            raise BatchError(f"joining the segments of {task.rel} gave {w.kept} of "
                             f"{info.frames} samples: run the batch again")
    folder = os.path.dirname(segments[0].parts[0])
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(folder))  # the parts folder, once no file uses it


# -- planning and the manifest ---------------------------------------------------------------------
def plan(in_dir: str, out_dir: str, settings: Settings, *,
         overwrite: bool = False) -> tuple[list[Task], list[Task], Any]:
    """(tasks to run, tasks already done, what ``find_inputs`` found) for IN_DIR.

    Refuses (BatchError) outputs that would replace an input or each other, and existing
    outputs the manifest knows nothing of (not ours to replace) unless ``overwrite``."""
    from streamsep.audio import inputs as ins
    from streamsep.audio.files import output_format

    if not os.path.isdir(in_dir):
        what = "does not exist" if not os.path.exists(in_dir) else "is not a folder"
        raise BatchError(f"IN_DIR {in_dir} {what}: give the folder of the archive to separate "
                         "(for single files use streamsep file)")
    if os.path.realpath(in_dir) == os.path.realpath(out_dir):
        raise BatchError(f"OUT_DIR {out_dir} is IN_DIR: the outputs would be taken for inputs "
                         "next time; give another folder (one inside IN_DIR is fine)")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise BatchError(f"OUT_DIR {out_dir} is a file: give a folder (created when missing)")
    ins.check_template(settings.name, "--name")
    if settings.residual_name is not None:
        ins.check_template(settings.residual_name, "--residual-name")
    found = ins.find_inputs([in_dir], exclude=out_dir)
    if not found.inputs:
        raise BatchError(f"no audio files in {in_dir}: give a folder holding WAV, FLAC, OGG, "
                         "AIFF or MP3 files")
    jobs = ins.plan_jobs(found.inputs, out_dir, folder=True, residual=None, name=settings.name,
                         residual_name=settings.residual_name, prompt=settings.prompt,
                         model=settings.model)
    # Existing outputs are judged against the manifest below; inputs and collisions here.
    ins.check_jobs(jobs, overwrite=True, inputs=found.inputs)
    records = Manifest(out_dir).last_records()
    key = settings.key()
    todo, done, foreign = [], [], []
    for i, job in enumerate(jobs):
        st = os.stat(job.input.path)
        task = Task(i, os.path.abspath(job.input.path),
                    os.path.relpath(job.input.path, in_dir), st.st_size, st.st_mtime_ns,
                    job.input.info.duration, os.path.abspath(job.target),
                    None if job.residual is None else os.path.abspath(job.residual))
        for p in task.outputs:
            output_format(p, subtype=settings.subtype)  # the format and --subtype, up front
        rec = records.get(task.rel)
        if rec is not None and is_done(rec, task, key, out_dir):
            done.append(task)
            continue
        if rec is None and not overwrite:
            foreign += [p for p in task.outputs if os.path.lexists(p)]
        todo.append(task)
    if foreign:
        n = len(foreign) - 1
        more = f" (and {n} more output{'s' * (n != 1)})" if n else ""
        raise BatchError(f"{foreign[0]} exists already{more} and is not in the manifest "
                         f"{os.path.join(out_dir, MANIFEST)}: add --overwrite to replace it, or "
                         "give another OUT_DIR")
    # Longest first: the pool ends when its last file does, so the long ones must not come last.
    todo.sort(key=lambda t: -t.seconds)
    return todo, done, found


def is_done(rec: dict[str, Any], task: Task, key: str, out_dir: str) -> bool:
    """Whether the manifest record ``rec`` shows ``task`` finished as it would be now."""
    if rec.get("status") != "done" or rec.get("settings") != key:
        return False
    if rec.get("size") != task.size or rec.get("mtime_ns") != task.mtime_ns:
        return False  # the input changed since
    outs = rec.get("outputs") or {}
    want = {os.path.relpath(p, out_dir) for p in task.outputs}
    if set(outs) != want:
        return False
    for rel, size in outs.items():
        try:
            if os.path.getsize(os.path.join(out_dir, rel)) != size:
                return False
        except OSError:
            return False  # deleted since
    return True


class Manifest:
    """OUT_DIR/streamsep-batch.jsonl: one JSON object per line, appended by one process."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, MANIFEST)
        self._f: Any = None

    def records(self) -> Iterator[dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # a line torn by a crash of the machine: as if not written
                    if isinstance(rec, dict) and isinstance(rec.get("input"), str):
                        yield rec
        except FileNotFoundError:
            return

    def last_records(self) -> dict[str, dict[str, Any]]:
        """The newest record of each input."""
        return {r["input"]: r for r in self.records()}

    def append(self, rec: dict[str, Any]) -> None:
        if self._f is None:
            os.makedirs(self.out_dir, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close)
            # A line torn by a crash must not glue onto the next one.
            if self._f.tell() and not _ends_with_newline(self.path):
                self._f.write("\n")
        self._f.write(json.dumps(rec, sort_keys=True) + "\n")
        self._f.flush()
        with contextlib.suppress(OSError):
            os.fsync(self._f.fileno())

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


# -- the work of one file (in a worker) ------------------------------------------------------------
def remove_partials(paths: list[str]) -> int:
    """Remove the hidden ``.NAME.PID.partial`` files an attempt killed mid-file left next to
    ``paths`` (``SafeWriter`` renames its own on every exit it sees). Returns how many."""
    n = 0
    for p in paths:
        folder, base = os.path.split(p)
        try:
            names = os.listdir(folder or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith(f".{base}.") and name.endswith(".partial"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, name))
                    n += 1
    return n


class SeparatorWorker:
    """One model and the plan, loaded once; ``run`` separates one task after another."""

    def __init__(self, settings: Settings, threads: int | None = None):
        from streamsep import runtime
        from streamsep.engine.plan import WindowPlan

        if threads:
            runtime.limit_blas_threads(threads)  # workers share the cores: no oversubscription
        self.settings = settings
        s = settings
        self.seps = [self._load()]
        sep = self.seps[0]
        self.plan = WindowPlan.from_seconds(sep.sample_rate, sep.frame_hop, s.window, s.hop,
                                            s.lookahead, s.crossfade)

    def _load(self) -> Any:
        from streamsep.separators.registry import load_separator

        s = self.settings
        sep = load_separator(s.model, steps=s.steps, method=s.method)
        sep.set_prompt(s.prompt)
        return sep

    def _separators(self, lanes: int) -> list[Any]:
        from streamsep.separators.base import RegionSeparator

        if lanes > 1 and isinstance(self.seps[0], RegionSeparator):
            while len(self.seps) < lanes:  # per-stream caches: one copy per channel
                self.seps.append(self._load())
            return self.seps[:lanes]
        return self.seps[:1]

    def run(self, task: Task | Segment, stop: threading.Event | None = None,
            progress: Callable[[float], None] | None = None) -> dict[str, Any]:
        """Separate ``task``; the manifest record of how it went (never raises for the file's
        own problems: those are a ``failed`` record)."""
        from streamsep.audio.files import DiskFullError, probe
        from streamsep.engine.offline import ChannelLayout, run_file
        from streamsep.separators.base import ModelError, exception_summary

        s = self.settings
        t0 = time.perf_counter()
        rec: dict[str, Any] = {"worker": f"{socket.gethostname()}:{os.getpid()}"}
        if isinstance(task, Segment):
            try:
                rec.update(_run_segment(self, task, stop, progress))
            except (AudioFileError, ModelError, OSError, ValueError) as e:
                rec.update(status="failed", error=_one_line(e))
            except Exception as e:  # a separator's own bug: this file fails, the archive goes on
                rec.update(status="failed", error=exception_summary(e))
            rec["seconds"] = round(time.perf_counter() - t0, 3)
            return rec
        try:
            remove_partials(task.outputs)
            for p in task.outputs:
                os.makedirs(os.path.dirname(p), exist_ok=True)
            st = os.stat(task.input)
            rec.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
            info = probe(task.input)
            lanes = ChannelLayout(s.channels, info.channels).lanes
            summary = run_file(self._separators(lanes), self.plan, task.input, task.target,
                               prompt=s.prompt, residual_path=task.residual, seed=s.seed,
                               overload=s.overload, model_name=s.model, info=info,
                               stop=stop, channels=s.channels, subtype=s.subtype,
                               progress=progress)
        except (AudioFileError, ModelError, OSError, ValueError) as e:
            rec.update(status="failed", error=_one_line(e),
                       fatal=isinstance(e, DiskFullError))
        except Exception as e:  # a separator's own bug: this file fails, the archive goes on
            rec.update(status="failed", error=exception_summary(e))
        else:
            stopped = stop is not None and stop.is_set()
            rec.update(status="interrupted" if stopped else "done",
                       audio_s=info.duration, channels=summary.get("channels", 1))
            c = summary.get("counters", {})
            bad = sum(c.get(k, 0) for k in ("failed_windows", "invalid_windows",
                                            "nonfinite_windows"))
            if bad:
                rec["bad_windows"] = bad
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        return rec


class _Range:
    """A sink that writes one output's positions [lo, hi) (as channels, through ``joiner``
    lanes when there are several) and drops the rest."""

    def __init__(self, writer: Any, which: str, lo: int, hi: int):
        self.writer, self.which, self.lo, self.hi = writer, which, lo, hi

    def write(self, pos: int, target: Any, residual: Any) -> None:
        x = target if self.which == "target" else residual
        a, b = max(pos, self.lo), min(pos + len(x), self.hi)
        if b > a:
            self.writer.write(x[a - pos : b - pos])


class _RawWriter:
    def __init__(self, path: str):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.f = open(path, "wb")  # noqa: SIM115 (closed by the caller)
        self.frames = 0

    def write(self, x: Any) -> None:
        import numpy as np

        x = np.ascontiguousarray(x, np.float32)
        self.f.write(x.tobytes())
        self.frames += len(x)


def _segment_blocks(path: str, start: int, stop: int, lanes: Any) -> Iterator[list[Any]]:
    """The file's frames [start, stop), one array per lane, in 1 s blocks (48 kHz files)."""
    import numpy as np
    import soundfile as sf

    with sf.SoundFile(path) as f:
        f.seek(start)
        left = stop - start
        while left > 0:
            x = f.read(min(SPLIT_RATE, left), dtype="float32", always_2d=True)
            if not len(x):
                raise AudioFileError(f"{path} ended at {f.tell()} of {stop} samples while a "
                                     "segment was read: the file changed; run the batch again")
            left -= len(x)
            if lanes.reads_channels:
                yield lanes.split(x)
            else:
                mono = x[:, 0] if x.shape[1] == 1 else x.mean(axis=1, dtype=np.float32)
                yield [np.ascontiguousarray(mono, np.float32)]


def _run_segment(worker: SeparatorWorker, seg: Segment, stop: Any,
                 progress: Callable[[float], None] | None) -> dict[str, Any]:
    import numpy as np

    from streamsep.audio.files import probe
    from streamsep.engine.engine import Engine
    from streamsep.engine.offline import ChannelLayout, _Joiner

    s, plan, task = worker.settings, worker.plan, seg.task
    info = probe(task.input)
    layout = ChannelLayout(s.channels, info.channels)
    total = info.frames
    lo, hi = seg.k0 * plan.hop, min(seg.k1 * plan.hop, total)
    first = max(seg.k0 - 1, 0)  # its tail is the first owned window's crossfade
    last_end = plan.first_end + (seg.k1 - 1) * plan.hop  # the last window's input end
    start = max(0, plan.first_end + first * plan.hop - plan.window)
    writers = [_RawWriter(p) for p in seg.parts]
    engines = []
    try:
        for _ in range(layout.lanes):
            e = Engine(worker._separators(1)[0], plan, seed=s.seed, budget=0,
                       overload=s.overload, skip_ahead=False, model_name=s.model)
            e.worker.next_end = plan.first_end + first * plan.hop
            engines.append(e)
        for which, w in zip(("target", "residual"), writers, strict=False):
            if layout.lanes == 1:
                engines[0].add_sink(_Range(w, which, lo, hi))
            else:
                joiner = _Joiner(layout, w)
                for lane, e in enumerate(engines):
                    e.add_sink(_Range(joiner.lane(lane), which, lo, hi))
        for e in engines:
            e.begin(s.prompt)
            fed = 0
            while fed < start:  # the positions before the segment's input: never read
                n = min(start - fed, 10 * SPLIT_RATE)
                e.feed(np.zeros(n, np.float32))
                fed += n
        last = seg.i == seg.n - 1
        for parts in _segment_blocks(task.input, start, total if last else min(last_end, total),
                                     layout):
            if stop is not None and stop.is_set():
                return {"status": "interrupted"}
            for e, x in zip(engines, parts, strict=True):
                e.feed(x)
                while e.worker.next_end <= last_end and e.worker.step():
                    pass
            if progress is not None:
                progress((engines[0].worker.next_end - plan.first_end - lo) / SPLIT_RATE)
        for e in engines:
            if last_end >= total or last:
                # the input ends before this segment's last window does: as in one pass,
                # the remaining windows read silence past the end
                e.worker.finish(total)
            while (last or e.worker.next_end <= last_end) and e.worker.step():
                pass
    finally:
        for w in writers:
            w.f.close()
    got = [w.frames for w in writers]
    if any(g != hi - lo for g in got):
        return {"status": "failed", "error": f"segment wrote {got} of {hi - lo} samples"}
    return {"status": "done", "audio_s": (hi - lo) / SPLIT_RATE}


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# -- the local process pool ------------------------------------------------------------------------
def _pool_worker(conn: Any, settings: Settings, threads: int, stop: Any) -> None:
    """A pool process: load the model, then separate the tasks the coordinator sends."""
    import signal

    # The coordinator decides what a signal means (``stop``); a Ctrl-C reaching the whole
    # process group must not kill the workers before they finalized their files.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    console.set_verbosity(console.QUIET)  # the coordinator prints; warnings still show
    try:
        worker = SeparatorWorker(settings, threads)
    except Exception as e:  # the coordinator reports it as the batch's one error line
        conn.send(("error", _load_failure(e)))
        return
    conn.send(("ready", os.getpid()))

    class _Stop:  # run_file polls is_set(); the coordinator's multiprocessing.Event answers
        def is_set(self) -> bool:
            return stop.is_set()

        def set(self) -> None:
            stop.set()

    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return  # the coordinator is gone
        if task is None:
            return

        def progress(seconds: float, task: Task = task, last: list[float] = [0.0]) -> None:  # noqa: B006
            now = time.monotonic()
            if now - last[0] >= 0.5:  # a message per window would flood the pipe
                last[0] = now
                conn.send(("progress", task.index, seconds))

        conn.send(("result", task.index, worker.run(task, _Stop(), progress)))


def _load_failure(e: BaseException) -> str:
    from streamsep.separators.base import exception_summary

    if isinstance(e, (AudioFileError, ValueError, OSError)) or type(e).__name__ in (
            "ModelError", "PlanError"):
        return _one_line(e)
    return f"the model failed to load: {exception_summary(e)}"


@dataclass
class _Slot:
    proc: Any
    conn: Any
    task: Task | Segment | None = None
    ready: bool = False


class Batch:
    """Runs the tasks and keeps the manifest; ``run_pool`` or ``run_ray``."""

    def __init__(self, tasks: list[Task | Segment], settings: Settings, out_dir: str, *,
                 retries: int = DEFAULT_RETRIES, log: Callable[[str], None] = console.note,
                 progress: Any = None):
        self.tasks = tasks
        self.settings = settings
        self.key = settings.key()
        self.out_dir = out_dir
        self.manifest = Manifest(out_dir)
        self.retries = retries
        self.log = log
        self.progress = progress
        self.results: dict[int, dict[str, Any]] = {}  # by file (Task.index)
        self._groups: dict[int, dict[int, Any]] = {}  # segments done, by file
        self.fatal: str | None = None
        self._partial: dict[int, float] = {}
        self._done_s = 0.0

    # manifest lines
    def _record(self, task: Task, rec: dict[str, Any]) -> None:
        base = {"input": task.rel, "settings": self.key, "size": task.size,
                "mtime_ns": task.mtime_ns, "attempt": task.attempts, "time": round(time.time())}
        base.update(rec)
        if base.get("status") == "done":
            base["outputs"] = {os.path.relpath(p, self.out_dir): os.path.getsize(p)
                               for p in task.outputs}
        self.manifest.append(base)

    def started(self, unit: Task | Segment, worker: str) -> None:
        unit.attempts += 1
        task = unit.task if isinstance(unit, Segment) else unit
        if isinstance(unit, Segment):
            if task.index in self._groups:
                return  # the file's "started" line came with its first segment
            self._groups[task.index] = {}
            task.attempts += 1
        self._record(task, {"status": "started", "worker": worker})

    def finished(self, unit: Task | Segment, rec: dict[str, Any]) -> None:
        self._partial.pop(unit.index, None)
        self._done_s += unit.seconds
        self._show()
        console.detail(f"{unit.rel}: {rec['status']} in {rec.get('seconds', 0):.1f} s"
                       f" ({rec.get('worker', '?')})")
        if isinstance(unit, Segment):
            rec = self._segment_finished(unit, rec)
            if rec is None:
                return  # more segments to come, or the file is decided already
        task = unit.task if isinstance(unit, Segment) else unit
        if rec.get("status") == "done" and not all(os.path.exists(p) for p in task.outputs):
            rec = {**rec, "status": "failed", "error": "an output is missing after the run"}
        self._record(task, rec)
        self.results[task.index] = rec
        if rec["status"] == "failed":
            console.line(f"error: {task.rel}: {rec.get('error', 'failed')}")
            if rec.get("fatal"):
                self.fatal = rec.get("error")

    def _segment_finished(self, seg: Segment, rec: dict[str, Any]) -> dict[str, Any] | None:
        """The file's record once all its segments are done (joined), or at its first
        failed or interrupted segment; None before that and after it."""
        task = seg.task
        if task.index in self.results:
            return None
        group = self._groups.setdefault(task.index, {})
        if rec.get("status") != "done":
            shutil.rmtree(os.path.dirname(seg.parts[0]), ignore_errors=True)
            return {**rec, "segment": seg.i}
        group[seg.i] = (seg, rec)
        if len(group) < seg.n:
            return None
        segs = [g[0] for g in group.values()]
        try:
            join(task, segs, self.settings)
        except AudioFileError as e:
            return {"status": "failed", "error": _one_line(e),
                    "fatal": type(e).__name__ == "DiskFullError"}
        recs = [g[1] for g in group.values()]
        return {"status": "done", "audio_s": task.seconds, "segments": seg.n,
                "seconds": round(sum(r.get("seconds", 0) for r in recs), 3),
                "worker": sorted({r.get("worker", "?") for r in recs})}

    def _drop_decided(self, queue: list[Task | Segment]) -> None:
        """Leave out the segments of files that failed or were interrupted already."""
        queue[:] = [u for u in queue
                    if not (isinstance(u, Segment) and u.task.index in self.results)]

    def moved(self, unit: Task | Segment, seconds: float) -> None:
        self._partial[unit.index] = min(max(seconds, 0.0), unit.seconds)
        self._show()

    def _show(self) -> None:
        if self.progress is not None:
            self.progress.update(self._done_s + sum(self._partial.values()))

    def lost(self, unit: Task | Segment, why: str) -> bool:
        """A worker died on ``unit``: whether to try again (else recorded as failed)."""
        self._partial.pop(unit.index, None)
        if not isinstance(unit, Segment):
            remove_partials(unit.outputs)  # a segment's parts are rewritten from the start
        if unit.attempts <= self.retries:
            self.log(f"{unit.rel}: {why}; trying again (attempt {unit.attempts + 1} of "
                     f"{self.retries + 1})")
            return True
        self.finished(unit, {"status": "failed", "error": f"{why} on every attempt "
                             f"({unit.attempts})"})
        return False

    # -- local processes -----------------------------------------------------------------------
    def run_pool(self, workers: int, stop: threading.Event) -> None:
        import multiprocessing as mp
        from multiprocessing.connection import wait

        ctx = mp.get_context("spawn")  # MLX and OpenBLAS threads do not survive a fork
        mp_stop = ctx.Event()
        workers = max(1, min(workers, len(self.tasks)))
        threads = WORKER_THREADS
        queue = list(self.tasks)
        slots: list[_Slot] = []

        def spawn() -> None:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_pool_worker, args=(child, self.settings, threads, mp_stop),
                            daemon=True, name="streamsep-batch-worker")
            p.start()
            child.close()
            slots.append(_Slot(p, parent))

        def give(slot: _Slot) -> None:
            self._drop_decided(queue)
            if not queue or stop.is_set() or self.fatal:
                return
            task = queue.pop(0)
            slot.task = task
            self.started(task, f"{socket.gethostname()}:{slot.proc.pid}")
            try:
                slot.conn.send(task)
            except OSError:
                pass  # it died just now: its sentinel says so next

        for _ in range(workers):
            spawn()
        stop_sent_at: float | None = None
        try:
            while slots:
                if (stop.is_set() or self.fatal) and stop_sent_at is None:
                    mp_stop.set()
                    stop_sent_at = time.monotonic()
                if not queue or stop_sent_at is not None:  # idle workers may go
                    for s in [s for s in slots if s.task is None and s.ready]:
                        _close(s)
                        slots.remove(s)
                    if not slots:
                        break
                if stop_sent_at is not None and time.monotonic() - stop_sent_at > STOP_GRACE_S:
                    for s in slots:  # a window stuck in compute: its file stays unfinished
                        s.proc.kill()
                by_obj: dict[Any, _Slot] = {}
                for s in slots:
                    by_obj[s.conn] = s
                    by_obj[s.proc.sentinel] = s
                for obj in wait(list(by_obj), timeout=0.25):
                    s = by_obj[obj]
                    if s not in slots:
                        continue
                    if obj is s.conn:
                        try:
                            msg = s.conn.recv()
                        except (EOFError, OSError):
                            msg = None
                        if msg is not None:
                            self._message(s, msg, give)
                            continue
                    # the process ended (or its pipe broke): retry what it was doing
                    s.proc.join(5)
                    slots.remove(s)
                    code = s.proc.exitcode
                    if s.task is not None:
                        why = _death(code)
                        if stop_sent_at is not None:
                            self.finished(s.task, {"status": "interrupted",
                                                   "error": f"{why} while stopping"})
                        elif self.lost(s.task, why):
                            queue.insert(0, s.task)
                    elif not s.ready and self.fatal is None:
                        self.fatal = ("a worker process ended while loading the model "
                                      f"({_death(code)})")
                    if queue and stop_sent_at is None and self.fatal is None:
                        spawn()
        finally:
            mp_stop.set()
            for s in slots:
                _close(s)
            for s in slots:
                s.proc.join(2)
                if s.proc.is_alive():
                    s.proc.kill()
            self.manifest.close()

    def _message(self, slot: _Slot, msg: tuple, give: Callable[[_Slot], None]) -> None:
        kind = msg[0]
        if kind == "ready":
            slot.ready = True
            give(slot)
        elif kind == "error":
            self.fatal = self.fatal or msg[1]
        elif kind == "progress" and slot.task is not None:
            self.moved(slot.task, msg[2])
        elif kind == "result" and slot.task is not None:
            task, slot.task = slot.task, None
            self.finished(task, msg[2])
            give(slot)

    # -- Ray -----------------------------------------------------------------------------------
    def run_ray(self, address: str, workers: int | None, stop: threading.Event) -> dict[str, Any]:
        """The tasks on a Ray cluster at ``address``: one actor (one model) per worker, Ray
        restarting an actor that dies and retrying its task. Returns what the cluster had."""
        ray = import_ray()
        _check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR",
                     configure_logging=True)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise BatchError(f"cannot connect to the Ray cluster at {address} ({_one_line(e)}): "
                             "start one with `ray start --head` or give its address") from None
        try:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            n = max(1, min(workers or cpus, len(self.tasks)))
            actor_cls = ray.remote(num_cpus=1, max_restarts=-1,
                                   max_task_retries=self.retries,
                                   max_concurrency=2)(_RayWorker)
            threads = WORKER_THREADS
            actors = [actor_cls.remote(self.settings, threads) for _ in range(n)]
            self._ray_loop(ray, actors, stop)
            return {"cluster_cpus": cpus, "actors": n}
        finally:
            self.manifest.close()
            with contextlib.suppress(Exception):
                ray.shutdown()

    def _ray_loop(self, ray: Any, actors: list[Any], stop: threading.Event) -> None:
        from ray.exceptions import RayActorError, RayTaskError

        queue = list(self.tasks)
        idle = list(actors)
        running: dict[Any, tuple[Any, Task]] = {}
        stop_sent_at: float | None = None
        while queue or running:
            if (stop.is_set() or self.fatal) and stop_sent_at is None:
                stop_sent_at = time.monotonic()
                queue.clear()
                for a, _ in running.values():
                    a.request_stop.remote()
            self._drop_decided(queue)
            while idle and queue and stop_sent_at is None:
                a, task = idle.pop(0), queue.pop(0)
                self.started(task, "ray")
                running[a.run.remote(task)] = (a, task)
            if not running:
                break
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.25)
            if stop_sent_at is not None and time.monotonic() - stop_sent_at > STOP_GRACE_S:
                for ref, (a, task) in list(running.items()):
                    ray.kill(a)
                    self.finished(task, {"status": "interrupted", "error": "killed while "
                                         "stopping"})
                    del running[ref]
                continue
            for ref in ready:
                a, task = running.pop(ref)
                try:
                    rec = ray.get(ref)
                except RayActorError as e:
                    # the actor died more often than Ray retries
                    rec = {"status": "failed", "error": f"the worker died ({_one_line(e)[:200]})"}
                except RayTaskError as e:
                    rec = {"status": "failed", "error": _one_line(e)[:300]}
                if isinstance(rec, dict) and rec.get("status") == "load_error":
                    self.fatal = self.fatal or rec.get("error")
                    rec = {"status": "failed", "error": rec.get("error")}
                self.finished(task, rec)
                idle.append(a)


def _close(slot: _Slot) -> None:
    with contextlib.suppress(OSError, ValueError):
        slot.conn.send(None)
    with contextlib.suppress(OSError):
        slot.conn.close()


def _death(code: int | None) -> str:
    import signal

    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"the worker was killed by {signal.Signals(-code).name}"
    return f"the worker exited (code {code})"


def _check_reachable(address: str) -> None:
    """Refuse a HOST:PORT where nothing listens: ray.init would wait for it without end."""
    hostport = address.removeprefix("ray://")
    host, colon, port = hostport.rpartition(":")
    if not colon or not port.isdigit():
        if address in ("auto", "local"):
            return  # Ray finds (or starts) the cluster itself
        raise BatchError(f"--ray {address}: give the cluster's HOST:PORT (the head's GCS "
                         "port, 6379 by default), e.g. --ray 10.0.0.5:6379, or 'auto'")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise BatchError(f"cannot connect to the Ray cluster at {address} ({why}): start one "
                         "with `ray start --head` there, or give its address") from None


def import_ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError:
        raise BatchError("--ray needs Ray: pip install 'streamsep[cluster]' (or pip install "
                         "ray), on this machine and every node") from None
    return ray


class _RayWorker:
    """The Ray actor: one model per actor; ``run`` on one thread, ``request_stop`` on another
    (max_concurrency=2), so that a stop reaches a file that is running."""

    def __init__(self, settings: Settings, threads: int):
        console.set_verbosity(console.QUIET)
        self.stop = threading.Event()
        self.error: str | None = None
        try:
            self.worker: SeparatorWorker | None = SeparatorWorker(settings, threads)
        except Exception as e:  # reported with the first task: an actor must come up
            self.worker, self.error = None, _load_failure(e)

    def run(self, task: Task) -> dict[str, Any]:
        if self.worker is None:
            return {"status": "load_error", "error": self.error}
        return self.worker.run(task, self.stop)

    def request_stop(self) -> None:
        self.stop.set()


# -- the command -----------------------------------------------------------------------------------
def run_batch(in_dir: str, out_dir: str, settings: Settings, *, workers: int | None = None,
              ray_address: str | None = None, retries: int = DEFAULT_RETRIES,
              overwrite: bool = False, segment_s: float | None = DEFAULT_SEGMENT_S) -> int:
    """``streamsep batch``: plan, skip what is done, run the rest; the exit code.

    Files longer than ``segment_s`` run as segments where that is exact (``split``)."""
    from streamsep.audio.files import OutputSpec, check_space, probe
    from streamsep.engine.offline import ChannelLayout
    from streamsep.engine.signals import SIGNALS, stop_on_signals

    if ray_address is not None:
        import_ray()  # before any work: a missing extra or a wrong address is one line
        _check_reachable(ray_address)
    todo, done, found = plan(in_dir, out_dir, settings, overwrite=overwrite)
    total = len(todo) + len(done)
    console.note(f"{total} audio file{'s' * (total != 1)} in {in_dir} "
                 f"({_duration(sum(t.seconds for t in todo + done))})"
                 + (f"; {len(done)} done before (manifest {os.path.join(out_dir, MANIFEST)})"
                    if done else ""))
    for p, why in found.unreadable:
        console.note(f"skipped {p}: {why}")
    if not todo:
        console.note(f"nothing to do: all {total} files are separated already")
        return 0
    os.makedirs(out_dir, exist_ok=True)
    outs = []
    for t in todo:
        info = probe(t.input)
        nch = ChannelLayout(settings.channels, info.channels).out_channels
        outs += [OutputSpec(p, info.declared_frames, nch, settings.subtype, info.subtype)
                 for p in t.outputs if not os.path.exists(p)]
    check_space(outs)  # before a model loads: an archive that cannot fit should not start
    stop = threading.Event()
    seconds = sum(t.seconds for t in todo)
    t0 = time.perf_counter()
    where = f"Ray at {ray_address}" if ray_address else "local processes"
    with stop_on_signals(stop) as caught, \
            console.Progress([seconds], enabled=console.bars_wanted()) as bar:
        bar.start(0, f"{len(todo)} files ")
        units = split(todo, settings, out_dir, segment_s)
        batch = Batch(units, settings, out_dir, retries=retries, progress=bar)
        if ray_address is not None:
            info = batch.run_ray(ray_address, workers, stop)
            where += f", {info['actors']} actors on {info['cluster_cpus']} CPUs"
        else:
            n = max(1, min(workers or os.cpu_count() or 1, len(units)))
            where = f"{n} local worker process{'es' * (n != 1)}"
            batch.run_pool(n, stop)
    wall = time.perf_counter() - t0
    # parts of segmented files that did not finish: such a file is separated whole next time
    shutil.rmtree(os.path.join(out_dir, PARTS), ignore_errors=True)
    status = [batch.results.get(t.index, {}).get("status") for t in todo]
    ok, failed = status.count("done"), status.count("failed")
    interrupted = status.count("interrupted")
    not_started = status.count(None)
    audio = sum(t.seconds for t, s in zip(todo, status, strict=True) if s == "done")
    manifest = os.path.join(out_dir, MANIFEST)
    if batch.fatal is not None and not ok and not caught:
        raise BatchError(f"{batch.fatal}" if failed == 0 else
                         f"{batch.fatal} (batch stopped; manifest {manifest})")
    line = (f"{ok} of {len(todo)} files separated in {wall:.1f} s "
            f"({audio / max(wall, 1e-9):.1f}x real time, {where})")
    if done:
        line += f", {len(done)} skipped (done before)"
    if caught or batch.fatal:
        why = f"stopped by {_signal_name(caught[0])}" if caught else f"stopped: {batch.fatal}"
        console.line(f"{why}: {line}; {interrupted} interrupted and {not_started} not started "
                     f"(run the same command again to finish them; manifest {manifest})")
        return SIGNALS[caught[0]] if caught else 1
    console.note(f"{line}; manifest {manifest}")
    if failed:
        raise BatchError(f"{failed} of {len(todo)} files failed (see above; recorded in "
                         f"{manifest}); run the same command again to retry them")
    return 0


def _signal_name(signum: int) -> str:
    import signal

    return signal.Signals(signum).name


def _duration(s: float) -> str:
    if s >= 3600:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    if s >= 60:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{s:.1f} s"

