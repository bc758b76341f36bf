"""Values as real portals send and read them, through the server and the simulator over HTTP:
dates in each portal's culture, raw wire values a workflow evaluates, and the culture override."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from b24robots import Date, DateTime, Double, Int, Params, RobotContext, Router, String, User
from b24robots.cli import app as cli
from b24robots.jobs import worker
from b24robots.testing import PortalSimulator
from b24robots.testing.app_fixtures import RobotHarness

router = Router()
seen: dict[str, Any] = {}


class DatesIn(Params):
    day = Date("Day")
    moment = DateTime("Moment")


class DatesOut(Params):
    day = Date("Day")
    moment = DateTime("Moment")
    stamp = DateTime("Stamp")
    next_day = Date("Next day")


@router.robot("vals.dates", name="Dates", inputs=DatesIn, outputs=DatesOut)
def dates(inputs: DatesIn, ctx: RobotContext) -> DatesOut:
    seen["day"], seen["moment"] = inputs.day, inputs.moment
    moment = inputs.moment
    aware = moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment
    return DatesOut(
        day=inputs.day,
        moment=aware,
        stamp=int(aware.timestamp()) if aware is not None else None,
        next_day=inputs.day + timedelta(days=1) if inputs.day else None,
    )


class RawIn(Params):
    amount = Int("Amount")
    price = Double("Price")
    who = User("Who")
    label = String("Label")


class RawOut(Params):
    amount = Int("Amount")


@router.robot("vals.raw", name="Raw", inputs=RawIn, outputs=RawOut)
def raw(inputs: RawIn, ctx: RobotContext) -> RawOut:
    seen["raw"] = inputs.as_dict()
    return RawOut(amount=inputs.amount)


async def _harness(tmp_path: Path, language: str, **settings: Any) -> RobotHarness:
    sim = PortalSimulator()
    sim.add_portal(language=language)
    h = RobotHarness(router, data_dir=tmp_path, sim=sim, sandbox=False, settings=settings)
    await h.__aenter__()
    await h.install()
    return h


@pytest.mark.parametrize("language", ["ru", "en", "fr"])
async def test_dates_round_trip_in_the_portal_culture(tmp_path: Path, language: str) -> None:
    h = await _harness(tmp_path, language)
    try:
        inst = h.svc.installations.get(h.portal.member_id)
        assert inst.language == language  # LANGUAGE_ID of ONAPPINSTALL
        seen.clear()
        # 5 June: on en portals the wire says 06/05/2024, on fr 05/06/2024, on ru 05.06.2024
        wf = await h.run_robot(
            "vals.dates", properties={"day": date(2024, 6, 5), "moment": datetime(2024, 6, 5, 14, 30, 0)}
        )
        sent = wf.properties
        expected_wire = {"ru": "05.06.2024", "en": "06/05/2024", "fr": "05/06/2024"}[language]
        assert sent["day"] == expected_wire
        assert seen == {"day": date(2024, 6, 5), "moment": datetime(2024, 6, 5, 14, 30)}
        rv = wf.return_values
        # the portal read every output as a date, whatever its culture
        assert rv["day"] == date(2024, 6, 5)
        assert rv["next_day"] == date(2024, 6, 6)
        assert rv["moment"] == datetime(2024, 6, 5, 14, 30, tzinfo=UTC)
        assert rv["stamp"] == datetime(2024, 6, 5, 14, 30, tzinfo=UTC)
    finally:
        await h.__aexit__(None, None, None)


async def test_ambiguous_date_is_refused_until_the_culture_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the CLI below is another process on SQLite: the intake sees its change when its cache entry
    # runs out (B24R_CACHE_SECONDS, store/cache.py); 0 makes that at once
    h = await _harness(tmp_path, "ru", cache_seconds=0)
    env = {
        "B24R_DATA_DIR": str(tmp_path),
        "B24R_SECRET_KEY": "test-secret-key",
        "B24R_ALLOW_HTTP_PORTALS": "true",
        "B24R_PUBLIC_URL": "http://robots.example.test",
        "B24R_CLIENT_ID": h.app.client_id,
        "B24R_CLIENT_SECRET": h.app.client_secret,
        "B24R_APP": "tests.test_values_e2e:router",
        "COLUMNS": "200",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    runner = CliRunner()
    monkeypatch.setattr(worker, "PORTAL_CACHE_SECONDS", 0.0)  # the worker re-reads the installation at once
    try:
        wf = await h.run_robot("vals.dates", properties_raw={"day": "05/06/2024"})
        inv = h.svc.journal.recent(robot="vals.dates")[0]
        assert inv.state == "dead" and "ambiguous" in (inv.error or "")
        assert any("ambiguous" in e.message for e in wf.log)  # the workflow log says why
        bad = await asyncio.to_thread(runner.invoke, cli, ["installations", "culture", h.portal.domain, "xx"])
        assert bad.exit_code == 2 and "unknown culture 'xx'" in bad.output and "Traceback" not in bad.output
        done = await asyncio.to_thread(runner.invoke, cli, ["installations", "culture", h.portal.domain, "fr"])
        assert done.exit_code == 0, done.output
        assert "DD/MM/YYYY" in done.output and "override" in done.output
        seen.clear()
        wf = await h.run_robot("vals.dates", properties_raw={"day": "05/06/2024"})
        assert seen["day"] == date(2024, 6, 5)
        assert wf.return_values["day"] == date(2024, 6, 5)
    finally:
        await h.__aexit__(None, None, None)


async def test_raw_inputs_are_read_leniently_and_the_run_log_says_so(tmp_path: Path) -> None:
    h = await _harness(tmp_path, "en")
    try:
        seen.clear()
        wf = await h.run_robot(
            "vals.raw",
            properties_raw={"amount": ["1500.50"], "price": "1 234,5", "who": ["user_7"], "label": ["x"]},
        )
        assert seen["raw"] == {"amount": 1500, "price": 1234.5, "who": 7, "label": "x"}
        assert wf.return_values["amount"] == 1500
        warned = [e for e in wf.log if "1500.50" in e.message]
        assert warned and "used 1500" in warned[0].message
        inv = h.svc.journal.recent(robot="vals.raw")[0]
        assert inv.state == "delivered" and any("1500.50" in line for line in inv.log)
    finally:
        await h.__aexit__(None, None, None)


async def test_unclear_number_is_refused_with_a_reason(tmp_path: Path) -> None:
    h = await _harness(tmp_path, "en")
    try:
        wf = await h.run_robot("vals.raw", properties_raw={"amount": "1,500"})
        inv = h.svc.journal.recent(robot="vals.raw")[0]
        assert inv.state == "dead" and "unclear" in (inv.error or "")
        assert any("unclear" in e.message for e in wf.log)
    finally:
        await h.__aexit__(None, None, None)
