"""Map a Bitrix24 error answer to the exception classes of `b24robots.errors` (protocol §5.3, §1.7)."""

from __future__ import annotations

from typing import Any

from b24robots import errors as e

__all__ = ["error_from_answer", "map_error"]

# Codes are compared case-insensitively: the portal mixes cases (expired_token vs EXPIRED_TOKEN).
_BY_CODE: dict[str, type[e.RestError]] = {
    "expired_token": e.ExpiredToken,
    "invalid_token": e.InvalidToken,
    "no_auth_found": e.InvalidToken,
    "authorization_error": e.InvalidToken,
    "invalid_grant": e.InvalidGrant,
    # OAuth-server answers to the token endpoint: the app credentials or the request are wrong.
    "invalid_client": e.AuthError,
    "connection_error": e.AuthError,
    "access_denied": e.AccessDenied,
    "insufficient_scope": e.AccessDenied,
    "invalid_scope": e.AccessDenied,
    "user_access_error": e.AccessDenied,
    "invalid_credentials": e.AccessDenied,
    "error_method_not_found": e.MethodNotFound,
    "query_limit_exceeded": e.QueryLimitExceeded,
    "operation_time_limit": e.OperationTimeLimit,
    "error_batch_length_exceeded": e.BatchLimitError,
    "error_batch_method_not_allowed": e.BatchLimitError,
    "application_not_found": e.ApplicationError,
    "payment_required": e.ApplicationError,
    "internal_server_error": e.ServerError,
    "error_unexpected_answer": e.ServerError,
    # A manual block of the whole REST API; the docs give 503. Treated as a server-side failure.
    "overload_limit": e.ServerError,
}


def map_error(
    status: int | None,
    code: str,
    description: str = "",
    *,
    method: str = "",
    portal: str = "",
    reset_at: float | None = None,
) -> e.RestError:
    """Return (not raise) the exception for an error answer.

    `status` is the HTTP status (None inside a batch, where the portal gives no per-command status).
    Known codes decide the class; unknown codes fall back on the status (401 -> AuthError,
    403 -> AccessDenied, 429/503 -> rate limits, 5xx -> ServerError, 302 -> TransportError since a
    redirect is handled by the client before mapping); anything else is a MethodError
    (validation errors of §1.7 and the like).
    """
    kw: dict[str, Any] = {"method": method, "portal": portal, "status": status}
    cls = _BY_CODE.get(code.lower())
    if cls is None:
        if status == 401:
            cls = e.AuthError
        elif status == 403:
            cls = e.AccessDenied
        elif status == 429:
            cls = e.QueryLimitExceeded
        elif status is not None and 300 <= status < 400:
            cls = e.TransportError
        elif status is not None and status >= 500:
            cls = e.ServerError
        else:
            cls = e.MethodError
    if cls is e.OperationTimeLimit:
        return e.OperationTimeLimit(code, description, reset_at=reset_at, **kw)
    return cls(code, description, **kw)


def _reset_at_of(body: dict[str, Any]) -> float | None:
    # The error body has no `time` block (§5.3); accept it anyway in case a front end adds one.
    for holder in (body, body.get("time")):
        if isinstance(holder, dict):
            value = holder.get("operating_reset_at")
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    return None
    return None


def error_from_answer(
    status: int | None, body: object, *, method: str = "", portal: str = "", text: str = ""
) -> e.RestError:
    """Build the exception for a decoded error body `{"error", "error_description"}`.

    Bodies that are not of that shape (an HTML 502 page, an empty body) give `HTTP_<status>` as the
    code and the start of `text` as the description.
    """
    if isinstance(body, dict) and body.get("error") is not None:
        code = str(body["error"])
        description = body.get("error_description")
        return map_error(
            status,
            code,
            "" if description is None else str(description),
            method=method,
            portal=portal,
            reset_at=_reset_at_of(body),
        )
    snippet = " ".join(text.split())[:200]
    return map_error(
        status,
        f"HTTP_{status}" if status is not None else "UNEXPECTED_ANSWER",
        snippet or "the portal answered without a Bitrix24 error body",
        method=method,
        portal=portal,
    )
