"""Sync: make what a portal has registered equal to the registry.

Per portal: `bizproc.robot.list` and `bizproc.activity.list` give the registered codes; robots we
know but the portal lacks are added, robots whose registration changed are updated (we remember a
fingerprint of what we last sent), and codes the portal has that we no longer declare are deleted.
A second run with nothing changed makes no calls but the two lists.

A plan without business processes has no `bizproc.activity.*` (and a plan with neither business
processes nor CRM/tasks automation no `bizproc.robot.*` either): the list answers ERROR_METHOD_NOT_FOUND
(yuliai/bitrix-modules bizproc/lib/restservice.php::onRestServiceBuildDescription). Sync then registers
what the portal supports and reports the rest as `skip` changes and a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from b24robots.errors import B24RobotsError, MethodError, MethodNotFound
from b24robots.rest.client import RestClient
from b24robots.robots.registry import Registry
from b24robots.robots.spec import RobotSpec
from b24robots.store.installations import Installations

from .trigger_sync import apply_trigger, plan_triggers

log = logging.getLogger("b24robots.sync")


@dataclass
class Change:
    action: str  # add | update | delete | skip (the portal's plan has no methods for this kind)
    kind: str
    code: str


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
    def __init__(self, registry: Registry, installations: Installations, rest: RestClient, handler_url: str) -> None:
        self.registry = registry
        self.installations = installations
        self.rest = rest
        self.handler_url = handler_url

    async def plan(self, member_id: str) -> list[tuple[Change, RobotSpec | None]]:
        wanted = {r.spec.code: r.spec for r in self.registry.all()}
        registered: dict[str, set[str]] = {}
        missing: set[str] = set()
        for kind in ("robot", "activity"):
            try:
                registered[kind] = set(await self._codes(member_id, f"bizproc.{kind}.list"))
            except MethodNotFound:
                registered[kind] = set()
                missing.add(kind)
        remembered = self.installations.registrations(member_id)
        plan: list[tuple[Change, RobotSpec | None]] = []
        for code, unsupported in sorted(wanted.items()):
            if unsupported.kind in missing:
                plan.append((Change("skip", unsupported.kind, code), unsupported))
        wanted = {code: spec for code, spec in wanted.items() if spec.kind not in missing}
        for kind, codes in registered.items():
            for code in sorted(codes):
                spec = wanted.get(code)
                if spec is None or spec.kind != kind:
                    plan.append((Change("delete", kind, code), None))
        for code, spec in sorted(wanted.items()):
            if code not in registered[spec.kind]:
                plan.append((Change("add", spec.kind, code), spec))
            elif remembered.get(code) != (spec.kind, spec.fingerprint(self.handler_url)):
                plan.append((Change("update", spec.kind, code), spec))
        return plan

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
    ) -> SyncReport:
        """Plan and apply; `on_plan` sees the planned changes first, `progress` each applied one."""
        portal = self.installations.get(member_id)
        report = SyncReport(domain=portal.domain, dry_run=dry_run)
        try:
            plan = await self.plan(member_id)
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
            tplan, warning = await plan_triggers(self.rest, self.installations, member_id, self.registry.triggers())
            report.warnings += [warning] if warning else []
            report.changes = skipped + [c for c, _ in plan] + [Change(t.action, "trigger", t.code) for t in tplan]
            if on_plan:
                on_plan(report.changes)
            if dry_run:
                return report
            for change, spec in plan:
                await self._apply(member_id, change, spec)
                if progress:
                    progress(change)
            for tchange in tplan:
                await apply_trigger(self.rest, self.installations, member_id, tchange)
                if progress:
                    progress(Change(tchange.action, "trigger", tchange.code))
        except B24RobotsError as exc:
            report.error = str(exc)
        if not dry_run:
            if report.error:
                self.installations.record_sync(member_id, "error", report.error)
            else:
                # the portal page shows what this portal's plan could not take
                self.installations.record_sync(member_id, "ok", report.skipped_note)
            if report.error:
                log.warning("sync of %s failed: %s", portal.domain, report.error)
        return report

    async def _apply(self, member_id: str, change: Change, spec: RobotSpec | None) -> None:
        prefix = f"bizproc.{change.kind}"
        if change.action == "delete":
            try:
                await self.rest.call(member_id, f"{prefix}.delete", {"CODE": change.code})
            except MethodError as exc:
                if exc.code != "ERROR_ACTIVITY_NOT_FOUND":
                    raise
            self.installations.set_registration(member_id, change.code, change.kind, None)
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
        self.installations.set_registration(member_id, spec.code, spec.kind, spec.fingerprint(self.handler_url))
