"""Every exception b24robots raises, in one place.

The tree::

    B24RobotsError
    ├── ConfigError                 bad settings; the message names the variable to fix
    ├── DeclarationError            a robot or parameter declaration is invalid (raised at declaration)
    ├── InputError                  an incoming value does not fit its parameter type
    ├── FormDecodeError             a request body is not a well-formed PHP-style form (has .reason)
    ├── FormEncodeError             a value cannot be written as a PHP-style form (has .reason)
    ├── StoreError                  the register or the journal refused an operation
    │   ├── NotFound                no such robot, version, installation or invocation
    │   ├── StoreUnavailable        the database cannot be written or read now (disk full, read-only, locked, down)
    │   └── StoreRefused            the database cannot hold this data (NUL in PostgreSQL text, a number too large)
    ├── SimulatorError              the portal simulator was asked for something it cannot do (unknown robot ...)
    ├── AdminAuthError              an admin user name/password is unacceptable, or a sign-in was refused
    │   └── TooManyAttempts         sign-in is blocked for a while after repeated failures (.retry_after)
    ├── SandboxError                stored code could not run to completion (.log: its ctx.log lines)
    │   ├── SandboxLimitExceeded    a resource limit was hit (.limit: "timeout", "memory", "output", ...)
    │   └── StoredCodeError         the stored code raised; carries the formatted traceback
    │       └── SourceRejected      the code was refused before running (.problems with line numbers)
    ├── ConnectionCallError         a call through a named connection failed (.connection, .code, .status)
    │   ├── ConnectionNotAvailable  unknown, undeclared, wrong kind, or no value for this portal
    │   ├── OriginRefused           a path or a redirect leads away from the connection's own origin
    │   ├── ConnectionUnreachable   no answer: DNS, refused, timeout, TLS failure (.code UNREACHABLE / TLS / TIMEOUT)
    │   ├── RemoteError             the far side answered 4xx/5xx (1C's odata.error decoded into the message)
    │   ├── ResponseTooLarge        the answer exceeds the connection's size cap
    │   ├── ConnectionBusy          the concurrency cap or rate limit left no time within the run
    │   └── SqlError                the database refused the statement (or it was not read-only)
    └── RestError                   a Bitrix24 REST call failed (.method, .portal, .code, .description, .status)
        ├── TransportError          no HTTP answer (connection, timeout)
        ├── AuthError               401-class answers
        │   ├── ExpiredToken        expired_token: refresh and replay
        │   ├── InvalidToken        invalid_token / NO_AUTH_FOUND / authorization_error
        │   └── InvalidGrant        the refresh token is no longer valid: the app must be re-installed
        ├── AccessDenied            ACCESS_DENIED, insufficient_scope, user_access_error, INVALID_CREDENTIALS
        ├── MethodNotFound          ERROR_METHOD_NOT_FOUND
        ├── QueryLimitExceeded      503 QUERY_LIMIT_EXCEEDED: never executed, always safe to retry
        ├── OperationTimeLimit      429 OPERATION_TIME_LIMIT (.reset_at)
        ├── ServerError             5xx other than the rate limit
        ├── BatchLimitError         ERROR_BATCH_LENGTH_EXCEEDED / ERROR_BATCH_METHOD_NOT_ALLOWED
        ├── ApplicationError        APPLICATION_NOT_FOUND, PAYMENT_REQUIRED ...
        └── MethodError             any other error a method returns (validation errors and the like)

Control signals raised by robot handlers (`Retry`, `RobotFailure`) are not errors and live in
`b24robots.robots.signals`.
"""

from __future__ import annotations

from typing import Any


class B24RobotsError(Exception):
    """Base of every b24robots exception."""


class ConfigError(B24RobotsError):
    """A setting is missing or malformed."""


class DeclarationError(B24RobotsError):
    """A robot or parameter declaration is invalid; the message says what to change."""


class InputError(B24RobotsError):
    """An incoming property value does not fit its declared type."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"input {key!r}: {message}")
        self.key = key
        self.reason = message


class FormDecodeError(B24RobotsError):
    """A form body could not be decoded; `reason` is safe to show to the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FormEncodeError(B24RobotsError):
    """A value cannot be written as a PHP-style form; `reason` names the offending key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StoreError(B24RobotsError):
    """The database refused an operation."""


class NotFound(StoreError):
    """The named object does not exist."""


class StoreUnavailable(StoreError):
    """The database cannot take the operation now (disk full, read-only file, server gone).

    Nothing was stored; the same operation may succeed later. `reason` is the database's own word
    (e.g. "database or disk is full"), safe to show.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class StoreRefused(StoreError):
    """The database cannot hold the data of this operation (PostgreSQL text with a NUL byte, an integer
    beyond its column): the same operation fails again, other operations are unaffected. `reason` is the
    database's own word, safe to show."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class SimulatorError(B24RobotsError):
    """The test portal simulator refused a request from Python code; the message says why."""


class AdminAuthError(B24RobotsError):
    """An admin account operation or a sign-in was refused; the message says why."""


class TooManyAttempts(AdminAuthError):
    """Too many failed sign-ins for this user and address; `retry_after` is in seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SandboxError(B24RobotsError):
    """Stored code could not run to completion; `log` holds what it logged before it stopped."""

    log: tuple[str, ...] = ()


class SandboxLimitExceeded(SandboxError):
    """A resource limit stopped the run; `limit` names which one."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


class StoredCodeError(SandboxError):
    """The stored code raised an exception; `traceback` points at its own lines."""

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback


class SourceRejected(StoredCodeError):
    """The stored code was refused before it ran; `problems` lists each reason with its line."""

    def __init__(self, message: str, problems: list[Any]) -> None:
        super().__init__(message)
        self.problems = problems


class ConnectionCallError(B24RobotsError):
    """A call through a named connection failed. The message never holds a secret.

    `code` is a short constant stored code can branch on (``NOT_AVAILABLE``, ``ORIGIN``, ``UNREACHABLE``,
    ``TLS``, ``TIMEOUT``, ``REMOTE``, ``TOO_LARGE``, ``BUSY``, ``SQL``); `status` is the far side's HTTP status.
    """

    code = "ERROR"

    def __init__(self, connection: str, message: str, *, code: str = "", status: int | None = None) -> None:
        super().__init__(f"connection {connection!r}: {message}" if connection else message)
        self.connection = connection
        self.reason = message
        if code:
            self.code = code
        self.status = status


class ConnectionNotAvailable(ConnectionCallError):
    """The robot may not use this connection here: unknown, undeclared, of another kind, or no value."""

    code = "NOT_AVAILABLE"


class OriginRefused(ConnectionCallError):
    """A request or a redirect would leave the connection's origin."""

    code = "ORIGIN"


class ConnectionUnreachable(ConnectionCallError):
    """The far side gave no answer (DNS, refused, timeout, TLS)."""

    code = "UNREACHABLE"


class RemoteError(ConnectionCallError):
    """The far side answered with a 4xx/5xx status."""

    code = "REMOTE"


class ResponseTooLarge(ConnectionCallError):
    """The answer is larger than the connection's cap."""

    code = "TOO_LARGE"


class ConnectionBusy(ConnectionCallError):
    """The connection's concurrency cap or rate limit left no time within the run's limits."""

    code = "BUSY"


class SqlError(ConnectionCallError):
    """The database refused the statement."""

    code = "SQL"


class RestError(B24RobotsError):
    """A Bitrix24 REST call failed."""

    def __init__(
        self,
        code: str,
        description: str = "",
        *,
        method: str = "",
        portal: str = "",
        status: int | None = None,
    ) -> None:
        where = f"{method} on {portal}" if portal else method
        text = f"{code}: {description}" if description else code
        super().__init__(f"{where}: {text}" if where else text)
        self.code = code
        self.description = description
        self.method = method
        self.portal = portal
        self.status = status


class TransportError(RestError):
    """The portal could not be reached or did not answer in time."""


class AuthError(RestError):
    """The portal refused the credentials."""


class ExpiredToken(AuthError):
    """The access token has expired; refresh it and replay the call."""


class InvalidToken(AuthError):
    """The access token is not known to the portal."""


class InvalidGrant(AuthError):
    """The refresh token was refused: the installation must be re-installed."""


class AccessDenied(RestError):
    """The caller may not call this method."""


class MethodNotFound(RestError):
    """The portal has no such method (or the feature is off on its tariff)."""


class QueryLimitExceeded(RestError):
    """The portal's request-rate limit refused the call before it ran."""


class OperationTimeLimit(RestError):
    """The method is blocked until `reset_at` (unix time) by the operating-time limit."""

    def __init__(self, *args: object, reset_at: float | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.reset_at = reset_at


class ServerError(RestError):
    """The portal answered with a 5xx error."""


class BatchLimitError(RestError):
    """A batch was too long or contained a method not allowed in a batch."""


class ApplicationError(RestError):
    """The application is missing, inactive or unpaid on the portal."""


class MethodError(RestError):
    """The method ran and reported an error (validation and the like)."""
