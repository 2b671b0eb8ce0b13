"""Signals that stop a run: SIGINT, SIGTERM and SIGHUP become a request to stop (the files are then
finalized) instead of killing the process; each maps to its shell exit code."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[list[int]]:
    """While inside, SIGINT/SIGTERM/SIGHUP set ``stop`` (and are listed in the yielded list)
    instead of interrupting or killing the process, so that the files can be finalized.

    Only on the main thread (signals go nowhere else), and a signal the process ignores
    (SIGHUP under nohup, SIGINT in a background job) stays ignored. What a second signal means
    is the caller's (``run`` cuts its final flush short)."""
    caught: list[int] = []
    old: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        def on_signal(signum: int, _frame: Any) -> None:
            caught.append(signum)
            stop.set()

        for sig in SIGNALS:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                old[sig] = signal.signal(sig, on_signal)
    try:
        yield caught
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def signal_summary(caught: list[int]) -> dict[str, Any]:
    """What a run's summary says about the first signal that stopped it (nothing if none)."""
    if not caught:
        return {}
    return {"signal": signal.Signals(caught[0]).name, "exit_code": SIGNALS[caught[0]]}
