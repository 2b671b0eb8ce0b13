"""The one interface between the live engine and any separation model.

The engine never imports model code: it hands a separator one window of mono audio at the
separator's sample rate, plus the position-seeded noise for that window's latent frames, and gets
the target and residual back for the same samples.

What the engine does when a separator misbehaves (``streamsep.engine.worker``): a window whose
``separate`` raises, or returns NaN/Inf, a wrong length, a non-float dtype or more than one
channel, is never played or written; that window gets the overload policy's output instead ("dry":
the input as target and silence as residual, or "silence"), crossfaded like any window, counted,
and warned about. Only when every window fails for 10 s of audio does the run end
(``SeparatorError``).
"""

from __future__ import annotations

import os
import traceback
import unicodedata
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: Longest prompt accepted from a keyboard: text encoders truncate long before this, and a longer
#: line is almost surely a paste gone wrong.
MAX_PROMPT_CHARS = 500


class ModelError(ValueError):
    """The model cannot be loaded or keeps failing; the message says why and what to do instead."""


@runtime_checkable
class Separator(Protocol):
    #: Sample rate of the audio passed to and returned from ``separate``.
    sample_rate: int
    #: Samples per latent frame; every window length the engine uses is a multiple of it.
    frame_hop: int
    #: Noise channels per latent frame (0 for deterministic separators that take no noise).
    noise_channels: int

    def set_prompt(self, text: str) -> None:
        """Select the sound to extract; implementations cache the text features."""

    def separate(
        self,
        window: np.ndarray,
        noise: np.ndarray | None,
        anchors: list[tuple[str, float, float]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Separate one window.

        window: float32 (N,), N a multiple of ``frame_hop``.
        noise: float32 (N // frame_hop, noise_channels), or None when ``noise_channels`` is 0.
        anchors: optional ("+"|"-", start_s, end_s) spans relative to the window start.
        Returns (target, residual), each float32 (N,) (any float dtype and the mono shapes (N, 1)
        and (1, N) are accepted; anything else counts as an invalid window).
        """


@runtime_checkable
class RegionSeparator(Protocol):
    """Optional extension: a separator whose per-window cost follows the new and emitted audio.

    The engine keeps only ``hop + crossfade`` samples of each window, and successive windows
    share all but ``hop`` samples. A separator with ``separate_region`` is asked for the emitted
    stretch alone and told where the window sits in the stream, so it can keep per-stream state
    (SAM-Audio: the codec's latent frames and the decoder's carried state) instead of redoing
    the whole window every hop.
    """

    def separate_region(
        self,
        window: np.ndarray,
        noise: np.ndarray | None,
        anchors: list[tuple[str, float, float]] | None,
        *,
        start: int,
        emit: slice,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like ``separate``, but returns only ``target[emit]`` and ``residual[emit]``.

        start: absolute stream sample index of ``window[0]``. While the stream is continuous,
        consecutive calls advance ``start`` by exactly the hop, with the same ``emit``; any
        other ``start`` (the first call, skipped windows, a restart) means per-stream caches
        must be dropped and rebuilt from this window. ``start`` is negative for the first
        windows of a stream, which the engine pads on the left with silence.
        """


@runtime_checkable
class ContinuedSeparator(Protocol):
    """Optional extension for ``--continuity inpaint``: a separator that can carry the previous
    window's result into the next window's computation (the embedded model pins the shared
    frames of its flow state to it)."""

    def separate_continued(
        self,
        window: np.ndarray,
        noise: np.ndarray | None,
        anchors: list[tuple[str, float, float]] | None,
        *,
        start: int,
        keep: slice,
        previous: Any,
    ) -> tuple[np.ndarray, np.ndarray, Any]:
        """Like ``separate``, plus the state to pass as ``previous`` to the next window.

        start: absolute stream sample of ``window[0]``; keep: the samples of the window the
        engine emits (the previous window's ones up to ``keep.stop`` are what it committed to);
        previous: the state returned for the previous window, or None (first window, prompt
        change). The state must describe absolute positions, so a skipped window only means
        less overlap."""


@runtime_checkable
class StagedPrompt(Protocol):
    """Optional extension: a prompt change split into a slow half and an instant half.

    The worker calls ``prepare_prompt`` while it is idle between windows (the text encoder runs
    there, off the window's compute time) and ``apply_prompt`` at the start of the first window
    after that, so the switch lands on a window boundary. Both run on the worker thread, like
    ``separate``: MLX must not be driven from two threads. A separator without these two methods
    gets ``set_prompt``, called at the same idle moment.
    """

    def prepare_prompt(self, text: str) -> Any:
        """Encode ``text`` without changing the prompt in use; raise ValueError to refuse it."""

    def apply_prompt(self, prepared: Any) -> None:
        """Switch to a prompt returned by ``prepare_prompt``; must be cheap and must not fail."""


def check_window(window: np.ndarray, frame_hop: int) -> np.ndarray:
    """The window as float32 (N,), or a ValueError when it is not mono whole latent frames."""
    window = np.asarray(window, dtype=np.float32)
    if window.ndim != 1 or window.size == 0 or window.size % frame_hop:
        raise ValueError(
            f"window must be mono (N,) with N a positive multiple of {frame_hop} samples; "
            f"got shape {window.shape}"
        )
    return window


def check_prompt_text(text: str) -> str | None:
    """Why ``text`` cannot be a prompt (one sentence, for a ``note:`` line), or None if it can.

    Typed prompts come from a terminal: bytes that are not UTF-8 arrive as lone surrogates
    (Python's surrogateescape) or U+FFFD (errors="replace"), and arrow keys or Ctrl combinations
    as control characters. Handing those to a text encoder gives a prompt nobody meant.
    """
    if not isinstance(text, str):
        return f"prompt refused: expected text, got {type(text).__name__}"
    stripped = text.strip()
    if not stripped:
        return "prompt refused: it is empty; type the sound to extract, e.g. speech"
    for i, ch in enumerate(stripped):
        code = ord(ch)
        if 0xD800 <= code <= 0xDFFF or code == 0xFFFD:
            return (f"prompt refused: it is not valid UTF-8 (at character {i + 1}); set the "
                    "terminal to UTF-8 and type it again")
        if ch != "\t" and unicodedata.category(ch) == "Cc":
            return (f"prompt refused: it holds the control character U+{code:04X} (at character "
                    f"{i + 1}, e.g. from an arrow key); type plain text, e.g. speech")
    if len(stripped) > MAX_PROMPT_CHARS:
        return (f"prompt refused: it is {len(stripped)} characters long; describe the sound in "
                f"at most {MAX_PROMPT_CHARS}")
    return None


def exception_summary(e: BaseException, prefer: str | None = None) -> str:
    """``"ValueError: boom (at plugin.py line 12)"``: the exception in one line, and where.

    ``prefer``: a file (or a folder) whose innermost frame names the place, rather than the
    innermost frame overall (which is often deep inside numpy for a bug in the caller's code).
    """
    msg = " ".join(str(e).split())
    if len(msg) > 200:
        msg = msg[:197] + "..."
    text = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    if isinstance(e, SyntaxError) and e.filename and e.lineno:
        return f"{text} (at {os.path.basename(e.filename)} line {e.lineno})"
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if not f.filename.startswith("<frozen")]
    if prefer is not None:
        root = os.path.abspath(prefer)
        mine = [f for f in frames if os.path.abspath(f.filename) == root
                or os.path.abspath(f.filename).startswith(root.rstrip(os.sep) + os.sep)]
        frames = mine or frames
    if frames:
        f = frames[-1]
        text += f" (at {os.path.basename(f.filename)} line {f.lineno})"
    return text
