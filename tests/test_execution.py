"""One execution's verdict (jobs/execution.py), as the runner and the test run both read it."""

from __future__ import annotations

from typing import Any

import pytest

from b24robots import Int, Params
from b24robots.errors import (
    ConnectionNotAvailable,
    InputError,
    RemoteError,
    SandboxError,
    SandboxLimitExceeded,
    StoredCodeError,
)
from b24robots.jobs.execution import Verdict, execute
from b24robots.robots.context import RobotContext
from b24robots.robots.signals import Retry, RobotFailure


class Out(Params):
    n = Int("N", required=True)


OUT = Out.params()  # the declaration, as `RobotSpec.outputs` holds it


def ctx() -> RobotContext:
    return RobotContext(
        portal="p.example",
        member_id="m",
        code="x",
        workflow_id="w",
        document_id=["crm", "CCrmDocumentDeal", "DEAL_1"],
        document_type=["crm", "CCrmDocumentDeal", "DEAL"],
        event_token="t",
    )


def raising(exc: BaseException) -> Any:
    async def call() -> dict[str, Any]:
        raise exc

    return call


async def returning(value: dict[str, Any]) -> dict[str, Any]:
    return value


async def test_outputs_that_fit_are_ok_and_dumped() -> None:
    done = await execute(lambda: returning({"n": 5}), OUT, ctx())
    assert (done.verdict, done.outputs, done.error) == (Verdict.OK, {"n": "5"}, None)


async def test_outputs_that_do_not_fit_are_bad_outputs() -> None:
    done = await execute(lambda: returning({"n": "many"}), OUT, ctx())
    assert done.verdict is Verdict.BAD_OUTPUTS and isinstance(done.error, InputError)


async def test_a_business_failure_keeps_its_message_and_the_outputs_that_fit() -> None:
    done = await execute(raising(RobotFailure("no stock", {"n": 2})), OUT, ctx())
    assert (done.verdict, done.message, done.outputs) == (Verdict.FAILURE, "no stock", {"n": "2"})
    bad = await execute(raising(RobotFailure("no stock", {"n": "many"})), OUT, ctx())
    assert bad.verdict is Verdict.FAILURE and bad.outputs == {}


async def test_a_retry_carries_its_delay() -> None:
    done = await execute(raising(Retry(12.5, "busy")), OUT, ctx())
    assert done.verdict is Verdict.RETRY and done.delay == 12.5


@pytest.mark.parametrize(
    ("exc", "permanent"),
    [
        (RemoteError("erp", "503 Service Unavailable", status=503), False),
        (RemoteError("erp", "404 Not Found", status=404), True),
        (ConnectionNotAvailable("erp", "not declared"), True),
    ],
)
async def test_a_connection_failure_says_whether_it_can_pass(exc: Any, permanent: bool) -> None:
    done = await execute(raising(exc), OUT, ctx())
    assert done.verdict is Verdict.CONNECTION and done.connection is exc and done.permanent is permanent


async def test_limits_stored_code_errors_and_anything_else() -> None:
    limit = await execute(raising(SandboxLimitExceeded("timeout", "ran 2 s")), OUT, ctx())
    assert limit.verdict is Verdict.LIMIT and limit.message == "stopped by the timeout limit: ran 2 s"
    stored = await execute(raising(StoredCodeError("ZeroDivisionError: x", "line 3")), OUT, ctx())
    assert (stored.verdict, stored.message, stored.traceback) == (Verdict.ERROR, "ZeroDivisionError: x", "line 3")
    ours = await execute(raising(SandboxError("pool closed")), OUT, ctx())
    assert (ours.verdict, ours.message) == (Verdict.ERROR, "SandboxError: pool closed")
    user = await execute(raising(KeyError("k")), OUT, ctx())
    assert user.verdict is Verdict.ERROR and user.message == "KeyError: 'k'" and "KeyError" in user.traceback
