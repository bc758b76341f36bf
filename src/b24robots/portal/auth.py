"""Authenticating a request the portal sends on its own: a robot call or ONAPPUNINSTALL.

Both carry `auth[member_id]` and `auth[application_token]`, the secret the portal gave us at install
(ONAPPINSTALL, or ONAPPUPDATE when it changes; docs `settings/app-installation/security-recommendations.md`).
ONAPPUNINSTALL carries nothing else (`sendAuth=false`, rest module `lib/event/sender.php`); a robot call's
token block is the run-as user's (bizproc `lib/restactivity.php::execute`), which we do not need to trust.

`auth[domain]` is the portal's current host with its port (rest `lib/sqs.php`); portals get renamed and
Bitrix never resends a refused call, so a different domain with a valid token renames the installation
rather than losing the call. Endpoints are never taken from here: they change only on a grant the OAuth
server confirmed, or from a refresh answer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from b24robots.portal.grant import normal_host
from b24robots.store.installation_rows import Installation
from b24robots.store.installations import Installations

log = logging.getLogger("b24robots.portal")


@dataclass(frozen=True)
class Denied:
    status: int
    error: str
    reason: str

    def body(self) -> dict[str, str]:
        return {"error": self.error, "reason": self.reason}


def authenticate(installations: Installations, auth: Any, *, need_active: bool = True) -> Installation | Denied:
    """The installation `auth` proves, or why not (401 unknown / missing, 403 wrong token or inactive)."""
    if not isinstance(auth, Mapping):
        return Denied(401, "unauthorized", "the request has no auth block")
    member_id = str(auth.get("member_id") or "")
    app_token = str(auth.get("application_token") or "")
    if not member_id or not app_token:
        return Denied(401, "unauthorized", "auth[member_id] and auth[application_token] are required")
    inst, verdict = installations.verify(member_id, app_token)
    if inst is None:
        if verdict == "unknown":
            return Denied(401, "unauthorized", "unknown portal: install the application first")
        return Denied(403, "forbidden", "the application token does not match this portal")
    if need_active and not inst.active:
        return Denied(403, "forbidden", f"the installation is {inst.status}")
    domain = normal_host(str(auth.get("domain") or ""))
    if domain and domain != inst.domain:
        # proven by the application token; the stored endpoint stays until a refresh answer moves it
        installations.rename(member_id, domain)
        log.warning("portal %s now calls itself %s (member %s): domain updated", inst.domain, domain, member_id)
        inst = installations.by_id(inst.id)
    return inst
