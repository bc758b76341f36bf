"""Versioned documents (store/versioned.py): numbering, the active version, history and the live query,
on the register's real tables in SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest

from b24robots.errors import DeclarationError
from b24robots.store.db import Database
from b24robots.store.models import RobotRow, RobotVersionRow, TriggerRow, TriggerVersionRow
from b24robots.store.versioned import DELETED, Versioned, content_hash, require_author, unchanged

ROBOTS = Versioned(RobotRow, RobotVersionRow, RobotVersionRow.robot_id)
TRIGGERS = Versioned(TriggerRow, TriggerVersionRow, TriggerVersionRow.trigger_id)


def robot(code: str, state: str = "active") -> RobotRow:
    now = time.time()
    return RobotRow(
        code=code, kind="action", origin="stored", active_version=0, state=state, created_at=now, updated_at=now
    )


def robot_version(text: str) -> RobotVersionRow:
    return RobotVersionRow(
        document={"code": text}, source=text, content_hash=content_hash(text), author="anna", comment="", created_at=0.0
    )


def trigger(code: str) -> TriggerRow:
    return TriggerRow(
        code=code, code_key=code.lower(), active_version=0, state="active", created_at=0.0, updated_at=0.0
    )


def trigger_version(name: str) -> TriggerVersionRow:
    document = {"kind": "trigger", "code": "t", "name": name}
    return TriggerVersionRow(
        document=document, content_hash=content_hash(document), author="anna", comment="", created_at=0.0
    )


def test_numbers_follow_every_version_and_the_first_is_active_even_unasked(db: Database) -> None:
    with db.write() as s:
        doc = trigger("Paid")
        s.add(doc)
        s.flush()
        first = TRIGGERS.append(s, doc, trigger_version("one"), activate=False)
        assert (first.number, doc.active_version) == (1, 1)  # a document is never without an active version
        TRIGGERS.append(s, doc, trigger_version("two"))
        TRIGGERS.append(s, doc, trigger_version("three"), activate=False)
        doc_id = doc.id
    with db.read() as s:
        doc = s.get_one(TriggerRow, doc_id)
        assert doc.active_version == 2
        assert [(v.number, v.document["name"]) for v in TRIGGERS.history(s, doc_id)] == [
            (1, "one"),
            (2, "two"),
            (3, "three"),
        ]
        active = TRIGGERS.active(s, doc)
        assert active is not None and active.document["name"] == "two"
        version = TRIGGERS.version(s, doc_id, 3)
        assert version is not None and version.trigger_id == doc_id
        assert TRIGGERS.version(s, doc_id, 4) is None
        assert TRIGGERS.count(s, doc_id) == 3


def test_counts_and_numbers_are_per_document_and_go_on_after_deletion(db: Database) -> None:
    with db.write() as s:
        a, b, empty = robot("a"), robot("b"), robot("empty")
        s.add_all([a, b, empty])
        s.flush()
        ROBOTS.append(s, a, robot_version("a1"))
        ROBOTS.append(s, b, robot_version("b1"))
        ROBOTS.append(s, b, robot_version("b2"))
        ids = a.id, b.id, empty.id
    with db.write() as s:
        b = s.get_one(RobotRow, ids[1])
        b.state = DELETED
        assert ROBOTS.find(s, RobotRow.code == "b") is None
        assert ROBOTS.find(s, RobotRow.code == "b", deleted=True) is b
        assert ROBOTS.find(s, RobotRow.code == "nope", deleted=True) is None
        again = ROBOTS.append(s, b, robot_version("b3"))
        assert (again.number, b.active_version) == (3, 3)  # saved again: numbering continues after the history
    with db.read() as s:
        assert ROBOTS.counts(s) == {ids[0]: 1, ids[1]: 3}
        assert (ROBOTS.count(s, ids[0]), ROBOTS.count(s, ids[2])) == (1, 0)
        found = ROBOTS.find(s, RobotRow.code == "a")
        assert found is not None and found.id == ids[0]


def test_live_is_the_active_version_of_every_active_document(db: Database) -> None:
    with db.write() as s:
        docs = {state: robot(f"r.{state}", state) for state in ("active", "disabled", "deleted")}
        s.add_all(docs.values())
        s.flush()
        for state, doc in docs.items():
            ROBOTS.append(s, doc, robot_version(f"{state} 1"))
            ROBOTS.append(s, doc, robot_version(f"{state} 2"), activate=False)
        other = robot("r.other")
        s.add(other)
        s.flush()
        ROBOTS.append(s, other, robot_version("other 1"))
        ROBOTS.append(s, other, robot_version("other 2"))
    with db.read() as s:
        assert sorted(v.source for v in s.scalars(ROBOTS.live())) == ["active 1", "other 2"]
        assert [v.source for v in s.scalars(ROBOTS.live(RobotRow.code == "r.other"))] == ["other 2"]
        assert list(s.scalars(ROBOTS.live(RobotRow.code == "r.disabled"))) == []


def test_a_save_is_unchanged_only_over_the_same_active_content_of_a_kept_document() -> None:
    doc, version = robot("a"), robot_version("x")
    assert unchanged(doc, version, content_hash("x")) is version
    assert unchanged(robot("a", "disabled"), version, content_hash("x")) is version
    assert unchanged(doc, version, content_hash("y")) is None
    assert unchanged(robot("a", DELETED), version, content_hash("x")) is None  # saving a deleted one revives it
    assert unchanged(None, version, content_hash("x")) is None
    assert unchanged(doc, None, content_hash("x")) is None


def test_the_content_hash_is_canonical_and_stable() -> None:
    # the hashes of versions stored by earlier releases are compared with new ones: pinned
    document = {"kind": "trigger", "code": "a.b", "name": {"ru": "Оплачено", "en": "Paid"}}
    assert content_hash(document) == "a03ad12884514fbc7d652ce4d591c2f9b85a39f8bfd8156cc3949130fce35414"
    assert content_hash(dict(reversed(document.items()))) == content_hash(document)
    robot_content = {"document": {"code": "x"}, "source": "def run(inputs, ctx):\n    return {}\n"}
    assert content_hash(robot_content) == "c75003ca7fd546839f3991ff8f287467d13ff96ab495e925ab24cdb8fb8f5da6"


def test_a_version_needs_an_author() -> None:
    require_author("anna")
    with pytest.raises(DeclarationError, match="needs an author"):
        require_author("")


def test_history_is_by_number_whatever_order_the_rows_were_written_in(db: Database) -> None:
    with db.write() as s:
        doc = trigger("Imported")
        s.add(doc)
        s.flush()
        for number in (2, 3, 1):  # as a restore from a dump may write them
            version = trigger_version(f"v{number}")
            version.trigger_id, version.number = doc.id, number
            s.add(version)
            s.flush()
        doc_id = doc.id
    with db.read() as s:
        assert [v.number for v in TRIGGERS.history(s, doc_id)] == [1, 2, 3]
