"""OAuth credentials of one installation and the store contract the client needs."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Protocol

from b24robots.errors import NotFound
from b24robots.fields import host_of

__all__ = ["AppCredentials", "MemoryTokenStore", "TokenPair", "TokenStore", "redact"]


def redact(token: str | None) -> str:
    """Mask a secret for logs: its first 4 characters and an ellipsis (`"5d97…"`)."""
    if not token:
        return "∅"
    return token[:4] + "…"


@dataclass(frozen=True, slots=True)
class UserToken:
    """A user's access token for one portal (never refreshed; stored only encrypted, store/caller_tokens.py)."""

    access_token: str = field(repr=False)
    expires_at: float
    user_id: int = 0

    def __repr__(self) -> str:
        token = redact(self.access_token)
        return f"UserToken(user_id={self.user_id}, access_token={token!r}, expires_at={self.expires_at})"


@dataclass(frozen=True, slots=True)
class TokenPair:
    """The credentials of one portal installation.

    `version` grows by one on every refresh; the store compares it to decide who refreshed first.
    `client_endpoint` is the portal's REST root (`https://x.bitrix24.com/rest/`), `server_endpoint`
    the OAuth server's (`https://oauth.bitrix.info/rest/`); `domain` is the portal host.
    """

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: float
    version: int
    client_endpoint: str
    server_endpoint: str
    domain: str
    member_id: str

    def __repr__(self) -> str:
        return (
            f"TokenPair(domain={self.domain!r}, member_id={self.member_id!r}, version={self.version},"
            f" access_token={redact(self.access_token)!r}, refresh_token={redact(self.refresh_token)!r},"
            f" expires_at={self.expires_at}, client_endpoint={self.client_endpoint!r},"
            f" server_endpoint={self.server_endpoint!r})"
        )


@dataclass(frozen=True, slots=True)
class AppCredentials:
    """The application's OAuth `client_id` and `client_secret` (the secret never appears in repr)."""

    client_id: str
    client_secret: str = field(repr=False)


class TokenStore(Protocol):
    """What the client needs from persistence. Methods may block; the client calls them in a thread.

    - `load` returns the current pair or raises `b24robots.errors.NotFound`.
    - `claim_refresh` makes `holder` the only refresher of the pair at `version` until `now + ttl`:
      True when the stored version is still `version` and nobody else holds an unexpired claim.
      This is what makes a refresh single-flight across processes: a refresh token is spent by the
      OAuth server on first use, so two refreshes with it always cost one of them `invalid_grant`.
    - `release_refresh` gives the claim of `holder` back (the refresh failed; somebody may retry).
    - `swap` replaces the pair only if the stored version still equals `expected_version`
      (compare-and-swap); False means another refresh won: the caller re-loads and uses that pair.
      A stored pair is valid: it clears the refresh claim and a `needs_reinstall` mark.
    - `mark_needs_reinstall` records that the refresh token was refused (the admin must re-install),
      only while the stored version is still `version`: False when a new pair arrived meanwhile.
    - `update_endpoint` stores a new `client_endpoint` after the portal moved to a new domain.
    """

    def load(self, portal_key: str) -> TokenPair: ...

    def claim_refresh(self, portal_key: str, version: int, holder: str, now: float, ttl: float) -> bool: ...

    def release_refresh(self, portal_key: str, holder: str) -> None: ...

    def swap(self, portal_key: str, expected_version: int, new: TokenPair) -> bool: ...

    def mark_needs_reinstall(self, portal_key: str, message: str, version: int) -> bool: ...

    def update_endpoint(self, portal_key: str, client_endpoint: str) -> None: ...


class MemoryTokenStore:
    """Thread-safe in-memory `TokenStore` for tests and single-process tools."""

    def __init__(self, pairs: dict[str, TokenPair] | None = None) -> None:
        self._pairs: dict[str, TokenPair] = dict(pairs or {})
        self._lock = threading.Lock()
        self.needs_reinstall: dict[str, str] = {}
        self.swaps = 0
        self._claims: dict[str, tuple[str, float]] = {}

    def put(self, portal_key: str, pair: TokenPair) -> None:
        """Store `pair` unconditionally (an install)."""
        with self._lock:
            self._pairs[portal_key] = pair
            self.needs_reinstall.pop(portal_key, None)
            self._claims.pop(portal_key, None)

    def load(self, portal_key: str) -> TokenPair:
        with self._lock:
            try:
                return self._pairs[portal_key]
            except KeyError:
                raise NotFound(f"no installation stored for portal {portal_key!r}") from None

    def swap(self, portal_key: str, expected_version: int, new: TokenPair) -> bool:
        with self._lock:
            current = self._pairs.get(portal_key)
            if current is None:
                raise NotFound(f"no installation stored for portal {portal_key!r}")
            if current.version != expected_version:
                return False
            self._pairs[portal_key] = new
            self.swaps += 1
            self.needs_reinstall.pop(portal_key, None)
            self._claims.pop(portal_key, None)
            return True

    def claim_refresh(self, portal_key: str, version: int, holder: str, now: float, ttl: float) -> bool:
        with self._lock:
            current = self._pairs.get(portal_key)
            if current is None:
                raise NotFound(f"no installation stored for portal {portal_key!r}")
            claim = self._claims.get(portal_key)
            if current.version != version or (claim is not None and claim[0] != holder and claim[1] > now):
                return False
            self._claims[portal_key] = (holder, now + ttl)
            return True

    def release_refresh(self, portal_key: str, holder: str) -> None:
        with self._lock:
            claim = self._claims.get(portal_key)
            if claim is not None and claim[0] == holder:
                del self._claims[portal_key]

    def mark_needs_reinstall(self, portal_key: str, message: str, version: int) -> bool:
        with self._lock:
            current = self._pairs.get(portal_key)
            if current is None or current.version != version:
                return False
            self.needs_reinstall[portal_key] = message
            return True

    def update_endpoint(self, portal_key: str, client_endpoint: str) -> None:
        with self._lock:
            current = self._pairs.get(portal_key)
            if current is None:
                raise NotFound(f"no installation stored for portal {portal_key!r}")
            domain = host_of(client_endpoint) or current.domain
            self._pairs[portal_key] = replace(current, client_endpoint=client_endpoint, domain=domain)
