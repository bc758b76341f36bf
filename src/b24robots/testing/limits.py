"""The two portal limits: the request-rate leaky bucket and the per-method operating-time limit."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LeakyBucket:
    """Counter +1 per request, leaking ``rate`` per second; a request that would pass ``burst`` is refused.

    Refused requests do not count (they never reached the portal).
    """

    rate: float = 2.0
    burst: int = 50
    level: float = 0.0
    updated_at: float | None = None

    def _leak(self, now: float) -> None:
        if self.updated_at is not None and now > self.updated_at:
            self.level = max(0.0, self.level - (now - self.updated_at) * self.rate)
        if self.updated_at is None or now > self.updated_at:
            self.updated_at = now

    def try_acquire(self, now: float) -> bool:
        """Count one request; False when the bucket is full."""
        self._leak(now)
        if self.level + 1 > self.burst:
            return False
        self.level += 1
        return True

    def fill(self, now: float) -> None:
        """Fill the bucket to the brim (fault injection: a burst by someone else)."""
        self._leak(now)
        self.level = float(self.burst)

    def current(self, now: float) -> float:
        self._leak(now)
        return self.level


WINDOW_BUCKETS = 10
BUCKET_SECONDS = 60.0
MIN_COUNTED = 0.1


@dataclass
class _Minute:
    first_call_at: float
    total: float = 0.0


@dataclass
class OperatingTimeLimiter:
    """Sum of execution time per (auth key, method) over 10 one-minute buckets; over ``limit`` blocks."""

    limit: float
    _usage: dict[tuple[str, str], dict[int, _Minute]] = field(default_factory=dict)

    def _live(self, key: tuple[str, str], now: float) -> dict[int, _Minute]:
        minutes = self._usage.setdefault(key, {})
        current = int(now // BUCKET_SECONDS)
        for idx in [i for i in minutes if i <= current - WINDOW_BUCKETS]:
            del minutes[idx]
        return minutes

    def operating(self, key: tuple[str, str], now: float) -> float:
        return sum(m.total for m in self._live(key, now).values())

    def reset_at(self, key: tuple[str, str], now: float) -> int:
        """Unix time when the oldest live bucket expires (its first call + 600 s)."""
        minutes = self._live(key, now)
        if not minutes:
            return int(now + WINDOW_BUCKETS * BUCKET_SECONDS)
        oldest = minutes[min(minutes)]
        return int(oldest.first_call_at + WINDOW_BUCKETS * BUCKET_SECONDS)

    def blocked(self, key: tuple[str, str], now: float) -> bool:
        return self.operating(key, now) > self.limit

    def record(self, key: tuple[str, str], now: float, duration: float) -> None:
        if duration <= MIN_COUNTED:
            return
        minutes = self._live(key, now)
        idx = int(now // BUCKET_SECONDS)
        minute = minutes.setdefault(idx, _Minute(first_call_at=now))
        minute.total += duration
