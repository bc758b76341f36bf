"""The http kind over real HTTP: auth modes, the origin rule, caps, size limit, TLS and errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from b24robots.connections.hub import ConnectionHub
from b24robots.errors import (
    ConnectionBusy,
    ConnectionNotAvailable,
    ConnectionUnreachable,
    OriginRefused,
    RemoteError,
    ResponseTooLarge,
)
from tests.connections.support import SECRET, MemorySource, config, dumps, echo_server, make_ca


def scope(*configs, declared=None, deadline=None):  # type: ignore[no-untyped-def]
    source = MemorySource(*configs)
    hub = ConnectionHub(source)
    names = declared if declared is not None else [c.name for c in configs]
    return hub, source, hub.scope(robot="t.robot", declared=names, member_id="m1", deadline=deadline)


@pytest.mark.parametrize(
    ("auth", "secrets", "check"),
    [
        ("basic", {"password": SECRET}, lambda seen: seen["headers"]["authorization"].startswith("Basic ")),
        ("bearer", {"token": SECRET}, lambda seen: seen["headers"]["authorization"] == f"Bearer {SECRET}"),
        ("header", {"api_key": SECRET}, lambda seen: seen["headers"]["x-api-key"] == SECRET),
        ("query", {"api_key": SECRET}, lambda seen: seen["query"]["api_key"] == SECRET),
    ],
)
def test_auth_is_added_by_the_server_and_never_recorded(auth, secrets, check) -> None:  # type: ignore[no-untyped-def]
    with echo_server() as (server, _state):
        cfg = config("http", base_url=server.origin + "/api/", auth=auth, username="u", secrets=secrets)
        hub, _, run = scope(cfg)
        answer = run.http("erp").get("echo", params={"q": "1"}, headers={"X-Robot": "yes"})
        assert answer.status == 200 and check(answer.json())
        assert answer.json()["query"]["q"] == "1" and answer.json()["headers"]["x-robot"] == "yes"
        assert SECRET not in dumps(run.records)
        assert run.records[0].target == "/api/echo" and run.records[0].status == 200
        hub.close()


def test_oauth2_client_credentials_token_is_fetched_once_and_cached() -> None:
    with echo_server() as (server, state):
        cfg = config(
            "http",
            base_url=server.origin + "/api/",
            auth="oauth2",
            token_url=server.origin + "/oauth/token",
            client_id="robots",
            secrets={"client_secret": SECRET},
        )
        hub, _, run = scope(cfg)
        for _ in range(3):
            assert run.http("erp").get("protected").json()["ok"] is True
        assert state.token_calls == 1
        assert "tok-1" not in dumps(run.records)
        hub.close()


def test_default_headers_json_and_form_bodies() -> None:
    with echo_server() as (server, _):
        cfg = config("http", base_url=server.origin + "/api", headers="X-Tenant: 7\nAccept: application/json")
        hub, _, run = scope(cfg)
        api = run.http("erp")
        seen = api.post("/echo", json={"a": "б"}).json()
        assert seen["headers"]["x-tenant"] == "7" and seen["body"] == '{"a":"б"}'
        assert api.put("echo", data={"k": "v"}).json()["body"] == "k=v"
        assert api.patch("echo", data="raw").json()["method"] == "PATCH"
        assert api.delete("echo").json()["method"] == "DELETE"
        hub.close()


def test_origin_rule() -> None:
    with echo_server() as (server, _), echo_server() as (other, other_state):
        cfg = config("http", base_url=server.origin + "/api/")
        hub, _, run = scope(cfg)
        api = run.http("erp")
        assert api.get(server.origin + "/api/echo").status == 200  # same origin, absolute: fine
        for bad in (other.origin + "/api/echo", "//evil.example/api", "http://127.0.0.2:1/x"):
            with pytest.raises(OriginRefused):
                api.get(bad)
        # a redirect within the origin is followed; one to another origin is refused
        assert api.get("redirect", params={"to": "/api/echo"}).json()["path"] == "/api/echo"
        with pytest.raises(OriginRefused, match=r"redirected to http://127\.0\.0\.1:"):
            api.get("redirect", params={"to": other.origin + "/api/echo"})
        assert other_state.seen == []
        assert any("another origin" in r.error for r in run.records)  # the refusal is journaled
        hub.close()


def test_far_side_errors_are_clear() -> None:
    with echo_server() as (server, _):
        hub, _, run = scope(config("http", base_url=server.origin + "/api/"))
        api = run.http("erp")
        with pytest.raises(RemoteError, match=r"GET /api/status/404 answered 404: far side says 404") as err:
            api.get("status/404")
        assert err.value.status == 404
        with pytest.raises(RemoteError) as err5:
            api.get("status/503")
        assert err5.value.status == 503
        assert api.get("status/500", check=False).status == 500
        assert [r.status for r in run.records] == [404, 503, 500]
        hub.close()


def test_response_size_cap_streamed_and_declared() -> None:
    with echo_server() as (server, _):
        hub, _, run = scope(config("http", base_url=server.origin + "/api/", max_bytes=5000))
        api = run.http("erp")
        assert len(api.get("big", params={"n": 5000}).content) == 5000
        with pytest.raises(ResponseTooLarge, match="cap of 5000"):
            api.get("big", params={"n": 50_000})
        with pytest.raises(ResponseTooLarge, match="50000 bytes"):
            api.get("big-declared", params={"n": 50_000})
        hub.close()


def test_unreachable_host_and_timeout() -> None:
    hub, _, run = scope(config("http", base_url="http://127.0.0.1:9/"))
    with pytest.raises(ConnectionUnreachable, match="cannot be reached"):
        run.http("erp").get("x")
    with echo_server() as (server, _):
        hub2, _, run2 = scope(config("http", base_url=server.origin + "/api/", timeout=0.2))
        with pytest.raises(ConnectionUnreachable, match="did not answer in time") as err:
            run2.http("erp").get("slow", params={"s": 2})
        assert err.value.code == "TIMEOUT"
        hub2.close()
    hub.close()


def test_tls_verification_with_an_internal_ca(tmp_path: Path) -> None:
    ca_pem, cert, key = make_ca(tmp_path)
    with echo_server(ssl_certfile=cert, ssl_keyfile=key) as (server, _):
        assert server.origin.startswith("https://")
        hub, _, run = scope(config("http", base_url=server.origin + "/api/"))
        with pytest.raises(ConnectionUnreachable, match=r"TLS .* not trusted") as err:
            run.http("erp").get("echo")
        assert err.value.code == "TLS"
        hub2, _, run2 = scope(config("http", base_url=server.origin + "/api/", ca_bundle=ca_pem))
        assert run2.http("erp").get("echo").status == 200
        hub3, _, run3 = scope(config("http", base_url=server.origin + "/api/", verify=False))
        assert run3.http("erp").get("echo").status == 200
        for h in (hub, hub2, hub3):
            h.close()


def test_concurrency_cap_holds_across_threads() -> None:
    with echo_server() as (server, state):
        hub, _, run = scope(config("http", base_url=server.origin + "/api/", concurrency=2, rate=1000.0, burst=100))
        api = run.http("erp")
        threads = [threading.Thread(target=api.get, args=("slow",), kwargs={"params": {"s": 0.15}}) for _ in range(6)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert state.max_active == 2
        assert time.monotonic() - started >= 0.4  # three waves of two
        hub.close()


def test_rate_limit_spaces_calls_and_refuses_beyond_the_budget() -> None:
    with echo_server() as (server, _):
        cfg = config("http", base_url=server.origin + "/api/", rate=10.0, burst=2)
        hub, _, run = scope(cfg)
        api = run.http("erp")
        started = time.monotonic()
        for _ in range(5):
            api.get("echo")
        assert time.monotonic() - started >= 0.25  # 2 at once, then one per 100 ms
        hub.close()
        hub2, _, short = scope(
            config("http", base_url=server.origin + "/api/", rate=1.0, burst=1), deadline=time.monotonic() + 0.3
        )
        short.http("erp").get("echo")
        with pytest.raises(ConnectionBusy, match="rate limit"):
            short.http("erp").get("echo")
        hub2.close()


def test_declared_unknown_and_wrong_kind() -> None:
    hub, _, run = scope(
        config("http", base_url="http://127.0.0.1:9/"),
        config("sql", name="dwh", url="sqlite://"),
        declared=["erp", "dwh", "ghost"],
    )
    with pytest.raises(ConnectionNotAvailable, match="does not declare"):
        run.http("other")
    with pytest.raises(ConnectionNotAvailable, match="no such connection"):
        run.http("ghost")
    with pytest.raises(ConnectionNotAvailable, match=r"is a sql connection; use ctx.sql\('dwh'\)"):
        run.http("dwh")
    with pytest.raises(ConnectionNotAvailable, match=r"is a http connection; use ctx.http\('erp'\)"):
        run.onec("erp")
    hub.close()


def test_a_connection_without_a_value_for_the_portal() -> None:
    hub, _, run = scope(config("http"))  # a template: the base URL comes per portal
    with pytest.raises(ConnectionNotAvailable, match="has no value for base_url for portal m1"):
        run.http("erp")
    hub.close()
