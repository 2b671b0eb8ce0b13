"""Turn prompts, recordings and time anchors into the batch SAM-Audio consumes.

Mirrors the reference's ``sam_audio/processor.py``: each recording is downmixed to mono, the batch
is zero-padded to the longest, ``sizes`` counts latent frames as ceil(samples / hop), and anchors
become ``anchor_ids`` (each row starts [<null>, <pad>], then one id per span: + = 1, - = 2,
rows padded with <pad>) and ``anchor_alignment`` (per frame, an index into that row: 0 = <null>,
1 = <pad> on padded frames, k = the k-th entry on frames ceil(start·sr/hop) .. ceil(end·sr/hop)-1).

Files are read with soundfile and resampled to the model rate with soxr. Arrays are taken as
already at the model rate (48 kHz); shape (samples,) or (channels, samples).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

ANCHOR_IDS = {"<null>": 0, "+": 1, "-": 2, "<pad>": 3}

Anchor = tuple[str, float, float]
AudioInput = str | Path | np.ndarray | mx.array


@dataclass
class Batch:
    """Model inputs for B items; T = latent frames of the longest item."""

    audios: mx.array  # (B, 1, N) float32, zero-padded mono at the model rate
    descriptions: list[str]
    sizes: mx.array  # (B,) int32 latent frames per item
    wav_sizes: mx.array  # (B,) int32 samples per item
    audio_pad_mask: mx.array  # (B, T) bool, True on valid frames
    anchor_ids: mx.array  # (B, K) int32
    anchor_alignment: mx.array  # (B, T) int32, index into the item's anchor_ids row


class SAMAudioProcessor:
    """Callable as ``processor(descriptions, audios, anchors=None) -> Batch``."""

    def __init__(self, audio_hop_length: int = 1920, audio_sampling_rate: int = 48_000):
        if int(audio_hop_length) <= 0 or int(audio_sampling_rate) <= 0:
            raise ValueError("audio_hop_length and audio_sampling_rate must be positive integers")
        self.audio_hop_length = int(audio_hop_length)
        self.audio_sampling_rate = int(audio_sampling_rate)

    @classmethod
    def from_pretrained(
        cls, repo_id_or_dir: str | Path, *, revision: str | None = None, token: str | None = None
    ) -> SAMAudioProcessor:
        """Hop and sample rate from the model's config.json (only that file is fetched)."""
        from streamsep.sam_audio.loading import hop_length_of, resolve_config, sample_rate_of

        config = resolve_config(repo_id_or_dir, revision=revision, token=token)
        return cls(hop_length_of(config), sample_rate_of(config))

    def wav_to_feature_idx(self, wav_idx: float) -> int:
        """Latent frame of a sample position, rounded up as the reference does."""
        return math.ceil(wav_idx / self.audio_hop_length)

    def __call__(
        self,
        descriptions: Sequence[str],
        audios: Sequence[AudioInput] | np.ndarray | mx.array,
        anchors: Sequence[Sequence[Anchor]] | None = None,
    ) -> Batch:
        descriptions = _check_descriptions(descriptions)
        audios = _as_list(audios)
        if len(audios) != len(descriptions):
            raise ValueError(
                f"got {len(descriptions)} descriptions but {len(audios)} audios: pass one "
                "description per recording"
            )
        if anchors is not None and len(anchors) != len(descriptions):
            raise ValueError(
                f"got anchors for {len(anchors)} items but {len(descriptions)} descriptions: pass "
                "one anchor list per recording ([] for none), or anchors=None"
            )
        wavs = [self._load(a, i) for i, a in enumerate(audios)]
        wav_sizes = np.array([w.shape[0] for w in wavs], dtype=np.int64)
        padded = np.zeros((len(wavs), 1, int(wav_sizes.max())), dtype=np.float32)
        for i, w in enumerate(wavs):
            padded[i, 0, : w.shape[0]] = w
        sizes = np.array([self.wav_to_feature_idx(int(n)) for n in wav_sizes], dtype=np.int64)
        frames = int(sizes.max())
        pad_mask = np.arange(frames)[None, :] < sizes[:, None]
        anchor_ids, alignment = anchor_arrays(
            anchors, pad_mask, self.audio_hop_length, self.audio_sampling_rate
        )
        return Batch(
            audios=mx.array(padded),
            descriptions=list(descriptions),
            sizes=mx.array(sizes.astype(np.int32)),
            wav_sizes=mx.array(wav_sizes.astype(np.int32)),
            audio_pad_mask=mx.array(pad_mask),
            anchor_ids=mx.array(anchor_ids),
            anchor_alignment=mx.array(alignment),
        )

    # ----------------------------------------------------------------------------- anchors
    # ----------------------------------------------------------------------------- audio
    def _load(self, audio: AudioInput, index: int) -> np.ndarray:
        if isinstance(audio, (str, Path)):
            wav = _read_file(Path(audio), self.audio_sampling_rate)
            name = str(audio)
        else:
            wav = _array_to_mono(audio, index)
            name = f"audio {index}"
        if wav.shape[0] == 0:
            raise ValueError(f"{name} is empty (0 samples): pass a recording with sound in it")
        if not np.isfinite(wav).all():
            raise ValueError(
                f"{name} contains NaN or Inf samples: clean the signal (e.g. np.nan_to_num) first"
            )
        return wav


def _as_list(audios: Any) -> list:
    if isinstance(audios, (np.ndarray, mx.array)):
        if audios.ndim != 3:
            raise ValueError(
                f"audios as one array must be (B, channels, samples); got shape "
                f"{tuple(audios.shape)}: pass a list with one array or path per recording"
            )
        return [audios[i] for i in range(audios.shape[0])]
    if isinstance(audios, (str, Path)):
        raise ValueError("audios must be a list (one path or array per recording), not one path")
    return list(audios)


def _check_descriptions(descriptions: Any) -> list[str]:
    if isinstance(descriptions, str):
        raise ValueError(
            f"descriptions must be a list of strings, one per recording: use [{descriptions!r}]"
        )
    out = list(descriptions)
    if not out:
        raise ValueError("descriptions is empty: pass one text prompt per recording")
    for i, d in enumerate(out):
        if not isinstance(d, str):
            raise ValueError(f"description {i} is a {type(d).__name__}, not a string")
        if not d.strip():
            raise ValueError(
                f"description {i} is empty: say what to separate, e.g. 'speech' or 'a dog barking'"
            )
    return out


def anchor_arrays(
    anchors: Sequence[Sequence[Anchor]] | None,
    pad_mask: np.ndarray,
    hop: int,
    sample_rate: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Anchor ids (B, K) and per-frame alignment (B, T) exactly as the reference processor.

    Each row starts [<null>, <pad>]; every span appends its token and points its frames
    [ceil(start·sr/hop), ceil(end·sr/hop)) at it; other valid frames point at <null> (0) and
    padded frames (``pad_mask`` False) at <pad> (1).
    """
    batch = pad_mask.shape[0]
    if anchors is not None and len(anchors) != batch:
        raise ValueError(f"got anchors for {len(anchors)} items; the batch has {batch}")
    alignment = np.where(pad_mask, 0, 1).astype(np.int32)
    rows = [[ANCHOR_IDS["<null>"], ANCHOR_IDS["<pad>"]] for _ in range(batch)]
    for i, spans in enumerate(anchors or []):
        for j, span in enumerate(spans or []):
            token, start, end = _check_anchor(span, i, j)
            # Python float arithmetic, as the reference: ceil(t·sr / hop). Spans are not
            # clipped to the valid frames (the reference marks padded frames too).
            s = math.ceil(start * sample_rate / hop)
            e = math.ceil(end * sample_rate / hop)
            alignment[i, s:e] = len(rows[i])
            rows[i].append(ANCHOR_IDS[token])
    ids = np.full((batch, max(len(r) for r in rows)), ANCHOR_IDS["<pad>"], dtype=np.int32)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return ids, alignment


def _check_anchor(span: Any, item: int, index: int) -> tuple[str, float, float]:
    where = f"anchor {index} of item {item}"
    try:
        if isinstance(span, (str, bytes)):
            raise TypeError
        token, start, end = span
    except (TypeError, ValueError):
        raise ValueError(f"{where} is {span!r}: write it as ('+' or '-', start_s, end_s)") from None
    if token not in ("+", "-"):
        raise ValueError(
            f"{where} has token {token!r}: use '+' (target is there) or '-' (target is absent)"
        )
    try:
        start, end = float(start), float(end)
    except (TypeError, ValueError):
        raise ValueError(f"{where} has non-numeric times: give start and end in seconds") from None
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0:
        raise ValueError(f"{where} spans {start}..{end} s: times must be finite and >= 0")
    if start >= end:
        raise ValueError(f"{where} starts at {start} s but ends at {end} s: start must be < end")
    return token, start, end


def _array_to_mono(audio: Any, index: int) -> np.ndarray:
    if isinstance(audio, mx.array):
        audio = audio.astype(mx.float32)  # numpy cannot take bfloat16 directly
    arr = np.asarray(audio, dtype=np.float32)
    if arr.ndim == 1:
        return arr
    if arr.ndim == 2:
        if arr.shape[0] > arr.shape[1]:
            raise ValueError(
                f"audio {index} has shape {arr.shape}, which reads as {arr.shape[0]} channels of "
                f"{arr.shape[1]} samples; arrays are (channels, samples): pass its transpose (.T)"
            )
        return arr.mean(axis=0)  # downmix, as the reference's wav.mean(0)
    raise ValueError(
        f"audio {index} has shape {arr.shape}: pass (samples,) or (channels, samples) at 48 kHz"
    )


def _read_file(path: Path, sample_rate: int) -> np.ndarray:
    import soundfile as sf
    import soxr

    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ValueError(f"audio file {path} {what}: check the path")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/TypeError
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"cannot read audio file {path} ({reason}): convert it to WAV or FLAC, e.g. "
            "`ffmpeg -i IN OUT.wav`"
        ) from exc
    wav = data.mean(axis=1)
    if rate != sample_rate and wav.shape[0] > 0:
        wav = soxr.resample(wav, rate, sample_rate).astype(np.float32)
    return np.ascontiguousarray(wav, dtype=np.float32)
