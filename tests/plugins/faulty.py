"""Fault-injection separators that raise or stall: plugins for tests and for trying by hand.

    STREAMSEP_TEST_FAULT_WINDOWS=3,5-7 streamsep file in.wav -p x -o out.wav \\
        --model tests/plugins/faulty.py:raising
    STREAMSEP_TEST_STALL_AFTER=4 STREAMSEP_TEST_STALL_S=2.5 streamsep run -p x \\
        --model tests/plugins/faulty.py:stalling

On every window they do not break they are a passthrough (target = input, residual = 0), so with
the dry overload policy the output must equal the input exactly. Windows are counted by calls to
``separate``, from 0; a warm-up (``--budget auto`` in ``run`` and ``--realtime``) calls it too.
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Callable, Iterable

import numpy as np


def window_set(spec: str | Iterable[int]) -> Callable[[int], bool]:
    """A predicate over window numbers: "all", "3", "3,5-7", "10-" (10 on) or ints."""
    if not isinstance(spec, str):
        chosen = set(spec)
        return chosen.__contains__
    spec = spec.strip()
    if spec in ("all", "*"):
        return lambda k: True
    tests: list[Callable[[int], bool]] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        lo, dash, hi = part.partition("-")
        a = int(lo)
        if not dash:
            tests.append(lambda k, a=a: k == a)
        elif not hi:
            tests.append(lambda k, a=a: k >= a)
        else:
            tests.append(lambda k, a=a, b=int(hi): a <= k <= b)
    return lambda k: any(t(k) for t in tests)


class _Passthrough:
    sample_rate = 48000
    frame_hop = 1920
    noise_channels = 0

    def __init__(self) -> None:
        self.calls = 0
        self.prompt: str | None = None

    def set_prompt(self, text: str) -> None:
        self.prompt = text

    def separate(self, window, noise, anchors=None):  # noqa: ANN001
        w = np.asarray(window, np.float32)
        return w.copy(), np.zeros_like(w)


class Raising(_Passthrough):
    """Raises ``exc(message)`` on the chosen windows."""

    def __init__(self, windows: str | Iterable[int] = "all", exc: type[Exception] | str =
                 "ValueError", message: str = "injected fault") -> None:
        super().__init__()
        self.hit = window_set(windows)
        self.exc = getattr(builtins, exc) if isinstance(exc, str) else exc
        self.message = message

    def separate(self, window, noise, anchors=None):  # noqa: ANN001
        k, self.calls = self.calls, self.calls + 1
        if self.hit(k):
            raise self.exc(f"{self.message} on window {k}")
        return super().separate(window, noise, anchors)


class Stalling(_Passthrough):
    """Stalls once, after ``after`` normal windows, for ``seconds`` (through ``sleep``: tests
    pass a fake)."""

    def __init__(self, after: int = 0, seconds: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__()
        self.after, self.seconds, self.sleep = after, seconds, sleep

    def separate(self, window, noise, anchors=None):  # noqa: ANN001
        k, self.calls = self.calls, self.calls + 1
        if k == self.after:
            self.sleep(self.seconds)
        return super().separate(window, noise, anchors)


def raising() -> Raising:
    """Raising from STREAMSEP_TEST_FAULT_WINDOWS (all), STREAMSEP_TEST_FAULT_EXC (ValueError)
    and STREAMSEP_TEST_FAULT_MESSAGE."""
    env = os.environ.get
    return Raising(env("STREAMSEP_TEST_FAULT_WINDOWS", "all"),
                   env("STREAMSEP_TEST_FAULT_EXC", "ValueError"),
                   env("STREAMSEP_TEST_FAULT_MESSAGE", "injected fault"))


def stalling() -> Stalling:
    """Stalling from STREAMSEP_TEST_STALL_AFTER (0 windows) and STREAMSEP_TEST_STALL_S (1.0)."""
    env = os.environ.get
    return Stalling(int(env("STREAMSEP_TEST_STALL_AFTER", "0")),
                    float(env("STREAMSEP_TEST_STALL_S", "1.0")))
