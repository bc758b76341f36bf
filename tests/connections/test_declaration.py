"""A robot declares the connections it uses: in the decorator and in the stored document."""

from __future__ import annotations

import pytest

from b24robots import RobotSpec, Router
from b24robots.errors import DeclarationError


def test_declared_in_the_decorator_and_the_document_round_trips() -> None:
    router = Router()

    @router.robot("c.one", name="One", connections=["erp", "buh", "erp"])
    def one() -> None: ...

    spec = router.get("c.one").spec  # type: ignore[union-attr]
    assert spec.connections == ("erp", "buh")
    doc = spec.to_document()
    assert doc["connections"] == ["erp", "buh"]
    assert RobotSpec.from_document(doc) == spec
    assert "connections" not in spec.to_registration("https://h/b24/robot")  # Bitrix24 never sees them
    assert "connections" not in RobotSpec(code="c.two", name="Two").to_document()


@pytest.mark.parametrize("bad", [["Bad Name"], [1], "x y", ["1st"]])
def test_bad_names_are_refused_with_the_fix(bad: object) -> None:
    with pytest.raises(DeclarationError, match="connection"):
        RobotSpec.from_document({"code": "c.bad", "name": "Bad", "connections": bad})
