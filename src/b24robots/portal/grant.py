"""What a portal's install-page POST or app event claims, before anyone has confirmed it.

Two shapes reach us (bitrix24-protocol.md §9.1):

- the **app frame POST** of a UI app (and of every later opening of the app): `AUTH_ID, AUTH_EXPIRES,
  REFRESH_ID, member_id, status, PLACEMENT[, PLACEMENT_OPTIONS]` in the body and `DOMAIN, PROTOCOL, LANG,
  APP_SID` in the query (main module `templates/.default/template.php` of app.layout, both versions);
  `APPLICATION_TOKEN`, `SERVER_ENDPOINT`, `APPLICATION_SCOPE` only on portals newer than 2026-08 (docs
  `settings/app-installation/...`), so they are optional;
- an **event** (`ONAPPINSTALL`, `ONAPPUPDATE`, `ONAPPUNINSTALL`) with `auth[...]`, `data[...]`, `ts`
  (rest module `lib/event/sender.php`); ONAPPUNINSTALL is sent with `sendAuth=false`, so its auth block has
  no tokens.

Nothing here is trusted: b24robots.portal.oauth confirms a claim at the OAuth server.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from b24robots.errors import InputError
from b24robots.fields import as_int

# a portal host as auth[domain] gives it: name or address, with an optional port (rest module lib/sqs.php
# takes the current HTTP host, port included)
_HOST = re.compile(r"^[a-z0-9](?:[a-z0-9\-.]{0,251}[a-z0-9])?(?::[0-9]{1,5})?$")


def normal_host(value: str) -> str:
    """A host[:port] in lower case, or '' when `value` is not one."""
    host = value.strip().lower()
    if host.startswith(("http://", "https://")):
        host = host.split("://", 1)[1]
    host = host.rstrip("/")
    if host.endswith(":443"):  # the default https port names the same portal
        host = host[:-4]
    return host if _HOST.match(host) else ""


@dataclass(frozen=True)
class Claim:
    """Tokens and identity as the request states them."""

    kind: str  # "frame" or the event name (ONAPPINSTALL, ONAPPUPDATE, ONAPPUNINSTALL)
    member_id: str
    domain: str
    access_token: str
    refresh_token: str
    expires_at: float
    application_token: str
    client_endpoint: str
    server_endpoint: str
    scopes: str
    app_status: str
    user_id: int | None
    language: str
    clean: bool = False  # ONAPPUNINSTALL data[CLEAN]: the admin asked to delete the app's data
    protocol: str = "https"


def _str(source: Mapping[str, Any], key: str) -> str:
    value = source.get(key, "")
    return value.strip() if isinstance(value, str) else ""


def _expires(absolute: str, relative: str, now: float) -> float:
    # ASCII digits only: "²".isdigit() is true and float("²") raises (fields.py)
    at = as_int(absolute)
    if at is not None:
        return float(at)
    seconds = as_int(relative)
    return now + (float(seconds) if seconds is not None else 3600.0)


def event_name(fields: Mapping[str, Any]) -> str:
    return _str(fields, "event").upper()


def claim_from_event(fields: Mapping[str, Any], *, now: float | None = None) -> Claim:
    """Read an app event body; InputError names what is missing."""
    now = time.time() if now is None else now
    auth = fields.get("auth")
    if not isinstance(auth, Mapping):
        raise InputError("event", "the event has no auth block")
    data = fields.get("data")
    data = data if isinstance(data, Mapping) else {}
    kind = event_name(fields)
    user = _str(auth, "user_id")
    claim = Claim(
        kind=kind,
        member_id=_str(auth, "member_id"),
        domain=normal_host(_str(auth, "domain")),
        access_token=_str(auth, "access_token"),
        refresh_token=_str(auth, "refresh_token"),
        expires_at=_expires(_str(auth, "expires"), _str(auth, "expires_in"), now),
        application_token=_str(auth, "application_token"),
        client_endpoint=_str(auth, "client_endpoint"),
        server_endpoint=_str(auth, "server_endpoint"),
        scopes=_str(auth, "scope"),
        app_status=_str(auth, "status"),
        user_id=as_int(user),
        language=_str(data, "LANGUAGE_ID").lower()[:8],
        clean=_str(data, "CLEAN") in ("1", "Y", "y", "true"),
    )
    needed = [("member_id", claim.member_id), ("domain", claim.domain), ("application token", claim.application_token)]
    if kind != "ONAPPUNINSTALL":  # the only event sent without tokens
        needed += [("access token", claim.access_token), ("refresh token", claim.refresh_token)]
    _require(kind, needed)
    return claim


def claim_from_frame(fields: Mapping[str, Any], *, now: float | None = None) -> Claim:
    """Read an app frame POST (body and query merged); InputError names what is missing."""
    now = time.time() if now is None else now
    protocol = "http" if _str(fields, "PROTOCOL") == "0" else "https"
    domain = normal_host(_str(fields, "DOMAIN"))
    claim = Claim(
        kind="frame",
        member_id=_str(fields, "member_id"),
        domain=domain,
        access_token=_str(fields, "AUTH_ID"),
        refresh_token=_str(fields, "REFRESH_ID"),
        expires_at=_expires("", _str(fields, "AUTH_EXPIRES"), now),
        application_token=_str(fields, "APPLICATION_TOKEN"),
        client_endpoint=f"{protocol}://{domain}/rest/" if domain else "",
        server_endpoint=_str(fields, "SERVER_ENDPOINT"),
        scopes=_str(fields, "APPLICATION_SCOPE"),
        app_status=_str(fields, "status"),
        user_id=None,
        language=_str(fields, "LANG").lower()[:8],
        protocol=protocol,
    )
    _require(
        "install",
        [
            ("member_id", claim.member_id),
            ("DOMAIN", claim.domain),
            ("AUTH_ID", claim.access_token),
            ("REFRESH_ID", claim.refresh_token),
        ],
    )
    return claim


def _require(what: str, fields: list[tuple[str, str]]) -> None:
    missing = [name for name, value in fields if not value]
    if missing:
        raise InputError(what, f"the request lacks {', '.join(missing)}")
