"""Prometheus metrics: event counters and histograms, plus journal gauges read at scrape time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from b24robots.connections.base import CallRecord
from b24robots.errors import StoreUnavailable
from b24robots.rest.limiter import gcra_wait
from b24robots.store.installations import Installations
from b24robots.store.journal import Journal
from b24robots.store.limiter_state import LimiterBuckets
from b24robots.store.retention import database_size
from b24robots.store.stats import PERIODS, RunStats, Stats, Window

if TYPE_CHECKING:
    from b24robots.jobs.runner import Outcome
    from b24robots.store.journal import Invocation

# how long /metrics reuses a period's numbers: a tenth of the period's bucket width or less (hour: 5 min
# buckets, day: 1 h, week: 6 h), so a scraped value lags the dashboard by at most that
PERIOD_METRICS_TTL: dict[str, float] = {"hour": 15.0, "day": 120.0, "week": 900.0}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _JournalCollector(Collector):
    """Gauges read at scrape time, from `Stats` like the admin dashboard (so the two cannot disagree)."""

    def __init__(self, journal: Journal, installations: Installations, buckets: LimiterBuckets) -> None:
        self.journal = journal
        self.installations = installations
        self.buckets = buckets
        self.stats = Stats(journal.db)
        self._windows: dict[str, tuple[float, Window]] = {}

    def collect(self) -> Iterator[Any]:
        ok, _ = self.journal.db.health()
        up = GaugeMetricFamily(
            "b24robots_database_up", "1 when the database answers and takes writes (0: full disk, read-only, down)"
        )
        up.add_metric([], 1.0 if ok else 0.0)
        yield up
        # the journal first: reading the day and the week may fold ended hours into the rollup (a write,
        # store/rollup.py), and the size below is then the database's size after this scrape's own writes
        try:
            journal = list(self._journal_metrics())
        except StoreUnavailable:
            journal = []  # the journal cannot be read: b24robots_database_up says so
        try:
            size = database_size(self.journal.db) if ok else None
        except StoreUnavailable:
            size = None
        if size is not None:
            yield GaugeMetricFamily(
                "b24robots_database_bytes", "Size of the database on disk (SQLite file and WAL, or PostgreSQL)", size
            )
        yield from journal

    def _journal_metrics(self) -> Iterator[Any]:
        by_state = GaugeMetricFamily(
            "b24robots_invocations",
            "Invocations in the journal by state and robot",
            labels=["state", "robot"],
        )
        for state, robot, n in self.stats.counts():
            by_state.add_metric([state, robot], n)
        yield by_state
        depth = GaugeMetricFamily("b24robots_queue_depth", "Invocations waiting to run, per portal", labels=["portal"])
        owed = GaugeMetricFamily(
            "b24robots_answers_owed", "Answers waiting to be delivered, per portal", labels=["portal"]
        )
        for queue in self.stats.queues():
            depth.add_metric([queue.domain], queue.waiting)
            owed.add_metric([queue.domain], queue.owed)
        yield depth
        yield owed
        yield from self._period_metrics()
        yield from self._token_metrics()
        wait = GaugeMetricFamily(
            "b24robots_limiter_wait_seconds",
            "How long the next REST call to a portal would wait",
            labels=["portal"],
        )
        now = time.time()
        for inst in self.installations.all():
            tat = self.buckets.tat(inst.member_id)
            wait.add_metric([inst.domain], gcra_wait(tat, now, inst.rate, inst.burst))
        yield wait

    def _period_metrics(self) -> Iterator[Any]:
        """Calls, failures, dead letters and run-time quantiles of the last hour, day and week (the
        dashboard's periods, see store/stats.py), per robot and per portal."""
        families: dict[tuple[str, str], GaugeMetricFamily] = {}
        texts = {
            "calls": "Robot calls received in the period",
            "failures": "Robot calls received in the period that failed (retry pending, dead or a business failure)",
            "dead": "Robot calls received in the period that were given up (dead letters)",
        }
        for dim in ("robot", "portal"):
            for what, text in texts.items():
                families[(dim, what)] = GaugeMetricFamily(
                    f"b24robots_period_{dim}_{what}", f"{text}, per {dim}", labels=["period", dim]
                )
            families[(dim, "run")] = GaugeMetricFamily(
                f"b24robots_period_{dim}_run_seconds",
                f"Run time quantiles (nearest rank) of the calls received in the period, per {dim}",
                labels=["period", dim, "quantile"],
            )
        for period in PERIODS:
            window = self._window(period)
            rows: dict[str, list[RunStats]] = {"robot": window.by_robot, "portal": window.by_portal}
            for dim, found in rows.items():
                for r in found:
                    families[(dim, "calls")].add_metric([period, r.key], r.calls)
                    families[(dim, "failures")].add_metric([period, r.key], r.failures)
                    families[(dim, "dead")].add_metric([period, r.key], r.dead)
                    for q, value in (("0.5", r.p50), ("0.95", r.p95)):
                        if value is not None:
                            families[(dim, "run")].add_metric([period, r.key, q], value)
        yield from families.values()

    def _window(self, period: str) -> Window:
        """The period's numbers, computed at most once per `PERIOD_METRICS_TTL[period]` seconds.

        A week over a large journal takes seconds to rank (bench/dashboard.py); a scrape every 15 s
        must not recompute it each time. The dashboard reads `Stats` directly and is always current."""
        now = time.monotonic()
        cached = self._windows.get(period)
        if cached is not None and now - cached[0] < PERIOD_METRICS_TTL[period]:
            return cached[1]
        window = self.stats.window(period, buckets=False)
        self._windows[period] = (now, window)
        return window

    def _token_metrics(self) -> Iterator[Any]:
        reinstall = GaugeMetricFamily(
            "b24robots_portal_needs_reinstall",
            "1 when a portal's tokens were refused: reinstall the app",
            labels=["portal"],
        )
        expires = GaugeMetricFamily(
            "b24robots_portal_token_expires_at",
            "When the portal's access token expires (Unix time; it is refreshed on the next call after)",
            labels=["portal"],
        )
        for token in self.stats.tokens():
            reinstall.add_metric([token.domain], 1.0 if token.needs_reinstall else 0.0)
            expires.add_metric([token.domain], token.expires_at)
        yield reinstall
        yield expires


class _SandboxCollector(Collector):
    """The sandbox's isolation level as computed at pool start (see SandboxPool.health)."""

    def __init__(self, health: Callable[[], dict[str, Any]]) -> None:
        self.health = health

    def collect(self) -> Iterator[Any]:
        health = self.health()
        if not health:
            return
        info = GaugeMetricFamily(
            "b24robots_sandbox_isolation",
            "1 for the isolation level stored code runs under, with whether each worker has a uid of its own "
            "(as root) or a pid namespace, private files and a root of its own (not root)",
            labels=["level", "uid_per_worker", "pid_per_worker", "fs_per_worker", "root_per_worker"],
        )
        detail = health.get("isolation_detail") or {}
        flags = [
            str(bool(detail.get(name))).lower()
            for name in ("uid_per_worker", "pid_per_worker", "fs_per_worker", "root_per_worker")
        ]
        info.add_metric([str(health.get("isolation")), *flags], 1.0)
        yield info
        degraded = GaugeMetricFamily(
            "b24robots_sandbox_isolation_degraded",
            "1 when stored code runs with weaker isolation than as root (the admin UI says why)",
        )
        degraded.add_metric([], 1.0 if health.get("isolation_warning") else 0.0)
        yield degraded
        alive = GaugeMetricFamily("b24robots_sandbox_children", "Sandbox children alive (idle + busy)")
        alive.add_metric([], float(health.get("children_alive", 0)))
        yield alive


class Metrics:
    def __init__(self, journal: Journal, installations: Installations, buckets: LimiterBuckets) -> None:
        self.registry = CollectorRegistry()
        self.acks = Histogram(
            "b24robots_ack_seconds",
            "Time from receiving a robot call to answering it (after the durable commit)",
            ["result"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.runs = Histogram(
            "b24robots_run_seconds",
            "Robot run time",
            ["robot", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.delivered = Counter(
            "b24robots_answers_delivered", "Answers delivered with bizproc.event.send", registry=self.registry
        )
        self.batches = Counter("b24robots_delivery_batches", "batch requests sent", registry=self.registry)
        self.connection_calls = Histogram(
            "b24robots_connection_call_seconds",
            "Outbound calls through connections: count and latency per connection and outcome",
            ["connection", "kind", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.connection_bytes = Counter(
            "b24robots_connection_bytes", "Bytes received through connections", ["connection"], registry=self.registry
        )
        self.registry.register(_JournalCollector(journal, installations, buckets))

    def watch_sandbox(self, health: Callable[[], dict[str, Any]]) -> None:
        """Report the sandbox pool whose `health()` this is (once, when the pool has started)."""
        self.registry.register(_SandboxCollector(health))

    def observe_connection(self, rec: CallRecord) -> None:
        outcome = "error" if rec.error else "ok"
        self.connection_calls.labels(rec.connection, rec.kind, outcome).observe(rec.duration_ms / 1000)
        self.connection_bytes.labels(rec.connection).inc(rec.bytes)

    def observe_ack(self, seconds: float, result: str) -> None:
        self.acks.labels(result).observe(seconds)

    def observe_run(self, inv: Invocation, outcome: Outcome, seconds: float) -> None:
        self.runs.labels(inv.robot_code, outcome.kind).observe(seconds)

    def observe_delivery(self, installation_id: int, invs: list[Invocation]) -> None:
        self.batches.inc()
        self.delivered.inc(len(invs))

    def render(self) -> bytes:
        return generate_latest(self.registry)
