"""batch (§5.4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Env = Any
Robot = Callable[..., dict[str, Any]]


async def batch(env: Env, cmd: Any, **extra: Any) -> dict[str, Any]:
    response = await env.rest("batch", {"cmd": cmd, **extra})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"result", "time"}
    return body["result"]


async def test_map_with_references_and_errors(env: Env) -> None:
    result = await batch(
        env,
        {
            "deal": "crm.deal.get?id=2",
            "upd": "crm.deal.update?id=$result[deal][ID]&fields[TITLE]=Renamed+$result[deal][TITLE]",
            "bad": "no.such.method",
            "check": "crm.deal.get?id=2",
        },
    )
    assert result["result"]["upd"] is True
    assert result["result"]["check"]["TITLE"] == "Renamed Deal #2"
    assert result["result_error"] == {
        "bad": {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}
    }
    assert set(result["result_time"]) == {"deal", "upd", "check"}
    assert set(result["result_time"]["deal"]) >= {
        "start",
        "finish",
        "duration",
        "processing",
        "date_start",
        "date_finish",
    }
    assert result["result_total"] == [] and result["result_next"] == []  # empty groups serialize as []


async def test_list_cmd_gives_lists(env: Env) -> None:
    result = await batch(env, ["profile", "crm.deal.get?id=1"])
    assert isinstance(result["result"], list) and result["result"][1]["ID"] == "1"
    assert result["result_error"] == []


async def test_halt_stops_at_first_error(env: Env) -> None:
    cmd = {"a": "profile", "b": "crm.deal.get?id=999", "c": "crm.deal.update?id=1&fields[TITLE]=x"}
    result = await batch(env, cmd, halt=1)
    assert list(result["result"]) == ["a"] and list(result["result_error"]) == ["b"]
    assert result["result_error"]["b"] == {"error": "", "error_description": "Not found"}
    assert env.portal.deals[1]["TITLE"] == "Deal #1"  # c never ran
    result = await batch(env, cmd, halt=0)
    assert env.portal.deals[1]["TITLE"] == "x"


async def test_more_than_50_commands(env: Env) -> None:
    cmd = {f"k{i}": "profile" for i in range(52)}
    result = await batch(env, cmd)
    assert len(result["result"]) == 50
    exceeded = {"error": "ERROR_BATCH_LENGTH_EXCEEDED", "error_description": "Max batch length exceeded"}
    assert result["result_error"] == {"k50": exceeded, "k51": exceeded}


async def test_nested_batch_and_non_string_commands(env: Env) -> None:
    result = await batch(env, {"inner": "batch?cmd[x]=profile", "skip": {"not": "a string"}, "ok": "profile"})
    assert result["result_error"] == {
        "inner": {
            "error": "ERROR_BATCH_METHOD_NOT_ALLOWED",
            "error_description": "Method is not allowed for batch usage",
        }
    }
    assert list(result["result"]) == ["ok"]


async def test_list_paging_totals(env: Env) -> None:
    for n in range(60):
        env.portal.add_deal(TITLE=f"bulk {n}")
    result = await batch(env, {"p1": "crm.deal.list?select[]=ID", "p2": "crm.deal.list?start=50"})
    assert result["result_total"] == {"p1": 63, "p2": 63}
    assert result["result_next"] == {"p1": 50}
    assert len(result["result"]["p1"]) == 50 and len(result["result"]["p2"]) == 13
    assert set(result["result"]["p1"][0]) == {"ID"}
    direct = (await env.rest("crm.deal.list", {"start": 50})).json()
    assert direct["total"] == 63 and "next" not in direct


async def test_event_send_in_a_batch(env: Env, robot: Robot) -> None:
    await env.ok("bizproc.robot.add", robot())
    flows = [await env.sim.start_robot(env.portal, "send_sms", properties={"phone": str(i)}) for i in range(3)]
    cmd = {
        wf.id: "bizproc.event.send?" + f"event_token={wf.event_token.replace('|', '%7C')}&return_values[count]={i}"
        for i, wf in enumerate(flows, start=1)
    }
    result = await batch(env, cmd)
    assert list(result["result"].values()) == [True, True, True]
    for i, wf in enumerate(flows, start=1):
        await wf.closed(timeout=2)
        assert wf.return_values["count"] == i


async def test_form_encoded_batch_like_php(env: Env) -> None:
    response = await env.rest("batch", {"cmd": {"a": "profile"}, "halt": "0"}, form=True)
    assert response.json()["result"]["result"]["a"]["ID"] == "1"
