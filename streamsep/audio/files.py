"""Audio files at the edges: block-wise reading (downmix + soxr resampling) and safe writing.

Writing goes to a temporary file in the destination folder that is renamed over the destination
when it is closed, whether the run finished, failed or was interrupted: a run never leaves a
half-written file under the final name, never clobbers an existing file before it has something to
put there, and never loses output it has already written.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf
import soxr

BLOCK_S = 1.0
_EXT_FORMAT = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG", ".aiff": "AIFF",
               ".aif": "AIFF", ".mp3": "MP3", ".au": "AU", ".caf": "CAF", ".w64": "W64"}
_FLOAT_SUBTYPES = {"FLOAT", "DOUBLE", "VORBIS", "OPUS", "MPEG_LAYER_III"}


class AudioFileError(ValueError):
    """A file cannot be read or written; the message names the file and the fix."""


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def probe(path: str) -> AudioInfo:
    """Describe an input file, or raise AudioFileError saying what is wrong with it."""
    if not os.path.exists(path):
        raise AudioFileError(f"input file not found: {path}")
    if os.path.isdir(path):
        raise AudioFileError(f"{path} is a directory: give an audio file")
    if not os.access(path, os.R_OK):
        raise AudioFileError(f"cannot read {path}: permission denied")
    try:
        info = sf.info(path)
    except (RuntimeError, TypeError, ValueError) as e:
        reason = str(e).split(":", 1)[-1].strip().rstrip(".") or "unknown format"
        raise AudioFileError(
            f"cannot read {path} as audio ({reason}): use WAV, FLAC, OGG, AIFF or MP3, e.g. "
            f"convert with: ffmpeg -i {path} out.wav") from None
    if info.frames <= 0:
        raise AudioFileError(f"{path} contains no audio samples: give a non-empty file")
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioFileError(f"{path} has an invalid header (rate {info.samplerate}, "
                             f"{info.channels} channels): re-export it")
    return AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames),
                     info.format, info.subtype)


def _blocks(path: str, frames: int) -> Iterator[np.ndarray]:
    try:
        with sf.SoundFile(path) as f:
            while True:
                x = f.read(frames, dtype="float32", always_2d=True)
                if not len(x):
                    return
                yield x
    except (RuntimeError, sf.LibsndfileError) as e:
        raise AudioFileError(f"cannot read {path}: {e}: the file may be truncated or "
                             "corrupt; re-export it") from None


def check_finite(path: str, info: AudioInfo | None = None) -> None:
    """Raise AudioFileError if the file holds NaN or Inf samples (only float files can)."""
    info = info or probe(path)
    if info.subtype not in ("FLOAT", "DOUBLE"):
        return
    pos = 0
    for x in _blocks(path, 1 << 16):
        bad = ~np.isfinite(x)
        if bad.any():
            i = pos + int(np.argmax(bad.any(axis=1)))
            raise AudioFileError(f"{path} contains NaN or Inf samples (first at "
                                 f"{i / info.sample_rate:.3f} s): clean or re-export the file")
        pos += len(x)


def read_blocks(path: str, sample_rate: int, *, block_s: float = BLOCK_S,
                info: AudioInfo | None = None,
                note: Callable[[str], None] | None = _note) -> Iterator[np.ndarray]:
    """Yield mono float32 blocks at ``sample_rate``; downmixes and resamples (saying so once)."""
    info = info or probe(path)
    changes = []
    if info.channels > 1:
        changes.append(f"downmixing {info.channels} channels to mono")
    if info.sample_rate != sample_rate:
        changes.append(f"resampling {info.sample_rate} Hz to {sample_rate} Hz")
    if changes and note is not None:
        note(f"{os.path.basename(path)}: " + " and ".join(changes))
    rs = None
    if info.sample_rate != sample_rate:
        rs = soxr.ResampleStream(info.sample_rate, sample_rate, 1, dtype="float32",
                                 quality="HQ")
    frames = max(1, int(block_s * info.sample_rate))
    for x in _blocks(path, frames):
        mono = x[:, 0] if x.shape[1] == 1 else x.mean(axis=1, dtype=np.float32)
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        if rs is not None:
            mono = rs.resample_chunk(mono)
        if len(mono):
            yield mono
    if rs is not None:
        tail = rs.resample_chunk(np.zeros(0, np.float32), last=True)
        if len(tail):
            yield tail


def read_audio(path: str, sample_rate: int = 48000,
               note: Callable[[str], None] | None = _note) -> np.ndarray:
    """The whole file as mono float32 at ``sample_rate``."""
    blocks = list(read_blocks(path, sample_rate, note=note))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def output_format(path: str) -> tuple[str, str | None]:
    """(format, subtype) for an output path, from its extension."""
    ext = os.path.splitext(path)[1].lower()
    fmt = _EXT_FORMAT.get(ext)
    if fmt is None or fmt not in sf.available_formats():
        ok = ", ".join(sorted({e for e, f in _EXT_FORMAT.items()
                               if f in sf.available_formats()}))
        raise AudioFileError(f"cannot write {path}: unknown audio format {ext or '(none)'!r}; "
                             f"use one of {ok}")
    # WAV as 32-bit float: the engine works in float32, so nothing is lost or clipped.
    return fmt, ("FLOAT" if fmt in ("WAV", "W64", "CAF", "AIFF", "AU") else None)


def check_writable(path: str) -> None:
    """Raise AudioFileError if ``path`` cannot be written (checked before any work starts)."""
    output_format(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise AudioFileError(f"cannot write {path}: it is a directory; give a file name")
    if not os.path.isdir(folder):
        raise AudioFileError(f"cannot write {path}: folder {folder} does not exist; create it "
                             "first")
    if not os.access(folder, os.W_OK):
        raise AudioFileError(f"cannot write {path}: folder {folder} is not writable")


class SafeWriter:
    """Mono file writer: temp file in the same folder, renamed into place on close.

    ``close()`` always keeps what was written (also after an error or Ctrl-C when used as a
    context manager); only a file with no samples at all is discarded, leaving any existing file
    untouched.
    """

    def __init__(self, path: str, sample_rate: int):
        check_writable(path)
        self.path = path
        self.sample_rate = int(sample_rate)
        fmt, subtype = output_format(path)
        self._float = subtype in _FLOAT_SUBTYPES or fmt in ("OGG", "MP3")
        folder = os.path.dirname(os.path.abspath(path))
        base = os.path.basename(path)
        self.tmp = os.path.join(folder, f".{base}.{os.getpid()}.partial")
        try:
            self._f = sf.SoundFile(self.tmp, "w", samplerate=self.sample_rate, channels=1,
                                   format=fmt, subtype=subtype)
        except (RuntimeError, sf.LibsndfileError) as e:
            raise AudioFileError(f"cannot write {path}: {e}") from None
        self.frames = 0
        self.clipped = 0
        self.closed = False

    def write(self, x: Any) -> None:
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        if not len(x):
            return
        if not self._float:
            over = np.abs(x) > 1.0
            if over.any():
                self.clipped += int(over.sum())
                x = np.clip(x, -1.0, 1.0)
        self._f.write(x)
        self.frames += len(x)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._f.close()
        if self.frames == 0:
            os.unlink(self.tmp)
            return
        os.replace(self.tmp, self.path)
        if self.clipped:
            _note(f"{self.path}: {self.clipped} samples above full scale were clipped")

    def __enter__(self) -> SafeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResamplingWriter:
    """Takes audio at ``in_rate`` and writes exactly ``frames`` samples at the writer's rate."""

    def __init__(self, writer: SafeWriter, in_rate: int, frames: int):
        self.writer = writer
        self.frames = frames
        self.rs = None
        if in_rate != writer.sample_rate:
            self.rs = soxr.ResampleStream(in_rate, writer.sample_rate, 1, dtype="float32",
                                          quality="HQ")
        self.done = 0

    def _put(self, y: np.ndarray) -> None:
        k = max(0, min(len(y), self.frames - self.done))
        if k:
            self.writer.write(y[:k])
            self.done += k

    def write(self, x: np.ndarray) -> None:
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._put(self.rs.resample_chunk(x) if self.rs is not None else x)

    def close(self, complete: bool = True) -> None:
        """Flush; when ``complete``, pad to exactly ``frames`` (resampling rounds lengths)."""
        if self.rs is not None:
            self._put(self.rs.resample_chunk(np.zeros(0, np.float32), last=True))
        if complete and self.done < self.frames:
            self._put(np.zeros(self.frames - self.done, np.float32))
        self.writer.close()


def save_audio(audio: Any, path: str, sample_rate: int = 48000) -> None:
    """Save mono audio (mlx or numpy, shape (N,), (N, 1) or (1, N)) to ``path``."""
    if type(audio).__module__.startswith("mlx"):
        audio = np.array(audio)
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim > 1:
        a = a.squeeze()
    if a.ndim != 1:
        raise AudioFileError(f"save_audio takes mono audio, got shape {np.shape(audio)}: "
                             "save each channel separately")
    with SafeWriter(path, sample_rate) as w:
        w.write(a)
