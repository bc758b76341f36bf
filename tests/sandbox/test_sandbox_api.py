"""The pool's contract: ctx API, proxied REST calls, typed values, concurrency, recycling, lifecycle."""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sandbox_support import CAPS, CONTEXT, assert_serves_normally, hardened_pool, zygote_children

from b24robots.errors import ConfigError, MethodError, SandboxError, SandboxLimitExceeded, StoredCodeError
from b24robots.sandbox import SandboxLimits, SandboxPool, SandboxResult


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    yield from hardened_pool()


ECHO = """\
def run(inputs, ctx):
    return {"inputs": inputs, "types": [type(v).__name__ for v in inputs.values()]}
"""


def test_ctx_exposes_the_context(pool: SandboxPool) -> None:
    source = """\
def run(inputs, ctx):
    return {"document_id": ctx.document_id, "document_type": ctx.document_type, "portal": ctx.portal,
            "workflow_id": ctx.workflow_id, "robot": ctx.robot, "extra": ctx.user_id}
"""
    result = pool.run(source, {}, context={**CONTEXT, "user_id": 1})
    assert result.outputs == {**{k: v for k, v in CONTEXT.items()}, "extra": 1}


def test_missing_context_fields_are_none(pool: SandboxPool) -> None:
    result = pool.run("def run(inputs, ctx):\n    return {'w': ctx.workflow_id}\n", {}, context={})
    assert result.outputs == {"w": None}


def test_typed_values_round_trip(pool: SandboxPool) -> None:
    inputs = {
        "date": dt.date(2024, 12, 31),
        "naive": dt.datetime(2024, 1, 2, 3, 4, 5, 6),
        "aware": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=3))),
        "time": dt.time(23, 59),
        "money": Decimal("12.30"),
        "nested": {"when": [dt.date(2020, 2, 29)], "\x00": "tag-like key"},
        "plain": [1, 2.5, "x", None, True],
    }
    result = pool.run(ECHO, inputs, context={})
    assert result.outputs["inputs"] == inputs
    assert result.outputs["types"] == ["date", "datetime", "datetime", "time", "Decimal", "dict", "list"]
    assert result.outputs["inputs"]["aware"].utcoffset() == dt.timedelta(hours=3)


def test_dates_computed_in_the_child_come_back_typed(pool: SandboxPool) -> None:
    source = """\
import datetime
def run(inputs, ctx):
    return {"due": inputs["start"] + datetime.timedelta(days=30),
            "parsed": datetime.datetime.strptime("2024-05-06 07:08", "%Y-%m-%d %H:%M")}
"""
    result = pool.run(source, {"start": dt.date(2024, 1, 15)}, context={})
    assert result.outputs == {"due": dt.date(2024, 2, 14), "parsed": dt.datetime(2024, 5, 6, 7, 8)}


def test_log_and_print_keep_their_order(pool: SandboxPool) -> None:
    source = """\
def run(inputs, ctx):
    ctx.log("one")
    print("two", 2)
    for i in range(3):
        ctx.log(f"loop {i}")
    ctx.log({"k": 1})
    return {}
"""
    result = pool.run(source, {}, context={})
    assert result.log == ["one", "two 2", "loop 0", "loop 1", "loop 2", "{'k': 1}"]


def test_ctx_call_and_batch_are_proxied(pool: SandboxPool) -> None:
    seen: list[Any] = []

    def on_call(method: str, params: dict[str, Any]) -> Any:
        seen.append((method, params))
        return {"ID": 7, "DATE_CREATE": dt.datetime(2024, 3, 1, 9, 0)}

    def on_batch(commands: dict[str, Any] | list[Any]) -> Any:
        seen.append(("batch", commands))
        return {"result": {key: key.upper() for key in commands}}

    source = """\
def run(inputs, ctx):
    deal = ctx.call("crm.deal.get", {"id": inputs["id"], "since": inputs["since"]})
    both = ctx.batch({"a": "user.current", "b": "app.info"})
    return {"id": deal["ID"], "year": deal["DATE_CREATE"].year, "batch": both["result"]}
"""
    result = pool.run(source, {"id": 7, "since": dt.date(2024, 1, 1)}, context={}, on_call=on_call, on_batch=on_batch)
    assert result.outputs == {"id": 7, "year": 2024, "batch": {"a": "A", "b": "B"}}
    assert result.calls == 2
    assert seen == [
        ("crm.deal.get", {"id": 7, "since": dt.date(2024, 1, 1)}),
        ("batch", {"a": "user.current", "b": "app.info"}),
    ]


def test_rest_errors_reach_the_code_and_can_be_caught(pool: SandboxPool) -> None:
    def on_call(method: str, params: dict[str, Any]) -> Any:
        raise MethodError("ERROR_CORE", "Deal not found", method=method, portal="example.bitrix24.com")

    source = """\
def run(inputs, ctx):
    try:
        ctx.call("crm.deal.get", {"id": 1})
    except ctx.RestError as exc:
        return {"code": exc.code, "description": exc.description}
    return {}
"""
    result = pool.run(source, {}, context={}, on_call=on_call)
    assert result.outputs == {"code": "ERROR_CORE", "description": "Deal not found"}


def test_uncaught_rest_error_is_a_stored_code_error(pool: SandboxPool) -> None:
    def on_call(method: str, params: dict[str, Any]) -> Any:
        raise MethodError("ACCESS_DENIED", "Access denied!")

    source = "def run(inputs, ctx):\n    ctx.call('user.get')\n    return {}\n"
    with pytest.raises(StoredCodeError) as info:
        pool.run(source, {}, context={}, on_call=on_call)
    assert str(info.value) == "RestError: ACCESS_DENIED: Access denied!"
    assert 'File "<robot>", line 2, in run' in info.value.traceback


def test_parent_side_failure_in_a_handler_propagates(pool: SandboxPool) -> None:
    class Boom(Exception):
        pass

    def on_call(method: str, params: dict[str, Any]) -> Any:
        raise Boom("database is down")

    with pytest.raises(Boom):
        pool.run("def run(inputs, ctx):\n    return ctx.call('x', {})\n", {}, context={}, on_call=on_call)
    assert_serves_normally(pool)


def test_wall_limit_covers_time_spent_serving_calls(pool: SandboxPool) -> None:
    def on_call(method: str, params: dict[str, Any]) -> Any:
        time.sleep(0.2)
        return 1

    source = "def run(inputs, ctx):\n    return {'n': sum(ctx.call('x', {}) for _ in range(50))}\n"
    started = time.perf_counter()
    with pytest.raises(SandboxLimitExceeded) as info:
        pool.run(source, {}, context={}, on_call=on_call, limits=SandboxLimits(wall_seconds=0.5))
    assert info.value.limit == "timeout"
    assert time.perf_counter() - started < 2.0
    assert_serves_normally(pool)


def test_calls_per_run_are_capped(pool: SandboxPool) -> None:
    source = "def run(inputs, ctx):\n    while True:\n        ctx.call('user.current', {})\n"
    with pytest.raises(SandboxLimitExceeded) as info:
        pool.run(source, {}, context={}, on_call=lambda m, p: 1, limits=SandboxLimits(max_calls=20))
    assert info.value.limit == "calls"
    assert "20" in str(info.value)
    assert_serves_normally(pool)


def test_total_proxied_time_per_run_is_capped(pool: SandboxPool) -> None:
    def on_call(method: str, params: dict[str, Any]) -> Any:
        time.sleep(0.15)
        return 1

    # each call is quick and there are few of them; together they hold the slot too long
    source = "def run(inputs, ctx):\n    return {'n': sum(ctx.call('x', {}) for _ in range(40))}\n"
    started = time.perf_counter()
    with pytest.raises(SandboxLimitExceeded) as info:
        pool.run(source, {}, context={}, on_call=on_call, limits=SandboxLimits(wall_seconds=3, proxied_seconds=0.5))
    assert info.value.limit == "proxied_time"
    assert "more than 0.5 s in proxied requests" in str(info.value)
    assert time.perf_counter() - started < 1.5
    assert_serves_normally(pool)


def test_time_of_the_code_itself_is_not_proxied_time(pool: SandboxPool) -> None:
    source = (
        "import time\n"
        "def run(inputs, ctx):\n"
        "    end = time.monotonic() + 0.4\n"
        "    while time.monotonic() < end:\n"
        "        pass\n"
        "    return {'n': ctx.call('x', {})}\n"
    )

    def on_call(method: str, params: dict[str, Any]) -> Any:
        time.sleep(0.05)
        return 1

    result = pool.run(
        source, {}, context={}, on_call=on_call, limits=SandboxLimits(wall_seconds=3, proxied_seconds=0.3)
    )
    assert result.outputs == {"n": 1}
    assert 0.05 <= result.proxied_seconds < 0.3 and result.duration_ms >= 400


def test_concurrent_runs_from_many_threads(pool: SandboxPool) -> None:
    source = "def run(inputs, ctx):\n    ctx.log(ctx.portal)\n    return {'square': inputs['n'] ** 2}\n"
    results: dict[int, SandboxResult] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for k in range(5):
                value = n * 10 + k
                results[value] = pool.run(source, {"n": value}, context={"portal": f"p{n % 3}.example"})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(results) == 40
    for value, result in results.items():
        assert result.outputs == {"square": value**2}
        assert result.log == [f"p{(value // 10) % 3}.example"]
    assert pool.health()["children_alive"] <= 2 * pool.size


def test_every_run_gets_a_fresh_child() -> None:
    with SandboxPool(1, caps=CAPS) as small:
        for _ in range(7):
            assert_serves_normally(small)
        deadline = time.monotonic() + 10
        while small.health()["recycled"] < 7 and time.monotonic() < deadline:
            time.sleep(0.01)  # the refiller reaps used children in the background
        health = small.health()
        assert health["runs_served"] == 7
        assert health["recycled"] == 7


def test_state_does_not_leak_between_runs() -> None:
    writer = "import json\nSEEN = []\ndef run(inputs, ctx):\n    json.secret = inputs['s']\n    return {}\n"
    reader = "import json\ndef run(inputs, ctx):\n    return {'leak': hasattr(json, 'secret')}\n"
    with SandboxPool(1, caps=CAPS) as small:
        small.run(writer, {"s": "from run one"}, context={"portal": "a.example"})
        assert small.run(reader, {}, context={"portal": "a.example"}).outputs == {"leak": False}


def eventually(predicate: Any, timeout: float = 10.0) -> bool:
    """True once `predicate()` is, polling until `timeout` (a loaded machine reaps late)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def dead(pid: int) -> bool:
    """The process has ended: gone, or a zombie waiting for its parent."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_runs_never_share_a_child() -> None:
    with SandboxPool(1, caps=CAPS) as small:
        before = zygote_children(small)
        small.run(ECHO, {}, context={"portal": "a.example"})
        small.run(ECHO, {}, context={"portal": "a.example"})
        small.run(ECHO, {}, context={"portal": "b.example"})
        # the pre-forked children served and are gone (the zygote reaps them off the caller's time)
        assert eventually(lambda: not before & zygote_children(small))


def test_per_call_limits_are_clamped_to_caps() -> None:
    caps = SandboxLimits(wall_seconds=0.5, cpu_seconds=0.5)
    generous = SandboxLimits(cpu_seconds=1000, wall_seconds=1000)
    assert generous.clamp(caps) == caps
    with SandboxPool(1, caps=caps) as small:
        with pytest.raises(SandboxLimitExceeded) as info:
            small.run("import time\ndef run(inputs, ctx):\n    time.sleep(60)\n", {}, context={}, limits=generous)
        assert info.value.limit == "timeout"
        assert "0.5 s" in str(info.value)


def test_limits_validate() -> None:
    with pytest.raises(ConfigError, match="cpu_seconds"):
        SandboxLimits(cpu_seconds=0)
    with pytest.raises(ConfigError, match="memory_mb"):
        SandboxLimits(memory_mb=4)
    with pytest.raises(ConfigError, match="wall_seconds"):
        SandboxLimits(wall_seconds=float("inf"))
    small = SandboxLimits(cpu_seconds=1, wall_seconds=2, memory_mb=64, output_bytes=10, file_size_mb=1, open_files=8)
    assert SandboxLimits().clamp(small) == small
    assert small.clamp(SandboxLimits()) == small


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"inputs": {"f": object()}}, "JSON-able"),
        ({"inputs": {1: 2}}, "str keys"),
        ({"inputs": {"n": 10**5000}}, "JSON-able"),
        ({"context": {"auth": {"access_token": "x"}}}, "looks like a credential"),
        ({"context": {"refresh_token": "x"}}, "looks like a credential"),
        ({"context": {"log": 1}}, "cannot be an attribute"),
        ({"source": b"def run(i, c): pass"}, "source must be a string"),
    ],
)
def test_bad_arguments_are_sandbox_errors(pool: SandboxPool, kwargs: dict[str, Any], fragment: str) -> None:
    call: dict[str, Any] = {"source": ECHO, "inputs": {}, "context": {}, **kwargs}
    with pytest.raises(SandboxError, match=fragment):
        pool.run(call.pop("source"), call.pop("inputs"), **call)


def test_health_reports_the_pool(pool: SandboxPool) -> None:
    health = pool.health()
    assert {"children_alive", "runs_served", "recycled", "isolation", "zygote_alive"} <= set(health)
    assert health["size"] == 2
    assert health["runs_served"] > 0


def test_dead_idle_child_is_replaced() -> None:
    with SandboxPool(1, caps=CAPS) as small:
        assert_serves_normally(small)
        assert eventually(lambda: len(zygote_children(small)) == 1)  # the spent worker is reaped
        (victim,) = zygote_children(small)
        os.kill(victim, signal.SIGKILL)
        assert eventually(lambda: dead(victim))  # the kernel has ended it (a run sent before would fail)
        assert_serves_normally(small)
        assert eventually(lambda: victim not in zygote_children(small))


def test_dead_zygote_is_restarted() -> None:
    with SandboxPool(1, caps=CAPS) as small:
        assert small._zygote is not None
        os.kill(small._zygote.process.pid, signal.SIGKILL)
        small._zygote.process.wait()
        time.sleep(0.3)  # under bubblewrap the whole pid namespace, idle worker included, goes down too
        for n in range(3):
            # The first run may still use the orphaned child; later ones need the new zygote.
            assert small.run(ECHO, {"n": n}, context={}).outputs["inputs"] == {"n": n}
        health = small.health()
        assert health["zygote_restarts"] == 1 and health["zygote_alive"]
        assert_serves_normally(small)


def test_close_kills_every_process() -> None:
    small = SandboxPool(2, caps=CAPS)
    small.start()
    outcome: list[BaseException] = []

    def spin() -> None:
        try:
            small.run("def run(i, c):\n    while True: pass\n", {}, context={})
        except BaseException as exc:
            outcome.append(exc)

    busy = threading.Thread(target=spin)
    busy.start()
    assert small._zygote is not None
    zygote = small._zygote.process
    assert eventually(lambda: len(zygote_children(small)) >= 2)  # the busy one and the spares
    children = zygote_children(small)
    small.close()
    busy.join(timeout=10)
    assert not busy.is_alive()
    assert len(outcome) == 1 and type(outcome[0]) is SandboxError
    assert zygote.poll() is not None
    for pid in children:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    with pytest.raises(SandboxError, match="closed"):
        small.run(ECHO, {}, context={})


def test_pool_starts_lazily_and_works_as_context_manager() -> None:
    lazy = SandboxPool(1, caps=CAPS)
    try:
        assert lazy.health()["started"] is False
        assert_serves_normally(lazy)
    finally:
        lazy.close()
