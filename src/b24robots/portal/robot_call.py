"""The robot call (`POST /b24/robot`): authenticate, parse, store durably, answer.

The body is what bizproc `lib/restactivity.php::execute` sends: `event_token, workflow_id, code,
document_id[], document_type[], properties[...], use_subscription, timeout_duration, ts, auth[...]`
(bitrix24-protocol.md §2). The answer is owed later (`bizproc.event.send`); here we only promise that the
call is stored before we say 200, since the portal never resends it: the group writer
(`store/group_commit.py`) answers only after the transaction holding the call committed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

from b24robots.errors import InputError
from b24robots.jobs.runner import jsonable, short
from b24robots.jobs.wakeup import Wakeup
from b24robots.jobs.worker import caller_key
from b24robots.portal.auth import Denied, authenticate
from b24robots.rest.tokens import UserToken, UserTokens
from b24robots.robots.params import default_outputs, parse_values
from b24robots.robots.registry import Registry
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
    user_tokens: UserTokens


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
    classes/general/restactivity.php::execute issues it for the robot's user), or None without one."""
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
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default


class Intake:
    """`POST /b24/robot`: verify, parse, store durably, answer. Runs in a worker thread."""

    def __init__(self, services: IntakeDeps) -> None:
        self.s = services

    def accept(self, form: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        auth = form.get("auth")
        found = authenticate(self.s.installations, auth)
        if isinstance(found, Denied):
            return found.status, found.body()
        inst = found
        auth = auth if isinstance(auth, Mapping) else {}  # authenticate() accepted only a map
        code, token = _text(form, "code"), _text(form, "event_token")
        if not code or not token:
            return 400, {"error": "bad_request", "reason": "code and event_token are required"}
        properties = form.get("properties")
        if properties is None or properties == "":
            properties = {}
        if not isinstance(properties, Mapping):
            return 400, {
                "error": "bad_request",
                "reason": "properties must be a bracketed map (properties[key]=...)",
            }
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
            use_subscription=_text(form, "use_subscription").upper() != "N",
            timeout_duration=_int(form.get("timeout_duration")),
            portal_ts=_int(form.get("ts")),
            auth_user_id=_int(auth.get("user_id"), 0) or None,
            properties=dict(properties),
            inputs=None,
        )
        if resolved is None:
            error, log_message = self.s.registry.unavailable(code)
            inv_id, created = self.s.intake_writer.store(
                new, state=DEAD, error=error, log_message=log_message, outputs={}
            )
            if created:
                self.s.deliver_wakeup.notify()
            return 200, {"status": "rejected" if created else "duplicate", "id": inv_id}
        try:
            values = parse_values(resolved.spec.inputs, properties, culture=inst.date_culture)
        except InputError as exc:
            inv_id, created = self.s.intake_writer.store(
                new,
                state=DEAD,
                error=f"bad input: {exc}",
                log_message=short(f"b24robots: bad input: {exc}"),
                outputs=default_outputs(resolved.spec.outputs),
            )
            if created:
                self.s.deliver_wakeup.notify()
            return 200, {"status": "rejected" if created else "duplicate", "id": inv_id, "reason": str(exc)}
        new = NewInvocation(**{**new.__dict__, "inputs": jsonable(values)})
        user_token = _user_token(auth)
        if user_token is not None:  # kept before the store, so the woken worker finds it
            self.s.user_tokens.put(caller_key(inst.id, token), user_token)
        inv_id, created = self.s.intake_writer.store(new)
        if created:
            self.s.work_wakeup.notify()
        return 200, {"status": "queued" if created else "duplicate", "id": inv_id}
