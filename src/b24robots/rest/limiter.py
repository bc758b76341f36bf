"""Client-side leaky bucket mirroring the portal's request-rate limit (GCRA form).

The portal keeps a counter per portal that grows by one per HTTP request (a `batch` counts once),
leaks `rate` per second and refuses a request that would push it above `burst` with
`503 QUERY_LIMIT_EXCEEDED` (protocol §5.1; b24restdocs `limits.md`: "the counter will increase by
one" for a batch). The bucket is not in the portal's PHP modules (no leaky bucket and no
QUERY_LIMIT_EXCEEDED anywhere in yuliai/bitrix-modules `rest/`; the module's own limits are the
operating-time `rest/lib/engine/access/loadlimiter.php`, 429, and `OVERLOAD_LIMIT` in
`rest/lib/oauth/auth.php`): it is the cloud's front layer, so the docs are the source.

GCRA stores that counter as one number, the *theoretical arrival time* (`tat`): the moment the
bucket would be empty again. `counter(now) = max(0, tat - now) * rate`.

The portal counts a request when it arrives, this side when it takes the slot. A slot is therefore
taken at send time (`LimiterState.take`, the clock read while the portal's bucket is locked) and the
stored `tat` assumes the request may arrive up to `ARRIVAL_SLACK` seconds later, so the stored
counter never falls below the portal's, whatever the order requests of several processes arrive in.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Protocol

from b24robots.errors import ConfigError

__all__ = [
    "ARRIVAL_SLACK",
    "LimiterState",
    "MemoryLimiterState",
    "check_rate",
    "gcra_full",
    "gcra_take",
    "gcra_wait",
]

ARRIVAL_SLACK = 0.5
"""Seconds a request may take from its slot to the portal (commit, connection, TLS, network). It
costs one slot's worth of time after the bucket was empty, nothing while it is saturated."""


def check_rate(rate: float, burst: int) -> None:
    """Raise ConfigError unless `rate` is a positive finite number and `burst` a positive int."""
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate) or rate <= 0:
        raise ConfigError(f"rate limit: rate must be a positive number of requests per second, got {rate!r}")
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ConfigError(f"rate limit: burst must be a positive integer, got {burst!r}")


def gcra_wait(tat: float, now: float, rate: float, burst: int) -> float:
    """Seconds after `now` until one more request keeps the counter at most `burst` (0: now)."""
    check_rate(rate, burst)
    interval = 1.0 / rate
    # allowed at t when (max(tat, t) + interval - t) * rate <= burst
    wait = max(tat, now) + interval - burst * interval - now
    return wait if wait > 0 else 0.0


def gcra_take(tat: float, now: float, rate: float, burst: int, slack: float = ARRIVAL_SLACK) -> tuple[float, float]:
    """Take one slot if it is free at `now`: `(new_tat, 0.0)`; else `(tat, wait)`, nothing taken.

    `new_tat` counts the request as arriving as late as `now + slack` (see the module docstring), so
    it is an upper bound of the portal's own `tat` for any arrival in `[now, now + slack]`.
    `tat` of 0 (or any time in the past) means an empty bucket.
    """
    wait = gcra_wait(tat, now, rate, burst)
    if wait > 0:
        return tat, wait
    return max(tat, now + slack) + 1.0 / rate, 0.0


def gcra_full(tat: float, now: float, rate: float, burst: int) -> float:
    """The `tat` after the portal refused a request at `now`: its bucket is full then (at least)."""
    check_rate(rate, burst)
    return max(tat, now + burst / rate)


class LimiterState(Protocol):
    """Shared limiter state, one `tat` per portal.

    `take` is an atomic read-modify-write of the portal's stored tat using `gcra_take`, with the
    time read from `clock` once the tat is locked (the store does it in the installation row under a
    row lock, so several processes share one bucket): 0 means the slot is taken, send now; a
    positive number is the wait until one may be free (nothing is taken: wait, then take again).
    `backoff` records a refusal (`gcra_full`) so that no process sends into the full bucket.
    """

    def take(self, portal: str, clock: Callable[[], float], rate: float, burst: int) -> float: ...

    def backoff(self, portal: str, now: float, rate: float, burst: int) -> None: ...


class MemoryLimiterState:
    """In-process `LimiterState`; thread-safe, shared by every client holding it."""

    def __init__(self) -> None:
        self._tats: dict[str, float] = {}
        self._lock = threading.Lock()

    def take(self, portal: str, clock: Callable[[], float], rate: float, burst: int) -> float:
        with self._lock:
            new_tat, wait = gcra_take(self._tats.get(portal, 0.0), clock(), rate, burst)
            self._tats[portal] = new_tat
            return wait

    def backoff(self, portal: str, now: float, rate: float, burst: int) -> None:
        with self._lock:
            self._tats[portal] = gcra_full(self._tats.get(portal, 0.0), now, rate, burst)

    def tat(self, portal: str) -> float:
        """The stored theoretical arrival time of `portal` (0.0 when never used)."""
        with self._lock:
            return self._tats.get(portal, 0.0)
