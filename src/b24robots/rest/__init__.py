"""Bitrix24 REST client: tokens, refresh, rate limit, retries, batch and paging.

Knows nothing of robots or the database; persistence comes through the `TokenStore` and
`LimiterState` protocols, which the store implements.
"""

from b24robots.rest.client import (
    BATCH_MAX,
    BatchResult,
    Envelope,
    PortalClient,
    RestClient,
    RetryPolicy,
    is_idempotent,
)
from b24robots.rest.errormap import error_from_answer, map_error
from b24robots.rest.limiter import ARRIVAL_SLACK, LimiterState, MemoryLimiterState, gcra_full, gcra_take, gcra_wait
from b24robots.rest.phpquery import http_build_query
from b24robots.rest.tokens import AppCredentials, MemoryTokenStore, TokenPair, TokenStore, redact

__all__ = [
    "ARRIVAL_SLACK",
    "BATCH_MAX",
    "AppCredentials",
    "BatchResult",
    "Envelope",
    "LimiterState",
    "MemoryLimiterState",
    "MemoryTokenStore",
    "PortalClient",
    "RestClient",
    "RetryPolicy",
    "TokenPair",
    "TokenStore",
    "error_from_answer",
    "gcra_full",
    "gcra_take",
    "gcra_wait",
    "http_build_query",
    "is_idempotent",
    "map_error",
    "redact",
]
