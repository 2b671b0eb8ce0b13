"""What the command line prints on stderr besides errors: notes, warnings, progress bars.

One verbosity for the whole process (``-q`` / ``-v`` on the command group): 0 prints warnings
only, 1 (the default) notes and progress bars, 2 also the details. While a progress bar is on the
screen every line goes through ``tqdm.write``, which lifts the bars, prints the line above them and
redraws them, so notes never tear a bar apart.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

QUIET, NORMAL, VERBOSE = 0, 1, 2

#: Set once by the command group from -q / -v.
verbosity = NORMAL

_bars: list[Any] = []  # the tqdm bars on the screen, outermost first


def set_verbosity(level: int) -> None:
    global verbosity
    verbosity = max(QUIET, min(VERBOSE, int(level)))


def line(text: str) -> None:
    """Print one line on stderr, above any progress bar."""
    if _bars:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr, flush=True)


def note(text: str) -> None:
    if verbosity >= NORMAL:
        line(f"note: {text}")


def detail(text: str) -> None:
    """A note only ``-v`` shows."""
    if verbosity >= VERBOSE:
        line(f"note: {text}")


def warn(text: str) -> None:
    # Shown even with -q: a warning means the output is not what the user would assume.
    line(f"warning: {text}")


class LineStream:
    """A text stream for code that writes lines (the engine's warnings): routed through ``line``
    so that they land above the progress bars."""

    def __init__(self) -> None:
        self._buf = ""

    def write(self, text: str) -> int:
        self._buf += text
        while "\n" in self._buf:
            head, self._buf = self._buf.split("\n", 1)
            line(head)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False  # a line at a time: no cursor movement above a bar


def bars_wanted(stream: Any = None) -> bool:
    """Progress bars: on a terminal, unless -q (a log file or a pipe gets the notes only)."""
    stream = sys.stderr if stream is None else stream
    if verbosity < NORMAL or os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """Progress over a list of files: one bar for the current file and, for more than one file,
    one for all of them; both in seconds of audio, with the time left (ETA).

    Without a terminal (or with -q) it does nothing."""

    FORMAT = "{desc}{percentage:3.0f}% |{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]"

    def __init__(self, seconds: list[float], enabled: bool | None = None):
        self.enabled = bars_wanted() if enabled is None else enabled
        self.seconds = seconds
        self.total_bar: Any = None
        self.file_bar: Any = None
        self._done = 0.0  # seconds of the files finished

    def __enter__(self) -> Progress:
        if self.enabled and len(self.seconds) > 1:
            self.total_bar = self._bar(f"all {len(self.seconds)} files ", sum(self.seconds), 0)
        return self

    def _bar(self, desc: str, total: float, position: int) -> Any:
        from tqdm import tqdm

        try:
            cols = os.get_terminal_size(sys.stderr.fileno()).columns
        except (OSError, ValueError, AttributeError):
            cols = 0
        # A terminal that reports no width (some ptys) would get an empty bar from tqdm.
        size = {"dynamic_ncols": True} if cols > 0 else {"ncols": 80}
        bar = tqdm(total=total, desc=desc, position=position, file=sys.stderr, leave=False,
                   bar_format=self.FORMAT, unit="s", mininterval=0.25, smoothing=0.1, **size)
        _bars.append(bar)
        return bar

    def start(self, index: int, name: str) -> None:
        """File ``index`` (0-based) begins."""
        if not self.enabled:
            return
        self.close_file()
        short = name if len(name) <= 28 else "..." + name[-25:]
        self.file_bar = self._bar(f"{short} ", self.seconds[index],
                                  1 if self.total_bar is not None else 0)

    def update(self, seconds: float) -> None:
        """The current file is separated up to ``seconds``."""
        if self.file_bar is None or not math.isfinite(seconds):
            return
        s = min(seconds, self.file_bar.total)
        if s > self.file_bar.n:
            self.file_bar.update(s - self.file_bar.n)
            if self.total_bar is not None:
                self.total_bar.update(self._done + s - self.total_bar.n)

    def finish(self, index: int) -> None:
        """File ``index`` is done (whatever became of it): the overall bar counts it whole."""
        if not self.enabled:
            return
        self._done += self.seconds[index]
        self.close_file()
        if self.total_bar is not None:
            self.total_bar.update(self._done - self.total_bar.n)

    def close_file(self) -> None:
        if self.file_bar is not None:
            bar, self.file_bar = self.file_bar, None
            _bars.remove(bar)
            bar.close()

    def __exit__(self, *exc: object) -> None:
        self.close_file()
        if self.total_bar is not None:
            bar, self.total_bar = self.total_bar, None
            _bars.remove(bar)
            bar.close()
