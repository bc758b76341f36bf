"""Firing triggers and starting workflows: checked here, journaled, delivered by the sender.

Every path (robot code, the CLI, the inbound API, the admin UI) comes through `Outbound`, so the
checks and the answers are the same everywhere:

- the portal must be installed and active, the trigger declared and registered there (a portal
  without CRM automation is named as such);
- the entity must exist on the portal — asked with `crm.item.get {entityTypeId, id}`, which answers
  `NOT_FOUND` for a missing item or smart-process type (b24restdocs `api-reference/crm/universal/
  crm-item-get.md`), because `crm.automation.trigger.execute` answers `true` even for an entity that
  does not exist (`...-trigger-execute.md`). The check is made at once only while the portal's
  rate limit has a free slot; otherwise (a burst of fires, or the portal is unreachable now) the fire
  is journaled with the check attached and the sender asks `crm.item.get` in the same batch, right
  before the fire, marking it failed with the same message when the entity is missing — so a bulk
  load costs one batch per 25 fires instead of one request per fire, and the API answers at once;
- the call is stored once per key (`NewCall.key`): a retrying client never fires twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from b24robots.errors import B24RobotsError, MethodError, NotFound, RestError
from b24robots.rest.client import RestClient
from b24robots.rest.limiter import gcra_wait
from b24robots.robots.registry import Registry
from b24robots.robots.triggers import Entity, TriggerSpec, trigger_call, workflow_start_call
from b24robots.store.installation_rows import Installation
from b24robots.store.installations import Installations
from b24robots.store.journal import Invocation, Journal, NewCall
from b24robots.store.limiter_state import LimiterBuckets
from b24robots.store.registrations import Registrations

from .trigger_sync import remembered, unavailable


class OutboundError(B24RobotsError):
    """A fire or workflow start was refused; `status` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class IdempotencyConflict(OutboundError):
    """The same idempotency key came with a different request."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=409)


@dataclass(frozen=True)
class Fired:
    """The journal entry of a fire or start; `created` is False when the key was seen before."""

    entry: Invocation
    created: bool


def fingerprint(body: Mapping[str, Any]) -> str:
    """A stable hash of a request body (idempotency: same key + same body = same answer)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


class PortalOutbound:
    """`Outbound` bound to one portal for robot code (`ctx.fire_trigger`); refusals raise OutboundError."""

    def __init__(self, outbound: Outbound, member_id: str, origin: str = "robot") -> None:
        self.outbound, self.member_id, self.origin = outbound, member_id, origin

    async def fire_trigger(self, code: str, entity: Entity, key: str) -> int:
        fired = await self.outbound.fire_trigger(self.member_id, code, entity, origin=self.origin, key=key)
        return fired.entry.id

    async def start_workflow(
        self, template_id: int, entity: Entity, parameters: Mapping[str, Any] | None, key: str
    ) -> int:
        fired = await self.outbound.start_workflow(
            self.member_id, template_id, entity, parameters, origin=self.origin, key=key
        )
        return fired.entry.id


class Outbound:
    def __init__(
        self,
        registry: Registry,
        installations: Installations,
        registrations: Registrations,
        buckets: LimiterBuckets,
        journal: Journal,
        rest: RestClient,
    ) -> None:
        self.registry = registry
        self.installations = installations
        self.registrations = registrations  # a trigger fires only where the sync registered it
        self.buckets = buckets  # peeked at before asking the portal about an entity
        self.journal = journal
        self.rest = rest

    def portal(self, key: str) -> Installation:
        try:
            inst = self.installations.get(key)
        except NotFound:
            raise OutboundError(f"no portal {key!r} is installed; see `b24robots installations list`", 404) from None
        if not inst.active:
            raise OutboundError(f"portal {inst.domain} is {inst.status}; reinstall the application there", 409)
        return inst

    async def fire_trigger(
        self,
        portal: str,
        code: str,
        entity: Entity,
        *,
        origin: str,
        key: str | None = None,
        body: Mapping[str, Any] | None = None,
        check_entity: bool = True,
    ) -> Fired:
        """Journal a `crm.automation.trigger.execute` for `entity`; raises OutboundError when refused."""
        inst, spec = await asyncio.to_thread(self._trigger_target, portal, code)
        method, params = trigger_call(spec.code, entity)
        request = body if body is not None else {"trigger": spec.code, "entity": entity.document_key}
        return await self._enqueue(inst, method, params, spec.code, entity, origin, key, request, check_entity)

    async def start_workflow(
        self,
        portal: str,
        template_id: int,
        entity: Entity,
        parameters: Mapping[str, Any] | None = None,
        *,
        origin: str,
        key: str | None = None,
        body: Mapping[str, Any] | None = None,
        check_entity: bool = True,
    ) -> Fired:
        """Journal a `bizproc.workflow.start` of `template_id` on `entity`."""
        inst = await asyncio.to_thread(self.portal, portal)
        method, params = workflow_start_call(template_id, entity, parameters)
        request = (
            body
            if body is not None
            else {
                "template_id": template_id,
                "entity": entity.document_key,
                "parameters": dict(parameters or {}),
            }
        )
        label = f"bp:{template_id}"
        return await self._enqueue(inst, method, params, label, entity, origin, key, request, check_entity)

    def _trigger_target(self, portal: str, code: str) -> tuple[Installation, TriggerSpec]:
        """The portal and the declared trigger a fire goes to (store reads: called in a thread)."""
        inst = self.portal(portal)
        spec = self.registry.trigger(code)
        if spec is None:
            declared = ", ".join(t.code for t in self.registry.triggers()) or "none"
            raise OutboundError(f"trigger {code!r} is not declared (declared: {declared})", 404)
        if unavailable(self.registrations, inst.member_id):
            raise OutboundError(
                f"portal {inst.domain} has no CRM automation (its plan lacks it), so triggers cannot fire there", 409
            )
        if spec.code not in remembered(self.registrations, inst.member_id):
            raise OutboundError(
                f"trigger {spec.code!r} is not registered on {inst.domain} yet; run `b24robots sync --portal "
                f"{inst.domain}`",
                409,
            )
        return inst, spec

    async def _enqueue(
        self,
        inst: Installation,
        method: str,
        params: dict[str, Any],
        label: str,
        entity: Entity,
        origin: str,
        key: str | None,
        request: Mapping[str, Any],
        check_entity: bool,
    ) -> Fired:
        fp = fingerprint(request)
        full_key = f"{inst.id}:{key}" if key else f"{inst.id}:{uuid.uuid4().hex}"
        if key:
            seen = await asyncio.to_thread(self._seen, full_key)
            if seen is not None:
                return self._same(seen, fp, key)
        checked = await self.check_entity(inst, entity) if check_entity else True
        new = NewCall(
            key=full_key,
            installation_id=inst.id,
            method=method,
            params=params,
            label=label,
            origin=origin,
            document_id=entity.document_id,
            fingerprint=fp,
            check=None if checked else entity_check(entity),
        )
        entry, created = await asyncio.to_thread(self.journal.enqueue_call, new)
        if not created:  # a concurrent request with the same key won the race
            return self._same(entry, fp, key or "")
        return Fired(entry, True)

    def _seen(self, full_key: str) -> Invocation | None:
        found = self.journal.list_calls(key=full_key, limit=1)
        return found[0] if found else None

    @staticmethod
    def _same(entry: Invocation, fp: str, key: str) -> Fired:
        if entry.properties.get("fingerprint") != fp:
            raise IdempotencyConflict(
                f"idempotency key {key!r} was already used for a different request (journal entry {entry.id}); "
                "use a new key for a new request"
            )
        return Fired(entry, False)

    def _slot_free(self, inst: Installation) -> bool:
        """The portal's shared bucket would let a request go now (a peek; nothing is reserved)."""
        return gcra_wait(self.buckets.tat(inst.member_id), time.time(), inst.rate, inst.burst) <= 0

    async def check_entity(self, inst: Installation, entity: Entity) -> bool:
        """Refuse an entity the portal says does not exist. False: not asked now (no free slot, or the
        portal cannot be reached); the sender then checks it in the fire's batch."""
        if not await asyncio.to_thread(self._slot_free, inst):
            return False
        try:
            await self.rest.call(
                inst.member_id, "crm.item.get", {"entityTypeId": entity.owner_type_id, "id": entity.owner_id}
            )
        except MethodError as exc:
            if exc.code == "NOT_FOUND":
                raise OutboundError(missing_message(entity, inst.domain), 422) from None
            raise OutboundError(f"{inst.domain} refused to show {entity}: {exc.description or exc.code}", 422) from None
        except RestError:
            return False  # unreachable or rate-limited now: the journal keeps the call, checked when sent
        return True


def entity_check(entity: Entity) -> dict[str, int]:
    """The `crm.item.get` parameters that tell whether `entity` exists."""
    return {"entityTypeId": entity.owner_type_id, "id": entity.owner_id}


def missing_message(entity: Entity, domain: str) -> str:
    return f"{entity.kind} {entity.owner_id} ({entity}) does not exist on {domain}"
