"""The pytest plugin's fixtures, used exactly as a robot author would."""

from __future__ import annotations

import pytest

from b24robots import Double, Params, Router, Select
from b24robots.testing.app_fixtures import RobotHarness

router = Router()


class In(Params):
    amount = Double("Amount", required=True)
    segment = Select("Segment", options={"retail": "Retail", "vip": "VIP"}, default="retail")


class Out(Params):
    total = Double("Total")


@router.robot("plugin.discount", name="Discount", inputs=In, outputs=Out)
def discount(inputs: In) -> Out:
    return Out(total=inputs.amount * (0.9 if inputs.segment == "vip" else 1.0))


@pytest.fixture
def b24_router() -> Router:
    return router


async def test_b24_server_runs_the_authors_robot(b24_server: RobotHarness) -> None:
    wf = await b24_server.run_robot("plugin.discount", properties={"amount": 100, "segment": "vip"})
    assert float(wf.return_values["total"]) == 90.0
    assert b24_server.svc.journal.recent()[0].state == "delivered"


def test_b24_portal_fixture(b24_portal) -> None:  # type: ignore[no-untyped-def]
    assert len(b24_portal.portals) == 1 and len(b24_portal.apps) == 1
