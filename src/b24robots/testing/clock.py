"""Clocks the simulator reads; a :class:`ManualClock` lets tests move time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    """Anything with ``now() -> unix seconds``."""

    def now(self) -> float: ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to; listeners run after every move (timeouts fire then)."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self._now = float(start)
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds`` (must not be negative) and notify listeners."""
        if seconds < 0:
            raise ValueError("a ManualClock cannot move backwards")
        self._now += seconds
        for listener in list(self._listeners):
            listener()

    def add_listener(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)
