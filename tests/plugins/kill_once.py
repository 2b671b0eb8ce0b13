"""A band-pass separator that kills its own process once, in the middle of a file: what a worker
lost to the OOM killer or a node failure looks like to ``streamsep batch``.

The first worker to reach window ``KILL_AT`` of a file creates the marker file next to this
plugin and sends itself SIGKILL (no handler, no ``finally``: its ``.partial`` files stay behind).
Every later call, in any process, finds the marker and separates normally, so a retried file's
outputs must equal a run that was never killed. Tests copy the plugin into a temporary folder,
so that each has its own marker.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from streamsep.separators.simple import Bandpass

MARKER = Path(__file__).with_suffix(".killed")
KILL_AT = 4  # windows into the worker's first file


class KillOnce(Bandpass):
    def __init__(self) -> None:
        super().__init__(300.0, 3400.0)
        self.calls = 0

    def separate(self, window, noise=None, anchors=None):  # noqa: ANN001
        self.calls += 1
        if self.calls == KILL_AT and not MARKER.exists():
            MARKER.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().separate(window, noise, anchors)
