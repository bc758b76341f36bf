"""Bookkeeping writes that follow work already done: retried in place until the database takes them.

Recording a robot's outcome or marking a batch delivered happens after the robot ran or the portal
took the answers. If that write fails because the database cannot be written right now (a full
disk, a read-only file, a lost server), giving up would leave the row leased and cause a rerun or a
re-send once the lease lapses. The writes are idempotent (each checks the lease it holds), so they
are retried with backoff in place instead, while the caller keeps its lease alive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from b24robots.errors import StoreUnavailable

log = logging.getLogger("b24robots.jobs")

_T = TypeVar("_T")

FIRST_WAIT = 0.1
MAX_WAIT = 5.0


async def persist(what: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Run the blocking store call `fn(*args, **kwargs)` in a thread until it succeeds.

    Only `StoreUnavailable` is retried (0.1 s, doubling up to 5 s, without end: the caller's task
    is cancelled at shutdown); every other error propagates at once.
    """
    wait = FIRST_WAIT
    while True:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except StoreUnavailable as exc:
            log.warning("%s failed (%s); retrying in %.1f s", what, exc.reason, wait)
            await asyncio.sleep(wait)
            wait = min(MAX_WAIT, wait * 2)
