"""Every bad use of a connection, from a module robot and from a stored robot, end to end.

Unknown or undeclared connection, wrong kind, no value for this portal, unreachable host, TLS failure,
4xx/5xx from the far side and an oversized answer: each run ends with a clear error in the robot's
log (what the workflow shows) and in the journal entry, the failed call (when one was made) is in
the journal of calls, and no message holds the secret. The far sides are real servers: an HTTP app
on a port, the same app over TLS with a certificate of a CA nobody trusts, a closed port.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from b24robots import Params, RobotContext, Router, String
from b24robots.robots.spec import RobotSpec
from b24robots.testing import LocalServer
from b24robots.testing.app_fixtures import RobotHarness
from tests.connections.support import SECRET, Echo, echo_server, make_ca

DECLARED = ["erp", "ghost", "down", "tls", "buh"]
router = Router()


class BadIn(Params):
    conn = String("Connection", required=True)
    accessor = String("Accessor", required=True)
    path = String("Path", required=True)


class Out(Params):
    status = String("Status")


@router.robot("bad.module", name="Bad use (module)", inputs=BadIn, outputs=Out, connections=DECLARED)
def bad_module(inputs: BadIn, ctx: RobotContext) -> Out:
    if inputs.accessor == "onec":
        ctx.onec(inputs.conn).list(inputs.path)
        return Out(status="listed")
    return Out(status=str(ctx.http(inputs.conn).get(inputs.path).status))


STORED_SOURCE = """
def run(inputs, ctx):
    if inputs["accessor"] == "onec":
        ctx.onec(inputs["conn"]).list(inputs["path"])
        return {"status": "listed"}
    return {"status": str(ctx.http(inputs["conn"]).get(inputs["path"]).status)}
"""
STORED = RobotSpec.from_document(
    {
        "code": "bad.stored",
        "name": "Bad use (stored)",
        "connections": DECLARED,
        "properties": {k: {"name": k, "required": "Y"} for k in ("conn", "accessor", "path")},
        "return_properties": {"status": {"name": "Status"}},
    }
)

# case -> (connection, accessor, path, message in the error, calls journaled)
CASES: dict[str, tuple[str, str, str, str, int]] = {
    "unknown": ("ghost", "http", "x", "'ghost': no such connection; add it on the Connections page", 0),
    "undeclared": ("erp2", "http", "echo", "does not declare this connection (it declares: erp, ghost, down", 0),
    "wrong kind": ("erp", "onec", "Catalog_X", "is a http connection; use ctx.http('erp'), not ctx.onec", 0),
    "no value for this portal": ("buh", "onec", "Catalog_X", "has no value for base_url for portal", 0),
    "unreachable host": ("down", "http", "x", "the server at http://127.0.0.1:9 cannot be reached", 1),
    "TLS failure": ("tls", "http", "echo", "failed: the certificate is not trusted; add the CA bundle", 1),
    "4xx": ("erp", "http", "status/404", "GET /api/status/404 answered 404: far side says 404", 1),
    "5xx": ("erp", "http", "status/503", "GET /api/status/503 answered 503: far side says 503", 1),
    "oversized answer": ("erp", "http", "big?n=50000", "the answer is larger than the cap of 5000 bytes", 1),
}


class FarSides:
    """The plain HTTP app and the same app over TLS with a certificate of an untrusted CA."""

    def __init__(self, plain: LocalServer, plain_seen: Echo, tls: LocalServer, tls_seen: Echo) -> None:
        self.plain, self.tls = plain.origin, tls.origin
        self.states = (plain_seen, tls_seen)

    def requests(self) -> int:
        return sum(len(s.seen) for s in self.states)


@pytest.fixture(scope="module")
def far_sides(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FarSides]:
    _, cert, key = make_ca(tmp_path_factory.mktemp("ca"))
    with echo_server() as (plain, plain_seen), echo_server(ssl_certfile=cert, ssl_keyfile=key) as (tls, tls_seen):
        assert tls.origin.startswith("https://")
        yield FarSides(plain, plain_seen, tls, tls_seen)


@pytest.fixture
async def harness(tmp_path: Path, far_sides: FarSides) -> AsyncIterator[RobotHarness]:
    plain, tls = far_sides.plain, far_sides.tls
    async with RobotHarness(router, data_dir=tmp_path / "srv") as h:
        h.svc.runner.rules = type(h.svc.runner.rules)(max_attempts=1)  # a retried error fails at once
        store = h.svc.connections
        bearer = {"auth": "bearer", "max_bytes": 5000}
        store.add("erp", "http", {"base_url": plain + "/api/", **bearer}, {"token": SECRET})
        store.add("erp2", "http", {"base_url": plain + "/api/", **bearer}, {"token": SECRET})
        store.add("down", "http", {"base_url": "http://127.0.0.1:9/", "auth": "bearer"}, {"token": SECRET})
        store.add("tls", "http", {"base_url": tls + "/api/", "auth": "bearer"}, {"token": SECRET})
        # a template whose base URL comes per portal, given only for another portal
        store.add("buh", "1c", {"username": "odata"}, {"password": SECRET})
        store.set("buh", {"base_url": plain + "/odata/standard.odata/"}, member_id="another-portal")
        h.svc.register.save(STORED, STORED_SOURCE, author="anna")
        await h.install()
        yield h


@pytest.mark.parametrize("robot", ["bad.module", "bad.stored"])
@pytest.mark.parametrize("case", list(CASES))
async def test_bad_use_is_a_clear_error_in_the_log_and_the_journal(
    harness: RobotHarness, far_sides: FarSides, robot: str, case: str
) -> None:
    conn, accessor, path, message, journaled = CASES[case]
    before = far_sides.requests()
    wf = await harness.run_robot(robot, properties={"conn": conn, "accessor": accessor, "path": path}, timeout=30)
    inv = harness.svc.journal.recent(robot=robot)[0]
    assert inv.state == "dead", (inv.state, inv.error)
    assert message in inv.error, inv.error
    assert any(message in e.message for e in wf.log), [e.message for e in wf.log]
    calls = harness.svc.connections.calls_for(inv.id)
    assert len(calls) == journaled and all(c.connection == conn and c.error for c in calls)
    if not journaled:  # refused before any request left the server
        assert far_sides.requests() == before
    kept = json.dumps([inv.__dict__, [c.__dict__ for c in calls], [e.message for e in wf.log]], default=str)
    assert SECRET not in kept and SECRET not in json.dumps(wf.return_values)
