"""Browser fixtures: our server and the portal simulator on real ports of 127.0.0.1, and Debian chromium.

pytest-playwright's own fixtures would download a browser; these launch the system chromium instead.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pydantic import SecretStr

from b24robots import Double, Params, RobotContext, Router, String
from b24robots.config import Settings
from b24robots.store.users import Users
from b24robots.testing import PortalSimulator, SimulatorServer
from b24robots.testing.model import Portal
from b24robots.web.app import create_app
from b24robots.web.services import Services, build_services
from tests.ui_helpers import PASSWORD

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip
# Test runs keep their screenshots in an ignored folder; `python scripts/screenshots.py` points this at docs/.
SCREENSHOTS = Path(
    os.environ.get("B24R_SCREENSHOTS_DIR") or Path(__file__).resolve().parents[2] / ".test-artifacts" / "screenshots"
)

router = Router()
router.trigger("demo.paid", name={"en": "Payment received", "ru": "Оплата получена"})


class QuoteIn(Params):
    amount = Double({"en": "Amount", "ru": "Сумма"}, required=True)


class QuoteOut(Params):
    text = String({"en": "Quote text", "ru": "Текст предложения"})


@router.robot("demo.quote", name={"en": "Quote text", "ru": "Текст предложения"}, inputs=QuoteIn, outputs=QuoteOut)
def quote(inputs: QuoteIn, ctx: RobotContext) -> QuoteOut:
    ctx.log(f"quote for {ctx.document_id[2]}")
    return QuoteOut(text=f"Offer: {inputs.amount:.2f}")


@dataclass
class Live:
    url: str
    sim_url: str
    sim: PortalSimulator
    portal: Portal
    svc: Services


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_in_own_loop(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine to completion on a fresh event loop in a helper thread (independent of fixture order)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(make())
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=60)
    if "error" in box:
        raise box["error"]
    assert not thread.is_alive(), "the coroutine did not finish in 60 s"
    return box.get("result")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    sim = PortalSimulator()
    sim_server = SimulatorServer(sim)
    sim_server.start()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    portal = sim.add_portal("shop.bitrix24.test")
    app = sim.register_app("b24robots", install_url=f"{url}/b24/install")
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("ui"), public_url=url, client_id=app.client_id,
        client_secret=SecretStr(app.client_secret), secret_key=SecretStr("ui-test-key"), allow_http_portals=True,
        oauth_servers=sim.oauth_url,
    )  # fmt: skip
    svc = build_services(settings, router)
    server = uvicorn.Server(uvicorn.Config(create_app(services=svc), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "our server did not start"
        time.sleep(0.05)
    # Its own thread and loop: the sync Playwright fixture may already run a loop in this thread.
    _run_in_own_loop(lambda: sim.install_app(app, portal))
    while svc.installations.get(portal.member_id).sync_status == "never":
        assert time.monotonic() < deadline, "the first sync did not finish"
        time.sleep(0.05)
    Users(svc.db).create("anna", PASSWORD)
    try:
        yield Live(url=url, sim_url=sim_server.base_url, sim=sim, portal=portal, svc=svc)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sim_server.stop()


@pytest.fixture(scope="module")
def chrome() -> Iterator[Any]:
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; scripts/test.sh installs the Debian chromium package")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chrome: Any, live: Live) -> Iterator[Any]:
    # bypass_csp only lets the test evaluate expressions; the pages themselves run under the strict policy
    context = chrome.new_context(viewport={"width": 1360, "height": 900}, locale="en-US", bypass_csp=True)
    context.set_default_timeout(15_000)
    pg = context.new_page()
    try:
        yield pg
    finally:
        context.close()


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
