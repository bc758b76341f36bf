""":class:`PortalSimulator`: every portal, app, token and workflow, and the operations on them."""

from __future__ import annotations

import asyncio
import heapq
import hmac
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlencode, urlsplit

import httpx

from b24robots.errors import (
    AccessDenied,
    ApplicationError,
    AuthError,
    ExpiredToken,
    InvalidToken,
    QueryLimitExceeded,
    SimulatorError,
)
from b24robots.inbound.formcodec import encode_form

from . import _util, registration
from . import automation as _automation  # noqa: F401  (installs the CRM automation methods)
from . import events as _events  # noqa: F401  (installs event.bind, event.get, event.unbind)
from .clock import Clock, ManualClock, SystemClock
from .faults import Faults
from .limits import LeakyBucket, OperatingTimeLimiter
from .model import (
    AccessToken,
    AuthCode,
    CallRecord,
    Delivery,
    Installation,
    LogEntry,
    Portal,
    RefreshToken,
    Registration,
    SimApp,
    User,
    Webhook,
    Workflow,
)
from .restapi import Caller
from .signing import sign_event_token
from .values import Culture, check_culture, externalize, internalize

if TYPE_CHECKING:
    from starlette.types import ASGIApp

USER_AGENT = "Bitrix24 Webhook Engine"
REFRESH_TOKEN_LIFETIME = 180 * 86400
AUTH_CODE_LIFETIME = 30
DEFAULT_SCOPES = ("crm", "bizproc", "user_brief", "placement")
Endpoints = Literal["shared", "per_domain"]
OAUTH_PREFIX = "/oauth-server"
OAUTH_HOST_URL = "https://oauth.bitrix.info"
# app events a portal sends itself; the rest come from the modules (rest module lib/event/sender.php)
APP_EVENTS = ("ONAPPINSTALL", "ONAPPUPDATE", "ONAPPUNINSTALL")


def _wire_value(value: Any) -> bool:
    """A value the form encoder can send as is: a string, or a list/map of strings (nested once)."""
    if isinstance(value, str):
        return True
    if isinstance(value, list | tuple):
        return all(isinstance(v, str) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    return False


@dataclass(frozen=True)
class TokenPair:
    """A freshly minted access/refresh token pair for (portal, app, user)."""

    access_token: str
    refresh_token: str
    expires: int
    expires_in: int
    user_id: int


class PortalSimulator:
    """A protocol-faithful fake of Bitrix24 hosting any number of portals behind one ASGI app.

    ``sim.app`` is the ASGI application (``/rest/...``, ``/oauth/token/``, ``/sim/...``).
    Serve it with :class:`~b24robots.testing.SimulatorServer` or call it in-process with
    ``httpx.ASGITransport(sim.app)``. State is plain data readable from Python; change it through
    the methods below. Safe to use from a test thread while the server thread handles requests.
    """

    def __init__(
        self,
        *,
        rate: float = 2.0,
        burst: int = 50,
        token_lifetime: int = 3600,
        clock: Clock | None = None,
        rotate_refresh_tokens: bool = True,
        handler_transport: httpx.AsyncBaseTransport | None = None,
        legacy_strict_event_send: bool = False,
        operating_time_limit: float | None = None,
        method_costs: Mapping[str, float] | None = None,
        base_url: str = "http://b24sim.test",
        endpoints: Endpoints = "shared",
        delivery_timeout: float = 30.0,
        event_apply_delay: float = 0.0,
    ) -> None:
        """
        rate/burst: default leaky bucket of new portals (2/s, 50; enterprise is 5/250).
        rotate_refresh_tokens: an old refresh token stops working once used (UNCONFIRMED #8).
        handler_transport: httpx transport for every POST to an app (handler, install, events);
            ``None`` means real HTTP.
        operating_time_limit: seconds per (app or webhook, method) in 10 minutes; ``None`` = off.
        method_costs: simulated execution seconds per method, counted by the operating-time limit.
        endpoints: ``shared`` = client/server endpoint is ``base_url + /rest/`` for every portal;
            ``per_domain`` = ``https://<domain>/rest/`` and ``https://oauth.bitrix.info/rest/``
            (use when an HTTPS proxy routes those names to the simulator).
        """
        self.default_rate = rate
        self.default_burst = burst
        self.token_lifetime = token_lifetime
        self.clock: Clock = clock or SystemClock()
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.handler_transport = handler_transport
        self.legacy_strict_event_send = legacy_strict_event_send
        self.limiter = OperatingTimeLimiter(operating_time_limit) if operating_time_limit else None
        self.method_costs: dict[str, float] = {k.lower(): v for k, v in (method_costs or {}).items()}
        self._base_url = base_url.rstrip("/")
        self.endpoints: Endpoints = endpoints
        self.portal_addresses: list[str] = []
        """Base URLs the portals' REST endpoints spread over in ``shared`` mode, in the order the portals
        were added (``SimulatorServer(addresses=N)`` sets them); empty: every portal at ``base_url``."""
        self.delivery_timeout = delivery_timeout
        self.event_apply_delay = event_apply_delay

        self.portals: dict[str, Portal] = {}
        self.apps: dict[str, SimApp] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.auth_codes: dict[str, AuthCode] = {}
        self.calls: deque[CallRecord] = deque(maxlen=20_000)
        self.deliveries: deque[Delivery] = deque(maxlen=20_000)
        self.faults = Faults()
        self.oauth_requests: list[tuple[str, int]] = []
        """(grant_type, HTTP status) of every ``/oauth/token/`` request, in arrival order."""

        self._lock = threading.RLock()
        self._seq = 0
        self._handler_ids: dict[tuple[str, str, str], int] = {}
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._deadlines: list[tuple[float, int, Workflow]] = []  # heap of waiting activities with a timeout
        self._asgi: ASGIApp | None = None
        if isinstance(self.clock, ManualClock):
            self.clock.add_listener(self._on_clock_moved)

    def _on_clock_moved(self) -> None:
        self.check_timeouts()

    # ------------------------------------------------------------------ addresses

    def now(self) -> float:
        return self.clock.now()

    @property
    def base_url(self) -> str:
        """Where the simulator listens (set by :class:`SimulatorServer`), without a trailing slash."""
        return self._base_url

    @base_url.setter
    def base_url(self, value: str) -> None:
        self._base_url = value.rstrip("/")

    @property
    def app(self) -> ASGIApp:
        """The ASGI application."""
        if self._asgi is None:
            from .asgi import build_app

            self._asgi = build_app(self)
        return self._asgi

    def client_endpoint(self, portal: Portal | str) -> str:
        p = self.portal(portal)
        if self.endpoints == "per_domain":
            return f"https://{p.domain}/rest/"
        # a cloud portal's endpoint is its own host (auth.client_endpoint = https://<domain>/rest/, b24restdocs
        # api-reference/bizproc/bizproc-activity/index.md); spread over addresses, each portal gets an origin.
        # Requests are told apart by their token, so any address serves any portal.
        if self.portal_addresses:
            n = list(self.portals).index(p.domain)
            return f"{self.portal_addresses[n % len(self.portal_addresses)]}/rest/"
        return f"{self._base_url}/rest/"

    @property
    def oauth_url(self) -> str:
        """The simulated OAuth server's base URL (what B24R_OAUTH_SERVERS names).

        Like oauth.bitrix.info it answers ``/oauth/token/`` and its own ``/rest/app.info``; with shared
        endpoints it lives under ``/oauth-server`` so that its app.info is not the portal's.
        """
        if self.endpoints == "per_domain":
            return OAUTH_HOST_URL
        return f"{self._base_url}{OAUTH_PREFIX}"

    @property
    def server_endpoint(self) -> str:
        return f"{self.oauth_url}/rest/"

    @property
    def token_url(self) -> str:
        return f"{self.oauth_url}/oauth/token/"

    def webhook_url(self, webhook: Webhook, portal: Portal | str | None = None) -> str:
        """The inbound-webhook base URL: ``<base>/rest/<user_id>/<secret>/``."""
        base = self.client_endpoint(portal) if portal is not None else f"{self._base_url}/rest/"
        return f"{base}{webhook.user_id}/{webhook.secret}/"

    def _next_id(self) -> int:
        self._seq += 1
        return self._seq

    # ------------------------------------------------------------------ portals, users, apps

    def add_portal(
        self,
        domain: str | None = None,
        *,
        rate: float | None = None,
        burst: int | None = None,
        member_id: str | None = None,
        culture: Culture = "",
        language: str = "en",
        deals: int = 3,
        license_type: str = "project",
    ) -> Portal:
        """Create a portal with user 1 (admin), user 2 (not admin) and ``deals`` deals.

        ``license_type`` is what app.info reports as LICENSE_TYPE (``ent250`` for an enterprise plan).
        """
        with self._lock:
            domain = domain or f"portal{len(self.portals) + 1}.bitrix24.test"
            if domain in self.portals:
                raise SimulatorError(f"portal {domain!r} already exists")
            portal = Portal(
                domain=domain,
                member_id=member_id or _util.new_hex32(),
                signing_secret=_util.new_hex32(),
                bucket=LeakyBucket(rate if rate is not None else self.default_rate, burst or self.default_burst),
                culture=check_culture(culture),
                language=language,
                license_type=license_type,
            )
            portal.users[1] = User(1, "Anna", "Admin", f"admin@{domain}", admin=True)
            portal.users[2] = User(2, "Boris", "Worker", f"worker@{domain}", admin=False)
            for n in range(deals):
                portal.add_deal(TITLE=f"Deal #{n + 1}", OPPORTUNITY=f"{(n + 1) * 1000}.00", STAGE_ID="NEW")
            self.portals[domain] = portal
            return portal

    def portal(self, portal: Portal | str | None = None) -> Portal:
        """A portal by object or domain; with no argument the only (or first) portal."""
        if isinstance(portal, Portal):
            return portal
        with self._lock:
            if portal is None:
                if not self.portals:
                    raise SimulatorError("the simulator has no portal yet; call add_portal() first")
                return next(iter(self.portals.values()))
            found = self.portals.get(portal)
            if found is None:
                raise SimulatorError(f"no portal {portal!r}; known: {sorted(self.portals)}")
            return found

    def add_user(
        self,
        portal: Portal | str,
        user_id: int,
        name: str,
        last_name: str = "",
        *,
        email: str = "",
        admin: bool = False,
    ) -> User:
        with self._lock:
            p = self.portal(portal)
            user = User(user_id, name, last_name, email or f"user{user_id}@{p.domain}", admin=admin)
            p.users[user_id] = user
            return user

    def register_app(
        self,
        name: str = "Test application",
        *,
        install_url: str | None = None,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        api_only: bool = True,
        client_id: str | None = None,
        client_secret: str | None = None,
        version: int = 1,
    ) -> SimApp:
        """Register a local application (``client_id`` like ``local.<hex>.<digits>``).

        ``install_url`` gets the app frame POST (UI app) or ONAPPINSTALL (``api_only``, bound by the
        portal itself: rest module lib/marketplace/application.php). Every other event — ONAPPUPDATE,
        ONAPPUNINSTALL, a UI app's ONAPPINSTALL — goes only to handlers the app bound with ``event.bind``
        (docs settings/app-uninstallation.md; rest lib/event/sender.php), or with :meth:`bind_event`.
        """
        with self._lock:
            client_id = client_id or _util.new_client_id()
            if client_id in self.apps:
                raise SimulatorError(f"an app with client_id {client_id!r} is already registered")
            app = SimApp(
                client_id=client_id,
                client_secret=client_secret or _util.new_client_secret(),
                name=name,
                scopes=tuple(scopes),
                install_url=install_url,
                api_only=api_only,
                version=version,
            )
            self.apps[client_id] = app
            return app

    def _app(self, app: SimApp | str) -> SimApp:
        if isinstance(app, SimApp):
            return app
        found = self.apps.get(app)
        if found is None:
            raise SimulatorError(f"no app with client_id {app!r}; register it with register_app()")
        return found

    def installation(self, app: SimApp | str, portal: Portal | str | None = None) -> Installation:
        """The app's installation on the portal; SimulatorError when it was never installed."""
        p, a = self.portal(portal), self._app(app)
        inst = p.installations.get(a.client_id)
        if inst is None:
            raise SimulatorError(f"app {a.client_id} is not installed on {p.domain}; call install_app() first")
        return inst

    def add_webhook(
        self, portal: Portal | str | None = None, *, user_id: int = 1, scopes: Iterable[str] = DEFAULT_SCOPES
    ) -> Webhook:
        """Create an inbound webhook acting as ``user_id``; its URL is :meth:`webhook_url`."""
        with self._lock:
            p = self.portal(portal)
            if user_id not in p.users:
                raise SimulatorError(f"portal {p.domain} has no user {user_id}")
            webhook = Webhook(self._next_id(), user_id, _util.new_webhook_secret(), tuple(scopes))
            p.webhooks[webhook.id] = webhook
            return webhook

    # ------------------------------------------------------------------ tokens

    def issue_tokens(self, app: SimApp | str, portal: Portal | str | None = None, user_id: int = 1) -> TokenPair:
        """Mint a token pair for an active installation, as the OAuth server would."""
        with self._lock:
            inst = self.installation(app, portal)
            if not inst.active:
                raise SimulatorError(f"app {inst.app.client_id} was uninstalled from {inst.domain}")
            return self._issue(inst, user_id)

    def _issue(self, inst: Installation, user_id: int) -> TokenPair:
        now = self.now()
        access, refresh = _util.new_token(), _util.new_token()
        expires = int(now) + self.token_lifetime
        self.access_tokens[access] = AccessToken(access, inst.domain, inst.app.client_id, inst, user_id, expires)
        self.refresh_tokens[refresh] = RefreshToken(
            refresh, inst.domain, inst.app.client_id, inst, user_id, now + REFRESH_TOKEN_LIFETIME
        )
        return TokenPair(access, refresh, expires, self.token_lifetime, user_id)

    def issue_auth_code(self, app: SimApp | str, portal: Portal | str | None = None, user_id: int = 1) -> str:
        """An authorization ``code`` (valid 30 s, once) for ``grant_type=authorization_code``."""
        with self._lock:
            inst = self.installation(app, portal)
            code = _util.new_token()
            self.auth_codes[code] = AuthCode(code, inst.domain, inst.app.client_id, user_id, self.now() + 30)
            return code

    def expire_tokens(self, portal: Portal | str | None = None) -> int:
        """Make every access token (of one portal, or all) expired now; returns how many."""
        with self._lock:
            domain = self.portal(portal).domain if portal is not None else None
            count = 0
            for token in self.access_tokens.values():
                if domain is None or token.domain == domain:
                    token.expires_at = min(token.expires_at, self.now() - 1)
                    count += 1
            return count

    def fill_bucket(self, portal: Portal | str | None = None) -> None:
        """Fill the portal's request bucket: the next request gets 503 QUERY_LIMIT_EXCEEDED."""
        with self._lock:
            self.portal(portal).bucket.fill(self.now())

    def auth_block(self, inst: Installation, pair: TokenPair | None) -> dict[str, str]:
        """The ``auth[...]`` block of a robot call or an install/update event (§2.2 order)."""
        p = self.portals[inst.domain]
        if pair is None:
            return self._reduced_auth(inst)
        return {
            "access_token": pair.access_token,
            "expires": str(pair.expires),
            "expires_in": str(pair.expires_in),
            "scope": inst.app.scope,
            "domain": p.domain,
            "server_endpoint": self.server_endpoint,
            "status": "L",
            "client_endpoint": self.client_endpoint(p),
            "member_id": p.member_id,
            "user_id": str(pair.user_id),
            "refresh_token": pair.refresh_token,
            "application_token": inst.application_token,
        }

    def _reduced_auth(self, inst: Installation) -> dict[str, str]:
        p = self.portals[inst.domain]
        return {
            "domain": p.domain,
            "server_endpoint": self.server_endpoint,
            "client_endpoint": self.client_endpoint(p),
            "member_id": p.member_id,
            "application_token": inst.application_token,
        }

    # ------------------------------------------------------------------ app lifecycle

    def _handler_id(self, domain: str, client_id: str, event: str) -> int:
        key = (domain, client_id, event)
        if key not in self._handler_ids:
            self._handler_ids[key] = self._next_id()
        return self._handler_ids[key]

    async def install_app(
        self,
        app: SimApp | str,
        portal: Portal | str | None = None,
        *,
        notify: bool = True,
        finish: bool = True,
        user_id: int = 1,
        late: bool = False,
        newer_frame_fields: bool = False,
        application_token: str | None = None,
    ) -> Installation:
        """Install the app as admin ``user_id``.

        API-only app: installed at once, ONAPPINSTALL is POSTed to ``install_url``.
        UI app: the app frame POST goes to ``install_url`` (:meth:`frame_post`); ``finish`` then plays
        ``BX24.installFinish()`` (:meth:`finish_install`), after which ONAPPINSTALL goes to the handlers the
        app bound meanwhile. Until then the OAuth server's app.info says ``installed: false``.
        ``late=True``: ONAPPINSTALL arrives after its access token expired (it is never resent, docs
        settings/oauth/simple-way.md). ``notify=False`` installs silently. Installing again re-installs:
        the old tokens, robots and event handlers of the app are gone. ``application_token``: the token
        this install carries (default: a new one); a portal that stores none derives it as
        ``md5(member_id|app id|secret|shared key)`` (rest ``CRestUtil::getApplicationToken``, protocol
        §4.3), so a re-install can bring the very token of the install before.
        """
        with self._lock:
            p, a = self.portal(portal), self._app(app)
            old = p.installations.get(a.client_id)
            if old is not None:
                old.active = old.installed = False
                old.handlers.clear()
                registration.wipe_app(p, a.client_id)
            inst = Installation(
                app=a,
                domain=p.domain,
                application_token=application_token or _util.new_hex32(),
                installed=a.api_only,
                version=a.version,
                id=self._next_id(),
            )
            p.installations[a.client_id] = inst
        if notify and a.install_url:
            if a.api_only:
                await self._fire(
                    inst,
                    "ONAPPINSTALL",
                    data=self._install_data(inst),
                    user_id=user_id,
                    urls=[a.install_url],
                    late=late,
                )
            else:
                await self.frame_post(a, p, user_id=user_id, newer_fields=newer_frame_fields)
        if not a.api_only and finish:
            await self.finish_install(a, p, notify=notify, user_id=user_id, late=late)
        return inst

    async def frame_post(
        self, app: SimApp | str, portal: Portal | str | None = None, *, user_id: int = 1, newer_fields: bool = False
    ) -> Delivery:
        """The app frame POST to ``install_url``, as the portal makes it at install and at every opening.

        Body ``AUTH_ID, AUTH_EXPIRES, REFRESH_ID, member_id, status, PLACEMENT, PLACEMENT_OPTIONS``; query
        ``DOMAIN, PROTOCOL, LANG, APP_SID`` (app.layout ``templates/.default/template.php``). Portals newer than
        2026-08 add ``SERVER_ENDPOINT, APPLICATION_TOKEN, APPLICATION_SCOPE`` (``newer_fields=True``).
        """
        with self._lock:
            p, a = self.portal(portal), self._app(app)
            inst = self.installation(a, p)
            if not a.install_url:
                raise SimulatorError(f"app {a.client_id} has no install_url")
            pair = self._issue(inst, user_id)
            query = urlencode(
                {
                    "DOMAIN": p.domain,
                    "PROTOCOL": "1" if self.client_endpoint(p).startswith("https") else "0",
                    "LANG": p.language,
                    "APP_SID": _util.new_hex32(),
                }
            )
            url = a.install_url + ("&" if "?" in a.install_url else "?") + query
            form = {
                "AUTH_ID": pair.access_token,
                "AUTH_EXPIRES": str(pair.expires_in),
                "REFRESH_ID": pair.refresh_token,
                "member_id": p.member_id,
                "status": "L",
                "PLACEMENT": "DEFAULT",
                "PLACEMENT_OPTIONS": "{}",
            }
            if newer_fields:
                form |= {
                    "SERVER_ENDPOINT": self.server_endpoint,
                    "APPLICATION_TOKEN": inst.application_token,
                    "APPLICATION_SCOPE": a.scope,
                }
        delivery = await self._deliver("install", url, encode_form(form), p.domain)
        inst.deliveries.append(delivery)
        return delivery

    async def open_app(self, app: SimApp | str, portal: Portal | str | None = None, *, user_id: int = 1) -> Delivery:
        """A user opens an installed UI app: the same frame POST, with that user's tokens."""
        return await self.frame_post(app, portal, user_id=user_id)

    async def finish_install(
        self,
        app: SimApp | str,
        portal: Portal | str | None = None,
        *,
        notify: bool = True,
        user_id: int = 1,
        late: bool = False,
    ) -> None:
        """What ``BX24.installFinish()`` does: the install is finished, ONAPPINSTALL goes to bound handlers."""
        with self._lock:
            inst = self.installation(app, portal)
            inst.installed = True
        if notify:
            await self._fire(inst, "ONAPPINSTALL", data=self._install_data(inst), user_id=user_id, late=late)

    @staticmethod
    def _install_data(inst: Installation) -> dict[str, str]:
        return {"VERSION": str(inst.version), "ACTIVE": "Y", "INSTALLED": "Y"}

    def bind_event(self, app: SimApp | str, portal: Portal | str | None, event: str, handler: str) -> None:
        """Bind an event handler for the app, as its ``event.bind`` would."""
        with self._lock:
            inst = self.installation(app, portal)
            key = (event.upper(), handler, 0)
            if key not in inst.handlers:
                inst.handlers.append(key)

    async def update_app(
        self,
        app: SimApp | str,
        portal: Portal | str | None = None,
        *,
        version: int | None = None,
        new_application_token: bool = False,
    ) -> Installation:
        """A version update: the app's robots and activities are deleted (bizproc lib/restservice.php::
        onRestAppUpdate), then ONAPPUPDATE (full auth with refresh token) goes to bound handlers.
        ``new_application_token``: the update issues a new application token (docs on-app-update.md)."""
        with self._lock:
            p, a = self.portal(portal), self._app(app)
            inst = self.installation(a, p)
            if not inst.active:
                raise SimulatorError(f"app {a.client_id} is not installed on {p.domain}")
            previous = inst.version
            a.version = version if version is not None else max(a.version, previous) + 1
            inst.version = a.version
            registration.wipe_app(p, a.client_id)
            if new_application_token:
                inst.application_token = _util.new_hex32()
        await self._fire(inst, "ONAPPUPDATE", data={"VERSION": str(a.version), "PREVIOUS_VERSION": str(previous)})
        return inst

    async def uninstall_app(
        self, app: SimApp | str, portal: Portal | str | None = None, *, clean: bool = False
    ) -> Installation:
        """Uninstall: registrations, triggers and event handlers go; ONAPPUNINSTALL (``sendAuth=false``: no
        tokens) goes to the handlers bound for it; afterwards the app's tokens answer 401 APPLICATION_NOT_FOUND
        and refresh gets 401 invalid_client."""
        with self._lock:
            p, a = self.portal(portal), self._app(app)
            inst = self.installation(a, p)
            inst.active = inst.installed = False
            registration.wipe_app(p, a.client_id)
            for key in [k for k in p.triggers if k[0] == a.client_id]:
                del p.triggers[key]
            urls = inst.handlers_of("ONAPPUNINSTALL")
            inst.handlers.clear()
        await self._fire(inst, "ONAPPUNINSTALL", data={"CLEAN": "1" if clean else "0"}, urls=urls, with_auth=False)
        return inst

    async def _fire(
        self,
        inst: Installation,
        event: str,
        *,
        data: Mapping[str, str] | None = None,
        urls: list[str] | None = None,
        user_id: int = 1,
        late: bool = False,
        with_auth: bool = True,
    ) -> list[Delivery]:
        """POST an app event to ``urls`` (default: the handlers bound for it), each with its own tokens."""
        deliveries: list[Delivery] = []
        with self._lock:
            targets = list(urls) if urls is not None else inst.handlers_of(event)
            p = self.portals[inst.domain]
        for url in targets:
            with self._lock:
                pair = self._issue(inst, user_id) if with_auth else None
                if pair is not None and late:
                    self.access_tokens[pair.access_token].expires_at = self.now() - 1
                body = {
                    "event": event,
                    "event_handler_id": str(self._handler_id(p.domain, inst.app.client_id, event)),
                    "data": {**(data or {}), "LANGUAGE_ID": p.language},
                    "ts": str(int(self.now())),
                    "auth": self.auth_block(inst, pair),
                }
            delivery = await self._deliver(event, url, encode_form(body), p.domain)
            inst.deliveries.append(delivery)
            deliveries.append(delivery)
        return deliveries

    def rename_portal(self, portal: Portal | str, new_domain: str) -> Portal:
        """The portal gets a new address (PHP SDK ``changeDomainUrl``): tokens, workflows and later calls
        carry the new domain; the old name is gone."""
        with self._lock:
            p = self.portal(portal)
            if new_domain in self.portals:
                raise SimulatorError(f"portal {new_domain!r} already exists")
            old = p.domain
            del self.portals[old]
            p.domain = new_domain
            self.portals[new_domain] = p
            for inst in p.installations.values():
                inst.domain = new_domain
            for workflow in p.workflows.values():
                workflow.domain = new_domain
            records: list[AccessToken | RefreshToken | AuthCode] = [
                *self.access_tokens.values(),
                *self.refresh_tokens.values(),
                *self.auth_codes.values(),
            ]
            for record in records:
                if record.domain == old:
                    record.domain = new_domain
            for key in [k for k in self._handler_ids if k[0] == old]:
                self._handler_ids[(new_domain, *key[1:])] = self._handler_ids.pop(key)
            return p

    # ------------------------------------------------------------------ deliveries

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None or client.is_closed:
            client = httpx.AsyncClient(transport=self.handler_transport, timeout=self.delivery_timeout)
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        """Close the HTTP client this event loop used for deliveries."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    async def _deliver(self, kind: str, url: str, body: bytes, domain: str) -> Delivery:
        delivery = Delivery(kind=kind, url=url, body=body, at=self.now())
        if self.faults.delivery_delay > 0:
            await asyncio.sleep(self.faults.delivery_delay)
        if kind == "robot" and self.faults.take_delivery(domain):
            delivery.error = "simulated failure: the queue could not reach the handler"
            self.deliveries.append(delivery)
            return delivery
        started = time.perf_counter()
        try:
            response = await self._http().post(
                url,
                content=body,
                headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": USER_AGENT},
            )
        except Exception as exc:  # the receiving app is under test: record whatever it did
            delivery.error = f"{type(exc).__name__}: {exc}"
        else:
            delivery.status_code = response.status_code
            delivery.response_text = response.text[:2000]
        delivery.latency = time.perf_counter() - started
        self.deliveries.append(delivery)
        return delivery

    # ------------------------------------------------------------------ workflows

    def _find_registration(self, p: Portal, code: str, client_id: str | None) -> Registration:
        found = [r for r in p.registrations.values() if r.code == code and client_id in (None, r.client_id)]
        if not found:
            known = sorted({r.code for r in p.registrations.values()})
            raise SimulatorError(f"no robot or activity with CODE {code!r} is registered on {p.domain}; known: {known}")
        if len(found) > 1:
            apps = [r.client_id for r in found]
            raise SimulatorError(f"CODE {code!r} is registered by several apps {apps}; pass client_id=")
        return found[0]

    def _external_properties(
        self, p: Portal, reg: Registration, given: Mapping[str, Any], raw: Mapping[str, Any]
    ) -> dict[str, Any]:
        both = sorted(set(given) & set(raw))
        if both:
            raise SimulatorError(f"properties {both} are given both as values and as raw wire values; pick one")
        for code, value in raw.items():
            if not _wire_value(value):
                raise SimulatorError(
                    f"raw property {code!r} must be a string, or a list or map of strings, not {type(value).__name__}"
                )
        unknown = sorted(set(given) - set(reg.properties))
        if unknown:
            raise SimulatorError(f"robot {reg.code!r} has no properties {unknown}; declared: {sorted(reg.properties)}")
        out: dict[str, Any] = {}
        for code, prop in reg.properties.items():
            prop = prop if isinstance(prop, dict) else {}
            if code in raw:
                out[code] = raw[code]
                continue
            if code in given:
                value = given[code]
            elif prop.get("DEFAULT") not in (None, ""):
                value = prop["DEFAULT"]
            elif _util.get_bool(prop.get("REQUIRED")):
                raise SimulatorError(f"robot {reg.code!r}: required property {code!r} has no value and no default")
            else:
                value = None
            out[code] = externalize(code, prop, value, p.date_culture)
        # a workflow may also send keys the robot does not declare (e.g. after a re-registration)
        out.update({code: value for code, value in raw.items() if code not in reg.properties})
        return out

    async def start_robot(
        self,
        portal: Portal | str | None,
        code: str,
        *,
        document_id: Iterable[str] = ("crm", "CCrmDocumentDeal", "DEAL_1"),
        document_type: Iterable[str] | None = None,
        properties: Mapping[str, Any] | None = None,
        properties_raw: Mapping[str, Any] | None = None,
        user_id: int | None = None,
        timeout_duration: int = 0,
        use_subscription: str | None = None,
        client_id: str | None = None,
        wait_delivery: bool = True,
        keep_running: bool = False,
    ) -> Workflow:
        """Run a workflow that reaches robot/activity ``code`` and POST the handler body (§2.2) once.

        ``properties`` are Python values externalized per declared type (dates in the portal's culture);
        ``properties_raw`` are wire values sent exactly as given (a string, or a list/map of strings), as a
        workflow evaluates them without converting to the declared type; ``user_id`` overrides the
        registered AUTH_USER_ID; ``use_subscription`` is the instance setting used only when the
        registration left it empty (then the activity's default is N: bizproc/classes/general/
        restactivity.php::__construct). ``timeout_duration`` (seconds) is sent as computed, and applies
        only when the robot waits. A robot its FILTER hides for the document type cannot be placed in a
        template: that is a SimulatorError. ``keep_running``: steps follow the robot, so the workflow stays
        live after the activity closes. With ``wait_delivery`` the call returns after the handler answered
        (the delivery is recorded on ``workflow.delivery``).
        """
        with self._lock:
            p = self.portal(portal)
            reg = self._find_registration(p, code, client_id)
            inst = p.installations.get(reg.client_id)
            if inst is None or not inst.active:
                raise SimulatorError(f"Rest application not found: {reg.client_id} is not installed on {p.domain}")
            uid = reg.auth_user_id if user_id is None else user_id
            if uid and uid not in p.users:
                raise SimulatorError(f"portal {p.domain} has no user {uid}")
            doc_id = [str(x) for x in document_id]
            if len(doc_id) != 3:
                raise SimulatorError(
                    "document_id must be (module, entity, id), e.g. ('crm', 'CCrmDocumentDeal', 'DEAL_1')"
                )
            doc_type = [str(x) for x in document_type] if document_type is not None else _document_type(doc_id)
            # the designer marks it excluded (bizproc/classes/general/runtime.php::makeRestRobotDescription)
            if not registration.filter_allows(reg.filter, doc_type, p.edition):
                raise SimulatorError(
                    f"{reg.code!r} is hidden for {doc_type} on this {p.edition} portal by its FILTER {reg.filter}"
                )
            props = self._external_properties(p, reg, properties or {}, properties_raw or {})
            registered = reg.use_subscription
            if registered:
                subscription = "Y" if registered == "Y" else "N"
            else:
                subscription = "Y" if (use_subscription or "N").upper() == "Y" else "N"
            # calculateTimeoutDuration() is sent whether or not the activity waits (capped at 5 years)
            timeout = min(max(0, int(timeout_duration)), 5 * 365 * 86400)
            now = self.now()
            wf_id, act, event_id = _util.new_workflow_id(), _util.new_activity_name(), _util.new_event_id()
            defaults: dict[str, Any] = {
                k: (v.get("DEFAULT") if isinstance(v, dict) else None) for k, v in reg.return_properties.items()
            }
            if registered != "N":
                defaults["IsTimeout"] = 0
            workflow = Workflow(
                id=wf_id,
                domain=p.domain,
                registration=reg,
                activity_name=act,
                event_id=event_id,
                event_token=sign_event_token(p.signing_secret, wf_id, act, event_id),
                document_id=doc_id,
                document_type=doc_type,
                properties=props,
                use_subscription=subscription,
                timeout_duration=timeout,
                user_id=uid,
                started_at=now,
                return_values=defaults,
                keep_running=keep_running,
            )
            p.workflows[wf_id] = workflow
            pair = self._issue(inst, uid) if uid else None
            body: dict[str, Any] = {
                "workflow_id": wf_id,
                "code": reg.code,
                "document_id": doc_id,
                "document_type": doc_type,
                "event_token": workflow.event_token,
            }
            if props:
                body["properties"] = props
            body |= {
                "use_subscription": subscription,
                "timeout_duration": str(timeout),
                "ts": str(int(now)),
                # UNCONFIRMED: with no user the block is assumed to carry only the installation fields.
                "auth": self.auth_block(inst, pair),
            }
            encoded = encode_form(body)
            workflow.log.append(LogEntry(now, f"robot {reg.code} started", "system"))
            if subscription == "N":
                workflow._close("no_subscription", now)
            elif timeout > 0:
                workflow.deadline = now + timeout
                heapq.heappush(self._deadlines, (workflow.deadline, self._next_id(), workflow))
                if not isinstance(self.clock, ManualClock):
                    asyncio.get_running_loop().call_later(timeout, self.check_timeouts)
        delivery = self._deliver_robot(workflow, reg.handler, encoded)
        if wait_delivery:
            await delivery
        else:
            task = asyncio.ensure_future(delivery)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return workflow

    async def _deliver_robot(self, workflow: Workflow, url: str, body: bytes) -> None:
        workflow.delivery = await self._deliver("robot", url, body, workflow.domain)

    def check_timeouts(self) -> int:
        """Close every waiting activity whose timeout has passed (IsTimeout=1, defaults kept)."""
        closed = 0
        with self._lock:
            now = self.now()
            while self._deadlines and self._deadlines[0][0] <= now:
                wf = heapq.heappop(self._deadlines)[2]
                if not wf.is_closed:
                    wf.is_timeout = True
                    wf.return_values["IsTimeout"] = 1
                    wf.log.append(LogEntry(now, "timeout: no answer received", "timeout"))
                    wf._close("timeout", now)
                    closed += 1
        return closed

    def apply_event(
        self,
        domain: str,
        workflow_id: str,
        activity_name: str,
        event_id: str,
        return_values: Any,
        log_message: Any,
    ) -> bool:
        """``onExternalEvent``: the first answer for the current eventId closes the activity."""
        with self._lock:
            p = self.portals.get(domain)
            wf = p.workflows.get(workflow_id) if p else None
            if wf is None:
                return False
            wf.answers_received += 1
            if wf.locked(self.now()):
                # CBPRuntime::sendExternalEvent loads the instance; a locked one throws 423, which the
                # background job of bizproc.event.send swallows (bizproc lib/restservice.php::sendEvent):
                # the answer is lost, not postponed
                wf.lost_to_lock += 1
                return False
            if (
                wf.is_closed
                or wf.use_subscription != "Y"
                or wf.activity_name != activity_name
                or wf.event_id != event_id
            ):
                wf.ignored_events += 1
                return False
            now = self.now()
            message = log_message if isinstance(log_message, str) and log_message else "Response received"
            wf.log.append(LogEntry(now, message, "event.send"))
            if isinstance(return_values, dict):
                declared = {code.upper(): (code, prop) for code, prop in wf.registration.return_properties.items()}
                for key, value in return_values.items():
                    match = declared.get(str(key).upper())
                    if match is not None:
                        code, prop = match
                        wf.return_values[code] = internalize(
                            prop if isinstance(prop, dict) else {}, value, p.date_culture if p else ""
                        )
            wf._close("event", now)
            return True

    def lock_workflow(self, workflow: Workflow | str, seconds: float, portal: Portal | str | None = None) -> None:
        """Hold the workflow instance locked for ``seconds`` (of the simulator's clock), as another hit
        running it does (bizproc classes/general/workflowpersister.php::retrieveWorkflow throws
        EXCEPTION_CODE_INSTANCE_LOCKED): ``bizproc.event.send`` still answers true and its answer is
        dropped, ``bizproc.activity.log`` answers 400 ``error: "423"``."""
        with self._lock:
            if isinstance(workflow, str):
                found = self.portal(portal).workflows.get(workflow)
                if found is None:
                    raise KeyError(f"no workflow {workflow!r}")
                workflow = found
            workflow.locked_until = self.now() + seconds

    def set_features(
        self, features: Iterable[str], portal: Portal | str | None = None, *, edition: str | None = None
    ) -> None:
        """The portal's tariff features (e.g. ``{"crm_automation_deal"}``: robots but no business processes)
        and optionally its edition (``b24`` cloud, ``box`` on-premise)."""
        with self._lock:
            p = self.portal(portal)
            p.features = set(features)
            if edition is not None:
                p.edition = edition

    def robots_for(
        self, document_type: Iterable[str] | None, portal: Portal | str | None = None, *, lang: str = "en"
    ) -> dict[str, str]:
        """CODE → name of the robots the portal offers for ``document_type``, FILTER and names applied
        as the automation designer shows them."""
        with self._lock:
            p = self.portal(portal)
            doc_type = [str(x) for x in document_type] if document_type is not None else None
            return {r.code: r.localized_name(lang) for r in registration.visible_robots(p, doc_type)}

    def workflows(self, portal: Portal | str | None = None) -> list[Workflow]:
        """Workflows of one portal (or all), oldest first."""
        with self._lock:
            portals = [self.portal(portal)] if portal is not None else list(self.portals.values())
            return [wf for p in portals for wf in p.workflows.values()]

    def workflow(self, workflow_id: str) -> Workflow:
        for p in list(self.portals.values()):
            if workflow_id in p.workflows:
                return p.workflows[workflow_id]
        raise SimulatorError(f"no workflow {workflow_id!r}")

    # ------------------------------------------------------------------ REST authentication

    def peek_domain(self, token: str | None, webhook: tuple[str, str] | None) -> str | None:
        """The portal a request is for, without judging its credentials (used to route faults)."""
        if webhook is not None:
            found = self._find_webhook(*webhook)
            return found[0].domain if found else None
        record = self.access_tokens.get(token) if token else None
        return record.domain if record else None

    def _find_webhook(self, user_id: str, secret: str) -> tuple[Portal, Webhook] | None:
        for p in self.portals.values():
            for wh in p.webhooks.values():
                if str(wh.user_id) == user_id and hmac.compare_digest(wh.secret, secret):
                    return p, wh
        return None

    def authenticate(self, token: str | None, webhook: tuple[str, str] | None) -> Caller:
        """Identify the caller (401/403 for unknown credentials); limits and expiry are checked later."""
        with self._lock:
            if webhook is not None:
                found = self._find_webhook(*webhook)
                if found is None:
                    raise AccessDenied("INVALID_CREDENTIALS", "Invalid request credentials", status=403)
                p, wh = found
                return Caller(portal=p, user_id=wh.user_id, scopes=wh.scopes, webhook=wh)
            if not token:
                raise AuthError("NO_AUTH_FOUND", "Wrong authorization data", status=401)
            record = self.access_tokens.get(token)
            if record is None:
                raise InvalidToken("invalid_token", "Unable to get application by token", status=401)
            p = self.portals[record.domain]
            return Caller(
                portal=p,
                user_id=record.user_id,
                scopes=record.installation.app.scopes,
                installation=record.installation,
                token=record,
            )

    def admit(self, caller: Caller) -> None:
        """The front layer: leaky bucket, then installation and expiry of the token."""
        with self._lock:
            if not caller.portal.bucket.try_acquire(self.now()):
                raise QueryLimitExceeded("QUERY_LIMIT_EXCEEDED", "Too many requests", status=503)
            if caller.token is not None:
                if not caller.token.installation.active:
                    raise ApplicationError("APPLICATION_NOT_FOUND", "Application not found", status=401)
                if caller.token.expires_at <= self.now():
                    raise ExpiredToken("expired_token", "The access token provided has expired", status=401)

    # ------------------------------------------------------------------ OAuth server

    def oauth_token(self, params: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """``/oauth/token/``: refresh_token and authorization_code grants (§4.3)."""

        def error(status: int, code: str, description: str) -> tuple[int, dict[str, Any]]:
            return status, {"error": code, "error_description": description}

        with self._lock:
            grant = params.get("grant_type")
            if grant not in ("refresh_token", "authorization_code"):
                return error(400, "invalid_request", "grant_type must be refresh_token or authorization_code")
            app = self.apps.get(str(params.get("client_id", "")))
            secret = params.get("client_secret")
            if app is None or not isinstance(secret, str) or not hmac.compare_digest(secret, app.client_secret):
                return error(401, "invalid_client", "Invalid client credentials")
            now = self.now()
            if grant == "refresh_token":
                record = self.refresh_tokens.get(str(params.get("refresh_token", "")))
                if record is None or record.client_id != app.client_id:
                    return error(400, "invalid_grant", "Invalid refresh token")
                if not record.installation.active:
                    return error(401, "invalid_client", "Application is not installed")
                if record.used or record.expires_at <= now:
                    return error(400, "invalid_grant", "Refresh token is expired or was already used")
                if self.rotate_refresh_tokens:
                    record.used = True
                inst, user_id = record.installation, record.user_id
            else:
                code = self.auth_codes.get(str(params.get("code", "")))
                if code is None or code.client_id != app.client_id or code.used or code.expires_at <= now:
                    return error(400, "invalid_grant", "Invalid or expired authorization code")
                code.used = True
                maybe = self.portals[code.domain].installations.get(app.client_id)
                if maybe is None or not maybe.active:
                    return error(401, "invalid_client", "Application is not installed")
                inst, user_id = maybe, code.user_id
            pair = self._issue(inst, user_id)
            p = self.portals[inst.domain]
            return 200, {
                "access_token": pair.access_token,
                "client_endpoint": self.client_endpoint(p),
                "domain": urlsplit(self.server_endpoint).netloc,
                "expires": pair.expires,
                "expires_in": pair.expires_in,
                "member_id": p.member_id,
                "refresh_token": pair.refresh_token,
                "scope": app.scope,
                "server_endpoint": self.server_endpoint,
                "status": "L",
                "user_id": user_id,
            }

    # ------------------------------------------------------------------ helpers for tests

    async def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        app: SimApp | str | None = None,
        portal: Portal | str | None = None,
        user_id: int = 1,
    ) -> httpx.Response:
        """POST a JSON REST call in-process with a fresh token of ``app`` (default: the only app)."""
        a = self._app(app) if app is not None else self._only_app()
        pair = self.issue_tokens(a, portal, user_id)
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url=self._base_url) as client:
            return await client.post(f"/rest/{method}", json={**(params or {}), "auth": pair.access_token})

    def _only_app(self) -> SimApp:
        if len(self.apps) != 1:
            raise SimulatorError(f"{len(self.apps)} apps are registered; pass app=")
        return next(iter(self.apps.values()))

    def record_call(self, record: CallRecord) -> None:
        self.calls.append(record)

    def snapshot(self) -> dict[str, Any]:
        """All state as JSON-ready data (tokens and secrets left out)."""
        with self._lock:
            return {
                "base_url": self._base_url,
                "portals": [p.as_json() for p in self.portals.values()],
                "apps": [a.as_json() for a in self.apps.values()],
                "workflows": [wf.as_json() for wf in self.workflows()],
                "faults": self.faults.as_json(),
            }


def _document_type(document_id: list[str]) -> list[str]:
    """``DEAL_12`` → ``DEAL``, ``DYNAMIC_128_5`` → ``DYNAMIC_128``; a task → ``TASK_PLAN_1`` and a list
    element → ``iblock_1`` (pass ``document_type`` for another project, user or list)."""
    module, entity, key = document_id
    if module == "tasks":  # tasks lib/integration/bizproc/document/task.php: types TASK_PLAN_<user>, ...
        return [module, entity, "TASK_PLAN_1"]
    if module == "lists":
        return [module, entity, "iblock_1"]
    head, sep, tail = key.rpartition("_")
    return [module, entity, head if sep and tail.isdigit() else key]
