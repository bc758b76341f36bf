"""RestClient.batch: chunking, encoding of commands, splitting results and errors back per key."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_fakes import FakePortal, SimClock

from b24robots import errors
from b24robots.rest import MemoryTokenStore, RestClient, RetryPolicy


@pytest.fixture
async def setup() -> Any:
    clock = SimClock()
    portal = FakePortal(clock)
    store = MemoryTokenStore({"p1": portal.issue()})
    client = RestClient(
        store, transport=portal.transport(), retry=RetryPolicy.disabled(), clock=clock, sleep=clock.sleep
    )
    yield portal, client
    await client.aclose()


def _cmds(portal: FakePortal) -> list[dict[str, str] | list[str]]:
    return [json.loads(r.content)["cmd"] for r in portal.requests if r.url.path == "/rest/batch"]


async def test_120_commands_three_requests_results_split(setup: Any) -> None:
    portal, client = setup
    commands = {f"c{i}": ("echo", {"n": str(i), "tags": ["a b", "c&d"]}) for i in range(120)}
    result = await client.batch("p1", commands)
    sent = _cmds(portal)
    assert [len(c) for c in sent] == [50, 50, 20]
    assert result.requests == 3
    assert result.ok
    for i in range(120):
        assert result.result(f"c{i}") == {"n": str(i), "tags": ["a b", "c&d"]}
    assert result.keys == list(commands)


async def test_command_encoding_is_php_http_build_query(setup: Any) -> None:
    portal, client = setup
    await client.batch(
        "p1",
        {
            "send": (
                "bizproc.event.send",
                {
                    "EVENT_TOKEN": "wf|A1_2|xyz.abc",
                    "RETURN_VALUES": {"ok": "Y", "n": 5},
                    "LOG_MESSAGE": "done ok",
                },
            ),
            "bare": ("app.info", None),
        },
    )
    (cmd,) = _cmds(portal)
    assert cmd == {
        "send": "bizproc.event.send?EVENT_TOKEN=wf%7CA1_2%7Cxyz.abc&RETURN_VALUES%5Bok%5D=Y"
        "&RETURN_VALUES%5Bn%5D=5&LOG_MESSAGE=done+ok",
        "bare": "app.info",
    }
    body = json.loads(portal.requests[-1].content)
    assert body["halt"] == 0


async def test_list_input_keys_and_php_list_shape(setup: Any) -> None:
    """Keys 0..n-1 come back as a JSON list (PHP); the client maps them back by index."""
    _, client = setup
    result = await client.batch("p1", [("echo", {"i": str(i)}) for i in range(60)])
    assert result.requests == 2
    assert result[0] == {"i": "0"} and result[59] == {"i": "59"}
    assert result.keys == [str(i) for i in range(60)]


async def test_per_command_errors_are_typed_and_isolated(setup: Any) -> None:
    _, client = setup
    result = await client.batch(
        "p1",
        {
            "a": ("echo", {"x": "1"}),
            "b": ("fail", {"n": "2"}),
            "c": ("batch", {}),
            "d": ("crm.deal.list", {}),
        },
    )
    assert not result.ok
    assert result["a"] == {"x": "1"}
    with pytest.raises(errors.MethodError) as info:
        result.result("b")
    assert info.value.code == "ERROR_CORE" and info.value.method == "fail"
    assert info.value.portal == "example.bitrix24.com" and info.value.status is None
    with pytest.raises(errors.BatchLimitError):
        result.result("c")
    assert result.total["d"] == 120 and result.next["d"] == 50
    with pytest.raises(KeyError):
        result.result("zzz")


async def test_halt_stops_and_reports_not_executed(setup: Any) -> None:
    portal, client = setup
    commands = [("echo", {"i": str(i)}) for i in range(70)]
    commands[10] = ("fail", {"n": "10"})
    result = await client.batch("p1", commands, halt=True)
    assert result.requests == 1  # the second chunk is not sent
    assert json.loads(portal.requests[-1].content)["halt"] == 1
    assert result[9] == {"i": "9"}
    with pytest.raises(errors.MethodError, match="ERROR_CORE"):
        result.result(10)
    with pytest.raises(errors.MethodError) as info:
        result.result(11)
    assert info.value.code == "NOT_EXECUTED"
    with pytest.raises(errors.MethodError, match="NOT_EXECUTED"):
        result.result(65)


async def test_empty_batch_sends_nothing(setup: Any) -> None:
    portal, client = setup
    result = await client.batch("p1", {})
    assert result.ok and result.requests == 0 and portal.requests == []


@pytest.mark.parametrize(
    "commands",
    [
        {"a": ("echo",)},
        {"a": ("bad method", {})},
        {"a": ("echo", {"x": object()})},
        "echo",
    ],
)
async def test_bad_commands_rejected_before_sending(setup: Any, commands: Any) -> None:
    portal, client = setup
    with pytest.raises(errors.MethodError):
        await client.batch("p1", commands)
    assert portal.requests == []
