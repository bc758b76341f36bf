"""What every kind of connection shares: the call record, the gate (caps) and the run's budget."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from b24robots.errors import ConnectionBusy

MAX_BODY_KEPT = 4000


@dataclass
class CallRecord:
    """One outbound call as the journal keeps it: never a secret, bodies only when the admin asked."""

    connection: str
    kind: str
    method: str
    target: str  # the path (without the query) or the first words of a statement
    status: int | None = None
    duration_ms: float = 0.0
    bytes: int = 0
    error: str = ""
    request_body: str = ""
    response_body: str = ""
    at: float = field(default_factory=time.time)
    attempt: int | None = None  # the run's attempt that made the call (None in a test run)

    def as_dict(self) -> dict[str, Any]:
        return {
            "connection": self.connection,
            "kind": self.kind,
            "method": self.method,
            "target": self.target,
            "status": self.status,
            "duration_ms": round(self.duration_ms, 3),
            "bytes": self.bytes,
            "error": self.error,
            "request_body": self.request_body,
            "response_body": self.response_body,
            "at": self.at,
            "attempt": self.attempt,
        }


Recorder = Callable[[CallRecord], None]


class Budget:
    """The time a run has left; calls through connections spend it (they count toward the run's limits).

    `deadline` is the run's wall deadline (a time.monotonic() value, None for none); `left`, when
    set, says how much more the run may spend in proxied calls (a stored run's `proxied_seconds`).
    """

    def __init__(self, deadline: float | None = None, left: Callable[[], float] | None = None) -> None:
        self.deadline = deadline
        self.left = left

    def remaining(self, cap: float) -> float:
        if self.deadline is not None:
            cap = min(cap, self.deadline - time.monotonic())
        if self.left is not None:
            cap = min(cap, self.left())
        return cap


class Gate:
    """A connection's concurrency cap and rate limit in this process.

    The rate is a GCRA: `burst` calls may go at once, then one every 1/`rate` seconds. A call that
    would have to wait longer than the run has left is refused with ConnectionBusy instead.
    """

    def __init__(self, name: str, concurrency: int, rate: float, burst: int) -> None:
        self.name = name
        self.concurrency = max(1, concurrency)
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._window = max(1, burst) * self._interval
        self._tat = 0.0
        self._lock = threading.Lock()
        self.active = 0

    @contextmanager
    def slot(self, budget: float) -> Iterator[None]:
        started = time.monotonic()
        if self._interval:
            with self._lock:
                now = time.monotonic()
                new_tat = max(self._tat, now) + self._interval
                wait = new_tat - now - self._window
                if wait > budget:
                    raise ConnectionBusy(
                        self.name, f"the rate limit would delay this call by {wait:.2f} s, more than the run has left"
                    )
                self._tat = new_tat
            if wait > 0:
                time.sleep(wait)
        left = budget - (time.monotonic() - started)
        if left <= 0 or not self._slots.acquire(timeout=left):
            raise ConnectionBusy(
                self.name, f"all {self.concurrency} concurrent call slot(s) stayed busy for the time the run had left"
            )
        with self._lock:
            self.active += 1
        try:
            yield
        finally:
            with self._lock:
                self.active -= 1
            self._slots.release()


def redact(text: str, secrets: list[str]) -> str:
    """Replace every secret value in `text` by ********; a last guard on messages built from other libraries."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, "********")
    return text


def clip(body: bytes | str, limit: int = MAX_BODY_KEPT) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return text if len(text) <= limit else text[: limit - 1] + "…"
