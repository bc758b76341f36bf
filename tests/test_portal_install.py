"""Install, openings, update, uninstall and trust as a real portal performs them (b24robots.portal).

Every request goes over HTTP into the running ASGI app; the simulator plays the portal and, separately,
the OAuth server (its app.info is the only one with client_id, as on oauth.bitrix.info).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from b24robots import Params, Router, String
from b24robots.inbound.formcodec import encode_form
from b24robots.testing.app_fixtures import RobotHarness

router = Router()


class In(Params):
    text = String("Text")


@router.robot("p.echo", name="Echo", inputs=In)
def echo(text: str) -> None: ...


def harness(tmp_path: Path, **kwargs: Any) -> RobotHarness:
    return RobotHarness(router, data_dir=tmp_path, sandbox=False, **kwargs)


def event_body(h: RobotHarness, event: str, auth: dict[str, str]) -> bytes:
    return encode_form({"event": event, "data": {"LANGUAGE_ID": "en"}, "ts": str(int(time.time())), "auth": auth})


def robot_call_body(h: RobotHarness, *, domain: str, app_token: str, token: str = "t-1") -> bytes:
    return encode_form(
        {
            "event_token": token,
            "workflow_id": "wf1",
            "code": "p.echo",
            "document_id": ["crm", "CCrmDocumentDeal", "DEAL_1"],
            "document_type": ["crm", "CCrmDocumentDeal", "DEAL"],
            "properties": {"text": "hi"},
            "use_subscription": "N",
            "auth": {"domain": domain, "member_id": h.portal.member_id, "application_token": app_token},
        }
    )


async def post(h: RobotHarness, path: str, body: bytes) -> httpx.Response:
    async with h.client() as client:
        return await client.post(path, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})


async def test_takeover_with_a_victims_member_id_is_refused_and_the_victim_keeps_working(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await h.install()
        before = h.svc.installations.get(h.portal.member_id)
        # the attacker has our app installed on a portal of their own: valid tokens, but not the victim's
        evil = h.sim.add_portal("evil.example.test")
        await h.sim.install_app(h.app, evil, notify=False)
        pair = h.sim.issue_tokens(h.app, evil)
        forged = {
            "access_token": pair.access_token,
            "refresh_token": pair.refresh_token,
            "expires_in": "3600",
            "domain": "evil.example.test",
            "member_id": h.portal.member_id,  # the victim's
            "application_token": "attacker-token",
            "client_endpoint": "https://evil.example.test/rest/",
        }
        for server_endpoint, status in (("https://evil.example.test/rest/", 400), ("", 403)):
            auth = forged | ({"server_endpoint": server_endpoint} if server_endpoint else {})
            for path in ("/b24/install", "/b24/events"):
                for event in ("ONAPPINSTALL", "ONAPPUPDATE"):
                    resp = await post(h, path, event_body(h, event, auth))
                    assert resp.status_code == status, (path, event, resp.text)
        # a frame POST with the victim's member_id and the attacker's token
        frame = {"AUTH_ID": pair.access_token, "REFRESH_ID": pair.refresh_token, "member_id": h.portal.member_id}
        resp = await post(h, "/b24/install?DOMAIN=evil.example.test&PROTOCOL=1", encode_form(frame))
        assert resp.status_code == 403 and "member_id" in resp.json()["reason"]
        after = h.svc.installations.get(h.portal.member_id)
        assert (after.domain, after.client_endpoint, after.token_version) == (
            before.domain,
            before.client_endpoint,
            before.token_version,
        )
        # robot calls with the forged application token are refused; the victim's calls keep working
        resp = await post(h, "/b24/robot", robot_call_body(h, domain=h.portal.domain, app_token="attacker-token"))
        assert resp.status_code == 403
        wf = await h.run_robot("p.echo", properties={"text": "still mine"})
        assert wf.delivery is not None and wf.delivery.status_code == 200


async def test_installs_are_refused_without_a_client_id_naming_the_setting(tmp_path: Path) -> None:
    async with harness(tmp_path, settings={"client_id": ""}) as h:
        await h.sim.install_app(h.app, h.portal)
        delivery = h.sim.deliveries[-1]
        assert delivery.status_code == 503 and "B24R_CLIENT_ID" in delivery.response_text
        assert h.svc.installations.all() == []


async def test_an_oauth_server_outside_the_list_is_never_asked(tmp_path: Path) -> None:
    # the simulator's OAuth server is not trusted here: nothing confirms the grant, nothing is stored
    async with harness(tmp_path, settings={"oauth_servers": "https://oauth.bitrix.info"}) as h:
        await h.sim.install_app(h.app, h.portal)
        assert h.sim.deliveries[-1].status_code == 400
        assert "B24R_OAUTH_SERVERS" in h.sim.deliveries[-1].response_text
        assert h.svc.installations.all() == []


async def test_ui_app_install_with_the_real_frame_fields_binds_events_and_learns_the_token(tmp_path: Path) -> None:
    async with harness(tmp_path, api_only=False) as h:
        await h.install()
        frame = next(d for d in h.sim.deliveries if d.kind == "install")
        assert b"APPLICATION_TOKEN" not in frame.body and b"SERVER_ENDPOINT" not in frame.body
        assert frame.status_code == 200 and "BX24.installFinish" in frame.response_text
        inst = h.sim.installation(h.app, h.portal)
        events_url = "http://robots.example.test/b24/events"
        assert sorted(inst.handlers) == [(e, events_url, 0) for e in ("ONAPPINSTALL", "ONAPPUNINSTALL", "ONAPPUPDATE")]
        install_event = next(d for d in h.sim.deliveries if d.kind == "ONAPPINSTALL")
        assert install_event.url == events_url and install_event.status_code == 200
        stored = h.svc.installations.get(h.portal.member_id)
        assert stored.active and stored.has_application_token and stored.domain == h.portal.domain
        assert stored.server_endpoint == h.sim.server_endpoint
        wf = await h.run_robot("p.echo", properties={"text": "hello"})
        assert wf.delivery is not None and wf.delivery.status_code == 200


async def test_newer_frame_fields_are_accepted_too(tmp_path: Path) -> None:
    async with harness(tmp_path, api_only=False) as h:
        await h.sim.install_app(h.app, h.portal, finish=False, newer_frame_fields=True)
        await h.svc.wait_syncs()
        stored = h.svc.installations.get(h.portal.member_id)
        assert stored.has_application_token  # APPLICATION_TOKEN of a newer portal, confirmed with its AUTH_ID


async def test_opening_the_app_keeps_the_admins_tokens_and_registrations(tmp_path: Path) -> None:
    async with harness(tmp_path, api_only=False) as h:
        await h.install()
        before = h.svc.installations.get(h.portal.member_id)
        adds = sum(1 for c in h.sim.calls if c.method == "bizproc.robot.add")
        delivery = await h.sim.open_app(h.app, h.portal, user_id=2)  # a user who is not an admin
        await h.svc.wait_syncs()
        assert delivery.status_code == 200 and "p.echo" in delivery.response_text
        assert "installFinish" not in delivery.response_text
        after = h.svc.installations.get(h.portal.member_id)
        assert after.token_version == before.token_version
        assert set(h.svc.registrations.of(h.portal.member_id)) == {"p.echo"}
        assert sum(1 for c in h.sim.calls if c.method == "bizproc.robot.add") == adds
        assert [r.code for r in h.portal.registrations.values()] == ["p.echo"]


async def test_events_are_bound_once_and_an_update_re_registers_with_its_new_token(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await h.install()
        inst = h.sim.installation(h.app, h.portal)
        old_token = inst.application_token
        assert len(inst.handlers) == 3
        await h.sim.update_app(h.app, h.portal, new_application_token=True)
        await h.svc.wait_syncs()
        assert len(inst.handlers) == 3  # event.get first: nothing bound twice
        update = next(d for d in h.sim.deliveries if d.kind == "ONAPPUPDATE")
        assert update.status_code == 200
        assert [r.code for r in h.portal.registrations.values()] == ["p.echo"]  # the update deleted it; re-added
        resp = await post(h, "/b24/robot", robot_call_body(h, domain=h.portal.domain, app_token=old_token))
        assert resp.status_code == 403
        wf = await h.run_robot("p.echo", properties={"text": "after update"})
        assert wf.delivery is not None and wf.delivery.status_code == 200


async def test_a_late_onappinstall_with_an_expired_token_is_refreshed_and_installed(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await h.sim.install_app(h.app, h.portal, late=True)
        await h.svc.wait_syncs()
        delivery = next(d for d in h.sim.deliveries if d.kind == "ONAPPINSTALL")
        assert delivery.status_code == 200, delivery.response_text
        stored = h.svc.installations.get(h.portal.member_id)
        assert stored.active and stored.expires_at > time.time()
        assert [r.code for r in h.portal.registrations.values()] == ["p.echo"]


async def test_a_renamed_portal_keeps_its_robot_calls(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await h.install()
        h.sim.rename_portal(h.portal, "renamed.bitrix24.test")
        wf = await h.run_robot("p.echo", properties={"text": "new name"})
        assert wf.delivery is not None and wf.delivery.status_code == 200
        assert h.svc.installations.get(h.portal.member_id).domain == "renamed.bitrix24.test"


async def test_an_on_premise_portal_on_a_non_standard_port_installs(tmp_path: Path) -> None:
    from b24robots.testing.simulator import PortalSimulator

    sim = PortalSimulator()
    sim.add_portal("crm.example.local:8443")
    async with harness(tmp_path, sim=sim) as h:
        await h.install()
        stored = h.svc.installations.get(h.portal.member_id)
        assert stored.domain == "crm.example.local:8443"
        wf = await h.run_robot("p.echo", properties={"text": "port"})
        assert wf.delivery is not None and wf.delivery.status_code == 200


async def test_uninstall_is_proven_by_the_application_token_and_clean_deletes_the_data(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await h.install()
        await h.run_robot("p.echo", properties={"text": "x"})
        assert h.svc.journal.recent(limit=10)
        inst = h.sim.installation(h.app, h.portal)
        forged = {"domain": h.portal.domain, "member_id": h.portal.member_id, "application_token": "wrong"}
        resp = await post(h, "/b24/events", event_body(h, "ONAPPUNINSTALL", forged))
        assert resp.status_code == 403 and h.svc.installations.get(h.portal.member_id).active
        await h.sim.uninstall_app(h.app, h.portal, clean=True)
        delivery = next(d for d in h.sim.deliveries if d.kind == "ONAPPUNINSTALL")
        assert delivery.status_code == 200 and inst.handlers == []
        assert h.svc.installations.get(h.portal.member_id).status == "uninstalled"
        assert h.svc.journal.recent(limit=10) == []


async def test_uninstall_without_clean_keeps_the_journal(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await h.install()
        await h.run_robot("p.echo", properties={"text": "x"})
        await h.sim.uninstall_app(h.app, h.portal, clean=False)
        assert h.svc.installations.get(h.portal.member_id).status == "uninstalled"
        assert len(h.svc.journal.recent(limit=10)) == 1


async def test_enterprise_plans_get_their_limits_unless_set_by_hand(tmp_path: Path) -> None:
    from b24robots.testing.simulator import PortalSimulator

    sim = PortalSimulator()
    sim.add_portal("big.bitrix24.test", license_type="ent250")
    async with harness(tmp_path, sim=sim, workers=False) as h:
        await h.install()
        stored = h.svc.installations.get(h.portal.member_id)
        assert (stored.rate, stored.burst, stored.license, stored.language) == (5.0, 250, "ent", "en")
        h.svc.installations.set_limits(h.portal.member_id, 3.0, 100)
        await h.sim.update_app(h.app, h.portal)
        await h.svc.wait_syncs()
        stored = h.svc.installations.get(h.portal.member_id)
        assert (stored.rate, stored.burst) == (3.0, 100)


async def test_a_standard_plan_keeps_the_standard_limits(tmp_path: Path) -> None:
    async with harness(tmp_path, workers=False) as h:
        await h.install()
        stored = h.svc.installations.get(h.portal.member_id)
        assert (stored.rate, stored.burst, stored.license) == (2.0, 50, "project")


# -- the registrations ledger after an install or update -------------------------------------------
# The portal deletes an app's robots on every install and update (bizproc lib/restservice.php::
# onRestAppUpdate; a re-install starts from nothing), so what we recorded as registered must go
# at once: with the portal refusing bizproc.robot.add, the ledger must not claim a robot it lost.


def refuse_robot_adds(h: RobotHarness) -> None:
    h.sim.faults.fail_next(1000, method="bizproc.robot.add")


async def test_an_update_forgets_the_registrations_it_deleted(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await h.install()
        assert set(h.svc.registrations.of(h.portal.member_id)) == {"p.echo"}
        refuse_robot_adds(h)
        await h.sim.update_app(h.app, h.portal)
        await h.svc.wait_syncs()
        assert h.portal.registrations == {}  # the update deleted it and the re-add was refused
        assert h.svc.registrations.of(h.portal.member_id) == {}


async def test_a_reinstall_with_a_new_token_forgets_the_old_registrations(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await h.install()
        refuse_robot_adds(h)
        await h.sim.install_app(h.app, h.portal)  # installed again over the live install
        await h.svc.wait_syncs()
        assert h.svc.registrations.of(h.portal.member_id) == {}


async def test_a_frame_install_forgets_the_old_registrations(tmp_path: Path) -> None:
    async with harness(tmp_path, api_only=False) as h:
        await h.install()
        assert set(h.svc.registrations.of(h.portal.member_id)) == {"p.echo"}
        refuse_robot_adds(h)
        # the admin installs again; until BX24.installFinish() only the frame POST has come
        await h.sim.install_app(h.app, h.portal, finish=False)
        await h.svc.wait_syncs()
        assert h.svc.registrations.of(h.portal.member_id) == {}


async def test_a_reinstall_after_uninstall_with_the_same_token_is_stored(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await h.install()
        token = h.sim.installation(h.app, h.portal).application_token
        await h.sim.uninstall_app(h.app, h.portal)
        assert h.svc.installations.get(h.portal.member_id).status == "uninstalled"
        await h.sim.install_app(h.app, h.portal, application_token=token)
        await h.svc.wait_syncs()
        assert h.svc.installations.get(h.portal.member_id).active
        wf = await h.run_robot("p.echo", properties={"text": "back"})
        assert wf.delivery is not None and wf.delivery.status_code == 200  # the call is ours again
