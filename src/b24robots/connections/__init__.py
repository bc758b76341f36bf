"""Connections: named, typed ways out to HTTP APIs, 1C infobases (OData) and SQL databases.

Robot code uses them by name (`ctx.http("erp")`, `ctx.onec("buh")`, `ctx.sql("dwh")`); the server
holds the secrets and makes the calls, so stored code never sees either. See docs/connections.md.
"""

from b24robots.connections.base import CallRecord
from b24robots.connections.config import KINDS, ConnectionConfig
from b24robots.connections.http import HttpApi, HttpResponse
from b24robots.connections.hub import ConnectionHub, ConnectionSource, RunConnections
from b24robots.connections.onec import OneCApi
from b24robots.connections.sql import SqlApi

__all__ = [
    "KINDS",
    "CallRecord",
    "ConnectionConfig",
    "ConnectionHub",
    "ConnectionSource",
    "HttpApi",
    "HttpResponse",
    "OneCApi",
    "RunConnections",
    "SqlApi",
]
