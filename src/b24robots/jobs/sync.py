"""Sync: make what a portal has registered equal to the registry.

Per portal: `bizproc.robot.list` and `bizproc.activity.list` give the registered codes (the
application's own only: yuliai/bitrix-modules bizproc/lib/restservice.php::getActivityList filters by
APP_ID); robots we know but the portal lacks are added, robots whose registration changed are updated
(we remember a fingerprint of what we last sent). A second run with nothing changed makes no calls
but the two lists.

Deleting is guarded, because a wrong delete breaks every workflow that uses the robot. A code is
deleted only when this server registered it (the registrations ledger, store/registrations.py)
and no longer declares it on purpose:
- a stored robot disabled or deleted in the register is "retired": its delete was confirmed when it
  was retired, and every sync makes it;
- a module robot (or trigger) that the loaded robots module no longer declares is deleted only when the
  caller confirms (`confirm`: the CLI's prompt or --yes, the portal page's question); without one it is
  kept and reported;
- with no robots module loaded at all (B24R_APP unset) module robots are never deleted: sync cannot
  tell removed from not loaded, so it keeps them and names the missing setting;
- a code the portal has but the ledger does not is not ours to delete: kept and reported;
- a trigger removed from the register is retired like a stored robot: deleted where the ledger says we
  registered it, its removal having been confirmed (`triggers remove`);
- a trigger CODE declared both in the module and in the register is left alone and reported.

A plan without business processes has no `bizproc.activity.*` (and a plan with neither business
processes nor CRM/tasks automation no `bizproc.robot.*` either): the list answers ERROR_METHOD_NOT_FOUND
(yuliai/bitrix-modules bizproc/lib/restservice.php::onRestServiceBuildDescription). Sync then registers
what the portal supports and reports the rest as `skip` changes and a warning.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from b24robots.errors import B24RobotsError, MethodError, MethodNotFound
from b24robots.rest.client import RestClient
from b24robots.robots.registry import Registry, clash_message
from b24robots.robots.spec import RobotSpec
from b24robots.store.installations import Installations
from b24robots.store.registrations import Registrations
from b24robots.store.syncs import SyncLog

from .trigger_sync import TriggerChange, apply_trigger, plan_triggers, remembered

log = logging.getLogger("b24robots.sync")


@dataclass
class Change:
    # add | update | delete | skip (the portal's plan has no methods for this kind) | keep (a delete
    # sync will not make; `note` says why)
    action: str
    kind: str
    code: str
    note: str = ""
    retired: bool = False  # a delete of a stored robot disabled or deleted on purpose


NO_APP = (
    "no robots module is loaded (B24R_APP is not set), so module robots are not deleted; "
    "set B24R_APP or pass --app module:router"
)
NOT_OURS = "not registered by this server (not in its registrations), so not deleted"
UNCONFIRMED = "deleting needs confirmation (b24robots sync --yes, or re-sync the portal in the admin UI)"


@dataclass
class SyncReport:
    domain: str
    changes: list[Change] = field(default_factory=list)
    error: str = ""
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)
    skipped_note: str = ""  # what the portal's plan could not take (kept on the installation)

    @property
    def ok(self) -> bool:
        return not self.error


class Syncer:
    def __init__(
        self,
        registry: Registry,
        installations: Installations,
        registrations: Registrations,
        rest: RestClient,
        handler_url: str,
        sync_log: SyncLog | None = None,
    ) -> None:
        self.sync_log = sync_log  # the journal of syncs: every sync leaves an entry there
        self.registry = registry
        self.installations = installations
        self.registrations = registrations  # what we registered on each portal
        self.rest = rest
        self.handler_url = handler_url

    async def plan(self, member_id: str, only: set[str] | None = None) -> list[tuple[Change, RobotSpec | None]]:
        """The changes for this portal; with `only`, just those for these robot codes."""
        wanted = {r.spec.code: r.spec for r in await asyncio.to_thread(self.registry.all)}
        registered: dict[str, set[str]] = {}
        missing: set[str] = set()
        for kind in ("robot", "activity"):
            try:
                registered[kind] = set(await self._codes(member_id, f"bizproc.{kind}.list"))
            except MethodNotFound:
                registered[kind] = set()
                missing.add(kind)
        remembered = await asyncio.to_thread(self.registrations.of, member_id)
        retired = await asyncio.to_thread(self.registry.retired)
        plan: list[tuple[Change, RobotSpec | None]] = []
        for code, unsupported in sorted(wanted.items()):
            if unsupported.kind in missing:
                plan.append((Change("skip", unsupported.kind, code), unsupported))
        wanted = {code: spec for code, spec in wanted.items() if spec.kind not in missing}
        for kind, codes in registered.items():
            for code in sorted(codes):
                spec = wanted.get(code)
                if spec is None or spec.kind != kind:
                    plan.append((self._removal(kind, code, remembered, retired), None))
        for code, spec in sorted(wanted.items()):
            if code not in registered[spec.kind]:
                plan.append((Change("add", spec.kind, code), spec))
            elif remembered.get(code) != (spec.kind, spec.fingerprint(self.handler_url)):
                plan.append((Change("update", spec.kind, code), spec))
        return plan if only is None else [(c, spec) for c, spec in plan if c.code in only]

    def _removal(self, kind: str, code: str, remembered: dict[str, tuple[str, str]], retired: dict[str, str]) -> Change:
        """What to do with a code the portal has and we do not declare (see the module docstring)."""
        if code not in remembered:
            return Change("keep", kind, code, NOT_OURS)
        if code in retired:
            return Change("delete", kind, code, f"{retired[code]} in the register", retired=True)
        if not self.registry.modules_loaded:
            return Change("keep", kind, code, NO_APP)
        return Change("delete", kind, code, "no longer declared by the robots module")

    async def _codes(self, member_id: str, method: str) -> list[str]:
        result = await self.rest.call(member_id, method)
        if isinstance(result, dict):
            result = list(result.values())
        return [str(c) for c in result or []]

    async def sync(
        self,
        member_id: str,
        *,
        dry_run: bool = False,
        on_plan: Callable[[list[Change]], None] | None = None,
        progress: Callable[[Change], None] | None = None,
        confirm: Callable[[list[Change]], bool] | None = None,
        only: set[str] | None = None,
        origin: str = "api",
        record: bool = True,
    ) -> SyncReport:
        """Plan and apply; `on_plan` sees the planned changes first, `progress` each applied one.

        `confirm` is asked once with every planned delete (retired robots' too) and answers whether to
        make them; a refused delete becomes a `keep`. Without `confirm` only retired robots are deleted
        (their delete was confirmed when they were disabled or deleted); the others are kept. `only`
        limits the sync to these robot codes (triggers are left alone): what a robot's disable, enable or
        delete runs.

        Each sync is recorded in the journal of syncs (`origin` says who started it: install, cli, ui,
        robot, api), dry runs too; `record=False` leaves out a plan made only to show it before the sync.
        """
        # the stores may block on the database: every read and write here goes through a thread, so a
        # sync (after an install, from the CLI or the UI) never stalls the event loop's other requests
        portal = await asyncio.to_thread(self.installations.get, member_id)
        report = SyncReport(domain=portal.domain, dry_run=dry_run)
        started = time.time()
        done: list[Change] = []
        try:
            plan = await self.plan(member_id, only)
            skipped = [c for c, _ in plan if c.action == "skip"]
            notes: list[str] = []
            for kind in ("robot", "activity"):
                codes = [c.code for c in skipped if c.kind == kind]
                if codes:
                    notes.append(
                        f"{len(codes)} {kind}(s) not registered: the portal's plan has no bizproc.{kind}.* methods "
                        f"({'business processes' if kind == 'activity' else 'automation rules'} are not on its "
                        f"tariff): {', '.join(codes)}"
                    )
            report.warnings += notes
            report.skipped_note = "; ".join(notes)
            plan = [(c, spec) for c, spec in plan if c.action != "skip"]
            tplan: list[TriggerChange] = []
            warning = ""
            clashes: list[Change] = []
            if only is None:
                held = await asyncio.to_thread(self.registry.trigger_clashes)
                declared = await asyncio.to_thread(self.registry.triggers)
                tplan, warning = await plan_triggers(
                    self.rest,
                    self.registrations,
                    member_id,
                    declared,
                    portal.language or "en",
                    hold=held,
                )
                if not warning:
                    names = {t.code.lower(): t.code for t in declared}
                    clashes = [Change("keep", "trigger", names[c], clash_message(names[c])) for c in sorted(held)]
                    report.warnings += [clash_message(c.code) for c in clashes]
            report.warnings += [warning] if warning else []
            tchanges = await asyncio.to_thread(lambda: [self._trigger_change(member_id, t) for t in tplan])
            changes = [c for c, _ in plan] + tchanges + clashes
            if not dry_run:
                self._decide(changes, confirm)
            report.changes = skipped + changes
            if on_plan:
                on_plan(report.changes)
            if dry_run:
                if record:
                    await asyncio.to_thread(self._record, portal.id, origin, started, report, done)
                return report
            for change, spec in plan:
                if change.action != "keep":
                    await self._apply(member_id, change, spec)
                    done.append(change)
                    if progress:
                        progress(change)
            for tchange, change in zip(tplan, tchanges, strict=True):
                if change.action != "keep":
                    await apply_trigger(self.rest, self.registrations, member_id, tchange)
                    done.append(change)
                    if progress:
                        progress(change)
        except B24RobotsError as exc:
            report.error = str(exc)
        if not dry_run:
            if report.error:
                await asyncio.to_thread(self.installations.record_sync, member_id, "error", report.error)
            else:
                # the portal page shows what this portal's plan could not take
                await asyncio.to_thread(self.installations.record_sync, member_id, "ok", report.skipped_note)
            if report.error:
                log.warning("sync of %s failed: %s", portal.domain, report.error)
        if record:
            await asyncio.to_thread(self._record, portal.id, origin, started, report, done)
        return report

    def _record(
        self, installation_id: int, origin: str, started: float, report: SyncReport, done: list[Change]
    ) -> None:
        """One entry in the journal of syncs: each change with whether it was made."""
        if self.sync_log is None:
            return
        made = {id(c) for c in done}
        entries: list[dict[str, Any]] = [
            {"action": c.action, "kind": c.kind, "code": c.code, "note": c.note, "done": id(c) in made}
            for c in report.changes
        ]
        try:
            self.sync_log.record(
                installation_id,
                origin=origin,
                started_at=started,
                dry_run=report.dry_run,
                error=report.error,
                changes=entries,
                warnings=list(report.warnings),
            )
        except B24RobotsError as exc:  # the sync itself is done; a missing journal entry is only logged
            log.warning("recording the sync of %s failed: %s", report.domain, exc)

    def _trigger_change(self, member_id: str, change: TriggerChange) -> Change:
        if change.action != "delete":
            return Change(change.action, "trigger", change.code)
        known = {c.lower() for c in remembered(self.registrations, member_id)}
        if change.code.lower() not in known:
            return Change("keep", "trigger", change.code, NOT_OURS)
        if change.code.lower() in self.registry.removed_triggers():
            return Change("delete", "trigger", change.code, "removed from the register", retired=True)
        if not self.registry.modules_loaded:
            return Change("keep", "trigger", change.code, NO_APP)
        return Change("delete", "trigger", change.code, "no longer declared by the robots module")

    @staticmethod
    def _decide(changes: list[Change], confirm: Callable[[list[Change]], bool] | None) -> None:
        """Turn the deletes that are not confirmed into keeps, in place."""
        deletes = [c for c in changes if c.action == "delete"]
        if not deletes:
            return
        confirmed = confirm(deletes) if confirm is not None else False
        for change in deletes:
            if not confirmed and not (confirm is None and change.retired):
                change.action, change.note = "keep", UNCONFIRMED

    async def _apply(self, member_id: str, change: Change, spec: RobotSpec | None) -> None:
        prefix = f"bizproc.{change.kind}"
        if change.action == "delete":
            try:
                await self.rest.call(member_id, f"{prefix}.delete", {"CODE": change.code})
            except MethodError as exc:
                if exc.code != "ERROR_ACTIVITY_NOT_FOUND":
                    raise
            await asyncio.to_thread(self.registrations.record, member_id, change.code, change.kind, None)
            return
        assert spec is not None
        if change.action == "add":
            try:
                await self.rest.call(member_id, f"{prefix}.add", spec.to_registration(self.handler_url))
            except MethodError as exc:
                if exc.code != "ERROR_ACTIVITY_ALREADY_INSTALLED":
                    raise
                await self.rest.call(
                    member_id,
                    f"{prefix}.update",
                    {"CODE": spec.code, "FIELDS": spec.registration_fields(self.handler_url)},
                )
        else:
            await self.rest.call(
                member_id,
                f"{prefix}.update",
                {"CODE": spec.code, "FIELDS": spec.registration_fields(self.handler_url)},
            )
        fingerprint = spec.fingerprint(self.handler_url)
        await asyncio.to_thread(self.registrations.record, member_id, spec.code, spec.kind, fingerprint)
