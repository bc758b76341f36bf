"""The register's triggers: append-only versions with a content hash, removal kept as history, audited."""

from __future__ import annotations

import pytest

from b24robots.errors import DeclarationError, NotFound
from b24robots.robots.triggers import TriggerSpec
from b24robots.store.audit import Audit
from b24robots.store.db import Database
from b24robots.store.trigger_register import TriggerRegister, trigger_from_document


def test_versions_are_appended_removal_is_history_and_every_change_is_audited(db: Database) -> None:
    reg = TriggerRegister(db)
    first = reg.save(TriggerSpec("payment.received", "Payment received"), author="anna", actor="cli:anna")
    same = reg.save(TriggerSpec("payment.received", "Payment received"), author="anna", actor="cli:anna")
    named = {"en": "Paid", "ru": "Оплачено"}
    second = reg.save(TriggerSpec("payment.received", named), author="boris", actor="user:boris", comment="ru")
    assert (first.action, first.version.number) == ("add", 1)
    assert (same.action, same.version.number) == ("same", 1)
    assert (second.action, second.version.number) == ("change", 2)
    assert first.version.content_hash != second.version.content_hash
    assert reg.active() == [TriggerSpec("payment.received", named)]
    info = reg.get("Payment.Received")  # codes compare case-insensitively, as on the portal
    assert (info.code, info.active_version, info.versions, info.state) == ("payment.received", 2, 2, "active")

    removed = reg.remove("payment.received", actor="cli:anna")
    assert removed.state == "deleted" and reg.active() == [] and reg.triggers() == []
    assert reg.removed() == {"payment.received"}
    with pytest.raises(NotFound, match="triggers list"):
        reg.get("payment.received")
    assert [v.number for v in reg.versions("payment.received")] == [1, 2]  # kept as history

    again = reg.save(TriggerSpec("payment.received", "Payment"), author="anna", actor="cli:anna")
    assert (again.action, again.version.number) == ("add", 3) and reg.removed() == set()
    history = reg.versions("payment.received")
    assert [(v.number, v.author, v.active) for v in history] == [
        (1, "anna", False),
        (2, "boris", False),
        (3, "anna", True),
    ]
    assert history[1].comment == "ru" and history[1].spec.name == named

    audit = [(e.action, e.actor, e.details["version"]) for e in reversed(Audit(db).recent(action="trigger."))]
    assert audit == [
        ("trigger.add", "cli:anna", 1),
        ("trigger.change", "user:boris", 2),
        ("trigger.remove", "cli:anna", 2),
        ("trigger.add", "cli:anna", 3),
    ]


def test_add_and_set_refuse_the_wrong_case(db: Database) -> None:
    reg = TriggerRegister(db)
    reg.save(TriggerSpec("order.shipped", "Shipped"), author="a", actor="a", must_exist=False)
    with pytest.raises(DeclarationError, match=r"triggers set order\.shipped"):
        reg.save(TriggerSpec("ORDER.shipped", "Other"), author="a", actor="a", must_exist=False)
    with pytest.raises(NotFound, match="triggers add unknown"):
        reg.save(TriggerSpec("unknown", "x"), author="a", actor="a", must_exist=True)
    with pytest.raises(NotFound):
        reg.remove("unknown", actor="a")
    assert [t.code for t in reg.active()] == ["order.shipped"]


def test_the_document_is_the_export_format() -> None:
    spec = trigger_from_document({"kind": "trigger", "code": "a.b", "name": {"en": "A", "ru": "А"}})
    assert spec == TriggerSpec("a.b", {"en": "A", "ru": "А"})
    with pytest.raises(DeclarationError, match="unknown field"):
        trigger_from_document({"kind": "trigger", "code": "a", "name": "A", "source": "x"})
    with pytest.raises(DeclarationError, match="name is empty"):
        trigger_from_document({"kind": "trigger", "code": "a", "name": ""})
