"""What a connection is: a name, a kind and settings, with secrets kept apart.

Pure: no I/O. The store keeps one global row per name and optional per-portal rows whose values
override the global ones (a marketplace integrator has one 1C per customer portal). `merge` combines
them and `complete` checks that everything a call needs is there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from b24robots.errors import ConfigError, ConnectionNotAvailable
from b24robots.fields import split_url

NAME_RE = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")
KINDS = ("http", "1c", "sql")
AUTH_MODES = ("none", "basic", "bearer", "header", "query", "oauth2")

# kind -> setting -> default (None: required, no default)
_COMMON: dict[str, Any] = {"timeout": 15.0, "concurrency": 4, "rate": 10.0, "burst": 10, "log_bodies": False}
_HTTPISH: dict[str, Any] = {"verify": True, "ca_bundle": "", "max_bytes": 5_000_000}
DEFAULTS: dict[str, dict[str, Any]] = {
    "http": {
        "base_url": None,
        "auth": "none",
        "username": "",
        "header_name": "X-API-Key",
        "query_name": "api_key",
        "token_url": "",
        "client_id": "",
        "scope": "",
        "headers": {},
        **_HTTPISH,
        **_COMMON,
    },
    "1c": {"base_url": None, "username": "", **_HTTPISH, **_COMMON, "concurrency": 2, "rate": 5.0, "burst": 5},
    "sql": {"url": None, "read_only": True, "row_limit": 1000, **_COMMON, "timeout": 10.0},
}
SECRETS: dict[str, tuple[str, ...]] = {
    "http": ("password", "token", "api_key", "client_secret"),
    "1c": ("password",),
    "sql": ("password",),
}
HELP = {
    "base_url": "the base URL; robot paths are relative to it",
    "auth": "none, basic, bearer, header, query or oauth2",
    "username": "user name for basic auth (1C: the infobase user)",
    "header_name": "the header that carries the API key (auth=header)",
    "query_name": "the query parameter that carries the API key (auth=query)",
    "token_url": "the OAuth2 token endpoint (auth=oauth2, client credentials)",
    "client_id": "the OAuth2 client id",
    "scope": "the OAuth2 scope (optional)",
    "headers": "default headers sent with every request",
    "verify": "verify the server's TLS certificate",
    "ca_bundle": "PEM text of the CA that signed the server's certificate (internal CAs)",
    "max_bytes": "largest response accepted, in bytes",
    "timeout": "seconds one call may take",
    "concurrency": "calls at the same time, per server process",
    "rate": "calls per second, per server process",
    "burst": "calls allowed at once before the rate applies",
    "log_bodies": "keep request and response bodies in the journal",
    "url": "a SQLAlchemy URL without the password (postgresql+psycopg://user@host/db, sqlite:///file.db)",
    "read_only": "refuse writes (a read-only transaction where the database has one)",
    "row_limit": "most rows one query returns",
    "password": "the password (secret)",
    "token": "the bearer token (secret)",
    "api_key": "the API key (secret)",
    "client_secret": "the OAuth2 client secret (secret)",
}


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(
            f"connection name {name!r} is invalid; use 1-64 lower-case latin letters, digits, '_' or '-', "
            "starting with a letter (e.g. 'erp', 'buh')"
        )
    return name


def check_kind(kind: object) -> str:
    if kind not in KINDS:
        raise ConfigError(f"connection kind {kind!r} is unknown; use one of: {', '.join(KINDS)}")
    return str(kind)


def _coerce(key: str, default: Any, value: Any) -> Any:
    """Turn a value (possibly text from a form or the CLI) into the type of its default."""
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "y", "on"):
                return True
            if text in ("0", "false", "no", "n", "off", ""):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            number = int(value)
            if number < 0:
                raise ValueError(value)
            return number
        if isinstance(default, float):
            real = float(value)
            if not real > 0:
                raise ValueError(value)
            return real
        if isinstance(default, dict):
            if isinstance(value, str):
                return _parse_headers(value)
            if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
                raise ValueError(value)
            return {str(k): v for k, v in value.items()}
    except (TypeError, ValueError):
        kind = type(default).__name__ if not isinstance(default, dict) else "mapping of header: value"
        raise ConfigError(f"setting {key!r}: {str(value)[:60]!r} is not a valid {kind}") from None
    return "" if value is None else str(value)


def _parse_headers(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.replace(";", "\n").splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(line)
        out[name.strip()] = value.strip()
    return out


def normalize(
    kind: str, settings: Mapping[str, Any], secrets: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Check the keys and types of (possibly partial) settings and secrets; return clean copies.

    Empty-string values are dropped, so a form field left blank keeps the value below it.
    """
    defaults = DEFAULTS[check_kind(kind)]
    clean: dict[str, Any] = {}
    for key, value in settings.items():
        if key not in defaults:
            raise ConfigError(
                f"setting {key!r} is unknown for a {kind} connection; known: {', '.join(sorted(defaults))}"
            )
        if value is None or (isinstance(value, str) and value == "" and key != "ca_bundle"):
            continue
        default = defaults[key]
        clean[key] = _coerce(key, default if default is not None else "", value)
    if "auth" in clean and clean["auth"] not in AUTH_MODES:
        raise ConfigError(f"auth {clean['auth']!r} is unknown; use one of: {', '.join(AUTH_MODES)}")
    for key in ("base_url", "token_url"):
        if clean.get(key):
            clean[key] = check_url(clean[key], key)
    if kind == "1c" and clean.get("base_url") and "/odata/standard.odata" not in clean["base_url"]:
        raise ConfigError(
            "a 1c connection's base_url is the infobase's OData root, e.g. "
            "https://host/base/odata/standard.odata/ (1C:Enterprise 8.3 Developer Guide, 17.4)"
        )
    if clean.get("url"):
        clean["url"], password = split_sql_url(clean["url"])
        if password:
            secrets = {**secrets, "password": password}
    allowed = SECRETS[kind]
    clean_secrets: dict[str, str] = {}
    for key, value in secrets.items():
        if key not in allowed:
            raise ConfigError(f"secret {key!r} is unknown for a {kind} connection; known: {', '.join(allowed)}")
        if value is None or value == "":
            continue
        clean_secrets[key] = str(value)
    return clean, clean_secrets


def check_url(value: str, key: str) -> str:
    parts = split_url(value)  # None for "https://[" or a port beyond 65535, which urlsplit raises on
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"setting {key!r}: {value[:80]!r} is not an absolute http(s) URL")
    if parts.username or parts.password:
        raise ConfigError(f"setting {key!r}: put the user name and password in their own fields, not in the URL")
    return value if value.endswith("/") or key != "base_url" else value + "/"


def split_sql_url(url: str) -> tuple[str, str]:
    """(URL without the password, password): the password is kept as a secret."""
    from sqlalchemy.engine import make_url  # SQLAlchemy is a core dependency; make_url does no I/O
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"setting 'url': {url[:20]!r}... is not a SQLAlchemy URL (postgresql+psycopg://user@host/db)"
        ) from None
    password = parsed.password or ""
    return parsed._replace(password=None).render_as_string(hide_password=False), str(password)


@dataclass(frozen=True)
class ConnectionConfig:
    """A connection as a run sees it: global values with this portal's overrides on top."""

    name: str
    kind: str
    settings: Mapping[str, Any]
    secrets: Mapping[str, str] = field(repr=False)
    portal: str = ""  # the member_id whose override applies; "" when only the global values do
    stamp: float = 0.0  # the newest updated_at of the rows merged: cached clients are rebuilt when it moves

    def get(self, key: str) -> Any:
        return self.settings.get(key, DEFAULTS[self.kind].get(key))

    def secret(self, key: str) -> str:
        return self.secrets.get(key, "")

    def secret_values(self) -> list[str]:
        return [v for v in self.secrets.values() if v]


def merge(
    name: str,
    kind: str,
    layers: Sequence[tuple[Mapping[str, Any], Mapping[str, str], float]],
    portal: str = "",
) -> ConnectionConfig:
    """Lay settings and secrets over the defaults, later layers winning."""
    settings: dict[str, Any] = {k: v for k, v in DEFAULTS[kind].items() if v is not None}
    secrets: dict[str, str] = {}
    stamp = 0.0
    for layer_settings, layer_secrets, updated in layers:
        settings.update(layer_settings)
        secrets.update(layer_secrets)
        stamp = max(stamp, updated)
    return ConnectionConfig(name, kind, settings, secrets, portal, stamp)


def complete(config: ConnectionConfig, domain: str = "") -> ConnectionConfig:
    """Raise ConnectionNotAvailable when a required value is missing (e.g. no per-portal base URL)."""
    missing = [k for k, v in DEFAULTS[config.kind].items() if v is None and not config.settings.get(k)]
    auth = config.get("auth") if config.kind == "http" else ""
    needs = {"basic": ("password",), "bearer": ("token",), "header": ("api_key",), "query": ("api_key",)}
    missing += [s for s in needs.get(str(auth), ()) if not config.secret(s)]
    if auth == "oauth2":
        missing += [k for k in ("token_url", "client_id") if not config.settings.get(k)]
        missing += [] if config.secret("client_secret") else ["client_secret"]
    if missing:
        where = f" for portal {domain}" if domain else ""
        raise ConnectionNotAvailable(
            config.name,
            f"has no value for {', '.join(missing)}{where}; set it with "
            f"`b24robots connections set {config.name}{' --portal ' + domain if domain else ''} ...` "
            "or on the Connections page",
        )
    return config


def redact_message(text: str, config: ConnectionConfig) -> str:
    """`text` with every secret of `config` masked: for messages shown to people."""
    from b24robots.connections.base import redact

    return redact(text, config.secret_values())


def describe(settings: Mapping[str, Any], secrets: Mapping[str, str]) -> dict[str, Any]:
    """Settings for display: secrets only as a mask, never their value."""
    out = {k: v for k, v in settings.items() if k != "ca_bundle"}
    if settings.get("ca_bundle"):
        out["ca_bundle"] = f"<PEM, {len(str(settings['ca_bundle']))} characters>"
    for key in secrets:
        out[key] = "********"
    return out
