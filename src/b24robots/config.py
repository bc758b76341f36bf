"""Settings, read from `B24R_*` environment variables (and a `.env` file in the working directory).

Secrets are `SecretStr`: they print as `**********` and never reach logs.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from b24robots.errors import ConfigError
from b24robots.fields import split_url

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
SERVED_URL_FILE = "served-url"  # in data_dir: where the running `serve` listens, for CLI links
# Bitrix24's OAuth servers by region (bitrix AuthorizationServerUrlResolver.php: oauth.bitrix24.tech for
# ru/am/az/ge/kz/kg/uz/by, oauth.bitrix.info elsewhere)
DEFAULT_OAUTH_SERVERS = "https://oauth.bitrix.info,https://oauth.bitrix24.tech"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="B24R_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path(".b24robots"), description="where the SQLite file and key file live")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty = SQLite file in data_dir")
    public_url: str = Field(
        default=DEFAULT_PUBLIC_URL,
        description="the base URL Bitrix24 calls (handler = public_url + /b24/robot); unset = serve's --host/--port",
    )
    client_id: str = Field(default="", description="the Bitrix24 application's client_id")
    client_secret: SecretStr = Field(default=SecretStr(""), description="the application's client_secret")
    secret_key: SecretStr | None = Field(default=None, description="key that encrypts tokens at rest")
    allow_http_portals: bool = Field(default=False, description="accept plain-http portals (loopback simulators)")
    app: str = Field(default="", description="import string module:attribute of the robots' Router or App")
    workers: int = Field(default=4, ge=1, le=256, description="concurrent robot runs per process")
    sandbox_pool: int = Field(default=2, ge=1, le=64, description="warm sandbox children kept ready")
    sandbox_cpu_seconds: float = Field(default=10.0, gt=0, description="cap on a stored robot's CPU time per run")
    sandbox_wall_seconds: float = Field(default=30.0, gt=0, description="cap on a stored robot's wall time per run")
    sandbox_memory_mb: int = Field(default=512, ge=32, description="cap on a stored robot's address space")
    sandbox_output_bytes: int = Field(default=1_000_000, gt=0, description="cap on the size of a run's outputs")
    log_level: str = Field(default="INFO")
    shutdown_grace: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="seconds the server and the worker wait for running robots on SIGTERM; then the robots are "
        "stopped and their invocations given back to run again elsewhere",
    )
    cache_seconds: float = Field(
        default=2.0,
        ge=0,
        description="how long an accepted portal token and a CODE's robot are kept in memory (0 = not at all); "
        "changes made by this process, or by any process on PostgreSQL, apply at once",
    )
    # --- the web layer under attack: who is trusted, how long and how much a client may take ---
    trusted_proxies: str = Field(
        default="",
        description="comma-separated addresses or networks of reverse proxies whose X-Forwarded-For is believed",
    )
    header_timeout: float = Field(default=10.0, gt=0, description="seconds a client has to send a request's headers")
    body_timeout: float = Field(default=30.0, gt=0, description="seconds a client has to send a request's body")
    max_connections: int = Field(default=1000, ge=1, description="open connections at most; more get 503")
    max_connections_per_address: int = Field(
        default=100, ge=1, description="open connections at most from one client address (proxies exempt)"
    )
    admin_max_body_bytes: int = Field(default=2_000_000, ge=10_000, description="cap on an admin form's body")
    admin_session_idle_seconds: float = Field(
        default=3600.0, gt=0, description="an admin session ends after this long without a request"
    )
    admin_session_max_seconds: float = Field(
        default=12 * 3600.0, gt=0, description="an admin session ends this long after the sign-in, used or not"
    )
    metrics_token: SecretStr = Field(
        default=SecretStr(""), description="bearer token Prometheus sends to /metrics; empty = /metrics is off"
    )
    health_token: SecretStr = Field(
        default=SecretStr(""), description="bearer token that shows /healthz details (signed-in admins see them too)"
    )
    api_docs: bool = Field(default=True, description="serve /docs and /openapi.json")
    sandbox_max_calls: int = Field(
        default=500, ge=1, description="cap on a stored robot's ctx.call/ctx.batch requests per run"
    )
    sandbox_max_proxied_seconds: float = Field(
        default=20.0,
        gt=0,
        description="cap on the total time per run the server spends serving a stored robot's "
        "ctx.call/ctx.batch and connection calls",
    )
    sandbox_uid_base: int = Field(
        default=60000,
        ge=1000,
        le=65533,
        description="as root, each sandbox worker runs as a uid of its own from here on (a range unused on the host)",
    )
    sandbox_uid_count: int = Field(
        default=0, ge=0, le=5000, description="size of that uid range; 0 = 4 x B24R_SANDBOX_POOL"
    )
    sandbox_methods: str = Field(
        default="default",
        description="REST methods stored code may call: comma-separated patterns (crm.*, !crm.deal.delete); "
        "`default` is the built-in list (docs/stored-code.md)",
    )
    delivery_give_up_days: float = Field(
        default=7.0,
        gt=0,
        description="an answer to a workflow that waits without a timeout is given up after this many days "
        "of failed deliveries (others are given up at their workflow's own deadline)",
    )
    delivery_concurrency: int = Field(
        default=128,
        ge=1,
        le=1024,
        description="portals answered at once per process (each one's own rate limit is then the only limit)",
    )
    heartbeat_seconds: float = Field(
        default=2.0, gt=0, le=60, description="how often a serve/worker process records that it is alive"
    )
    process_stale_seconds: float = Field(
        default=10.0,
        gt=0,
        description="a process silent this long is taken for dead and its leases are taken over (>= 2 heartbeats)",
    )
    worker_name: str = Field(
        default="",
        max_length=200,
        description="identifies a worker across restarts on one host (empty = the data dir); give each worker "
        "on a host its own name",
    )
    retention_delivered_days: float = Field(
        default=30.0,
        gt=0,
        description="delivered journal entries (no error) are deleted this many days after they finished",
    )
    retention_failed_days: float = Field(
        default=90.0, gt=0, description="finished entries that ended with an error are kept this many days"
    )
    retention_dead_days: float = Field(
        default=90.0, gt=0, description="dead entries (given up, no notice owed) are kept this many days"
    )
    prune_interval_seconds: float = Field(
        default=300.0, gt=0, description="how often the background pruner deletes entries past their retention"
    )
    prune_batch: int = Field(default=500, ge=1, le=100_000, description="entries deleted per transaction by the pruner")
    # --- trust in portals: only these OAuth servers confirm an install (never an address in the request) ---
    oauth_servers: str = Field(
        default=DEFAULT_OAUTH_SERVERS,
        description="comma-separated base URLs of the Bitrix24 OAuth servers that confirm installs and refresh tokens",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: str) -> str:
        for item in proxy_list(value):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/24)") from None
        return value

    @field_validator("oauth_servers")
    @classmethod
    def _check_oauth_servers(cls, value: str) -> str:
        items = proxy_list(value)
        if not items:
            raise ValueError("name at least one OAuth server, e.g. https://oauth.bitrix.info")
        for item in items:
            parts = split_url(item)
            if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{item!r} is not a base URL such as https://oauth.bitrix.info")
            if parts.query or parts.fragment:
                raise ValueError(f"{item!r} is not a base URL such as https://oauth.bitrix.info")
        return value

    @model_validator(mode="after")
    def _check_liveness(self) -> Settings:
        if self.process_stale_seconds < 2 * self.heartbeat_seconds:
            raise ValueError(
                "B24R_PROCESS_STALE_SECONDS must be at least twice B24R_HEARTBEAT_SECONDS, "
                f"got {self.process_stale_seconds:g} and {self.heartbeat_seconds:g}"
            )
        return self

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str) -> str:
        parts = split_url(value)
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL such as https://robots.example.com")
        return value.rstrip("/")

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'b24robots.db').resolve()}"

    @property
    def public_url_is_set(self) -> bool:
        """True when B24R_PUBLIC_URL (or an explicit argument) named the public URL."""
        return "public_url" in self.model_fields_set

    def listening_on(self, host: str, port: int) -> Settings:
        """These settings for a server on host:port: an unset public URL follows the listen address."""
        if self.public_url_is_set:
            return self
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        shown = f"[{shown}]" if ":" in shown else shown
        moved = self.model_copy(update={"public_url": f"http://{shown}:{port}"})
        moved.model_fields_set.discard("public_url")  # derived, not set by the user
        return moved

    @property
    def trusted_proxy_list(self) -> list[str]:
        return proxy_list(self.trusted_proxies)

    @property
    def oauth_server_list(self) -> list[str]:
        """The trusted OAuth servers as base URLs without a trailing slash.

        Plain http is refused unless B24R_ALLOW_HTTP_PORTALS is on; that setting never adds a server.
        """
        servers = [item.rstrip("/") for item in proxy_list(self.oauth_servers)]
        if not self.allow_http_portals:
            servers = [s for s in servers if s.startswith("https://")]
        return servers

    @property
    def handler_url(self) -> str:
        return f"{self.public_url}/b24/robot"

    def masked(self) -> dict[str, str]:
        """Every setting as text with secrets masked (for `b24robots config` and logs)."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                out[name] = "**********" if value.get_secret_value() else ""
            elif value is None:
                out[name] = ""
            else:
                out[name] = str(value)
        out["database_url"] = mask_url(self.effective_database_url)
        return out


def proxy_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def mask_url(url: str) -> str:
    """Hide the password of a database URL."""
    parts = split_url(url)
    if parts is None:  # it does not parse, so where its password is cannot be told: show none of it
        return "(a URL that does not parse)"
    if parts.password:
        return url.replace(f":{parts.password}@", ":****@", 1)
    return url


def load_settings(*, follow_served: bool = True, **overrides: object) -> Settings:
    """Read settings; a bad value becomes a ConfigError naming the variable to fix.

    With B24R_PUBLIC_URL unset, the public URL is where `serve` last said it listens (a file in the
    data dir), so `admin login-link` prints links to the running server.
    """
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"B24R_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" if err["loc"] else err["msg"]
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    if follow_served and not settings.public_url_is_set:
        try:
            served = (settings.data_dir / SERVED_URL_FILE).read_text().strip()
        except OSError:
            served = ""
        if served.startswith(("http://", "https://")):
            settings = settings.model_copy(update={"public_url": served.rstrip("/")})
            settings.model_fields_set.discard("public_url")  # still "not set by the user"
    return settings


def public_url_known(settings: Settings) -> bool:
    """The public URL was named (B24R_PUBLIC_URL) or learned from a `serve` run from this data dir,
    rather than the built-in default: only then may a sync register it as the portals' handler URL."""
    if settings.public_url_is_set:
        return True
    try:
        served = (settings.data_dir / SERVED_URL_FILE).read_text().strip()
    except OSError:
        return False
    return served.rstrip("/") == settings.public_url


def remember_served_url(settings: Settings) -> None:
    """Write where this server listens, for CLI commands run beside it (see load_settings)."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        (settings.data_dir / SERVED_URL_FILE).write_text(settings.public_url + "\n")
    except OSError:
        pass  # only a convenience for printed links
