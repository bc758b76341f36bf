"""`POST /b24/robot` served before FastAPI's routing: the same answers, no thread hand-off for a call whose
portal and robot are in memory, and the thread pool only for calls that need the database."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from starlette.concurrency import run_in_threadpool

from b24robots import Params, Router, String
from b24robots.inbound.formcodec import DEFAULT_LIMITS, encode_form
from b24robots.store.db import NeedsDatabase, memory_only
from b24robots.testing.app_fixtures import RobotHarness
from tests.test_group_commit import post, stored
from tests.test_pipeline_intake import body_for

router = Router()
FORM = {"content-type": "application/x-www-form-urlencoded"}


class In(Params):
    text = String("Text", required=True)


@router.robot("e.echo", name="Echo", inputs=In, outputs=In)
def echo(inputs: In) -> In:
    return In(text=inputs.text)


@pytest.fixture
async def h(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with RobotHarness(
        router, data_dir=tmp_path, sandbox=False, workers=False, settings={"cache_seconds": 600}
    ) as harness:
        await harness.install()
        yield harness


def call(h: RobotHarness, token: str) -> dict[str, Any]:
    return body_for(h, code="e.echo", event_token=token, properties={"text": token})


async def test_a_call_in_memory_is_answered_while_the_thread_pool_is_full(h: RobotHarness) -> None:
    assert (await post(h, call(h, "warm")))[1]["status"] == "queued"  # the portal and the robot now in memory
    limiter = anyio.to_thread.current_default_thread_limiter()
    total = limiter.total_tokens
    release = threading.Event()
    limiter.total_tokens = 1
    blocker = asyncio.create_task(run_in_threadpool(release.wait, 10))
    try:
        for _ in range(200):  # the blocker has taken the one thread
            if limiter.borrowed_tokens == 1:
                break
            await asyncio.sleep(0.02)
        assert limiter.borrowed_tokens == 1
        status, body = await asyncio.wait_for(post(h, call(h, "busy")), 5)
        assert (status, body["status"]) == (200, "queued")
        assert stored(h.svc.db, "busy") == 1  # answered after its commit, as always
    finally:
        release.set()
        await blocker
        limiter.total_tokens = total


async def test_calls_that_need_the_database_go_to_the_thread_pool(tmp_path: Path) -> None:
    # no cache at all: every call reads the installation and the register, so none can stay on the loop
    async with RobotHarness(
        router, data_dir=tmp_path, sandbox=False, workers=False, settings={"cache_seconds": 0}
    ) as h:
        await h.install()
        answers = await asyncio.gather(*(post(h, call(h, f"cold{i}")) for i in range(8)))
        assert [(s, b["status"]) for s, b in answers] == [(200, "queued")] * 8
        assert stored(h.svc.db, "cold") == 8
        status, body = await post(h, call(h, "cold3"))
        assert (status, body["status"]) == (200, "duplicate")


async def test_a_renamed_portal_is_renamed_once_and_logged_once(
    h: RobotHarness, caplog: pytest.LogCaptureFixture
) -> None:
    body = call(h, "renamed")
    body["auth"] = {**body["auth"], "domain": "renamed.bitrix24.test"}
    with caplog.at_level(logging.WARNING, logger="b24robots.portal"):
        status, answer = await post(h, body)
    assert (status, answer["status"]) == (200, "queued")
    assert h.svc.installations.get(h.portal.member_id).domain == "renamed.bitrix24.test"
    assert [r.getMessage() for r in caplog.records].count(
        f"portal {h.portal.domain} now calls itself renamed.bitrix24.test (member {h.portal.member_id}): domain updated"
    ) == 1


async def test_bad_bodies_are_refused_with_a_reason(h: RobotHarness) -> None:
    async with h.client() as c:
        resp = await c.post("/b24/robot", json={"code": "e.echo"})
        assert resp.status_code == 400 and "got JSON" in resp.json()["reason"]
        big = b"code=" + b"x" * DEFAULT_LIMITS.max_body_bytes
        resp = await c.post("/b24/robot", content=big, headers=FORM)
        assert resp.status_code == 400 and f"the limit is {DEFAULT_LIMITS.max_body_bytes}" in resp.json()["reason"]

        async def chunks() -> Any:  # no content-length: the limit is checked while reading
            for _ in range(3):
                yield b"x" * (DEFAULT_LIMITS.max_body_bytes // 2)

        resp = await c.post("/b24/robot", content=chunks(), headers=FORM)
        assert resp.status_code == 400 and "over the limit" in resp.json()["reason"]
        resp = await c.post("/b24/robot", content=b"code=%FF", headers=FORM)
        assert resp.status_code == 400 and "UTF-8" in resp.json()["reason"]
        resp = await c.get("/b24/robot")  # anything but POST goes to the app's routes
        assert resp.status_code == 405
    assert stored(h.svc.db, "") == 0


async def test_a_client_gone_mid_body_gets_400_and_nothing_is_stored(h: RobotHarness) -> None:
    messages = [
        {"type": "http.request", "body": encode_form(call(h, "gone"))[:40], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/b24/robot",
        "raw_path": b"/b24/robot",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", FORM["content-type"].encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await h.asgi(scope, receive, send)
    assert sent[0]["status"] == 400
    assert stored(h.svc.db, "") == 0


async def test_the_documented_route_answers_as_the_fast_path_does(h: RobotHarness) -> None:
    # the route stays for OpenAPI; reached without the middleware it stores and answers the same
    routes = AsyncExitStackMiddleware(h.asgi.router)  # the app's routes as FastAPI runs them, no middleware before
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=routes), base_url="http://t") as c:
        resp = await c.post("/b24/robot", content=encode_form(call(h, "routed")), headers=FORM)
        assert (resp.status_code, resp.json()["status"]) == (200, "queued")
        resp = await c.post("/b24/robot", content=b"x" * (DEFAULT_LIMITS.max_body_bytes + 1), headers=FORM)
        assert resp.status_code == 400
    assert stored(h.svc.db, "routed") == 1
    async with h.client() as c:
        schema = (await c.get("/openapi.json")).json()
    assert "post" in schema["paths"]["/b24/robot"]


async def test_memory_only_refuses_every_use_of_the_database(h: RobotHarness) -> None:
    generation = h.svc.db.cache_generation
    with memory_only():
        for use in (h.svc.db.read, h.svc.db.write, h.svc.db.changing_cached):
            with pytest.raises(NeedsDatabase), use():
                pass
        with pytest.raises(NeedsDatabase):
            h.svc.installations.get(h.portal.member_id)
    assert h.svc.db.cache_generation == generation  # nothing was written, no cache dropped
    assert h.svc.installations.get(h.portal.member_id) is not None
