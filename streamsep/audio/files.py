"""Audio files at the edges: block-wise reading (downmix + soxr resampling) and safe writing.

Writing goes to a temporary file in the destination folder that is renamed over the destination
when it is closed, whether the run finished, failed or was interrupted: a run never leaves a
half-written file under the final name, never clobbers an existing file before it has something to
put there, and never loses output it has already written. A write that fails (a full disk) keeps
what was written under the final name and says so in one line.

Reading counts the frames actually decoded: a file that ends before its header says (cut while it
was copied) is read as far as it goes, announced with a warning, and never padded.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import soundfile as sf
import soxr

from streamsep import console

BLOCK_S = 1.0
_EXT_FORMAT = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG", ".aiff": "AIFF",
               ".aif": "AIFF", ".mp3": "MP3", ".au": "AU", ".caf": "CAF", ".w64": "W64"}
#: Extensions of the files a folder given as input contributes (what libsndfile reads); each is
#: still probed, and one that does not open as audio is skipped with a note.
AUDIO_EXTENSIONS = (*_EXT_FORMAT, ".opus", ".aifc", ".rf64", ".snd", ".wv", ".voc", ".sd2",
                    ".mat", ".pvf", ".xi", ".htk", ".sf", ".ircam", ".mpc", ".nist", ".sph")
_FLOAT_SUBTYPES = {"FLOAT", "DOUBLE", "VORBIS", "OPUS", "MPEG_LAYER_III"}
_UNCOMPRESSED = ("WAV", "RF64", "W64", "CAF", "AIFF", "AU")
#: Bytes per sample of each uncompressed subtype (the space check and the RF64 switch use them).
_SUBTYPE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "ULAW": 1, "ALAW": 1, "PCM_16": 2, "PCM_24": 3,
                  "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}
#: Input subtypes an output copies by default (where its format allows): the linear ones and
#: the telephone companders. ADPCM, GSM and the like are not worth re-encoding separated audio
#: into; lossy codecs are never copied into a lossless container (nothing to preserve).
_COPYABLE = set(_SUBTYPE_BYTES)
#: A RIFF/AIFF/AU size field is 32 bits: past this (less room for the header chunks) the data
#: length wraps and readers see only its remainder.
_SIZE32_LIMIT = 2**32 - 1 - 64 * 1024
#: Free bytes a writer leaves on the disk: enough for an encoder to finish its last frame and
#: rewrite its header on close. A FLAC encoder that hits ENOSPC itself leaves a file with no
#: length and a torn last frame, so the writer stops (with the disk-full error) before that.
_DISK_RESERVE = 256 * 1024


class AudioFileError(ValueError):
    """A file cannot be read or written; the message names the file and the fix."""


class DiskFullError(AudioFileError):
    """An output's disk filled up while it was written (what was written is kept)."""


def _note(text: str) -> None:
    console.note(text)


def _warn(text: str) -> None:
    console.warn(text)


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str
    #: frames the header declares: more than ``frames`` where libsndfile has quietly shortened
    #: that to what a cut WAV or AIFF holds; a cut MP3 or FLAC shows only when decoding stops
    declared_frames: int = 0

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
        with _quiet_mpg123(path):
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
    frames = int(info.frames)
    declared = _declared_frames(path, info.format)
    return AudioInfo(path, int(info.samplerate), int(info.channels), frames, info.format,
                     info.subtype, max(frames, declared or 0))


def _declared_frames(path: str, fmt: str) -> int | None:
    """The frame count a WAV, RF64 or AIFF header declares, or None (other formats, a header
    that leaves the length open, or one this does not understand).

    libsndfile quietly shortens ``frames`` to what the file holds, so this is the only place
    a cut WAV or AIFF shows."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return None
    try:
        if fmt in ("WAV", "WAVEX", "RF64") and head[8:12] == b"WAVE":
            return _riff_frames(head)
        if fmt == "AIFF" and head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
            return _aiff_frames(head)
    except struct.error:  # the header is cut inside a chunk: libsndfile has said what it can
        return None
    return None


def _riff_frames(head: bytes) -> int | None:
    rf64 = head[:4] == b"RF64"
    pos, align, size64 = 12, 0, None
    while pos + 8 <= len(head):
        cid, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        body = pos + 8
        if cid == b"ds64":
            size64 = struct.unpack_from("<Q", head, body + 8)[0]
        elif cid == b"fmt ":
            align = struct.unpack_from("<H", head, body + 12)[0]
        elif cid == b"data":
            if rf64 and size == 0xFFFFFFFF:
                size = size64
            # 0 and 0xFFFFFFFF are what streaming writers (ffmpeg to a pipe) leave: no claim
            if not align or size is None or size in (0, 0xFFFFFFFF):
                return None
            return size // align
        pos = body + size + (size & 1)
    return None


def _aiff_frames(head: bytes) -> int | None:
    pos = 12
    while pos + 8 <= len(head):
        cid, size = head[pos : pos + 4], struct.unpack_from(">I", head, pos + 4)[0]
        if cid == b"COMM":
            return struct.unpack_from(">I", head, pos + 10)[0]
        pos += 8 + size + (size & 1)
    return None


@contextlib.contextmanager
def _quiet_mpg123(path: str) -> Iterator[None]:
    """Silence what libmpg123 prints straight to stderr while an MP3 is opened ("Xing stream
    size off by more than 1%" for a cut file): the one-line report about it is ours."""
    if not path.lower().endswith(".mp3"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@dataclass
class ReadStats:
    """What one pass of ``read_blocks`` decoded; final once ``done``."""

    declared: int  # frames the header declares (input rate)
    sample_rate: int
    decoded: int = 0  # frames decoded so far (input rate)
    done: bool = False
    #: the decoder's complaint when it stopped before the declared end (None: the data just ends)
    error: str | None = None
    #: shortfalls up to this many frames are not reported (see ``missing``)
    tolerance: int = 0

    @classmethod
    def for_file(cls, info: AudioInfo) -> ReadStats:
        # Without a Xing/LAME header an MP3's length is libmpg123's estimate, which can be a
        # frame off for a complete file: only a larger gap means the file was cut.
        return cls(info.declared_frames or info.frames, info.sample_rate,
                   tolerance=1152 if info.format == "MPEG" else 0)

    @property
    def missing(self) -> int:
        """Frames the header declares that were not decoded (0 until ``done``)."""
        gap = self.declared - self.decoded if self.done else 0
        return gap if gap > self.tolerance else 0


# soundfile's SoundFile.read() seeks to where it believes it is after every block. On MP3 that
# seek makes libmpg123 resynchronise mid-stream without its bit reservoir, which garbles up to
# three MPEG frames after about a third of 1 s block boundaries. Calling libsndfile's reader
# directly decodes straight through: block-wise output then equals a whole-file decode.
_DIRECT = all(hasattr(sf, a) for a in ("_snd", "_ffi"))


def _read_into(f: sf.SoundFile, out: np.ndarray) -> tuple[int, str | None]:
    """Fill ``out`` (frames x channels, float32) from ``f``; (frames read, decoder error)."""
    if not _DIRECT:  # a soundfile without the cffi handles: correct except for MP3 (above)
        return len(f.read(len(out), dtype="float32", always_2d=True, out=out)), None
    ptr = sf._ffi.cast("float *", sf._ffi.from_buffer(out))
    n = int(sf._snd.sf_readf_float(f._file, ptr, len(out)))
    err = None
    if sf._snd.sf_error(f._file):
        err = sf._ffi.string(sf._snd.sf_strerror(f._file)).decode("utf-8", "replace")
        err = err.removeprefix("Error : ").strip().rstrip(".") or "decoder error"
    return max(0, n), err


def _open_read(path: str) -> sf.SoundFile:
    try:
        with _quiet_mpg123(path):
            return sf.SoundFile(path)
    except (RuntimeError, sf.LibsndfileError) as e:
        raise AudioFileError(f"cannot read {path}: {e}: the file may be truncated or "
                             "corrupt; re-export it") from None


def _blocks(f: sf.SoundFile, frames: int, stats: ReadStats | None = None) -> Iterator[np.ndarray]:
    """Blocks of up to ``frames`` (frames x channels) until the data ends or cannot be decoded;
    ``stats`` counts them. Closes ``f``."""
    with f:
        buf = np.empty((frames, f.channels), np.float32)
        while True:
            n, err = _read_into(f, buf)
            if n:
                if stats is not None:
                    stats.decoded += n
                yield buf[:n].copy()  # the buffer is reused for the next block
            # A full block carries on whatever the error flag says (libsndfile may leave one
            # set from parsing the header); a short one with an error, or none at all, ends.
            if n == 0 or (n < frames and err is not None):
                if stats is not None:
                    stats.error = err
                    stats.done = True
                return


def check_finite(path: str, info: AudioInfo | None = None) -> None:
    """Raise AudioFileError if the file holds NaN or Inf samples (only float files can)."""
    info = info or probe(path)
    if info.subtype not in ("FLOAT", "DOUBLE"):
        return
    pos = 0
    for x in _blocks(_open_read(path), 1 << 16):
        bad = ~np.isfinite(x)
        if bad.any():
            i = pos + int(np.argmax(bad.any(axis=1)))
            raise AudioFileError(f"{path} contains NaN or Inf samples (first at "
                                 f"{i / info.sample_rate:.3f} s): clean or re-export the file")
        pos += len(x)


def read_blocks(path: str, sample_rate: int, *, block_s: float = BLOCK_S,
                info: AudioInfo | None = None,
                note: Callable[[str], None] | None = _note,
                warn: Callable[[str], None] | None = _warn,
                stats: ReadStats | None = None,
                keep_channels: bool = False) -> Iterator[np.ndarray]:
    """Yield mono float32 blocks at ``sample_rate``; downmixes and resamples (saying so once).

    With ``keep_channels`` the blocks are (frames, channels) instead, every channel resampled
    alike and nothing downmixed. The file is opened here, not at the first block, so that
    errors (and libmpg123's chatter, silenced) come before any thread runs. ``stats`` receives
    the frames decoded; when the data ends before the header says, ``warn`` gets one line
    saying how much is missing."""
    info = info or probe(path)
    changes = []
    if info.channels > 1 and not keep_channels:
        changes.append(f"downmixing {info.channels} channels to mono")
    if info.sample_rate != sample_rate:
        changes.append(f"resampling {info.sample_rate} Hz to {sample_rate} Hz")
    if changes and note is not None:
        note(f"{os.path.basename(path)}: " + " and ".join(changes))
    stats = stats if stats is not None else ReadStats.for_file(info)
    f = _open_read(path)
    return _mono_blocks(f, path, sample_rate, info, stats, warn,
                        max(1, int(block_s * info.sample_rate)), keep_channels)


def _mono_blocks(f: sf.SoundFile, path: str, sample_rate: int, info: AudioInfo,
                 stats: ReadStats, warn: Callable[[str], None] | None,
                 frames: int, keep_channels: bool = False) -> Iterator[np.ndarray]:
    rs = None
    nch = info.channels if keep_channels else 1
    if info.sample_rate != sample_rate:
        rs = soxr.ResampleStream(info.sample_rate, sample_rate, nch, dtype="float32",
                                 quality="HQ")
    for x in _blocks(f, frames, stats):
        if keep_channels:
            mono = np.ascontiguousarray(x, dtype=np.float32)
        else:
            mono = x[:, 0] if x.shape[1] == 1 else x.mean(axis=1, dtype=np.float32)
            mono = np.ascontiguousarray(mono, dtype=np.float32)
        if rs is not None:
            mono = rs.resample_chunk(mono)
        if len(mono):
            yield mono
    if stats.decoded == 0:
        why = f" ({stats.error})" if stats.error else ""
        raise AudioFileError(f"cannot decode any audio from {path}{why}: the file is corrupt or "
                             "cut right after its header; re-export or re-copy it")
    if stats.missing and warn is not None:
        warn(short_read_message(path, stats))
    if rs is not None:
        tail = rs.resample_chunk(np.zeros((0, nch) if keep_channels else 0, np.float32),
                                 last=True)
        if len(tail):
            yield tail


def short_read_message(path: str, stats: ReadStats) -> str:
    """One line: how much of ``path`` could not be read, and what the outputs hold instead."""
    sr, miss = stats.sample_rate, stats.missing
    why = f"decoding stopped ({stats.error})" if stats.error else "the data ends early"
    return (f"{path} is incomplete: {why} after {stats.decoded} samples "
            f"({stats.decoded / sr:.3f} s) of the {stats.declared} its header declares; "
            f"{miss} samples ({miss / sr:.3f} s) are missing, and the outputs end where the "
            "input does (nothing is padded); re-copy or re-export it for the rest")


def read_audio(path: str, sample_rate: int = 48000,
               note: Callable[[str], None] | None = _note) -> np.ndarray:
    """The whole file as mono float32 at ``sample_rate``."""
    blocks = list(read_blocks(path, sample_rate, note=note))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def output_format(path: str, frames: int | None = None, *, channels: int = 1,
                  subtype: str | None = None, like: str | None = None) -> tuple[str, str | None]:
    """(format, subtype) for an output path, from its extension.

    ``subtype`` is the one asked for (``--subtype``), checked against the format; without it
    the input's subtype ``like`` where the format can hold it (a 16-bit WAV gives 16-bit
    outputs), else 32-bit float for the uncompressed formats (the engine works in float32, so
    nothing is lost or clipped), 24-bit for FLAC and the codec's own for OGG and MP3. With the
    output's ``frames``, a WAV too large for 32-bit sizes becomes RF64 (``container_limit``)."""
    ext = os.path.splitext(path)[1].lower()
    fmt = _EXT_FORMAT.get(ext)
    if fmt is None or fmt not in sf.available_formats():
        ok = ", ".join(sorted({e for e, f in _EXT_FORMAT.items()
                               if f in sf.available_formats()}))
        raise AudioFileError(f"cannot write {path}: unknown audio format {ext or '(none)'!r}; "
                             f"use one of {ok}")
    if subtype is not None:
        subtype = subtype.strip().upper()
        if not sf.check_format(fmt, subtype):
            ok = ", ".join(sorted(sf.available_subtypes(fmt)))
            raise AudioFileError(f"--subtype {subtype} cannot be written to {ext} ({path}): "
                                 f"use one of {ok}, or another extension")
    else:
        subtype = _default_subtype(fmt, like)
    if frames is not None and container_limit(fmt, frames, channels, subtype):
        if fmt == "WAV":
            fmt = "RF64"
        else:
            raise AudioFileError(
                f"cannot write {path}: {output_bytes(fmt, frames, channels, subtype) / 1e9:.1f} "
                f"GB of audio is more than a {ext} file can hold (4 GiB); use .wav (written as "
                "RF64), .w64, .caf or .flac")
    return fmt, subtype


def _default_subtype(fmt: str, like: str | None) -> str | None:
    if like is not None and like in _COPYABLE and sf.check_format(fmt, like):
        return like
    if fmt in _UNCOMPRESSED:
        return "FLOAT"
    if fmt == "FLAC" and like is not None:
        return "PCM_24"  # the most FLAC holds: a float or lossy input loses the least
    return None  # FLAC without an input to follow (16-bit), OGG (Vorbis), MP3 (layer III)


def output_bytes(fmt: str, frames: int, channels: int = 1, subtype: str | None = "FLOAT") -> int:
    """Bytes of sample data for ``frames`` of an uncompressed ``fmt`` (0 when compressed)."""
    if fmt not in _UNCOMPRESSED:
        return 0
    return int(frames) * channels * _SUBTYPE_BYTES.get(subtype or "FLOAT", 4)


def container_limit(fmt: str, frames: int, channels: int = 1,
                    subtype: str | None = "FLOAT") -> bool:
    """Whether ``frames`` of ``fmt`` overflow its 32-bit size fields (WAV, AIFF, AU): a plain
    WAV past 4 GiB (6 h 12 min of mono float at 48 kHz) reads back as its first part only."""
    return (fmt in ("WAV", "AIFF", "AU")
            and output_bytes(fmt, frames, channels, subtype) > _SIZE32_LIMIT)


class OutputSpec(NamedTuple):
    """An output the space check counts: its path, frames, channels and subtype."""

    path: str
    frames: int
    channels: int = 1
    subtype: str | None = None
    like: str | None = None  # the input's subtype, where ``subtype`` is left to the default


def check_space(outputs: list[tuple[Any, ...]]) -> None:
    """Raise AudioFileError if the uncompressed outputs, ``OutputSpec`` or (path, frames)
    each, cannot fit on their disks; checked before any work, so that a long run does not die
    at 95 %."""
    need: dict[int, list[Any]] = {}
    for spec in outputs:
        o = OutputSpec(*spec)
        fmt, subtype = output_format(o.path, o.frames, channels=o.channels, subtype=o.subtype,
                                     like=o.like)
        folder = os.path.dirname(os.path.abspath(o.path))
        try:
            dev = os.stat(folder).st_dev
        except OSError:
            continue
        entry = need.setdefault(dev, [folder, 0, []])
        entry[1] += output_bytes(fmt, o.frames, o.channels, subtype)
        entry[2].append(o.path)
    for folder, size, paths in need.values():
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            continue
        # the writers stop short of the last _DISK_RESERVE bytes (see SafeWriter.write)
        if size and size + _DISK_RESERVE > free:
            shown = " and ".join(paths) if len(paths) <= 2 else \
                f"{paths[0]} and {len(paths) - 1} more outputs"
            raise AudioFileError(
                f"not enough space for {shown}: the disk holding {folder} has "
                f"{_size(free)} free and the output needs {_size(size)}; free space, write "
                "elsewhere, or write .flac")


def _size(n: int) -> str:
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n} bytes"


def check_writable(path: str, *, subtype: str | None = None) -> None:
    """Raise AudioFileError if ``path`` cannot be written (checked before any work starts)."""
    output_format(path, subtype=subtype)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise AudioFileError(f"cannot write {path}: it is a directory; give a file name")
    if not os.path.isdir(folder):
        raise AudioFileError(f"cannot write {path}: folder {folder} does not exist; create it "
                             "first")
    if not os.access(folder, os.W_OK):
        raise AudioFileError(f"cannot write {path}: folder {folder} is not writable")


class SafeWriter:
    """File writer: temp file in the same folder, renamed into place on close.

    ``close()`` always keeps what was written (also after an error or Ctrl-C when used as a
    context manager); only a file with no samples at all is discarded, leaving any existing file
    untouched. A write that fails (full disk) closes the file the same way, then raises one
    AudioFileError naming the file and the fix; later writes are ignored. ``frames``, when
    known, is the output length, from which a WAV past 4 GiB is written as RF64 (with a note).
    ``channels`` > 1 takes (frames, channels) blocks; ``subtype`` and ``like`` are
    ``output_format``'s (the default: 32-bit float WAV).
    """

    def __init__(self, path: str, sample_rate: int, frames: int | None = None, *,
                 channels: int = 1, subtype: str | None = None, like: str | None = None):
        check_writable(path)
        self.path = path
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        fmt, subtype = output_format(path, frames, channels=self.channels, subtype=subtype,
                                     like=like)
        if fmt == "RF64":
            size = output_bytes(fmt, frames or 0, self.channels, subtype)
            _note(f"{path}: {size / 2**30:.1f} GiB is past the 4 GiB "
                  "a plain WAV can hold; writing it as RF64 (64-bit WAV, read by sox, ffmpeg "
                  "and libsndfile)")
        self.format = fmt
        self.subtype = subtype
        # bytes one frame takes at most on the disk (the free-space watch); float32 for codecs
        self._frame_bytes = self.channels * max(4, _SUBTYPE_BYTES.get(subtype or "", 4))
        self._float = subtype in _FLOAT_SUBTYPES or fmt in ("OGG", "MP3")
        self.folder = os.path.dirname(os.path.abspath(path))
        base = os.path.basename(path)
        self.tmp = os.path.join(self.folder, f".{base}.{os.getpid()}.partial")
        try:
            self._f = sf.SoundFile(self.tmp, "w", samplerate=self.sample_rate,
                                   channels=self.channels, format=fmt, subtype=subtype)
        except (RuntimeError, sf.LibsndfileError) as e:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            raise AudioFileError(f"cannot write {path}: {self._reason(e)}") from None
        self._room = self._free_bytes()  # a lower bound on the free space, kept up to date
        self.frames = 0
        self.kept = 0  # frames under the final name once closed
        self.clipped = 0
        self.closed = False
        self.failed = False

    def write(self, x: Any) -> None:
        if self.closed:
            return  # after a failed write: the file is already finalized
        x = np.asarray(x, dtype=np.float32)
        x = x.reshape(-1) if self.channels == 1 else x.reshape(-1, self.channels)
        if not len(x):
            return
        if not self._float:
            over = np.abs(x) > 1.0
            if over.any():
                self.clipped += int(over.sum())
                x = np.clip(x, -1.0, 1.0)
        need = self._frame_bytes * len(x) + _DISK_RESERVE
        if self._room < need:
            self._room = self._free_bytes()  # measured only when the estimate runs low
            if self._room < need:
                self._fail("disk full")
        try:
            self._f.write(x)
        except (RuntimeError, sf.LibsndfileError, OSError) as e:
            self._fail(self._reason(e))
        self._room -= self._frame_bytes * len(x)
        self.frames += len(x)

    def _fail(self, reason: str) -> None:
        self.failed = True
        self.close()
        raise self._error(reason) from None

    def _free_bytes(self) -> int:
        try:
            return int(shutil.disk_usage(self.folder).free)
        except OSError:  # cannot tell: do not stop writing for it
            return 1 << 62

    def _reason(self, e: BaseException) -> str:
        # libsndfile reports every failed write as "System error" and drops errno; what is
        # left on the disk tells the common case apart.
        if getattr(e, "errno", None) == errno.ENOSPC or self._disk_full():
            return "disk full"
        return " ".join(str(e).split()) or type(e).__name__

    def _disk_full(self) -> bool:
        return self._free_bytes() < _DISK_RESERVE

    def _error(self, reason: str) -> AudioFileError:
        cls = DiskFullError if reason == "disk full" else AudioFileError
        return cls(self._failure(reason))

    def _failure(self, reason: str) -> str:
        kept = self.kept
        where = (f"the {kept / self.sample_rate:.1f} s written so far are kept in it"
                 if kept else "nothing was written")
        if reason == "disk full":
            return (f"the disk holding {self.path} is full ({where}): free space or write "
                    "elsewhere")
        return (f"cannot write {self.path} ({reason}; {where}): check the disk, or write "
                "elsewhere")

    def _frames_on_disk(self) -> int:
        # after a failed write the file may hold part of the last block, or less than counted
        try:
            return int(sf.info(self.tmp).frames)
        except (RuntimeError, sf.LibsndfileError):
            return 0

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        problem = None
        try:
            self._f.close()  # rewrites the header: the length it records is what is on disk
        except (RuntimeError, sf.LibsndfileError, OSError) as e:
            problem = self._reason(e)
        self.kept = self.frames if not (self.failed or problem) else self._frames_on_disk()
        if self.kept == 0:  # nothing to keep: leave an existing file alone
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            if problem is not None and not self.failed:
                self.failed = True
                raise self._error(problem)
            return
        try:
            os.replace(self.tmp, self.path)
        except OSError as e:
            raise AudioFileError(f"cannot rename {self.tmp} to {self.path} ({e.strerror}): the "
                                 f"output is in {self.tmp}; move it by hand") from None
        if problem is not None and not self.failed:
            self.failed = True
            raise self._error(problem)
        if self.clipped:
            _note(f"{self.path}: {self.clipped} samples above full scale were clipped "
                  f"({self.subtype or self.format} holds at most 1.0; a .wav with --subtype "
                  "FLOAT keeps them)")

    def __enter__(self) -> SafeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResamplingWriter:
    """Takes audio at ``in_rate`` and writes exactly ``frames`` samples at the writer's rate.

    ``frames`` may be None while the length is not known yet (a file still being read, which
    may end early); nothing is cut then, and it must be set before ``close``."""

    def __init__(self, writer: SafeWriter, in_rate: int, frames: int | None):
        self.writer = writer
        self.frames = frames
        self.channels = getattr(writer, "channels", 1)
        self.rs = None
        if in_rate != writer.sample_rate:
            self.rs = soxr.ResampleStream(in_rate, writer.sample_rate, self.channels,
                                          dtype="float32", quality="HQ")
        self.done = 0

    def _put(self, y: np.ndarray) -> None:
        k = len(y) if self.frames is None else max(0, min(len(y), self.frames - self.done))
        if k:
            self.writer.write(y[:k])
            self.done += k

    def write(self, x: np.ndarray) -> None:
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._put(self.rs.resample_chunk(x) if self.rs is not None else x)

    def _zeros(self, n: int) -> np.ndarray:
        return np.zeros(n if self.channels == 1 else (n, self.channels), np.float32)

    def close(self, complete: bool = True) -> None:
        """Flush; when ``complete``, pad to exactly ``frames`` (resampling rounds lengths)."""
        try:
            if not self.writer.closed:
                if self.rs is not None:
                    self._put(self.rs.resample_chunk(self._zeros(0), last=True))
                if complete and self.frames is not None and self.done < self.frames:
                    self._put(self._zeros(self.frames - self.done))
        finally:
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
