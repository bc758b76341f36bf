"""The portal's REST methods: dispatch, scopes, the operating-time limit, ``batch`` and each method.

Methods are synchronous functions over the simulator state and run under the simulator lock;
work the portal does after answering (``bizproc.event.send``) is returned as ``after`` callbacks.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from b24robots.errors import (
    AuthError,
    BatchLimitError,
    FormDecodeError,
    MethodError,
    MethodNotFound,
    OperationTimeLimit,
    RestError,
)
from b24robots.inbound.formcodec import decode_form

from . import registration
from ._util import iso_c, php_array, php_empty, php_truthy, upper_keys
from .model import (
    AUTOMATION_FEATURES,
    DEAL_FIELDS,
    AccessToken,
    Installation,
    LogEntry,
    Portal,
    Trigger,
    TriggerFiring,
    Webhook,
)
from .registration import access_denied, php_intval
from .signing import unsign_event_token

if TYPE_CHECKING:
    from .simulator import PortalSimulator

PAGE_SIZE = 50
BATCH_MAX_LENGTH = 50


@dataclass
class Caller:
    """Who is calling: the portal, the user and either an app installation or an inbound webhook."""

    portal: Portal
    user_id: int
    scopes: tuple[str, ...]
    installation: Installation | None = None
    webhook: Webhook | None = None
    token: AccessToken | None = None

    @property
    def client_id(self) -> str | None:
        return self.installation.app.client_id if self.installation else None

    @property
    def is_admin(self) -> bool:
        user = self.portal.users.get(self.user_id)
        return bool(user and user.admin)

    @property
    def auth_key(self) -> str:
        if self.installation is not None:
            return f"app:{self.installation.app.client_id}"
        return f"webhook:{self.webhook.id if self.webhook else 0}"

    @property
    def auth_kind(self) -> str:
        return "app" if self.installation is not None else "webhook"


@dataclass
class MethodResult:
    result: Any
    total: int | None = None
    next: int | None = None
    after: list[Callable[[], None]] = field(default_factory=list)


Method = Callable[["PortalSimulator", Caller, dict[str, Any]], MethodResult]


@dataclass(frozen=True)
class MethodSpec:
    fn: Method
    scopes: tuple[str, ...] = ()  # any one of them suffices; empty = no scope needed


def time_block(start: float, finish: float, processing: float) -> dict[str, Any]:
    """The ``time`` object of a successful answer (§5.5)."""
    return {
        "start": start,
        "finish": finish,
        "duration": finish - start,
        "processing": processing,
        "date_start": iso_c(start),
        "date_finish": iso_c(finish),
    }


def run_method(
    sim: PortalSimulator, caller: Caller, method: str, params: dict[str, Any], *, extra_seconds: float = 0.0
) -> MethodResult:
    """Look the method up, check scope and operating time, run it and account its time."""
    method = method.lower()
    spec = METHODS.get(method)
    if spec is None or not method_on_plan(caller.portal, method):
        raise MethodNotFound("ERROR_METHOD_NOT_FOUND", "Method not found!", method=method, status=404)
    if spec.scopes and not any(s in caller.scopes for s in spec.scopes):
        raise AuthError(
            "insufficient_scope",
            "The request requires higher privileges than provided by the access token",
            method=method,
            status=401,
        )
    limiter = sim.limiter
    key = (caller.auth_key, method)
    limited = limiter is not None and method != "batch"  # batch itself is not counted, its commands are
    if limited and limiter is not None and limiter.blocked(key, sim.now()):
        raise OperationTimeLimit(
            "OPERATION_TIME_LIMIT",
            "Method is blocked due to operation time limit.",
            method=method,
            status=429,
            reset_at=limiter.reset_at(key, sim.now()),
        )
    started = time.perf_counter()
    try:
        return spec.fn(sim, caller, params)
    finally:
        if limited and limiter is not None:
            spent = time.perf_counter() - started + sim.method_costs.get(method, 0.0) + extra_seconds
            limiter.record(key, sim.now(), spent)


# bizproc/lib/restservice.php::onRestServiceBuildDescription: bizproc.* exists with the `bizproc` feature;
# the robot methods, event.send and activity.log also with CRM or tasks automation alone.
_AUTOMATION_METHODS = ("bizproc.robot.", "bizproc.provider.")
_AUTOMATION_EXACT = ("bizproc.event.send", "bizproc.activity.log")


def method_on_plan(portal: Portal, method: str) -> bool:
    """Whether the portal's tariff features put `method` in its REST description."""
    if not method.startswith("bizproc."):
        return True
    if "bizproc" in portal.features:
        return True
    automation = any(f in portal.features for f in AUTOMATION_FEATURES)
    return automation and (method.startswith(_AUTOMATION_METHODS) or method in _AUTOMATION_EXACT)


def operating_info(sim: PortalSimulator, caller: Caller, method: str) -> dict[str, Any]:
    """``operating`` and ``operating_reset_at`` for the time block, only when the limiter is on."""
    if sim.limiter is None or method.lower() == "batch":
        return {}
    key = (caller.auth_key, method.lower())
    now = sim.now()
    return {
        "operating_reset_at": sim.limiter.reset_at(key, now),
        "operating": round(sim.limiter.operating(key, now), 4),
    }


# ---------------------------------------------------------------- bizproc registration


def _registration_method(action: str, is_robot: bool) -> Method:
    def method(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
        portal, client_id, admin = caller.portal, caller.client_id, caller.is_admin
        if action == "add":
            return MethodResult(registration.add(portal, client_id, admin, is_robot, params))
        if action == "update":
            return MethodResult(registration.update(portal, client_id, admin, is_robot, params))
        if action == "delete":
            return MethodResult(registration.delete(portal, client_id, admin, is_robot, params))
        return MethodResult(registration.list_codes(portal, client_id, admin, is_robot))

    return method


def _event_send(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    data = upper_keys(params)
    parsed = unsign_event_token(caller.portal.signing_secret, data.get("EVENT_TOKEN"))
    if parsed is None:
        raise access_denied()
    workflow_id, activity_name, event_id = parsed
    domain = caller.portal.domain
    values, message = data.get("RETURN_VALUES"), data.get("LOG_MESSAGE")
    if sim.legacy_strict_event_send:
        workflow = caller.portal.workflows.get(workflow_id)
        if workflow is None or workflow.is_closed:
            raise MethodError("ERROR_CORE", "WorkflowNotFound", method="bizproc.event.send", status=400)
        sim.apply_event(domain, workflow_id, activity_name, event_id, values, message)
        return MethodResult(True)

    def apply() -> None:
        sim.apply_event(domain, workflow_id, activity_name, event_id, values, message)

    return MethodResult(True, after=[apply])


def _activity_log(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    data = upper_keys(params)
    parsed = unsign_event_token(caller.portal.signing_secret, data.get("EVENT_TOKEN"))
    if parsed is None:
        raise access_denied()
    message = data.get("LOG_MESSAGE")
    if php_empty(message):
        raise MethodError("ERROR_EMPTY_LOG_MESSAGE", "Empty log message!", status=400)
    workflow_id, activity_name, event_id = parsed
    workflow = caller.portal.workflows.get(workflow_id)
    if workflow is None or workflow.finished:
        # Completed workflows are deleted; the engine's code surfaces as the error code.
        raise MethodError("404", f'Workflow instance "{workflow_id}" is not found', status=400)
    if workflow.locked(sim.now()):
        # retrieveWorkflow throws EXCEPTION_CODE_INSTANCE_LOCKED (bizproc classes/general/workflowpersister.php);
        # writeActivityLog runs synchronously and reports the engine's code (bizproc lib/restservice.php)
        raise MethodError("423", "The workflow instance is locked", status=400)
    # A live workflow takes the event; onExternalEvent ignores it once the activity closed, and the
    # call still answers true (restservice.php::writeActivityLog reports only the engine's errors).
    if not workflow.is_closed and workflow.activity_name == activity_name and workflow.event_id == event_id:
        workflow.log.append(LogEntry(sim.now(), str(message), "activity.log"))
    else:
        workflow.ignored_events += 1
    return MethodResult(True)


# ---------------------------------------------------------------- app, users


def _app_info(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    """The portal's own app.info (rest module classes/general/rest_provider.php::appInfo): ID, CODE,
    VERSION, STATUS, INSTALLED, PAYMENT_EXPIRED, DAYS, LANGUAGE_ID, LICENSE and, in the cloud, LICENSE_PREVIOUS,
    LICENSE_TYPE, LICENSE_FAMILY. No client_id: only the OAuth server's app.info has it (oauth_server.py)."""
    portal = caller.portal
    license_type = portal.license_type
    family = "ent" if license_type.startswith("ent") else license_type
    license_info = {
        "LICENSE": f"{portal.language}_{license_type}",
        "LICENSE_PREVIOUS": f"{portal.language}_{license_type}",
        "LICENSE_TYPE": license_type,
        "LICENSE_FAMILY": family,
    }
    if caller.installation is None:  # a webhook
        return MethodResult({"SCOPE": list(caller.scopes), **license_info})
    inst, app = caller.installation, caller.installation.app
    return MethodResult(
        {
            "ID": inst.id,
            "CODE": app.client_id,  # for a local app CODE is its client_id
            "VERSION": inst.version,
            "STATUS": "L",
            "INSTALLED": inst.installed,
            "PAYMENT_EXPIRED": "N",
            "DAYS": None,
            "LANGUAGE_ID": portal.language,
            **license_info,
        }
    )


def _profile(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    user = caller.portal.users.get(caller.user_id)
    if user is None:
        raise AuthError("authorization_error", "Unable to authorize user", status=401)
    return MethodResult(
        {
            "ID": str(user.id),
            "ADMIN": user.admin,
            "NAME": user.name,
            "LAST_NAME": user.last_name,
            "PERSONAL_GENDER": "",
            "TIME_ZONE": "",
            "TIME_ZONE_OFFSET": 0,
        }
    )


def _matches(row: dict[str, Any], flt: dict[str, Any]) -> bool:
    for raw_key, expected in flt.items():
        match = re.match(r"^(>=|<=|!=|!|>|<|%|=)?(.+)$", str(raw_key))
        if match is None:
            continue
        op, name = match.group(1) or "=", match.group(2).upper()
        actual = row.get(name)
        wanted = [str(v) for v in expected] if isinstance(expected, list) else [_text(expected)]
        have = _text(actual)
        if op == "=" and have not in wanted:
            return False
        if op in ("!", "!=") and have in wanted:
            return False
        if op == "%" and not any(w.lower() in have.lower() for w in wanted):
            return False
        if op in (">", "<", ">=", "<="):
            try:
                a, b = float(have), float(wanted[0])
            except ValueError:
                return False
            if not {">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[op]:
                return False
    return True


def _text(value: Any) -> str:
    if value is True:
        return "Y"
    if value is False:
        return "N"
    return "" if value is None else str(value)


def _paged(rows: list[dict[str, Any]], params: dict[str, Any]) -> MethodResult:
    start = max(0, php_intval(params.get("START", 0)))
    page = rows[start : start + PAGE_SIZE]
    nxt = start + PAGE_SIZE if start + PAGE_SIZE < len(rows) else None
    return MethodResult(page, total=len(rows), next=nxt)


def _user_get(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    data = upper_keys(params)
    flt = data.get("FILTER")
    if not isinstance(flt, dict):
        flt = {k: v for k, v in data.items() if k not in ("SORT", "ORDER", "START", "ADMIN_MODE", "FILTER")}
    rows = [u.as_rest() for u in sorted(caller.portal.users.values(), key=lambda u: u.id)]
    rows = [r for r in rows if _matches(r, flt)]
    return _paged(rows, data)


# ---------------------------------------------------------------- crm


def _deal_id(data: dict[str, Any]) -> int:
    deal_id = php_intval(data.get("ID"))
    if deal_id <= 0:
        raise MethodError("", "ID is not defined or invalid.", status=400)
    return deal_id


def _deal_get(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    deal = caller.portal.deals.get(_deal_id(upper_keys(params)))
    if deal is None:
        raise MethodError("", "Not found", status=400)
    return MethodResult(dict(deal))


def _deal_update(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    data = upper_keys(params)
    deal = caller.portal.deals.get(_deal_id(data))
    if deal is None:
        raise MethodError("", "Not found", status=400)
    fields = data.get("FIELDS")
    if not isinstance(fields, dict) or not fields:
        raise MethodError("", "The parameter 'fields' must be array.", status=400)
    for key, value in upper_keys(fields).items():
        if key != "ID":
            deal[key] = _text(value)
    return MethodResult(True)


def _deal_add(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    fields = upper_keys(params).get("FIELDS")
    if not isinstance(fields, dict):
        raise MethodError("", "The parameter 'fields' must be array.", status=400)
    deal = caller.portal.add_deal(**{k: _text(v) for k, v in upper_keys(fields).items() if k != "ID"})
    return MethodResult(int(deal["ID"]))


def _deal_list(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    data = upper_keys(params)
    flt = data.get("FILTER") if isinstance(data.get("FILTER"), dict) else {}
    rows = [dict(d) for _, d in sorted(caller.portal.deals.items()) if _matches(d, flt or {})]
    order = data.get("ORDER")
    if isinstance(order, dict):
        for key, direction in reversed(list(order.items())):
            name = str(key).upper()
            rows.sort(key=lambda r: _sort_key(r.get(name)), reverse=str(direction).upper() == "DESC")
    select = data.get("SELECT")
    if isinstance(select, list) and select and "*" not in select:
        wanted = {str(s).upper() for s in select} | {"ID"}
        rows = [{k: v for k, v in r.items() if k in wanted} for r in rows]
    return _paged(rows, data)


def _sort_key(value: Any) -> tuple[int, float, str]:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, _text(value))


_TRIGGER_CODE = re.compile(r"^[a-z0-9.\-_]+$", re.IGNORECASE)
# lead, deal, quote, smart invoice; >= 128 are smart processes. A contact (3) or company (4) is accepted too:
# the trigger then fires for the entities linked to it (b24restdocs crm-automation-trigger-execute.md).
_OWNER_TYPES = {1, 2, 3, 4, 7, 31}


def _trigger_context(caller: Caller) -> str:
    # Here the admin check comes first (crm/lib/automation/rest/proxy.php).
    if not caller.is_admin:
        raise access_denied("Admin permissions required")
    if caller.client_id is None:
        raise access_denied("Application context required")
    return caller.client_id


def _trigger_code(data: dict[str, Any]) -> str:
    code = data.get("CODE")
    if php_empty(code):
        raise MethodError("", "Empty trigger code!", status=400)
    if not isinstance(code, str) or not _TRIGGER_CODE.match(code):
        raise MethodError("", "Wrong trigger code!", status=400)
    return code


def _trigger_add(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    client_id = _trigger_context(caller)
    data = upper_keys(params)
    code = _trigger_code(data)
    name = data.get("NAME")
    if php_empty(name):
        raise MethodError("", "Empty trigger name!", status=400)
    caller.portal.triggers[(client_id, code)] = Trigger(client_id, code, str(name))
    return MethodResult(True)


def _trigger_list(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    client_id = _trigger_context(caller)
    rows = [{"NAME": t.name, "CODE": t.code} for t in caller.portal.triggers.values() if t.client_id == client_id]
    return MethodResult(rows)


def _trigger_delete(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    client_id = _trigger_context(caller)
    code = _trigger_code(upper_keys(params))
    if caller.portal.triggers.pop((client_id, code), None) is None:
        raise MethodError("", "Trigger not found", status=400)
    return MethodResult(True)


def _trigger_execute(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    client_id = _trigger_context(caller)
    data = upper_keys(params)
    code = data.get("CODE")
    if not isinstance(code, str) or (client_id, code) not in caller.portal.triggers:
        raise MethodError("", f"Trigger with code {code} is not registered.", status=400)
    owner_type = php_intval(data.get("OWNER_TYPE_ID"))
    if owner_type not in _OWNER_TYPES and owner_type < 128:
        raise MethodError("", "Incorrect parameter OWNER_TYPE_ID.", status=400)
    owner_id = php_intval(data.get("OWNER_ID"))
    if owner_id <= 0:
        raise MethodError("", "Incorrect parameter OWNER_ID.", status=400)
    caller.portal.trigger_firings.append(TriggerFiring(client_id, code, owner_type, owner_id, sim.now()))
    return MethodResult(True)


# ---------------------------------------------------------------- batch

_REFERENCE = re.compile(r"\$result\[([^\]]+)\]((?:\[[^\]]*\])*)")


def _resolve_reference(results: dict[str, Any], key: str, path: str) -> tuple[bool, Any]:
    if key not in results:
        return False, None
    value = results[key]
    for part in re.findall(r"\[([^\]]*)\]", path):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


def _substitute(value: Any, results: dict[str, Any]) -> Any:
    """Replace ``$result[key][field]...`` references in leaf strings with earlier results."""
    if isinstance(value, dict):
        return {k: _substitute(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, results) for v in value]
    if not isinstance(value, str) or "$result[" not in value:
        return value
    whole = _REFERENCE.fullmatch(value)
    if whole:
        found, resolved = _resolve_reference(results, whole.group(1), whole.group(2))
        if found and isinstance(resolved, dict | list):
            return resolved

    def replace(match: re.Match[str]) -> str:
        found, resolved = _resolve_reference(results, match.group(1), match.group(2))
        if not found:
            return match.group(0)
        return _text(resolved) if not isinstance(resolved, bool) else ("1" if resolved else "")

    return _REFERENCE.sub(replace, value)


def _batch(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    cmd = params.get("cmd", params.get("CMD"))
    halt = php_truthy(params.get("halt", params.get("HALT")))
    items: list[tuple[str, Any]] = []
    if isinstance(cmd, dict):
        items = [(str(k), v) for k, v in cmd.items()]
    elif isinstance(cmd, list):
        items = [(str(i), v) for i, v in enumerate(cmd)]
    results: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    totals: dict[str, Any] = {}
    nexts: dict[str, Any] = {}
    times: dict[str, Any] = {}
    after: list[Callable[[], None]] = []
    count = 0
    for key, command in items:
        if not isinstance(command, str):
            continue  # non-string commands are skipped
        count += 1
        if count > BATCH_MAX_LENGTH:
            errors[key] = {
                "error": "ERROR_BATCH_LENGTH_EXCEEDED",
                "error_description": "Max batch length exceeded",
            }
            continue
        method, _, query = command.partition("?")
        method = method.strip().lower()
        if method.endswith(".json"):
            method = method[: -len(".json")]
        started, perf = sim.now(), time.perf_counter()
        try:
            if method == "batch":
                raise BatchLimitError(
                    "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage", status=405
                )
            try:
                inner = decode_form(query)
            except FormDecodeError as exc:
                raise MethodError("INVALID_REQUEST", exc.reason, status=400) from None
            inner.pop("auth", None)
            inner.pop("access_token", None)
            outcome = run_method(sim, caller, method, _substitute(inner, results))
        except RestError as exc:
            errors[key] = {"error": exc.code, "error_description": exc.description}
            if halt:
                break
            continue
        results[key] = outcome.result
        if outcome.total is not None:
            totals[key] = outcome.total
        if outcome.next is not None:
            nexts[key] = outcome.next
        finished = sim.now()
        times[key] = time_block(started, finished, time.perf_counter() - perf) | operating_info(sim, caller, method)
        after.extend(outcome.after)
    return MethodResult(
        {
            "result": php_array(results),
            "result_error": php_array(errors),
            "result_total": php_array(totals),
            "result_next": php_array(nexts),
            "result_time": php_array(times),
        },
        after=after,
    )


METHODS: dict[str, MethodSpec] = {
    "batch": MethodSpec(_batch),
    "app.info": MethodSpec(_app_info),
    "profile": MethodSpec(_profile),
    "user.get": MethodSpec(_user_get, ("user", "user_brief", "user_basic")),
    "bizproc.event.send": MethodSpec(_event_send, ("bizproc",)),
    "bizproc.activity.log": MethodSpec(_activity_log, ("bizproc",)),
    "crm.deal.get": MethodSpec(_deal_get, ("crm",)),
    "crm.deal.update": MethodSpec(_deal_update, ("crm",)),
    "crm.deal.add": MethodSpec(_deal_add, ("crm",)),
    "crm.deal.list": MethodSpec(_deal_list, ("crm",)),
    "crm.automation.trigger.add": MethodSpec(_trigger_add, ("crm",)),
    "crm.automation.trigger.list": MethodSpec(_trigger_list, ("crm",)),
    "crm.automation.trigger.delete": MethodSpec(_trigger_delete, ("crm",)),
    "crm.automation.trigger.execute": MethodSpec(_trigger_execute, ("crm",)),
}
for _kind, _is_robot in (("robot", True), ("activity", False)):
    for _action in ("add", "update", "delete", "list"):
        METHODS[f"bizproc.{_kind}.{_action}"] = MethodSpec(_registration_method(_action, _is_robot), ("bizproc",))

__all__ = ["DEAL_FIELDS", "METHODS", "Caller", "MethodResult", "run_method", "time_block"]
