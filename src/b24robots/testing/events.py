"""``event.bind``, ``event.get``, ``event.unbind`` on the simulated portal.

Importing this module installs the methods into the simulator's method table. Behaviour from the docs
(b24restdocs ``api-reference/events/event-bind.md``, ``event-get.md``, ``event-unbind.md``):

- they work only with application authorization (a webhook gets ``WRONG_AUTH_TYPE``);
- ``event.bind {event, handler[, auth_type, event_type]}`` answers ``true``; an unknown event name is
  400 ``ERROR_EVENT_NOT_FOUND``; binding the same (event, handler, auth_type) again is 400 ``ERROR_CORE``
  "Handler already binded" (the text integrations match on; same message in rest ``lib/placementtable.php``);
  a user who is not an admin cannot bind offline events or another user's ``auth_type``;
- ``event.get`` lists ``{event, handler, auth_type, offline}`` of the calling app;
- ``event.unbind {event, handler[, auth_type]}`` answers ``{"count": N}``.
The portal sends app events (ONAPPINSTALL/UPDATE/UNINSTALL) only to handlers bound this way (docs
``settings/app-uninstallation.md``; rest ``lib/event/sender.php``), which simulator.py follows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from b24robots.errors import AuthError, MethodError
from b24robots.fields import as_int

from .registration import access_denied
from .restapi import METHODS, Caller, MethodResult, MethodSpec

if TYPE_CHECKING:
    from .simulator import PortalSimulator

# the app events and the module events the simulator knows (the portal knows many more; an unknown name is
# refused as the portal refuses one)
KNOWN_EVENTS = frozenset(
    {
        "ONAPPINSTALL",
        "ONAPPUPDATE",
        "ONAPPUNINSTALL",
        "ONAPPPAYMENT",
        "ONAPPTEST",
        "ONCRMDEALADD",
        "ONCRMDEALUPDATE",
        "ONCRMDEALDELETE",
        "ONCRMLEADADD",
        "ONCRMLEADUPDATE",
        "ONCRMCONTACTADD",
        "ONCRMCOMPANYADD",
        "ONTASKADD",
        "ONTASKUPDATE",
        "ONUSERADD",
    }
)


def _installation(caller: Caller) -> Any:
    if caller.installation is None:
        raise AuthError("WRONG_AUTH_TYPE", "Current authorization type is denied for this method", status=401)
    return caller.installation


def _bind(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    inst = _installation(caller)
    event = str(params.get("event") or params.get("EVENT") or "").upper()
    handler = str(params.get("handler") or params.get("HANDLER") or "")
    if not event or event not in KNOWN_EVENTS:
        raise MethodError("ERROR_EVENT_NOT_FOUND", "Event not found", method="event.bind", status=400)
    if not handler:
        # the code for an empty handler is UNCONFIRMED (the docs list only ERROR_EVENT_NOT_FOUND): a 400 either way
        raise MethodError("ERROR_HANDLER_URL_MISMATCH", "Handler URL is empty", method="event.bind", status=400)
    auth_type_raw = str(params.get("auth_type") or "0")
    auth_type = as_int(auth_type_raw) or 0
    if not caller.is_admin:
        if str(params.get("event_type") or "online") == "offline":
            raise access_denied("Offline events are available to administrators only")
        if auth_type not in (0, caller.user_id):
            raise access_denied("auth_type must be the current user")
        auth_type = caller.user_id
    key = (event, handler, auth_type)
    if key in inst.handlers:
        raise MethodError("ERROR_CORE", "Handler already binded", method="event.bind", status=400)
    inst.handlers.append(key)
    return MethodResult(True)


def _get(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    inst = _installation(caller)
    return MethodResult([{"event": e, "handler": h, "auth_type": str(a), "offline": 0} for e, h, a in inst.handlers])


def _unbind(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    inst = _installation(caller)
    event = str(params.get("event") or "").upper()
    handler = str(params.get("handler") or "")
    auth_type = params.get("auth_type")
    keep = [
        k
        for k in inst.handlers
        if not (k[0] == event and k[1] == handler and (auth_type is None or str(k[2]) == str(auth_type)))
    ]
    count = len(inst.handlers) - len(keep)
    inst.handlers[:] = keep
    return MethodResult({"count": count})


METHODS["event.bind"] = MethodSpec(_bind)
METHODS["event.get"] = MethodSpec(_get)
METHODS["event.unbind"] = MethodSpec(_unbind)
