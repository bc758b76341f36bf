"""`b24robots demo`: the whole product on one machine in under a minute.

Starts, in this process and on real ports of 127.0.0.1, the portal simulator and our server (SQLite
in ./.b24robots-demo), installs the app into a simulated portal (ONAPPINSTALL -> our install endpoint
-> robots registered), runs both sample robots once, creates an admin user and prints the links:
the admin UI with a one-time login link, and the simulator page where robots can be started again.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from pydantic import SecretStr

from b24robots.cli.common import console, fail
from b24robots.config import Settings
from b24robots.demo.robots import DEAL_TOTAL, DEAL_TOTAL_SOURCE, INN_LOOKUP, INN_LOOKUP_SOURCE, router
from b24robots.errors import B24RobotsError
from b24robots.logs import setup_logging
from b24robots.robots.spec import RobotSpec
from b24robots.store.users import Users
from b24robots.testing import FakeOneCServer, PortalSimulator, SimulatorServer, automation
from b24robots.web.app import create_app
from b24robots.web.services import Services, build_services

MARKER = ".b24robots-demo"
OWN_FILES = {MARKER, "b24robots.db", "b24robots.db-wal", "b24robots.db-shm", "secret.key"}


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _prepare(directory: Path) -> None:
    """Start from a clean directory: the simulator forgets everything when it stops, so must we."""
    if directory.exists():
        names = {p.name for p in directory.iterdir()}
        if names and (MARKER not in names or names - OWN_FILES):
            fail(f"{directory} holds other files; pass --dir with an empty or a previous demo directory")
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / MARKER).write_text("created by `b24robots demo`; deleted by the next demo run\n")


class _Server:
    """Our app under uvicorn in a background thread."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="b24robots-demo-server", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise B24RobotsError("the b24robots server did not start; is the port free?")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


def _wait_sync(svc: Services, member_id: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inst = svc.installations.get(member_id)
        if inst.sync_status != "never":
            return inst.sync_error or "ok"
        time.sleep(0.1)
    return "the first sync did not finish in time"


DEMO_INN = "7701234567"


def demo(
    directory: Annotated[Path, typer.Option("--dir", help="data directory (re-created on every run)")] = Path(
        ".b24robots-demo"
    ),
    host: Annotated[str, typer.Option(help="interface for both servers (keep it on loopback)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port of b24robots; 0 = any free port")] = 0,
    sim_port: Annotated[int, typer.Option(help="port of the portal simulator; 0 = any free port")] = 0,
    exit_after_setup: Annotated[
        bool, typer.Option("--exit-after-setup", help="stop once everything is set up (for scripts and tests)")
    ] = False,
) -> None:
    """Try b24robots in a minute: a simulated Bitrix24 portal, our server, two sample robots and the admin UI."""
    setup_logging("WARNING")
    directory = directory.resolve()
    _prepare(directory)
    port = port or _free_port(host)
    public_url = f"http://{host}:{port}"

    sim = PortalSimulator()
    sim_server = SimulatorServer(sim, host=host, port=sim_port)
    sim_server.start()
    portal = sim.add_portal("demo.bitrix24.test")
    sim_app = sim.register_app("b24robots demo", install_url=f"{public_url}/b24/install")
    settings = Settings(
        data_dir=directory, public_url=public_url, client_id=sim_app.client_id,
        client_secret=SecretStr(sim_app.client_secret), allow_http_portals=True, oauth_servers=sim.oauth_url,
    )  # fmt: skip
    svc = build_services(settings, router)
    svc.register.save(RobotSpec.from_document(DEAL_TOTAL), DEAL_TOTAL_SOURCE, author="demo", comment="sample")
    # a fake 1C infobase with one counterparty, and the connection the stored INN lookup robot uses
    onec = FakeOneCServer(host=host)
    onec.start()
    onec.fake.add("Catalog_Контрагенты", Description="ООО Ромашка", ИНН=DEMO_INN)
    svc.connections.add(
        "buh", "1c", {"base_url": onec.base_url, "username": onec.fake.username}, {"password": onec.fake.password}
    )
    svc.register.save(RobotSpec.from_document(INN_LOOKUP), INN_LOOKUP_SOURCE, author="demo", comment="sample")
    server = _Server(create_app(services=svc), host, port)
    try:
        server.start()
        console.print(
            f"[green]✓[/green] portal simulator on {sim_server.base_url}, b24robots on {public_url}", soft_wrap=True
        )

        async def install_and_run() -> list[str]:
            await sim.install_app(sim_app, portal)
            result = await asyncio.to_thread(_wait_sync, svc, portal.member_id)
            lines = [f"installed on {portal.domain}; robots registered: {result}"]
            if 1 not in portal.deals:  # demo.inn_lookup writes to it
                portal.add_deal(TITLE="Order 1001", OPPORTUNITY="1200.00")
            for code, props in (
                ("demo.deal_total", {"amount": 1000, "vat_rate": "20"}),
                ("demo.discount", {"amount": 2500, "segment": "vip", "days": 14}),
                ("demo.inn_lookup", {"inn": DEMO_INN}),
            ):
                wf = await sim.start_robot(portal, code, properties=props)
                await wf.closed(timeout=30)
                values = ", ".join(f"{k}={v}" for k, v in wf.return_values.items())
                lines.append(f"ran {code} on DEAL_1 -> answered: {values}")
            lines.append(f"1C at {onec.base_url}; DEAL_1 comment now: {portal.deals[1].get('COMMENTS', '')}")
            lines += await fire_from_outside()
            return lines

        async def fire_from_outside() -> list[str]:
            """The way back: a back office fires the payment trigger over the inbound API."""
            import httpx

            deal = portal.deals.get(1) or portal.add_deal(TITLE="Order 1001", OPPORTUNITY="1200.00")
            automation.add_rule(sim, "demo.payment", portal=portal, stage="WON", robot="demo.discount",
                                properties={"amount": 1200, "segment": "wholesale"})  # fmt: skip
            inst = svc.installations.get(portal.member_id)
            _key, secret = svc.apikeys.create("demo back office", inst.id, triggers=["demo.payment"], created_by="demo")
            before = len(portal.workflows)
            async with httpx.AsyncClient(base_url=public_url, timeout=30) as client:
                resp = await client.post(
                    "/api/v1/triggers/demo.payment/fire",
                    json={"entity": f"DEAL_{deal['ID']}"},
                    headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": "demo-payment-1001"},
                )
                if resp.status_code != 202:
                    return [f"firing demo.payment failed: {resp.text}"]
                status = resp.json()
                deadline = time.monotonic() + 30
                while status["status"] == "pending" and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                    status = (await client.get(status["status_url"], headers={"X-API-Key": secret})).json()
            # the portal applies the rule after answering; the robot's workflow runs in the simulator's thread
            started: list[Any] = []
            while time.monotonic() < deadline:
                started = list(portal.workflows.values())[before:]
                if started and all(w.is_closed for w in started):
                    break
                await asyncio.sleep(0.1)
            answered = ", ".join(f"{k}={v}" for wf in started for k, v in wf.return_values.items())
            return [
                f"fired demo.payment on DEAL_{deal['ID']} over POST /api/v1/ -> {status['status']}; "
                f"deal stage {portal.deals[int(deal['ID'])]['STAGE_ID']}; demo.discount answered: {answered}",
                f"API key of the demo back office: {secret}",
            ]

        for line in asyncio.run(install_and_run()):
            console.print(f"[green]✓[/green] {line}", highlight=False, soft_wrap=True)
        users = Users(svc.db)
        users.create("admin", secrets.token_urlsafe(18))  # no one needs the password: sign in with links
        console.print()
        console.print(f"Admin UI:          {public_url}/admin/", highlight=False)
        console.print(
            f"One-time login:    {public_url}/admin/login/link/{users.issue_link_token('admin')}",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
        console.print(f"Portal simulator:  {sim_server.base_url}/sim/  (start robots from its form)", highlight=False)
        console.print(f"Data:              {directory}", highlight=False)
        console.print()
        if exit_after_setup:
            return
        console.print("Press Enter for a new one-time login link (each works once, for 10 minutes); Ctrl+C stops.")
        interactive = sys.stdin.isatty()
        while True:
            if interactive:
                if sys.stdin.readline() == "":
                    interactive = False
                    continue
                link = f"{public_url}/admin/login/link/{users.issue_link_token('admin')}"
                console.print(f"One-time login:    {link}", highlight=False, soft_wrap=True)
            else:
                time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping")
    except B24RobotsError as exc:
        fail(str(exc))
    finally:
        server.stop()
        sim_server.stop()
        onec.stop()
