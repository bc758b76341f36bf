from __future__ import annotations

import pytest

from b24robots.errors import DeclarationError, NotFound, SourceRejected
from b24robots.robots.spec import RobotSpec
from b24robots.store.db import Database
from b24robots.store.register import Register

SOURCE_V1 = "def run(inputs, ctx):\n    return {'total': inputs['a'] + 1}\n"
SOURCE_V2 = "def run(inputs, ctx):\n    return {'total': inputs['a'] + 2}\n"


def spec(**kw: object) -> RobotSpec:
    doc = {
        "code": "calc.total",
        "name": {"en": "Total", "ru": "Итого"},
        "properties": {"a": {"name": "A", "type": "int", "required": True}},
        "return_properties": {"total": {"name": "Total", "type": "int"}},
    }
    doc.update(kw)
    return RobotSpec.from_document(doc)


def test_versions_are_appended_and_activation_rolls_back(db: Database) -> None:
    reg = Register(db)
    v1 = reg.save(spec(), SOURCE_V1, author="anna", comment="first")
    v2 = reg.save(spec(), SOURCE_V2, author="boris", comment="plus two")
    assert (v1.number, v2.number) == (1, 2)
    assert v1.content_hash != v2.content_hash
    active = reg.active("calc.total")
    assert active is not None and active.version == 2 and active.source == SOURCE_V2

    reg.activate("calc.total", 1)
    active = reg.active("calc.total")
    assert active is not None and active.version == 1 and active.source == SOURCE_V1
    # rollback appends nothing: history is intact
    history = reg.versions("calc.total")
    assert [(v.number, v.author, v.active) for v in history] == [(1, "anna", True), (2, "boris", False)]
    assert history[1].comment == "plus two"


def test_saving_identical_content_does_not_duplicate(db: Database) -> None:
    reg = Register(db)
    a = reg.save(spec(), SOURCE_V1, author="anna")
    b = reg.save(spec(), SOURCE_V1, author="anna")
    assert a.id == b.id
    assert len(reg.versions("calc.total")) == 1


def test_parameters_are_versioned_with_the_code(db: Database) -> None:
    reg = Register(db)
    reg.save(spec(), SOURCE_V1, author="anna")
    reg.save(spec(return_properties={"total": {"name": "Total", "type": "double"}}), SOURCE_V1, author="anna")
    active = reg.active("calc.total")
    assert active is not None and active.spec.outputs[0].type.value == "double"
    reg.activate("calc.total", 1)
    active = reg.active("calc.total")
    assert active is not None and active.spec.outputs[0].type.value == "int"


def test_unknown_robot_and_version(db: Database) -> None:
    reg = Register(db)
    with pytest.raises(NotFound, match="robots list"):
        reg.versions("nope")
    reg.save(spec(), SOURCE_V1, author="anna")
    with pytest.raises(NotFound, match="no version 7"):
        reg.activate("calc.total", 7)
    assert reg.active("nope") is None


def test_list_and_active_all(db: Database) -> None:
    reg = Register(db)
    reg.save(spec(), SOURCE_V1, author="anna")
    reg.save(spec(code="other"), SOURCE_V1, author="anna")
    reg.save(spec(code="other"), SOURCE_V2, author="anna")
    listed = {r.code: (r.versions, r.active_version) for r in reg.robots()}
    assert listed == {"calc.total": (1, 1), "other": (2, 2)}
    assert sorted(s.spec.code for s in reg.active_all()) == ["calc.total", "other"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def run(inputs, ctx):\n    return {\n", "line 2"),
        ("import os\ndef run(inputs, ctx):\n    return {}\n", "line 1"),
        ("def main():\n    pass\n", "no entry point"),
    ],
)
def test_code_is_compiled_and_linted_on_save(db: Database, source: str, message: str) -> None:
    with pytest.raises(SourceRejected, match=message) as info:
        Register(db).save(spec(), source, author="anna")
    assert info.value.problems
    assert not Register(db).exists("calc.total")


def test_author_required(db: Database) -> None:
    with pytest.raises(DeclarationError, match="author"):
        Register(db).save(spec(), SOURCE_V1, author="")


def test_limits_are_versioned_validated_and_kept(db: Database) -> None:
    reg = Register(db)
    reg.save(spec(), SOURCE_V1, author="anna", limits={"cpu_seconds": 1, "memory_mb": 64})
    active = reg.active("calc.total")
    assert active is not None and active.limits == {"cpu_seconds": 1, "memory_mb": 64}
    reg.save(spec(), SOURCE_V2, author="anna")  # no limits given: the active version's are kept
    active = reg.active("calc.total")
    assert active is not None and active.version == 2 and active.limits == {"cpu_seconds": 1, "memory_mb": 64}
    with pytest.raises(DeclarationError, match="unknown limit"):
        reg.save(spec(), SOURCE_V1, author="anna", limits={"gpu": 1})
    with pytest.raises(DeclarationError, match="at least 32"):
        reg.save(spec(), SOURCE_V1, author="anna", limits={"memory_mb": 8})
