"""The simulator's state: portals, apps, installations, registrations, tokens and workflows.

Everything is plain data that tests may read; mutate it only through :class:`PortalSimulator`.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from .automation_model import Automation
from .limits import LeakyBucket
from .values import Culture


@dataclass
class User:
    id: int
    name: str
    last_name: str
    email: str
    admin: bool = False
    active: bool = True

    def as_rest(self) -> dict[str, Any]:
        return {
            "ID": str(self.id),
            "XML_ID": None,
            "ACTIVE": self.active,
            "NAME": self.name,
            "LAST_NAME": self.last_name,
            "SECOND_NAME": "",
            "EMAIL": self.email,
            "PERSONAL_GENDER": "",
            "IS_ONLINE": "N",
            "UF_DEPARTMENT": [1],
            "USER_TYPE": "employee",
        }


# The features bizproc/lib/restservice.php::onRestServiceBuildDescription asks about.
AUTOMATION_FEATURES = ("crm_automation_lead", "crm_automation_deal", "crm_automation_order", "tasks_automation")
ALL_FEATURES = ("bizproc", *AUTOMATION_FEATURES)

DEAL_FIELDS = ("ID", "TITLE", "STAGE_ID", "OPPORTUNITY", "CURRENCY_ID", "ASSIGNED_BY_ID", "COMMENTS")


@dataclass
class SimApp:
    """A local application registered on the simulator (it may be installed on any of its portals)."""

    client_id: str
    client_secret: str
    name: str
    scopes: tuple[str, ...]
    install_url: str | None
    api_only: bool
    version: int = 1

    @property
    def scope(self) -> str:
        return ",".join(self.scopes)

    def as_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "name": self.name,
            "scope": self.scope,
            "install_url": self.install_url,
            "api_only": self.api_only,
            "version": self.version,
        }


@dataclass
class Delivery:
    """One POST the portal (or its queue) made to an application URL."""

    kind: str  # "robot", "install", "ONAPPINSTALL", "ONAPPUPDATE", "ONAPPUNINSTALL"
    url: str
    body: bytes
    at: float
    status_code: int | None = None
    latency: float | None = None
    error: str | None = None
    response_text: str = ""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "url": self.url,
            "at": self.at,
            "status_code": self.status_code,
            "latency": self.latency,
            "error": self.error,
        }


@dataclass
class Installation:
    app: SimApp
    domain: str
    application_token: str
    installed: bool  # install finished (``BX24.installFinish()`` or API-only)
    version: int
    id: int
    active: bool = True  # False once uninstalled: its tokens stop working
    deliveries: list[Delivery] = field(default_factory=list)
    # event.bind registrations: (EVENT, handler URL, auth_type); the portal drops them with the app
    handlers: list[tuple[str, str, int]] = field(default_factory=list)

    def handlers_of(self, event: str) -> list[str]:
        return [url for name, url, _ in self.handlers if name == event.upper()]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "client_id": self.app.client_id,
            "domain": self.domain,
            "installed": self.installed,
            "active": self.active,
            "version": self.version,
            "deliveries": [d.as_json() for d in self.deliveries],
            "handlers": [{"event": e, "handler": h, "auth_type": a} for e, h, a in self.handlers],
        }


@dataclass
class Registration:
    """A row of ``b_bp_rest_activity``: a robot (``is_robot``) or an activity of one app."""

    client_id: str
    code: str
    is_robot: bool
    handler: str
    auth_user_id: int
    use_subscription: str
    name: dict[str, Any]
    description: dict[str, Any] | None
    properties: dict[str, Any]
    return_properties: dict[str, Any]
    document_type: list[Any] | None
    filter: Any
    use_placement: str
    placement_handler: str | None
    internal_code: str

    def localized_name(self, lang: str = "en") -> str:
        return localize(self.name, lang)

    def as_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "code": self.code,
            "is_robot": self.is_robot,
            "handler": self.handler,
            "auth_user_id": self.auth_user_id,
            "use_subscription": self.use_subscription,
            "name": self.name,
            "description": self.description,
            "properties": self.properties,
            "return_properties": self.return_properties,
            "document_type": self.document_type,
            "filter": self.filter,
            "use_placement": self.use_placement,
            "placement_handler": self.placement_handler,
            "internal_code": self.internal_code,
        }


def localize(texts: Any, lang: str) -> str:
    """``RestActivityTable::getLocalization`` (bizproc/lib/restactivity.php): a string as is; else the first
    non-empty of L, (RU when L is UA), EN, ``*``; else ``''``."""
    if isinstance(texts, str):
        return texts
    if not isinstance(texts, dict):
        return ""
    lang = lang.upper()
    order = [lang] + (["RU"] if lang == "UA" else []) + ["EN", "*"]
    for key in order:
        if texts.get(key):
            return str(texts[key])
    return ""


@dataclass
class Webhook:
    id: int
    user_id: int
    secret: str
    scopes: tuple[str, ...]

    @property
    def path(self) -> str:
        return f"{self.user_id}/{self.secret}"


@dataclass
class AccessToken:
    token: str
    domain: str
    client_id: str
    installation: Installation
    user_id: int
    expires_at: float


@dataclass
class RefreshToken:
    token: str
    domain: str
    client_id: str
    installation: Installation
    user_id: int
    expires_at: float
    used: bool = False


@dataclass
class AuthCode:
    code: str
    domain: str
    client_id: str
    user_id: int
    expires_at: float
    used: bool = False


@dataclass
class Trigger:
    client_id: str
    code: str
    name: str


@dataclass
class TriggerFiring:
    client_id: str
    code: str
    owner_type_id: int
    owner_id: int
    at: float


@dataclass
class LogEntry:
    at: float
    message: str
    source: str  # "event.send", "activity.log", "timeout", "system"


@dataclass
class CallRecord:
    """One REST request as the portal saw it (for assertions and the UI)."""

    at: float
    domain: str | None
    method: str
    auth: str  # "app", "webhook", "none"
    client_id: str | None
    status: int
    error: str | None
    user_id: int | None = None  # whose access token (or webhook) it was, when known


WorkflowState = Literal["waiting", "completed"]


class Workflow:
    """One running robot: what was sent to the handler, its log, its state and returned values."""

    def __init__(
        self,
        *,
        id: str,
        domain: str,
        registration: Registration,
        activity_name: str,
        event_id: str,
        event_token: str,
        document_id: list[str],
        document_type: list[str],
        properties: dict[str, Any],
        use_subscription: str,
        timeout_duration: int,
        user_id: int,
        started_at: float,
        return_values: dict[str, Any],
        keep_running: bool = False,
    ) -> None:
        self.id = id
        self.domain = domain
        self.registration = registration
        self.code = registration.code
        self.client_id = registration.client_id
        self.activity_name = activity_name
        self.event_id = event_id
        self.event_token = event_token
        self.document_id = document_id
        self.document_type = document_type
        self.properties = properties
        self.use_subscription = use_subscription
        self.timeout_duration = timeout_duration
        self.user_id = user_id
        self.started_at = started_at
        self.return_values = return_values
        self.state: WorkflowState = "waiting"
        self.closed_by: str | None = None  # "event", "timeout", "no_subscription"
        self.closed_at: float | None = None
        self.is_timeout = False
        self.deadline: float | None = None
        self.log: list[LogEntry] = []
        self.delivery: Delivery | None = None
        self.ignored_events: int = 0
        self.answers_received: int = 0  # bizproc.event.send calls that reached this instance, repeats too
        # a lock window (PortalSimulator.lock_workflow): another hit holds the instance until then
        self.locked_until: float | None = None
        self.lost_to_lock: int = 0  # event.send answers dropped because the instance was locked
        # the template has steps after this activity: the instance stays live once the activity closes
        self.keep_running = keep_running
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._lock = threading.Lock()

    @property
    def is_closed(self) -> bool:
        """The robot's activity is closed (answered, timed out, or not waiting)."""
        return self.state == "completed"

    def locked(self, now: float) -> bool:
        """Another hit holds the instance (bizproc classes/general/workflowpersister.php::retrieveWorkflow)."""
        return self.locked_until is not None and now < self.locked_until

    @property
    def finished(self) -> bool:
        """The workflow instance is gone: its activity closed and nothing follows it."""
        return self.is_closed and not self.keep_running

    def _close(self, by: str, at: float) -> None:
        self.state = "completed"
        self.closed_by = by
        self.closed_at = at
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_resolve, fut)

    async def closed(self, timeout: float = 5.0) -> Workflow:
        """Wait until the activity closes (answer, timeout or no subscription); TimeoutError otherwise."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self.is_closed:
                return self
            self._waiters.append((loop, fut))
        await asyncio.wait_for(fut, timeout)
        return self

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "domain": self.domain,
            "code": self.code,
            "client_id": self.client_id,
            "activity_name": self.activity_name,
            "document_id": self.document_id,
            "document_type": self.document_type,
            "properties": self.properties,
            "use_subscription": self.use_subscription,
            "timeout_duration": self.timeout_duration,
            "user_id": self.user_id,
            "state": self.state,
            "closed_by": self.closed_by,
            "is_timeout": self.is_timeout,
            "started_at": self.started_at,
            "closed_at": self.closed_at,
            "return_values": {k: _jsonable(v) for k, v in self.return_values.items()},
            "log": [{"at": e.at, "message": e.message, "source": e.source} for e in self.log],
            "delivery": self.delivery.as_json() if self.delivery else None,
        }

    def __repr__(self) -> str:
        return f"<Workflow {self.id} {self.code} on {self.domain}: {self.state}>"


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _jsonable(value: Any) -> Any:
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


@dataclass
class Portal:
    """One Bitrix24 account: its users, deals, limits, secrets and everything apps put there."""

    domain: str
    member_id: str
    signing_secret: str
    bucket: LeakyBucket
    culture: Culture = ""  # a language code whose date format the portal uses; '' = its `language`
    language: str = "en"
    license_type: str = "project"  # app.info LICENSE_TYPE; "ent250" etc. for enterprise plans
    users: dict[int, User] = field(default_factory=dict)
    deals: dict[int, dict[str, str]] = field(default_factory=dict)
    next_deal_id: int = 1
    installations: dict[str, Installation] = field(default_factory=dict)
    registrations: dict[str, Registration] = field(default_factory=dict)
    placements: dict[tuple[str, str], str] = field(default_factory=dict)
    webhooks: dict[int, Webhook] = field(default_factory=dict)
    triggers: dict[tuple[str, str], Trigger] = field(default_factory=dict)
    trigger_firings: list[TriggerFiring] = field(default_factory=list)
    workflows: dict[str, Workflow] = field(default_factory=dict)
    automation: Automation = field(default_factory=Automation)
    # tariff features (bitrix24 Feature::isFeatureEnabled) that decide which bizproc methods exist
    features: set[str] = field(default_factory=lambda: set(ALL_FEATURES))
    edition: str = "b24"  # CBPHelper::getDistrName: "b24" in the cloud, "box" on-premise

    def add_deal(self, **fields: Any) -> dict[str, str]:
        """Add a deal; missing fields get defaults. Values are stored as strings, as REST shows them."""
        deal_id = self.next_deal_id
        self.next_deal_id += 1
        deal = {
            "ID": str(deal_id),
            "TITLE": f"Deal #{deal_id}",
            "STAGE_ID": "NEW",
            "OPPORTUNITY": "0.00",
            "CURRENCY_ID": "USD",
            "ASSIGNED_BY_ID": "1",
            "COMMENTS": "",
        }
        for key, value in fields.items():
            deal[key.upper()] = "" if value is None else str(value)
        deal["ID"] = str(deal_id)
        self.deals[deal_id] = deal
        return deal

    @property
    def date_culture(self) -> str:
        """The language whose site format this portal writes and reads dates in."""
        return self.culture or self.language

    def robots(self, client_id: str | None = None) -> list[Registration]:
        return [r for r in self.registrations.values() if client_id is None or r.client_id == client_id]

    def as_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "member_id": self.member_id,
            "culture": self.date_culture,
            "language": self.language,
            "rate": self.bucket.rate,
            "burst": self.bucket.burst,
            "users": [u.as_rest() | {"ADMIN": u.admin} for u in self.users.values()],
            "deals": list(self.deals.values()),
            "installations": [i.as_json() for i in self.installations.values()],
            "registrations": [r.as_json() for r in self.registrations.values()],
            "webhooks": [{"id": w.id, "user_id": w.user_id, "scopes": list(w.scopes)} for w in self.webhooks.values()],
            "triggers": [{"client_id": t.client_id, "code": t.code, "name": t.name} for t in self.triggers.values()],
            "workflows": [w.id for w in self.workflows.values()],
        }
