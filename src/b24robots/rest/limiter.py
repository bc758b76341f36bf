"""Client-side leaky bucket mirroring the portal's request-rate limit (GCRA form).

The portal keeps a counter per portal that grows by one per HTTP request (a `batch` counts once),
leaks `rate` per second and refuses a request that would push it above `burst` (protocol §5.1).
GCRA stores that counter as one number, the *theoretical arrival time* (`tat`): the moment the
bucket would be empty again. `counter(now) = max(0, tat - now) * rate`.
"""

from __future__ import annotations

import math
import threading
from typing import Protocol

from b24robots.errors import ConfigError

__all__ = ["LimiterState", "MemoryLimiterState", "check_rate", "gcra_reserve"]


def check_rate(rate: float, burst: int) -> None:
    """Raise ConfigError unless `rate` is a positive finite number and `burst` a positive int."""
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate) or rate <= 0:
        raise ConfigError(f"rate limit: rate must be a positive number of requests per second, got {rate!r}")
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ConfigError(f"rate limit: burst must be a positive integer, got {burst!r}")


def gcra_reserve(tat: float, now: float, rate: float, burst: int) -> tuple[float, float]:
    """Reserve one request slot; return `(new_tat, wait_seconds)`.

    The request may be sent `wait_seconds` after `now` (0 means at once); the portal's counter will
    then be at most `burst`. The slot is reserved either way, so callers must store `new_tat` and
    then wait. `tat` of 0 (or any time in the past) means an empty bucket.
    """
    check_rate(rate, burst)
    interval = 1.0 / rate
    new_tat = max(tat, now) + interval
    # Sending at time t is allowed when the counter after +1 is <= burst:
    # (new_tat - t) * rate <= burst  <=>  t >= new_tat - burst * interval.
    wait = new_tat - burst * interval - now
    return new_tat, wait if wait > 0 else 0.0


class LimiterState(Protocol):
    """Shared limiter state, one `tat` per portal.

    `reserve` must be an atomic read-modify-write of the portal's stored tat using `gcra_reserve`
    (the store does it in the installation row under a row lock, so several processes share one
    bucket). It returns the seconds to wait before sending.
    """

    def reserve(self, portal: str, now: float, rate: float, burst: int) -> float: ...


class MemoryLimiterState:
    """In-process `LimiterState`; thread-safe, shared by every client holding it."""

    def __init__(self) -> None:
        self._tats: dict[str, float] = {}
        self._lock = threading.Lock()

    def reserve(self, portal: str, now: float, rate: float, burst: int) -> float:
        with self._lock:
            new_tat, wait = gcra_reserve(self._tats.get(portal, 0.0), now, rate, burst)
            self._tats[portal] = new_tat
            return wait

    def tat(self, portal: str) -> float:
        """The stored theoretical arrival time of `portal` (0.0 when never used)."""
        with self._lock:
            return self._tats.get(portal, 0.0)
