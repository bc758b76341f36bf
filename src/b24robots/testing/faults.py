"""Fault injection: slow, failing and dropped REST answers, and handler deliveries that never arrive."""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

FaultKind = Literal["delay", "fail", "drop"]


@dataclass
class FaultRule:
    """One armed fault. ``remaining=None`` keeps it armed until :meth:`Faults.clear`."""

    kind: FaultKind
    remaining: int | None = 1
    seconds: float = 0.0
    jitter: float = 0.0  # a delay rule adds a random 0..jitter seconds per request
    status: int = 500
    error: str = "INTERNAL_SERVER_ERROR"
    description: str = "Internal server error"
    domain: str | None = None
    method: str | None = None

    def matches(self, domain: str | None, method: str) -> bool:
        if self.domain is not None and self.domain != domain:
            return False
        return self.method is None or self.method.lower() == method.lower()


@dataclass
class FaultDecision:
    """What the HTTP layer must do with one REST request."""

    delay: float = 0.0
    fail: FaultRule | None = None
    drop: bool = False


@dataclass
class _DeliveryFailure:
    remaining: int
    domain: str | None


@dataclass
class Faults:
    """Armed faults; thread-safe (the served simulator reads them from its server thread)."""

    rules: list[FaultRule] = field(default_factory=list)
    delivery_failures: list[_DeliveryFailure] = field(default_factory=list)
    delivery_delay: float = 0.0
    oauth_delay: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def delay(
        self,
        seconds: float,
        *,
        count: int | None = None,
        portal: str | None = None,
        method: str | None = None,
        jitter: float = 0.0,
    ) -> FaultRule:
        """Answer REST calls ``seconds`` (plus a random 0..``jitter``) late (the next ``count`` calls,
        or all until cleared). The delay comes before the leaky bucket, so it is also how late the
        portal counts the request: network latency between the client and the portal."""
        return self._arm(FaultRule("delay", count, seconds=seconds, jitter=jitter, domain=portal, method=method))

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        error: str = "INTERNAL_SERVER_ERROR",
        description: str = "Internal server error",
        portal: str | None = None,
        method: str | None = None,
    ) -> FaultRule:
        """The next ``n`` REST calls answer ``status`` with the given error (not executed)."""
        return self._arm(
            FaultRule("fail", n, status=status, error=error, description=description, domain=portal, method=method)
        )

    def drop_next(self, n: int = 1, *, portal: str | None = None, method: str | None = None) -> FaultRule:
        """The next ``n`` REST calls get their connection closed without a complete answer (not executed)."""
        return self._arm(FaultRule("drop", n, domain=portal, method=method))

    def fail_deliveries(self, n: int = 1, *, portal: str | None = None) -> None:
        """The queue fails to reach the handler for the next ``n`` robot deliveries (no HTTP is made)."""
        with self._lock:
            self.delivery_failures.append(_DeliveryFailure(n, portal))

    def delay_deliveries(self, seconds: float) -> None:
        """Every handler delivery waits ``seconds`` before it is made (0 turns it off)."""
        self.delivery_delay = seconds

    def delay_oauth(self, seconds: float) -> None:
        """The OAuth server (``/oauth/token/``) issues new tokens ``seconds`` late (0 turns it off).

        The grant is decided when the request arrives (the refresh token is spent at once) and only
        the answer with the new pair is slow; a refusal (``invalid_grant``) comes at once. That is the
        worst case for two processes racing with one refresh token."""
        self.oauth_delay = seconds

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.delivery_failures.clear()
            self.delivery_delay = 0.0
            self.oauth_delay = 0.0

    def _arm(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def take(self, domain: str | None, method: str) -> FaultDecision:
        """Consume the rules that match this request."""
        decision = FaultDecision()
        with self._lock:
            for rule in list(self.rules):
                if not rule.matches(domain, method):
                    continue
                if rule.kind == "delay":
                    decision.delay += rule.seconds + (random.uniform(0.0, rule.jitter) if rule.jitter > 0 else 0.0)
                elif decision.fail is None and not decision.drop:
                    if rule.kind == "fail":
                        decision.fail = rule
                    else:
                        decision.drop = True
                else:
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self.rules.remove(rule)
        return decision

    def take_delivery(self, domain: str) -> bool:
        """True when this delivery must fail."""
        with self._lock:
            for failure in self.delivery_failures:
                if failure.domain in (None, domain):
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self.delivery_failures.remove(failure)
                    return True
        return False

    def as_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "rules": [asdict(r) for r in self.rules],
                "delivery_failures": [asdict(f) for f in self.delivery_failures],
                "delivery_delay": self.delivery_delay,
                "oauth_delay": self.oauth_delay,
            }
