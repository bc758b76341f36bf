"""The robot call (`POST /b24/robot`): authenticate, parse, store durably, answer.

The body is what bizproc `lib/restactivity.php::execute` sends: `event_token, workflow_id, code,
document_id[], document_type[], properties[...], use_subscription, timeout_duration, ts, auth[...]`
(bitrix24-protocol.md §2). The answer is owed later (`bizproc.event.send`); here we only promise that the
call is stored before we say 200, since the portal never resends it: the group writer
(`store/group_commit.py`) answers only after the transaction holding the call committed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any, Protocol

from b24robots.errors import InputError
from b24robots.fields import INT32_MAX, as_flag, as_int
from b24robots.jobs.wakeup import Wakeup
from b24robots.portal.auth import Denied, authenticate
from b24robots.rest.tokens import UserToken
from b24robots.robots.params import default_outputs, parse_values
from b24robots.robots.registry import Registry
from b24robots.robots.values import jsonable, short
from b24robots.store.group_commit import GroupWriter
from b24robots.store.installations import Installations
from b24robots.store.journal import DEAD, NewInvocation


class IntakeDeps(Protocol):
    """What the intake needs from the composition root."""

    installations: Installations
    registry: Registry
    intake_writer: GroupWriter
    work_wakeup: Wakeup
    deliver_wakeup: Wakeup


def _text(form: Mapping[str, Any], key: str) -> str:
    value = form.get(key, "")
    return value if isinstance(value, str) else ""


def _triple(value: Any) -> list[str]:
    if isinstance(value, list):
        return [v if isinstance(v, str) else "" for v in value]
    if isinstance(value, Mapping):
        return [v if isinstance(v, str) else "" for _, v in sorted(value.items())]
    return []


def _user_token(auth: Mapping[str, Any]) -> UserToken | None:
    """The run-as user's access token the queue sends in the call's auth block (bizproc
    classes/general/restactivity.php::execute queues the call with `LOCAL_USER` = the robot's user and
    `sendAuth`), or None without one. The refresh token that comes too (`sendRefreshToken`) is not read:
    the caller's client is never refreshed (store/caller_tokens.py)."""
    access = auth.get("access_token")
    user_id = _int(auth.get("user_id"), 0)
    if not isinstance(access, str) or not access or user_id <= 0:
        return None
    now = time.time()
    expires = _int(auth.get("expires"), 0)
    if expires <= now:
        expires = int(now) + (_int(auth.get("expires_in"), 0) or 3600)
    return UserToken(access_token=access, expires_at=float(expires), user_id=user_id)


def _int(value: Any, default: int = 0) -> int:
    # the journal's columns are int4 on PostgreSQL: a larger number would fail the whole commit group
    number = as_int(value, maximum=INT32_MAX)
    return default if number is None else number


Answer = tuple[int, dict[str, Any]]


@dataclass(frozen=True)
class Taken:
    """A robot call the intake took: its answer now, or once the group holding it committed."""

    now: Answer | None = None
    stored: Future[tuple[int, bool]] | None = None
    finish: Callable[[int, bool], Answer] | None = None

    def wait(self) -> Answer:
        """Block until the answer is known; `StoreError` when the call's group failed."""
        if self.now is not None:
            return self.now
        assert self.stored is not None and self.finish is not None
        return self.finish(*self.stored.result())

    async def wait_async(self) -> Answer:
        """The same on the event loop, without blocking it."""
        if self.now is not None:
            return self.now
        assert self.stored is not None and self.finish is not None
        return self.finish(*await asyncio.wrap_future(self.stored))


class Intake:
    """`POST /b24/robot`: verify, parse, store durably, answer."""

    def __init__(self, services: IntakeDeps) -> None:
        self.s = services

    def accept(self, form: dict[str, Any]) -> Answer:
        """The whole call, blocking until its row is committed (a worker thread)."""
        return self.take(form).wait()

    def take(self, form: dict[str, Any]) -> Taken:
        """Verify and parse the call and hand it to the group writer; the answer waits for the commit.

        Every database read happens before anything is handed on or remembered, so under
        `store.db.memory_only()` a call that needs one raises `NeedsDatabase` having changed nothing.
        """
        auth = form.get("auth")
        found = authenticate(self.s.installations, auth)
        if isinstance(found, Denied):
            return Taken(now=(found.status, found.body()))
        inst = found
        auth = auth if isinstance(auth, Mapping) else {}  # authenticate() accepted only a map
        code, token = _text(form, "code"), _text(form, "event_token")
        if not code or not token:
            return Taken(now=(400, {"error": "bad_request", "reason": "code and event_token are required"}))
        properties = form.get("properties")
        if properties is None or properties == "":
            properties = {}
        if not isinstance(properties, Mapping):
            reason = "properties must be a bracketed map (properties[key]=...)"
            return Taken(now=(400, {"error": "bad_request", "reason": reason}))
        resolved = self.s.registry.resolve(code)
        new = NewInvocation(
            event_token=token,
            installation_id=inst.id,
            robot_code=code,
            origin=resolved.origin if resolved else "unknown",
            robot_version_id=resolved.version_id if resolved else None,
            workflow_id=_text(form, "workflow_id"),
            document_id=_triple(form.get("document_id")),
            document_type=_triple(form.get("document_type")),
            use_subscription=as_flag(_text(form, "use_subscription")) is not False,  # only "N" says no
            timeout_duration=_int(form.get("timeout_duration")),
            portal_ts=_int(form.get("ts")),
            auth_user_id=_int(auth.get("user_id"), 0) or None,
            properties=dict(properties),
            inputs=None,
        )
        if resolved is None:
            error, log_message = self.s.registry.unavailable(code)
            stored = self.s.intake_writer.submit(new, state=DEAD, error=error, log_message=log_message, outputs={})
            return Taken(stored=stored, finish=self._rejected)
        try:
            values = parse_values(resolved.spec.inputs, properties, culture=inst.date_culture)
        except InputError as exc:
            stored = self.s.intake_writer.submit(
                new,
                state=DEAD,
                error=f"bad input: {exc}",
                log_message=short(f"b24robots: bad input: {exc}"),
                outputs=default_outputs(resolved.spec.outputs),
            )
            reason = str(exc)
            return Taken(stored=stored, finish=lambda inv_id, created: self._rejected(inv_id, created, reason))
        user_token = _user_token(auth)
        new = replace(
            new,
            inputs=jsonable(values),
            # stored encrypted in the call's own row, so any process that runs it can act as the user
            caller_token=user_token.access_token if user_token else None,
            caller_expires_at=user_token.expires_at if user_token else None,
        )
        return Taken(stored=self.s.intake_writer.submit(new), finish=self._queued)

    def _rejected(self, inv_id: int, created: bool, reason: str | None = None) -> Answer:
        if created:
            self.s.deliver_wakeup.notify()
        body: dict[str, Any] = {"status": "rejected" if created else "duplicate", "id": inv_id}
        if reason is not None:
            body["reason"] = reason
        return 200, body

    def _queued(self, inv_id: int, created: bool) -> Answer:
        if created:
            self.s.work_wakeup.notify()
        return 200, {"status": "queued" if created else "duplicate", "id": inv_id}
