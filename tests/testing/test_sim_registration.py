"""bizproc.robot.* / bizproc.activity.*: every rule and every error row of §1.7."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from b24robots.testing.registration import internal_code, prepare_activity_data

Env = Any


async def expect_error(env: Env, method: str, params: dict[str, Any], status: int, code: str, text: str, **kw: Any):
    response = await env.rest(method, params, **kw)
    assert response.status_code == status, response.text
    assert response.json() == {"error": code, "error_description": text}  # exactly two keys, no time block


async def test_add_stores_normalised_registration_and_list_returns_codes(
    env: Env, robot: Callable[..., dict[str, Any]]
) -> None:
    assert await env.ok("bizproc.robot.add", robot()) is True
    row = env.portal.registrations[internal_code(env.app.client_id, "send_sms")]
    assert row.is_robot and row.handler == "https://app.example.test/robot" and row.auth_user_id == 1
    assert row.name == {"EN": "Send SMS", "DE": "SMS senden"}  # localized map keys upper-cased
    # property codes and option keys keep their case, property attributes are upper-cased
    assert row.properties["channel"] == {
        "NAME": "Channel",
        "TYPE": "select",
        "OPTIONS": {"sms": "SMS", "wa": "WhatsApp"},
        "DEFAULT": "sms",
    }
    assert set(row.return_properties) == {"message_id", "ok", "count"}
    assert await env.ok("bizproc.robot.list") == ["send_sms"]
    assert await env.ok("bizproc.activity.list") == []


async def test_top_level_keys_any_case_and_plain_name_stored_as_star(env: Env) -> None:
    params = {"code": "lower_case", "Handler": "https://app.example.test/h", "name": "Plain"}
    assert await env.ok("bizproc.activity.add", params) is True
    row = env.portal.registrations[internal_code(env.app.client_id, "lower_case")]
    assert row.name == {"*": "Plain"} and not row.is_robot
    assert row.localized_name("de") == "Plain"


def test_prepare_activity_data_keeps_case_of_property_codes_and_option_keys() -> None:
    data = prepare_activity_data(
        {
            "properties": {"myProp": {"name": {"en": "x"}, "options": {"keyA": "A"}}},
            "return_properties": {"Out": {}},
        }
    )
    assert data == {
        "PROPERTIES": {"myProp": {"NAME": {"EN": "x"}, "OPTIONS": {"keyA": "A"}}},
        "RETURN_PROPERTIES": {"Out": {}},
    }


async def test_add_accepts_form_body_and_query_string(env: Env, robot: Callable[..., dict[str, Any]]) -> None:
    assert (await env.rest("bizproc.robot.add", robot(), form=True)).json()["result"] is True
    response = await env.client.get("/rest/bizproc.robot.list.json", params={"auth": env.admin.access_token})
    assert response.json()["result"] == ["send_sms"]


@pytest.mark.parametrize("how", ["access_token", "bearer"])
async def test_token_in_access_token_param_or_bearer_header(env: Env, how: str) -> None:
    if how == "access_token":
        response = await env.client.post("/rest/bizproc.robot.list", json={"access_token": env.admin.access_token})
    else:
        response = await env.client.post(
            "/rest/bizproc.robot.list", headers={"Authorization": f"Bearer {env.admin.access_token}"}
        )
    assert response.status_code == 200 and response.json()["result"] == []


async def test_non_admin_is_refused(env: Env, robot: Callable[..., dict[str, Any]]) -> None:
    await expect_error(
        env, "bizproc.robot.add", robot(), 403, "ACCESS_DENIED", "Access denied!", token=env.user.access_token
    )


async def test_webhook_has_no_application_context(env: Env, robot: Callable[..., dict[str, Any]]) -> None:
    hook = env.sim.add_webhook(env.portal, user_id=1)
    response = await env.client.post(f"/rest/{hook.user_id}/{hook.secret}/bizproc.robot.add.json", json=robot())
    assert response.status_code == 403
    assert response.json() == {
        "error": "ACCESS_DENIED",
        "error_description": "Access denied! Application context required",
    }


async def test_empty_data(env: Env) -> None:
    await expect_error(env, "bizproc.robot.add", {}, 400, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Empty data!")


@pytest.mark.parametrize(
    ("changes", "code", "text"),
    [
        ({"CODE": None}, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Empty activity code!"),
        ({"CODE": "bad code!"}, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Wrong activity code!"),
        (
            {"HANDLER": "ftp://app.example.test/robot"},
            "ERROR_UNSUPPORTED_PROTOCOL",
            "Unsupported handler protocol",
        ),
        (
            {"HANDLER": "HTTPS://app.example.test/robot"},
            "ERROR_UNSUPPORTED_PROTOCOL",
            "Unsupported handler protocol",
        ),
        ({"HANDLER": "http://localhost:8000/robot"}, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL"),
        ({"HANDLER": "https://.example.test/robot"}, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL"),
        ({"HANDLER": "not a url"}, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL"),
        ({"HANDLER": None}, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL"),
        ({"NAME": None}, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Empty activity NAME!"),
        ({"PROPERTIES": "x"}, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Wrong properties array!"),
        (
            {"PROPERTIES": {"1abc": {"Name": "x"}}},
            "ERROR_ACTIVITY_VALIDATION_FAILURE",
            "Wrong property key (1abc)!",
        ),
        ({"PROPERTIES": [{"Name": "x"}]}, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Wrong property key (0)!"),
        (
            {"PROPERTIES": {"a": {"Type": "string"}}},
            "ERROR_ACTIVITY_VALIDATION_FAILURE",
            "Empty property NAME (a)!",
        ),
        ({"RETURN_PROPERTIES": 5}, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Wrong properties array!"),
        (
            {"DOCUMENT_TYPE": ["crm", "Nope", "DEAL"]},
            "ERROR_ACTIVITY_VALIDATION_FAILURE",
            "Wrong activity DOCUMENT_TYPE!",
        ),
        ({"FILTER": "b24"}, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Wrong activity FILTER!"),
        ({"CODE": "x" * 129}, "ERROR_ACTIVITY_ADD_FAILURE", "Activity save error!"),
    ],
)
async def test_validation_errors(
    env: Env, changes: dict[str, Any], code: str, text: str, robot: Callable[..., dict[str, Any]]
) -> None:
    await expect_error(env, "bizproc.robot.add", robot(**changes), 400, code, text)
    assert env.portal.registrations == {}


async def test_handler_on_an_ip_address_passes_the_dot_rule(env: Env, robot: Callable[..., dict[str, Any]]) -> None:
    assert await env.ok("bizproc.robot.add", robot(HANDLER="http://127.0.0.1:8000/robot")) is True


async def test_validation_order_differs_between_robot_and_activity(
    env: Env, robot: Callable[..., dict[str, Any]]
) -> None:
    bad = robot(DOCUMENT_TYPE=["x", "y", "z"], RETURN_PROPERTIES="bad")
    await expect_error(
        env,
        "bizproc.robot.add",
        bad,
        400,
        "ERROR_ACTIVITY_VALIDATION_FAILURE",
        "Wrong activity DOCUMENT_TYPE!",
    )
    await expect_error(
        env, "bizproc.activity.add", bad, 400, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Wrong properties array!"
    )


async def test_duplicate_code_across_robots_and_activities_of_one_app(
    env: Env, robot: Callable[..., dict[str, Any]]
) -> None:
    assert await env.ok("bizproc.robot.add", robot()) is True
    text = "Activity or Robot already installed!"
    await expect_error(env, "bizproc.robot.add", robot(), 400, "ERROR_ACTIVITY_ALREADY_INSTALLED", text)
    await expect_error(env, "bizproc.activity.add", robot(), 400, "ERROR_ACTIVITY_ALREADY_INSTALLED", text)


async def test_code_is_unique_per_application_not_per_portal(env: Env, robot: Callable[..., dict[str, Any]]) -> None:
    other = env.sim.register_app("Other")
    await env.sim.install_app(other, env.portal, notify=False)
    other_token = env.sim.issue_tokens(other, env.portal).access_token
    assert await env.ok("bizproc.robot.add", robot()) is True
    assert await env.ok("bizproc.robot.add", robot(), token=other_token) is True
    assert await env.ok("bizproc.robot.list", token=other_token) == ["send_sms"]
    assert len(env.portal.registrations) == 2


async def test_update_replaces_fields_and_is_filtered_by_kind(env: Env, robot: Callable[..., dict[str, Any]]) -> None:
    await env.ok("bizproc.robot.add", robot())
    new_props = {"text": {"Name": "Text"}}
    assert (
        await env.ok("bizproc.robot.update", {"CODE": "send_sms", "FIELDS": {"PROPERTIES": new_props, "NAME": ""}})
        is True
    )
    row = env.portal.registrations[internal_code(env.app.client_id, "send_sms")]
    assert row.properties == {"text": {"NAME": "Text"}}  # replaced, not merged
    assert row.name == {"EN": "Send SMS", "DE": "SMS senden"}  # empty NAME is not applied
    await expect_error(
        env,
        "bizproc.activity.update",
        {"CODE": "send_sms", "FIELDS": {"NAME": "x"}},
        400,
        "ERROR_ACTIVITY_NOT_FOUND",
        "Activity or Robot not found!",
    )


@pytest.mark.parametrize("fields", [None, {}, {"PLACEMENT_HANDLER": "https://app.example.test/p"}, {"UNKNOWN": 1}])
async def test_update_without_recognised_fields(env: Env, fields: Any, robot: Callable[..., dict[str, Any]]) -> None:
    await env.ok("bizproc.robot.add", robot())
    params: dict[str, Any] = {"CODE": "send_sms"}
    if fields is not None:
        params["FIELDS"] = fields
    await expect_error(
        env, "bizproc.robot.update", params, 400, "ERROR_ACTIVITY_VALIDATION_FAILURE", "No fields to update"
    )


async def test_update_checks_code_then_existence_then_handler(env: Env, robot: Callable[..., dict[str, Any]]) -> None:
    await expect_error(
        env,
        "bizproc.robot.update",
        {"FIELDS": {"NAME": "x"}},
        400,
        "ERROR_ACTIVITY_VALIDATION_FAILURE",
        "Empty activity code!",
    )
    await expect_error(
        env,
        "bizproc.robot.update",
        {"CODE": "nope", "FIELDS": {"NAME": "x"}},
        400,
        "ERROR_ACTIVITY_NOT_FOUND",
        "Activity or Robot not found!",
    )
    await env.ok("bizproc.robot.add", robot())
    await expect_error(
        env,
        "bizproc.robot.update",
        {"CODE": "send_sms", "FIELDS": {"HANDLER": "gopher://x.y/"}},
        400,
        "ERROR_UNSUPPORTED_PROTOCOL",
        "Unsupported handler protocol",
    )


async def test_delete(env: Env, robot: Callable[..., dict[str, Any]]) -> None:
    await expect_error(
        env,
        "bizproc.robot.delete",
        {"CODE": "send_sms"},
        400,
        "ERROR_ACTIVITY_NOT_FOUND",
        "Activity or Robot not found!",
    )
    await env.ok("bizproc.robot.add", robot())
    await expect_error(
        env,
        "bizproc.activity.delete",
        {"CODE": "send_sms"},
        400,
        "ERROR_ACTIVITY_NOT_FOUND",
        "Activity or Robot not found!",
    )
    await expect_error(
        env,
        "bizproc.robot.delete",
        {"CODE": "send_sms"},
        403,
        "ACCESS_DENIED",
        "Access denied!",
        token=env.user.access_token,
    )
    assert await env.ok("bizproc.robot.delete", {"code": "send_sms"}) is True
    assert await env.ok("bizproc.robot.list") == []


async def test_placement_handler_is_validated_and_recorded(env: Env, robot: Callable[..., dict[str, Any]]) -> None:
    bad = robot(USE_PLACEMENT="Y", PLACEMENT_HANDLER="http://localhost/p")
    await expect_error(env, "bizproc.robot.add", bad, 400, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL")
    await env.ok("bizproc.robot.add", robot(USE_PLACEMENT="Y", PLACEMENT_HANDLER="https://app.example.test/p"))
    assert env.portal.placements == {(env.app.client_id, "send_sms"): "https://app.example.test/p"}
    await env.ok("bizproc.robot.update", {"CODE": "send_sms", "FIELDS": {"USE_PLACEMENT": "N"}})
    assert env.portal.placements == {}


async def test_update_upserts_placement_handler_whenever_given(env: Env, robot: Callable[..., dict[str, Any]]) -> None:
    # updateActivityInternal: PLACEMENT_HANDLER is validated and upserted whatever USE_PLACEMENT is
    await env.ok("bizproc.robot.add", robot())
    fields = {"NAME": "Renamed", "PLACEMENT_HANDLER": "https://app.example.test/settings"}
    await env.ok("bizproc.robot.update", {"CODE": "send_sms", "FIELDS": fields})
    assert env.portal.placements == {(env.app.client_id, "send_sms"): "https://app.example.test/settings"}
    alone = {"CODE": "send_sms", "FIELDS": {"PLACEMENT_HANDLER": "https://app.example.test/other"}}
    await expect_error(
        env, "bizproc.robot.update", alone, 400, "ERROR_ACTIVITY_VALIDATION_FAILURE", "No fields to update"
    )


@pytest.mark.parametrize(
    ("flt", "edition", "document_type", "visible"),
    [
        ({"EXCLUDE": ["box"]}, "b24", ["crm", "CCrmDocumentDeal", "DEAL"], True),
        ({"EXCLUDE": ["box"]}, "box", ["crm", "CCrmDocumentDeal", "DEAL"], False),
        ({"INCLUDE": ["b24"]}, "b24", ["crm", "CCrmDocumentLead", "LEAD"], True),
        ({"INCLUDE": "box"}, "b24", ["crm", "CCrmDocumentLead", "LEAD"], False),
        ({"INCLUDE": [["crm", "CCrmDocumentDeal"]]}, "b24", ["crm", "CCrmDocumentDeal", "DEAL_C3"], True),
        ({"INCLUDE": [["crm", "CCrmDocumentDeal"]]}, "b24", ["crm", "CCrmDocumentLead", "LEAD"], False),
        # a bare list of texts is a list of edition rules, not a document type
        ({"INCLUDE": ["crm", "CCrmDocumentDeal"]}, "b24", ["crm", "CCrmDocumentDeal", "DEAL"], False),
        ({"EXCLUDE": [["tasks"]]}, "b24", ["tasks", "Bitrix\\Tasks\\Integration\\Bizproc\\Document\\Task", "T"], False),
        ({"MIN_API_VERSION": 2}, "b24", ["crm", "CCrmDocumentDeal", "DEAL"], False),
    ],
)
async def test_filter_is_applied_as_activityfilterchecker_does(
    env: Env, robot: Callable[..., dict[str, Any]], flt: Any, edition: str, document_type: list[str], visible: bool
) -> None:
    await env.ok("bizproc.robot.add", robot(FILTER=flt))
    env.sim.set_features({"bizproc"}, env.portal, edition=edition)
    assert ("send_sms" in env.sim.robots_for(document_type, env.portal)) is visible


async def test_names_fall_back_to_star_then_empty(env: Env, robot: Callable[..., dict[str, Any]]) -> None:
    # RestActivityTable::getLocalization: LANG, RU for UA, EN, '*', else ''
    await env.ok("bizproc.robot.add", robot(NAME={"de": "SMS senden", "ru": "СМС"}))
    deal = ["crm", "CCrmDocumentDeal", "DEAL"]
    assert env.sim.robots_for(deal, env.portal, lang="ua") == {"send_sms": "СМС"}
    assert env.sim.robots_for(deal, env.portal, lang="fr") == {"send_sms": ""}
    await env.ok("bizproc.robot.update", {"CODE": "send_sms", "FIELDS": {"NAME": {"de": "SMS senden", "*": "SMS"}}})
    assert env.sim.robots_for(deal, env.portal, lang="fr") == {"send_sms": "SMS"}


async def test_methods_follow_the_tariff_features(env: Env, robot: Callable[..., dict[str, Any]]) -> None:
    # onRestServiceBuildDescription: bizproc.activity.* only with `bizproc`; robots with automation alone
    env.sim.set_features({"crm_automation_deal"}, env.portal)
    await expect_error(env, "bizproc.activity.list", {}, 404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
    await expect_error(env, "bizproc.workflow.start", {}, 404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
    assert await env.ok("bizproc.robot.add", robot()) is True
    assert await env.ok("bizproc.robot.list") == ["send_sms"]
    env.sim.set_features(set(), env.portal)
    await expect_error(env, "bizproc.robot.list", {}, 404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
