"""Install, app openings, update and uninstall, as a real portal performs them.

Facts (bitrix24-protocol.md §9.1, with sources there):

- **API-only apps** get ONAPPINSTALL at the install URL, bound by the portal itself (rest module
  `lib/marketplace/application.php`). **UI apps** get the app frame POST at the install URL, without an
  application token; they bind ONAPPINSTALL themselves (`event.bind`) and learn the token from it
  (official template `app-template-automation-rules`, `frontend/app/pages/install.client.vue`).
- The frame POST comes again **every time any user opens the app**, with that user's tokens (docs
  `settings/oauth/simple-way.md`). It is an install only while the portal has not finished the install
  (`install.installed` of the OAuth server's app.info); afterwards it is an opening: the stored (admin's)
  tokens stay and nothing is re-registered.
- ONAPPUPDATE and ONAPPUNINSTALL reach only handlers bound with `event.bind` (docs
  `settings/app-uninstallation.md`, rest `lib/event/sender.php`), so after every install and update we
  bind them (after `event.get`, so nothing is bound twice). An update deletes every robot and activity
  of the app (bizproc `lib/restservice.php::onRestAppUpdate`): we forget what we registered and sync.
  ONAPPUPDATE may bring a new application token (docs `events/on-app-update.md`).
- ONAPPUNINSTALL has no tokens (`sendAuth=false`) and is proven by the stored application token;
  `data[CLEAN]=1` means the admin asked for the app's data to be deleted.
- Plans: enterprise portals allow 5 requests/s with a burst of 250 (docs `limits.md`); the portal's
  `app.info` names the plan in `LICENSE_FAMILY`/`LICENSE_TYPE` (rest `classes/general/rest_provider.php`).
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from b24robots.errors import B24RobotsError, InputError, RestError
from b24robots.portal.auth import Denied, authenticate
from b24robots.portal.grant import Claim, claim_from_event, claim_from_frame, event_name
from b24robots.portal.oauth import Confirmed, OAuthServers, Refused
from b24robots.rest.client import RestClient
from b24robots.store.installation_rows import UNINSTALLED, Installation
from b24robots.store.installations import Installations, InstallGrant
from b24robots.store.journal import Journal
from b24robots.store.registrations import Registrations

log = logging.getLogger("b24robots.portal")

APP_EVENTS = ("ONAPPINSTALL", "ONAPPUPDATE", "ONAPPUNINSTALL")
STANDARD_LIMITS = (2.0, 50)
ENTERPRISE_LIMITS = (5.0, 250)
SETTLE_SECONDS = 10.0  # how long a frame install waits for the event binding before answering


def is_enterprise(info: Mapping[str, Any]) -> bool:
    """The portal's app.info names an enterprise plan (`ent`, `ent250`, `ru_ent500`, ...)."""
    for key in ("LICENSE_FAMILY", "LICENSE_TYPE", "LICENSE"):
        value = str(info.get(key) or "").lower()
        if value.rpartition("_")[2].startswith("ent"):
            return True
    return False


@dataclass(frozen=True)
class Outcome:
    """What to answer the portal: JSON (`body`) or a page for the app frame (`page`)."""

    status: int
    body: dict[str, Any] | None = None
    page: str | None = None

    @classmethod
    def refused(cls, status: int, error: str, reason: str) -> Outcome:
        return cls(status, {"error": error, "reason": reason})


INSTALL_FINISH = """<!doctype html><html><head><meta charset="utf-8"><title>b24robots</title>
<script src="//api.bitrix24.com/api/v1/"></script></head><body>
<p>{message}</p>
<script>if (window.BX24) {{ BX24.init(function () {{ BX24.installFinish(); }}); }}</script>
</body></html>"""

_TEXT = {
    "en": {
        "installed": "b24robots is installed. Robots are being registered.",
        "title": "Robots of this portal",
        "none": "No robot is registered on this portal yet.",
        "sync": "Last sync",
        "admin": "Open the b24robots admin",
        "never": "never",
    },
    "ru": {
        "installed": "b24robots установлен. Роботы регистрируются.",
        "title": "Роботы этого портала",
        "none": "На этом портале пока не зарегистрировано ни одного робота.",
        "sync": "Последняя синхронизация",
        "admin": "Открыть администрирование b24robots",
        "never": "не было",
    },
}


def _text(language: str) -> dict[str, str]:
    return _TEXT["ru" if language in ("ru", "ua", "by", "kz") else "en"]


class Lifecycle:
    """The install/update/uninstall flow. Stateless; every decision is made from the store and the
    OAuth server's answer."""

    def __init__(
        self,
        *,
        installations: Installations,
        registrations: Registrations,
        journal: Journal,
        oauth: OAuthServers,
        rest: RestClient,
        events_url: str,
        admin_url: str,
        sync_soon: Callable[[str], None],
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
    ) -> None:
        self.installations = installations
        self.registrations = registrations  # forgotten when the portal deletes our robots
        self.journal = journal
        self.oauth = oauth
        self.rest = rest
        self.events_url = events_url
        self.admin_url = admin_url
        self.sync_soon = sync_soon
        self.spawn = spawn
        self._io = asyncio.to_thread  # the stores are synchronous

    # --- the two endpoints ---------------------------------------------------------------------
    async def install_post(self, fields: Mapping[str, Any]) -> Outcome:
        """The install URL: ONAPPINSTALL of an API-only app, or a UI app's frame POST."""
        if event_name(fields):
            return await self.event(fields)
        return await self.frame(fields)

    async def event(self, fields: Mapping[str, Any]) -> Outcome:
        """An app event at the events URL (or ONAPPINSTALL at the install URL)."""
        name = event_name(fields)
        if name not in APP_EVENTS:
            return Outcome.refused(400, "bad_request", f"event {name or '(none)'} is not handled here")
        try:
            claim = claim_from_event(fields)
        except InputError as exc:
            return Outcome.refused(400, "bad_request", exc.reason)
        if name == "ONAPPUNINSTALL":
            return await self._uninstall(fields, claim)
        try:
            if name == "ONAPPINSTALL":
                return await self._installed_event(claim)
            return await self._updated(claim)
        except Refused as exc:
            log.warning("%s for %s refused: %s", name, claim.domain, exc.reason)
            return Outcome.refused(
                exc.status, "install_refused" if name == "ONAPPINSTALL" else "update_refused", exc.reason
            )

    # --- frame POST: install or opening ----------------------------------------------------------
    async def frame(self, fields: Mapping[str, Any]) -> Outcome:
        try:
            claim = claim_from_frame(fields)
        except InputError as exc:
            return Outcome.refused(400, "install_refused", exc.reason)
        try:
            confirmed = await self.oauth.confirm(claim)
        except Refused as exc:
            log.warning("install page POST for %s refused: %s", claim.domain, exc.reason)
            return Outcome.refused(exc.status, "install_refused", exc.reason)
        existing = await self._io(self.installations.find, confirmed.member_id)
        if existing is not None and existing.status != UNINSTALLED and confirmed.installed:
            return await self._opening(existing, confirmed, claim)
        inst = await self._store(confirmed, claim, application_token=claim.application_token)
        await self._io(self.registrations.clear, inst.member_id)
        log.info("installed on %s (app frame)", inst.domain)
        # ONAPPINSTALL must be bound before the page calls BX24.installFinish(), or the token never comes
        try:
            await asyncio.wait_for(self.settle(inst.member_id), SETTLE_SECONDS)
        except TimeoutError:
            log.warning(
                "binding the app events on %s took over %.0f s; the sync retries it", inst.domain, SETTLE_SECONDS
            )
            self.spawn(self.settle(inst.member_id))
        self.sync_soon(inst.member_id)
        return Outcome(200, page=INSTALL_FINISH.format(message=html.escape(_text(claim.language)["installed"])))

    async def _opening(self, inst: Installation, confirmed: Confirmed, claim: Claim) -> Outcome:
        # a user opened the app: their tokens are not stored (the admin's stay); the OAuth server has
        # just vouched for this member_id's domain and endpoint, so a renamed portal moves here
        if await self._io(self.installations.relocate, inst.member_id, confirmed.domain, confirmed.client_endpoint):
            log.info("portal %s moved to %s", inst.domain, confirmed.domain)
            inst = await self._io(self.installations.by_id, inst.id)
        regs = await self._io(self.registrations.of, inst.member_id)
        return Outcome(200, page=self.opening_page(inst, regs, claim.language))

    def opening_page(self, inst: Installation, regs: Mapping[str, tuple[str, str]], language: str) -> str:
        t = _text(language)
        rows = "".join(
            f"<tr><td><code>{html.escape(code)}</code></td><td>{html.escape(kind)}</td></tr>"
            for code, (kind, _) in sorted(regs.items())
        )
        table = f"<table><tr><th>CODE</th><th></th></tr>{rows}</table>" if rows else f"<p>{html.escape(t['none'])}</p>"
        synced = html.escape(inst.sync_status if inst.synced_at else t["never"])
        error = f"<p class=error>{html.escape(inst.sync_error)}</p>" if inst.sync_error else ""
        return (
            '<!doctype html><html><head><meta charset="utf-8"><title>b24robots</title>'
            "<style>body{font:14px sans-serif;margin:1.5em}td,th{padding:.2em .8em;text-align:left}"
            ".error{color:#b00}</style></head><body>"
            f"<h1>{html.escape(t['title'])}</h1><p>{html.escape(inst.domain)}</p>{table}"
            f"<p>{html.escape(t['sync'])}: {synced}</p>{error}"
            f'<p><a href="{html.escape(self.admin_url)}" target="_blank" rel="noopener">'
            f"{html.escape(t['admin'])}</a></p></body></html>"
        )

    # --- events ----------------------------------------------------------------------------------
    async def _installed_event(self, claim: Claim) -> Outcome:
        existing = await self._io(self.installations.find, claim.member_id)
        if existing is not None and existing.active:
            inst, verdict = await self._io(self.installations.verify, claim.member_id, claim.application_token)
            if inst is not None and verdict == "ok":
                return Outcome(200, {"status": "installed"})  # this install is known; keep the newer tokens
        confirmed = await self.oauth.confirm(claim)
        # a new installation, or one that had an application token and now gets another: a re-install,
        # after which the portal has none of our robots. A UI app's first token keeps what the frame did.
        fresh = existing is None or not existing.active or existing.has_application_token
        inst = await self._store(confirmed, claim, application_token=claim.application_token)
        if fresh:
            await self._io(self.registrations.clear, inst.member_id)
        log.info("installed on %s (ONAPPINSTALL%s)", inst.domain, ", refreshed" if confirmed.refreshed else "")
        self.spawn(self._settle_then_sync(inst.member_id))
        return Outcome(200, {"status": "installed"})

    async def _updated(self, claim: Claim) -> Outcome:
        confirmed = await self.oauth.confirm(claim)
        inst = await self._store(confirmed, claim, application_token=claim.application_token)
        await self._io(self.registrations.clear, inst.member_id)  # the update deleted them
        log.info("application updated on %s", inst.domain)
        self.spawn(self._settle_then_sync(inst.member_id))
        return Outcome(200, {"status": "updated"})

    async def _uninstall(self, fields: Mapping[str, Any], claim: Claim) -> Outcome:
        found = await self._io(authenticate, self.installations, fields.get("auth"), need_active=False)
        if isinstance(found, Denied):
            return Outcome.refused(found.status, found.error, found.reason)
        await self._io(self.installations.uninstall, found.member_id)
        await self._io(
            self.journal.abandon_portal, found.id, "not run or not answered: the application was uninstalled"
        )
        if claim.clean:
            removed = await self._io(self.installations.forget_data, found.member_id)
            log.info("portal %s uninstalled the application and asked to delete its data: %s", found.domain, removed)
        else:
            log.info("portal %s uninstalled the application", found.domain)
        return Outcome(200, {"status": "uninstalled", "data_deleted": claim.clean})

    # --- after every install and update ------------------------------------------------------------
    async def settle(self, member_id: str) -> list[str]:
        """Learn the portal's plan and language, then bind the app events. Returns the problems."""
        problems: list[str] = []
        try:
            info = await self.rest.call(member_id, "app.info")
        except B24RobotsError as exc:
            problems.append(f"app.info: {exc}")
        else:
            if isinstance(info, Mapping):
                await self._plan(member_id, info)
        try:
            problems += await self.bind_events(member_id)
        except B24RobotsError as exc:
            problems.append(f"event.get: {exc}")
        for problem in problems:
            log.warning("after the install on %s: %s", member_id, problem)
        return problems

    async def _plan(self, member_id: str, info: Mapping[str, Any]) -> None:
        license = str(info.get("LICENSE_FAMILY") or info.get("LICENSE_TYPE") or info.get("LICENSE") or "")
        await self._io(
            lambda: self.installations.set_portal_info(
                member_id, language=str(info.get("LANGUAGE_ID") or "").lower(), license=license
            )
        )
        rate, burst = ENTERPRISE_LIMITS if is_enterprise(info) else STANDARD_LIMITS
        if await self._io(self.installations.apply_plan_limits, member_id, rate, burst):
            log.info("portal %s is on plan %r: %.0f requests/s, burst %d", member_id, license, rate, burst)

    async def bind_events(self, member_id: str) -> list[str]:
        """Bind ONAPPINSTALL/UPDATE/UNINSTALL to our events URL once; unbind our old URLs."""
        handlers = await self.rest.call(member_id, "event.get")
        bound: set[tuple[str, str]] = set()
        for item in handlers if isinstance(handlers, list) else []:
            if isinstance(item, Mapping):
                bound.add((str(item.get("event") or "").upper(), str(item.get("handler") or "")))
        problems: list[str] = []
        for event in APP_EVENTS:
            for name, handler in sorted(bound):
                # an events URL of ours that moved (B24R_PUBLIC_URL changed): events must not go there
                if name == event and handler != self.events_url and handler.endswith("/b24/events"):
                    try:
                        await self.rest.call(member_id, "event.unbind", {"event": event, "handler": handler})
                    except RestError as exc:
                        problems.append(f"event.unbind {event} {handler}: {exc}")
            if (event, self.events_url) in bound:
                continue
            try:
                await self.rest.call(member_id, "event.bind", {"event": event, "handler": self.events_url})
            except RestError as exc:
                # bound meanwhile by a parallel install: the rest module answers ERROR_CORE "Handler already binded"
                if "already binded" not in str(exc).lower():
                    problems.append(f"event.bind {event}: {exc}")
        return problems

    async def _settle_then_sync(self, member_id: str) -> None:
        await self.settle(member_id)
        self.sync_soon(member_id)

    # --- helpers ---------------------------------------------------------------------------------
    async def _store(self, confirmed: Confirmed, claim: Claim, *, application_token: str) -> Installation:
        grant = InstallGrant(
            member_id=confirmed.member_id,
            domain=confirmed.domain,
            access_token=confirmed.access_token,
            refresh_token=confirmed.refresh_token,
            expires_at=confirmed.expires_at,
            application_token=application_token,
            client_endpoint=confirmed.client_endpoint,
            server_endpoint=confirmed.server_endpoint,
            scopes=confirmed.scopes,
            app_status=claim.app_status,
            user_id=confirmed.user_id,
            language=claim.language,
        )
        inst: Installation = await self._io(self.installations.install, grant)
        return inst
