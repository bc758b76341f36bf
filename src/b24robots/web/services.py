"""The composition root: every concrete component, built once from settings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx

from b24robots.config import Settings
from b24robots.connections.hub import ConnectionHub
from b24robots.jobs.liveness import Heartbeat, this_process
from b24robots.jobs.outbound import Outbound
from b24robots.jobs.pruner import Pruner
from b24robots.jobs.runner import Runner
from b24robots.jobs.sender import Sender
from b24robots.jobs.sync import Syncer, SyncReport
from b24robots.jobs.wakeup import PgListener, Wakeup
from b24robots.jobs.worker import Worker
from b24robots.policy import DAY
from b24robots.portal.install import Lifecycle
from b24robots.portal.oauth import OAuthServers
from b24robots.rest.client import RestClient, RetryPolicy
from b24robots.rest.tokens import AppCredentials
from b24robots.robots.registry import Registry
from b24robots.robots.router import Router
from b24robots.sandbox import SandboxLimits, SandboxPool, parse_patterns
from b24robots.sandbox.proxy import SETTING as SANDBOX_METHODS
from b24robots.store.apikeys import ApiKeys
from b24robots.store.audit import Audit
from b24robots.store.caller_tokens import CallerTokens
from b24robots.store.connections import ConnectionStore
from b24robots.store.crypto import Vault
from b24robots.store.db import Database, private_dir
from b24robots.store.group_commit import GroupWriter
from b24robots.store.installations import Installations
from b24robots.store.journal import Journal
from b24robots.store.limiter_state import LimiterBuckets
from b24robots.store.portal_tokens import PortalTokens
from b24robots.store.processes import Processes
from b24robots.store.register import Register
from b24robots.store.registrations import Registrations
from b24robots.store.retention import Retention, RetentionPeriods
from b24robots.store.syncs import SyncLog
from b24robots.store.trigger_register import TriggerRegister
from b24robots.web.metrics import Metrics

log = logging.getLogger("b24robots")


@dataclass
class Services:
    settings: Settings
    db: Database
    vault: Vault
    installations: Installations
    # the same rows, one store per consumer: the REST client's tokens and buckets, the sync's ledger
    tokens: PortalTokens
    buckets: LimiterBuckets
    registrations: Registrations
    register: Register
    trigger_register: TriggerRegister
    registry: Registry
    journal: Journal
    rest: RestClient
    http: httpx.AsyncClient
    runner: Runner
    syncer: Syncer
    metrics: Metrics
    outbound: Outbound
    audit: Audit
    apikeys: ApiKeys
    connections: ConnectionStore
    hub: ConnectionHub
    intake_writer: GroupWriter
    # the run-as users' access tokens that came with robot calls, stored encrypted with them
    caller_tokens: CallerTokens
    work_wakeup: Wakeup = field(default_factory=Wakeup)
    deliver_wakeup: Wakeup = field(default_factory=Wakeup)
    sandbox: SandboxPool | None = None
    worker: Worker | None = None
    sender: Sender | None = None
    heartbeat: Heartbeat | None = None
    pruner: Pruner | None = None
    listener: PgListener | None = None
    oauth: OAuthServers | None = None
    _lifecycle: Lifecycle | None = None
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _sync_tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    # --- background machinery ----------------------------------------------------------------
    async def start(self, *, workers: bool = True, sandbox: bool = True, role: str = "serve") -> None:
        """Start the sandbox pool and (with `workers`) this process's heartbeat, workers and sender.

        `role` ("serve" or "worker") names the process in the processes table.
        """
        if sandbox:
            cfg = self.settings
            caps = SandboxLimits(
                cpu_seconds=cfg.sandbox_cpu_seconds,
                wall_seconds=cfg.sandbox_wall_seconds,
                memory_mb=cfg.sandbox_memory_mb,
                output_bytes=cfg.sandbox_output_bytes,
                max_calls=cfg.sandbox_max_calls,
                proxied_seconds=cfg.sandbox_max_proxied_seconds,
            )
            pool = SandboxPool(
                size=cfg.sandbox_pool,
                caps=caps,
                uid_base=cfg.sandbox_uid_base,
                uid_count=cfg.sandbox_uid_count or None,
            )
            await asyncio.to_thread(pool.start)
            self.sandbox = pool
            self.runner.sandbox = pool
            self.metrics.watch_sandbox(lambda: self.sandbox.health() if self.sandbox else {})
        if not self.db.is_sqlite:
            # every web process listens, workers or not: other processes announce changes to what the
            # intake caches (installations, the register) there, and new work for the workers
            self.listener = PgListener(
                self.db.url, self.work_wakeup, self.deliver_wakeup, on_cache_change=self.db.invalidate_caches
            )
            self.listener.start()
        if not workers:
            return
        info = this_process(role, data_dir=self.settings.data_dir, name=self.settings.worker_name)
        self.heartbeat = Heartbeat(
            Processes(self.db),
            info,
            interval=self.settings.heartbeat_seconds,
            stale=self.settings.process_stale_seconds,
            on_reclaim=self._wake_all,
        )
        await self.heartbeat.start()  # takes over a crashed predecessor's leases before claiming
        self.worker = Worker(
            self.journal,
            self.installations,
            self.runner,
            self.rest,
            self.work_wakeup,
            concurrency=self.settings.workers,
            on_outcome=self.metrics.observe_run,
            on_answer=self.deliver_wakeup.notify,
            outbound=self.outbound,
            process=info.id,
            caller_tokens=self.caller_tokens,
        )
        self.sender = Sender(
            self.journal,
            self.installations,
            self.rest,
            self.deliver_wakeup,
            give_up_seconds=self.settings.delivery_give_up_days * DAY,
            concurrency=self.settings.delivery_concurrency,
            on_delivered=self.metrics.observe_delivery,
            process=info.id,
        )
        self.pruner = Pruner(
            self.retention,
            interval=self.settings.prune_interval_seconds,
            batch=self.settings.prune_batch,
            sweep=self.caller_tokens.forget_expired,
        )
        self._tasks = [
            asyncio.create_task(self.worker.run(), name="b24r-worker"),
            asyncio.create_task(self.sender.run(), name="b24r-sender"),
            asyncio.create_task(self.pruner.run(), name="b24r-pruner"),
        ]

    async def stop(self, grace: float | None = None) -> None:
        """Stop the loops; running robots get `grace` seconds (default: B24R_SHUTDOWN_GRACE) to finish."""
        grace = self.settings.shutdown_grace if grace is None else grace
        if self.worker:
            await self.worker.stop(grace)
        if self.sender:
            await self.sender.stop()
        if self.pruner:
            await self.pruner.stop()
        if self.heartbeat:
            await self.heartbeat.stop()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, timeout=grace)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
        for task in list(self._sync_tasks):
            task.cancel()
        if self.listener:
            self.listener.stop()
        if self.sandbox:
            await asyncio.to_thread(self.sandbox.close)
        await self.rest.aclose()
        await self.http.aclose()
        await asyncio.to_thread(self.hub.close)
        await asyncio.to_thread(self.intake_writer.close)
        self.db.dispose()

    @property
    def retention(self) -> Retention:
        """Pruning of old journal entries with the configured periods (also `b24robots journal prune`)."""
        return retention_from(self.settings, self.db)

    def _wake_all(self) -> None:
        self.work_wakeup.notify()
        self.deliver_wakeup.notify()

    @property
    def lifecycle(self) -> Lifecycle:
        """Install, openings, update and uninstall (b24robots.portal.install)."""
        if self._lifecycle is None:
            self._lifecycle = Lifecycle(
                installations=self.installations,
                registrations=self.registrations,
                journal=self.journal,
                oauth=self.oauth or self._oauth(),
                rest=self.rest,
                events_url=f"{self.settings.public_url}/b24/events",
                admin_url=f"{self.settings.public_url}/admin/",
                sync_soon=self.sync_soon,
                spawn=self.spawn,
            )
        return self._lifecycle

    def _oauth(self) -> OAuthServers:
        self.oauth = OAuthServers(
            self.settings.oauth_server_list,
            client_id=self.settings.client_id,
            client_secret=self.settings.client_secret.get_secret_value(),
            http=self.http,
        )
        return self.oauth

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` in the background; `wait_syncs` waits for it, `stop` cancels it."""
        task = asyncio.create_task(work)
        self._sync_tasks.add(task)
        task.add_done_callback(self._sync_tasks.discard)

    def sync_soon(self, member_id: str) -> None:
        """Sync a portal in the background (after install and ONAPPUPDATE)."""

        async def go() -> SyncReport:
            report = await self.syncer.sync(member_id, origin="install")
            log.info(
                "sync of %s: %d change(s)%s",
                report.domain,
                len(report.changes),
                f", error: {report.error}" if report.error else "",
            )
            return report

        self.spawn(go())

    async def sync_robot(self, code: str) -> list[SyncReport]:
        """Bring one robot's registration in step on every active portal: after it was disabled (or
        deleted) it is unregistered, after it was enabled it is registered again."""
        targets = [i for i in self.installations.all() if i.active]
        return [await self.syncer.sync(i.member_id, only={code}, origin="robot") for i in targets]

    def sync_robot_soon(self, code: str) -> None:
        """`sync_robot` in the background (the admin UI's disable, enable and delete)."""
        self.spawn(self.sync_robot(code))

    async def wait_syncs(self) -> None:
        """Wait for background work, including syncs that work started (settle, then sync)."""
        while self._sync_tasks:
            await asyncio.gather(*list(self._sync_tasks), return_exceptions=True)


def retention_from(settings: Settings, db: Database) -> Retention:
    periods = RetentionPeriods(
        delivered_days=settings.retention_delivered_days,
        failed_days=settings.retention_failed_days,
        dead_days=settings.retention_dead_days,
    )
    return Retention(db, periods)


def build_services(
    settings: Settings,
    router: Router | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    retry: RetryPolicy | None = None,
    database: Database | None = None,
    connection_transport: httpx.BaseTransport | None = None,
) -> Services:
    if settings.data_dir.exists() or not settings.database_url:
        private_dir(settings.data_dir)  # the key file and (by default) the database live here
    db = database or Database(settings.effective_database_url)
    db.migrate()
    vault = Vault.from_settings(
        settings.secret_key.get_secret_value() if settings.secret_key else None, settings.data_dir
    )
    installations = Installations(db, vault, cache_seconds=settings.cache_seconds)
    tokens, buckets, registrations = PortalTokens(db, vault), LimiterBuckets(db), Registrations(db)
    register = Register(db, cache_seconds=settings.cache_seconds)
    trigger_register = TriggerRegister(db, cache_seconds=settings.cache_seconds)
    registry = Registry(router if router is not None else Router(), register, trigger_register)
    journal = Journal(db)
    app_creds = (
        AppCredentials(settings.client_id, settings.client_secret.get_secret_value()) if settings.client_id else None
    )
    rest = RestClient(
        tokens,
        app=app_creds,
        limiter=buckets,
        transport=transport,
        retry=retry,
        allow_http=settings.allow_http_portals,
    )
    http = httpx.AsyncClient(transport=transport, timeout=15.0, follow_redirects=False)
    metrics = Metrics(journal, installations, buckets)
    connections = ConnectionStore(db, vault)
    hub = ConnectionHub(connections, transport=connection_transport, observe=metrics.observe_connection)
    caller_tokens = CallerTokens(db, vault)
    return Services(
        settings=settings,
        db=db,
        vault=vault,
        installations=installations,
        tokens=tokens,
        buckets=buckets,
        registrations=registrations,
        register=register,
        trigger_register=trigger_register,
        registry=registry,
        journal=journal,
        rest=rest,
        http=http,
        runner=Runner(registry, connections=hub, methods=parse_patterns(settings.sandbox_methods, SANDBOX_METHODS)),
        syncer=Syncer(registry, installations, registrations, rest, settings.handler_url, SyncLog(db)),
        outbound=Outbound(registry, installations, registrations, buckets, journal, rest),
        audit=Audit(db),
        apikeys=ApiKeys(db),
        metrics=metrics,
        connections=connections,
        hub=hub,
        intake_writer=GroupWriter(db, seal=caller_tokens.seal),
        caller_tokens=caller_tokens,
    )
