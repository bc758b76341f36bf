"""The robot definition: everything Bitrix24 needs to register a robot, validated on declaration.

One `RobotSpec` gives the `bizproc.robot.add` / `bizproc.activity.add` payload (`to_registration`),
the export document (`to_document` / `from_document`) and the parameter lists used to parse inputs
and dump outputs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from b24robots.errors import DeclarationError
from b24robots.fields import as_int
from b24robots.robots.documents import document_type
from b24robots.robots.params import LocalizedText, Param, check_text, params_from_documents

# `validateActivityCode` matches `#^[a-z0-9\.\-_]+$#i` (yuliai/bitrix-modules bizproc/lib/restservice.php)
CODE_RE = re.compile(r"^[a-z0-9.\-_]+$", re.IGNORECASE)
CODE_MAX = 128
Kind = Literal["robot", "activity"]
KINDS: tuple[Kind, ...] = ("robot", "activity")

DOCUMENT_TYPE_EXAMPLE = "['crm', 'CCrmDocumentDeal', 'DEAL']"


def check_code(code: object) -> str:
    """Validate a robot CODE (protocol §1.2) and return it."""
    if not isinstance(code, str) or not code:
        raise DeclarationError("robot code is empty; use latin letters, digits, '.', '-' and '_' (e.g. 'send_sms')")
    if len(code) > CODE_MAX:
        raise DeclarationError(f"robot code is {len(code)} characters; Bitrix24 allows at most {CODE_MAX}")
    if not CODE_RE.match(code):
        raise DeclarationError(
            f"robot code {code!r} is invalid; use latin letters, digits, '.', '-' and '_' (e.g. 'send_sms')"
        )
    return code


def _check_document_type(value: object) -> tuple[str, str, str] | None:
    if value is None or value == [] or value == () or value == "":
        return None
    return document_type(value)  # a triple, or a short form such as "DEAL_C3" (robots/documents.py)


EDITIONS = ("b24", "box")  # CBPHelper::getDistrName: DISTR_B24 in the cloud, DISTR_BOX on-premise


def _check_rule(rule: object, where: str) -> str | list[str]:
    if isinstance(rule, str) and rule in EDITIONS:
        return rule
    if isinstance(rule, str):
        raise DeclarationError(
            f"filter {where} rule {rule!r} is not an edition; a text rule is 'b24' (cloud) or 'box' (on-premise), "
            f"a document type is a list, e.g. {where}: [['crm', 'CCrmDocumentDeal']]"
        )
    if isinstance(rule, list | tuple) and 1 <= len(rule) <= 3 and all(isinstance(r, str) and r for r in rule):
        return list(rule)
    raise DeclarationError(
        f"filter {where} rule {rule!r} is invalid; use 'b24' / 'box' or a document type prefix like ['crm', "
        "'CCrmDocumentDeal']"
    )


def _check_filter(value: object) -> dict[str, Any] | None:
    """FILTER as the portal reads it (bizproc/lib/activity/mixins/activityfilterchecker.php): the value of
    INCLUDE/EXCLUDE is a list of rules, and only a value that is not a list is one rule on its own. So
    `["box"]` is one edition rule and `["crm", "CCrmDocumentDeal"]` two edition rules, not a document type."""
    if value is None or value == {}:
        return None
    if not isinstance(value, Mapping):
        raise DeclarationError("filter must be a mapping with INCLUDE and/or EXCLUDE lists")
    out: dict[str, Any] = {}
    for raw_key, rules in value.items():
        key = str(raw_key).upper()
        if key == "MIN_API_VERSION":
            if not isinstance(rules, int) or isinstance(rules, bool):
                raise DeclarationError("filter MIN_API_VERSION must be a whole number")
            out[key] = rules
            continue
        if key not in ("INCLUDE", "EXCLUDE"):
            raise DeclarationError(f"filter key {raw_key!r} is unknown; use INCLUDE, EXCLUDE or MIN_API_VERSION")
        if isinstance(rules, str):
            rules = [rules]
        if not isinstance(rules, list | tuple) or not rules:
            raise DeclarationError(f"filter {key} must be a non-empty list of rules")
        out[key] = [_check_rule(r, key) for r in rules]
    return out


CONNECTION_NAME_RE = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")


def _check_connections(value: object, code: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
        raise DeclarationError(f"robot {code!r}: connections must be a list of connection names, e.g. ['erp', 'buh']")
    for name in items:
        if not CONNECTION_NAME_RE.match(name):
            raise DeclarationError(
                f"robot {code!r}: connection name {name!r} is invalid; use lower-case latin letters, digits, "
                "'_' or '-', starting with a letter"
            )
    return tuple(dict.fromkeys(items))


METHOD_PATTERN_RE = re.compile(r"^!?[a-z0-9_*]+(\.[a-z0-9_*]+)*$")


def _check_methods(value: object, code: str) -> tuple[str, ...]:
    """A stored robot's narrowing of the REST methods its code may call (patterns, `!` excludes)."""
    if value is None or value == "":
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
        raise DeclarationError(f"robot {code!r}: methods must be a list of method patterns, e.g. ['crm.deal.*']")
    out = [v.strip().lower() for v in items]
    for item in out:
        if not METHOD_PATTERN_RE.match(item):
            raise DeclarationError(
                f"robot {code!r}: {item!r} is not a method pattern such as crm.deal.*, tasks.task.get or "
                "!crm.deal.delete"
            )
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class RobotSpec:
    """A validated robot or activity definition."""

    code: str
    name: LocalizedText
    kind: Kind = "robot"
    description: LocalizedText | None = None
    inputs: tuple[Param[Any], ...] = ()
    outputs: tuple[Param[Any], ...] = ()
    use_subscription: bool | None = None
    auth_user_id: int = 1
    document_type: tuple[str, str, str] | None = None
    filter: Mapping[str, Any] | None = field(default=None)
    connections: tuple[str, ...] = ()  # names of the connections the robot may use (ctx.http/onec/sql)
    # stored code only: the REST methods its ctx.call may reach, within the server's list (empty = all of it)
    methods: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_code(self.code)
        if self.kind not in KINDS:
            raise DeclarationError(f"robot kind {self.kind!r} is unknown; use 'robot' or 'activity'")
        object.__setattr__(self, "name", check_text(self.name, f"robot {self.code!r} name", required=True))
        object.__setattr__(
            self,
            "description",
            check_text(self.description, f"robot {self.code!r} description", required=False),
        )
        for group, params in (("input", self.inputs), ("output", self.outputs)):
            # the portal upper-cases RETURN_VALUES keys and matches them case-insensitively
            # (bizproc/classes/general/restactivity.php::onExternalEvent): keys differing only by case collide
            seen: dict[str, str] = {}
            for p in params:
                if not p.key:
                    raise DeclarationError(f"robot {self.code!r}: an {group} parameter has no key")
                if p.key in seen:
                    raise DeclarationError(f"robot {self.code!r}: {group} parameter {p.key!r} is declared twice")
                if p.key.lower() in seen:
                    raise DeclarationError(
                        f"robot {self.code!r}: {group} parameters {seen[p.key.lower()]!r} and {p.key!r} differ only "
                        "by case, which Bitrix24 does not tell apart; rename one"
                    )
                seen[p.key] = seen[p.key.lower()] = p.key
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        if self.use_subscription is None:
            object.__setattr__(self, "use_subscription", bool(self.outputs))
        elif self.outputs and not self.use_subscription:
            raise DeclarationError(
                f"robot {self.code!r} has outputs, which only reach the workflow if it waits for the answer; "
                "set use_subscription=True or remove the outputs"
            )
        if isinstance(self.auth_user_id, bool) or not isinstance(self.auth_user_id, int) or self.auth_user_id < 0:
            raise DeclarationError(f"robot {self.code!r}: auth_user_id must be a user id (a whole number >= 0)")
        object.__setattr__(self, "document_type", _check_document_type(self.document_type))
        object.__setattr__(self, "filter", _check_filter(self.filter))
        object.__setattr__(self, "connections", _check_connections(self.connections, self.code))
        object.__setattr__(self, "methods", _check_methods(self.methods, self.code))

    @property
    def method_prefix(self) -> str:
        """`bizproc.robot` or `bizproc.activity`."""
        return f"bizproc.{self.kind}"

    def input(self, key: str) -> Param[Any] | None:
        return next((p for p in self.inputs if p.key == key), None)

    def to_registration(self, handler_url: str) -> dict[str, Any]:
        """The `bizproc.robot.add` / `bizproc.activity.add` parameters (protocol §1.2).

        Empty PROPERTIES / RETURN_PROPERTIES are omitted (an empty object may serialize as a list and
        fail with `Wrong property key (0)!`); USE_SUBSCRIPTION is always an explicit Y or N.
        """
        payload: dict[str, Any] = {
            "CODE": self.code,
            "HANDLER": handler_url,
            "AUTH_USER_ID": self.auth_user_id,
            "USE_SUBSCRIPTION": "Y" if self.use_subscription else "N",
            "NAME": _wire(self.name),
        }
        if self.description:
            payload["DESCRIPTION"] = _wire(self.description)
        if self.inputs:
            payload["PROPERTIES"] = {p.key: _wire_property(p.to_property()) for p in self.inputs}
        if self.outputs:
            payload["RETURN_PROPERTIES"] = {p.key: _wire_property(p.to_property()) for p in self.outputs}
        if self.document_type:
            payload["DOCUMENT_TYPE"] = list(self.document_type)
        if self.filter:
            payload["FILTER"] = dict(self.filter)
        return payload

    def registration_fields(self, handler_url: str) -> dict[str, Any]:
        """The FIELDS of an update call: the same as add, without CODE."""
        fields = self.to_registration(handler_url)
        del fields["CODE"]
        return fields

    def to_document(self) -> dict[str, Any]:
        """The export document: bizproc.robot.add field names in lower case (without `source`)."""
        doc: dict[str, Any] = {
            "code": self.code,
            "kind": self.kind,
            "name": _plain(self.name),
        }
        if self.description:
            doc["description"] = _plain(self.description)
        doc["use_subscription"] = "Y" if self.use_subscription else "N"
        doc["auth_user_id"] = self.auth_user_id
        if self.document_type:
            doc["document_type"] = list(self.document_type)
        if self.filter:
            doc["filter"] = dict(self.filter)
        if self.connections:
            doc["connections"] = list(self.connections)
        if self.methods:
            doc["methods"] = list(self.methods)
        doc["properties"] = {p.key: p.to_document() for p in self.inputs}
        doc["return_properties"] = {p.key: p.to_document() for p in self.outputs}
        return doc

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> RobotSpec:
        """Build a spec from an export document; unknown fields are an error naming the known ones."""
        if not isinstance(doc, Mapping):
            raise DeclarationError("a robot document must be a mapping (JSON object / YAML mapping)")
        known = {
            "code",
            "kind",
            "name",
            "description",
            "use_subscription",
            "auth_user_id",
            "document_type",
            "filter",
            "properties",
            "return_properties",
            "source",
            "connections",  # names of connections the code uses; not part of the registration
            "methods",  # REST methods stored code may call (narrows the server's list); not registered
            "limits",  # the register's own field (sandbox limits), not part of the registration
        }
        extra = sorted(set(doc) - known)
        if extra:
            raise DeclarationError(f"unknown field(s) {', '.join(extra)}; known fields: {', '.join(sorted(known))}")
        code = check_code(doc.get("code"))
        us = doc.get("use_subscription")
        use_subscription: bool | None
        if us is None or us == "":
            use_subscription = None
        elif isinstance(us, bool):
            use_subscription = us
        elif isinstance(us, str) and us.upper() in ("Y", "N"):
            use_subscription = us.upper() == "Y"
        else:
            raise DeclarationError(f"robot {code!r}: use_subscription must be 'Y' or 'N', got {us!r}")
        auth_user_id = doc.get("auth_user_id", 1)
        if isinstance(auth_user_id, str) and as_int(auth_user_id) is not None:
            auth_user_id = as_int(auth_user_id)
        return cls(
            code=code,
            kind=doc.get("kind", "robot"),
            name=doc.get("name", ""),
            description=doc.get("description"),
            inputs=params_from_documents(doc.get("properties"), f"robot {code!r} properties"),
            outputs=params_from_documents(doc.get("return_properties"), f"robot {code!r} return_properties"),
            use_subscription=use_subscription,
            auth_user_id=auth_user_id,
            document_type=doc.get("document_type"),
            filter=doc.get("filter"),
            connections=doc.get("connections") or (),
            methods=doc.get("methods") or (),
        )

    def output(self, key: str) -> Param[Any] | None:
        """The output declared as `key`, matched case-insensitively as the portal matches RETURN_VALUES."""
        return next((p for p in self.outputs if p.key.lower() == key.lower()), None)

    def fingerprint(self, handler_url: str = "") -> str:
        """A stable hash of the registration payload: sync compares it to decide on an update."""
        blob = json.dumps(self.to_registration(handler_url), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()


def _wire(text: LocalizedText | None) -> str | dict[str, str]:
    """A plain text, or the language map with a `*` entry added.

    The portal shows LANG, then RU for UA, then EN, then `*`, else an empty name
    (bizproc/lib/restactivity.php::getLocalization): `*` (the English text, else the first given) keeps a
    robot named on a portal in a language the map does not have.
    """
    assert text is not None
    if isinstance(text, str):
        return text
    out = dict(text)
    if out and "*" not in out:
        out["*"] = out.get("en") or next(iter(out.values()))
    return out


def _plain(text: LocalizedText | None) -> str | dict[str, str]:
    assert text is not None
    return text if isinstance(text, str) else dict(text)


def _wire_property(prop: dict[str, Any]) -> dict[str, Any]:
    for key in ("Name", "Description"):
        value = prop.get(key)
        if isinstance(value, Mapping):
            prop[key] = _wire(value)
    return prop
