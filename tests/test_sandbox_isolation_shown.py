"""The isolation level the sandbox reached is visible where operators look: /metrics (with its
token), /healthz details for operators only, and a warning banner on every admin page when it is
weaker than as root."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from pydantic import SecretStr

from b24robots.sandbox import SandboxPool
from b24robots.store.users import Users
from b24robots.testing.app_fixtures import RobotHarness
from tests.ui_helpers import PASSWORD, sign_in

SETTINGS = {"metrics_token": SecretStr("scrape"), "health_token": SecretStr("health-secret")}
SCRAPE = {"Authorization": "Bearer scrape"}


def gauge(text: str, name: str) -> list[tuple[str, float]]:
    return [(m[0], float(m[1])) for m in re.findall(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.M)]


async def test_the_isolation_level_and_its_warning_reach_metrics_and_the_admin_ui(tmp_path: Path) -> None:
    async with RobotHarness(data_dir=tmp_path, sandbox=True, settings=SETTINGS) as h:
        Users(h.svc.db).create("anna", PASSWORD)
        full = h.svc.sandbox
        assert full is not None and full.isolation_level != "unknown"
        async with h.client() as c:
            scraped = (await c.get("/metrics", headers=SCRAPE)).text
            [(labels, one)] = gauge(scraped, "b24robots_sandbox_isolation")
            assert f'level="{full.isolation_level}"' in labels and one == 1.0
            detail = full.health()["isolation_detail"]
            for flag in ("uid_per_worker", "pid_per_worker", "fs_per_worker", "root_per_worker"):
                assert f'{flag}="{str(bool(detail.get(flag))).lower()}"' in labels
            assert gauge(scraped, "b24robots_sandbox_isolation_degraded") == [
                ("", 1.0 if full.isolation_warning else 0.0)
            ]
            await sign_in(c)
            page = (await c.get("/admin/robots")).text
            assert ('id="sandbox-warning"' in page) == bool(full.isolation_warning)

            # the same server with a weaker pool: seccomp off (the test switch) is a degraded level anywhere
            weak = SandboxPool(1, seccomp=False)
            await asyncio.to_thread(weak.start)
            h.svc.sandbox = weak
            try:
                assert weak.isolation_warning and "seccomp is unavailable" in weak.isolation_warning
                public = await c.get("/healthz")
                assert public.json() == {"status": "ok"}  # the public learns nothing about isolation
                told = (await c.get("/healthz", headers={"Authorization": "Bearer health-secret"})).json()
                assert told["checks"]["sandbox"]["isolation_warning"] == weak.isolation_warning
                scraped = (await c.get("/metrics", headers=SCRAPE)).text
                assert gauge(scraped, "b24robots_sandbox_isolation_degraded") == [("", 1.0)]
                assert f'level="{weak.isolation_level}"' in scraped
                for path in ("/admin/robots", "/admin/portals", "/admin/journal"):
                    page = (await c.get(path)).text
                    banner = re.search(
                        r'<div class="flash warning" role="alert" id="sandbox-warning">(.*?)</div>', page
                    )
                    assert banner, path
                    assert weak.isolation_level in banner.group(1) and "seccomp is unavailable" in banner.group(1)
                await c.get("/admin/lang/ru", params={"next": "/admin/robots"})
                assert "Хранимые роботы работают с ослабленной изоляцией" in (await c.get("/admin/robots")).text
            finally:
                h.svc.sandbox = full
                await asyncio.to_thread(weak.close)
        async with h.client() as anonymous:
            login = (await anonymous.get("/admin/login")).text
            assert 'id="sandbox-warning"' not in login  # only signed-in admins see the detail
