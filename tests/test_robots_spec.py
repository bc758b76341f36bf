"""Robot declarations: validation messages, the registration payload, documents, the router."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from b24robots.errors import DeclarationError
from b24robots.robots.context import RobotContext
from b24robots.robots.params import Bool, Date, Int, Params, Select, String, User
from b24robots.robots.registry import Registry, StoredRobot
from b24robots.robots.router import Router
from b24robots.robots.spec import RobotSpec


class SmsIn(Params):
    phone = String("Phone", required=True)
    to = User("Recipient")
    channel = Select("Channel", options={"sms": "SMS", "wa": "WhatsApp"}, default="sms")
    tags = String("Tags", multiple=True)


class SmsOut(Params):
    message_id = String("Message id")
    ok = Bool("OK")


def ctx() -> RobotContext:
    return RobotContext(
        portal="example.bitrix24.com",
        member_id="m",
        code="send_sms",
        workflow_id="w",
        document_id=["crm", "CCrmDocumentDeal", "DEAL_1188"],
        document_type=["crm", "CCrmDocumentDeal", "DEAL"],
        event_token="t",
    )


def test_registration_payload_matches_protocol_example() -> None:
    router = Router()

    @router.robot(
        "send_sms",
        name={"en": "Send SMS", "de": "SMS senden"},
        inputs=SmsIn,
        outputs=SmsOut,
        filter={"INCLUDE": [["crm", "CCrmDocumentDeal"], ["crm", "CCrmDocumentLead"]]},
    )
    def send_sms(inputs: SmsIn) -> SmsOut:
        return SmsOut(message_id="1", ok=True)

    payload = router.get("send_sms").spec.to_registration("https://app.example.com/robot")  # type: ignore[union-attr]
    assert payload == {
        "CODE": "send_sms",
        "HANDLER": "https://app.example.com/robot",
        "AUTH_USER_ID": 1,
        "USE_SUBSCRIPTION": "Y",
        "NAME": {"en": "Send SMS", "de": "SMS senden", "*": "Send SMS"},
        "PROPERTIES": {
            "phone": {"Name": "Phone", "Type": "string", "Required": "Y", "Multiple": "N"},
            "to": {"Name": "Recipient", "Type": "user", "Required": "N", "Multiple": "N"},
            "channel": {
                "Name": "Channel",
                "Type": "select",
                "Required": "N",
                "Multiple": "N",
                "Default": "sms",
                "Options": {"sms": "SMS", "wa": "WhatsApp"},
            },
            "tags": {"Name": "Tags", "Type": "string", "Required": "N", "Multiple": "Y"},
        },
        "RETURN_PROPERTIES": {
            "message_id": {"Name": "Message id", "Type": "string", "Required": "N", "Multiple": "N"},
            "ok": {"Name": "OK", "Type": "bool", "Required": "N", "Multiple": "N"},
        },
        "FILTER": {"INCLUDE": [["crm", "CCrmDocumentDeal"], ["crm", "CCrmDocumentLead"]]},
    }


def test_empty_properties_are_omitted_and_subscription_is_explicit() -> None:
    spec = RobotSpec(code="ping", name="Ping")
    payload = spec.to_registration("https://a.b/h")
    assert "PROPERTIES" not in payload and "RETURN_PROPERTIES" not in payload
    assert payload["USE_SUBSCRIPTION"] == "N"
    assert RobotSpec(code="ping", name="Ping", use_subscription=True).to_registration("x")["USE_SUBSCRIPTION"] == "Y"
    act = RobotSpec(code="ping", name="Ping", kind="activity")
    assert act.method_prefix == "bizproc.activity"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"code": ""}, "robot code is empty"),
        ({"code": "Send SMS"}, "is invalid; use latin letters"),
        ({"code": "x" * 129}, "at most 128"),
        ({"name": ""}, "name is empty"),
        ({"kind": "trigger"}, "use 'robot' or 'activity'"),
        ({"use_subscription": False, "outputs": SmsOut.params()}, "set use_subscription=True"),
        ({"auth_user_id": -1}, "auth_user_id"),
        ({"document_type": ["crm", "CCrmDocumentDeal"]}, "three texts"),
        ({"filter": {"ONLY": ["b24"]}}, "INCLUDE, EXCLUDE"),
        ({"filter": {"INCLUDE": [["crm", ""]]}}, "rule"),
        ({"inputs": SmsIn.params() + SmsIn.params()[:1]}, "declared twice"),
    ],
)
def test_spec_validation_names_the_fix(kwargs: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"code": "send_sms", "name": "Send"}
    base.update(kwargs)
    with pytest.raises(DeclarationError, match=message):
        RobotSpec(**base)


def test_filter_wraps_only_a_bare_string() -> None:
    # activityfilterchecker.php: a list is a list of rules; only a non-list value is a rule on its own
    spec = RobotSpec(code="a", name="A", filter={"include": [["crm", "CCrmDocumentDeal"]], "EXCLUDE": "box"})
    assert spec.filter == {"INCLUDE": [["crm", "CCrmDocumentDeal"]], "EXCLUDE": ["box"]}
    assert RobotSpec(code="a", name="A", filter={"EXCLUDE": ["box"]}).filter == {"EXCLUDE": ["box"]}


def test_language_maps_carry_a_star_entry() -> None:
    spec = RobotSpec(code="PdfFromHtml", name={"de": "PDF", "en": "PDF file"}, inputs=(String({"ru": "Тип"}, key="X"),))
    payload = spec.to_registration("https://a.b/h")
    assert payload["NAME"] == {"de": "PDF", "en": "PDF file", "*": "PDF file"}
    assert payload["PROPERTIES"]["X"]["Name"] == {"ru": "Тип", "*": "Тип"}
    assert spec.to_document()["name"] == {"de": "PDF", "en": "PDF file"}


def test_document_round_trip() -> None:
    spec = RobotSpec(
        code="send_sms",
        kind="activity",
        name={"en": "Send", "ru": "Отправить"},
        description="Sends",
        inputs=SmsIn.params(),
        outputs=SmsOut.params(),
        auth_user_id=3,
        document_type=("crm", "CCrmDocumentDeal", "DEAL"),
        filter={"EXCLUDE": ["box"]},
    )
    doc = spec.to_document()
    again = RobotSpec.from_document(doc)
    assert again == spec
    assert again.to_registration("h") == spec.to_registration("h")


def test_document_errors() -> None:
    with pytest.raises(DeclarationError, match="unknown field"):
        RobotSpec.from_document({"code": "a", "name": "A", "handler": "x"})
    with pytest.raises(DeclarationError, match="'Y' or 'N'"):
        RobotSpec.from_document({"code": "a", "name": "A", "use_subscription": "maybe"})
    with pytest.raises(DeclarationError, match="unknown field"):
        RobotSpec.from_document({"code": "a", "name": "A", "properties": {"x": {"name": "X", "kind": "int"}}})


def test_params_class_rules() -> None:
    with pytest.raises(DeclarationError, match="latin letters"):

        class Bad(Params):
            _phone = String("Phone")

    values = SmsIn.parse({"phone": ["+49 30"], "to": "user_7", "tags": ["vip", "b2b"]})
    assert values == SmsIn(phone="+49 30", to=7, channel="sms", tags=["vip", "b2b"])
    assert values.channel == "sms"
    with pytest.raises(TypeError, match="no parameter"):
        SmsIn(fax="1")


def test_router_fills_handler_arguments_by_name_and_annotation() -> None:
    router = Router()
    seen: dict[str, Any] = {}

    class In(Params):
        amount = Int("Amount", required=True)
        due = Date("Due")

    @router.robot("a", name="A", inputs=In)
    def by_annotation(payload: In, context: RobotContext) -> None:
        seen["a"] = (payload.amount, context.entity_id)

    @router.robot("b", name="B", inputs=In)
    async def by_key(amount: int, ctx: RobotContext, unused: str = "x") -> dict[str, Any]:
        seen["b"] = amount
        return {}

    a, b = router.get("a"), router.get("b")
    assert a is not None and b is not None
    assert not a.is_async and b.is_async
    a.call({"amount": 5, "due": None}, ctx())
    asyncio.run(b.call({"amount": 6, "due": None}, ctx()))  # type: ignore[arg-type]
    assert seen == {"a": (5, 1188), "b": 6}


def test_router_rejects_unfillable_handlers_and_duplicates() -> None:
    router = Router()
    with pytest.raises(DeclarationError, match="neither the inputs"):

        @router.robot("a", name="A", inputs=SmsIn)
        def h(phone: str, mystery: int) -> None: ...

    @router.robot("b", name="B")
    def ok() -> None: ...

    with pytest.raises(DeclarationError, match="declared twice"):

        @router.activity("b", name="B")
        def again() -> None: ...


def test_registry_prefers_the_stored_version() -> None:
    router = Router()

    @router.robot("send_sms", name="Send", inputs=SmsIn, outputs=SmsOut)
    def send(inputs: SmsIn) -> None: ...

    class Stored:
        def __init__(self) -> None:
            self.rows: dict[str, StoredRobot] = {}

        def active(self, code: str) -> StoredRobot | None:
            return self.rows.get(code)

        def active_all(self) -> list[StoredRobot]:
            return list(self.rows.values())

        def states(self) -> dict[str, str]:
            return {}

    stored = Stored()
    registry = Registry(router, stored)
    found = registry.resolve("send_sms")
    assert found is not None and found.origin == "module"
    spec = router.get("send_sms").spec  # type: ignore[union-attr]
    stored.rows["send_sms"] = StoredRobot(
        spec=spec, source="def run(i, c): return {}", version=1, version_id=9, content_hash="h"
    )
    found = registry.resolve("send_sms")
    assert found is not None and found.origin == "stored" and found.version_id == 9
    assert registry.resolve("nope") is None
    assert [r.origin for r in registry.all()] == ["stored"]
