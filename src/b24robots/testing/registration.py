"""``bizproc.robot.*`` and ``bizproc.activity.*`` exactly as the portal implements them (§1.1-1.7).

Every failure is raised as a :class:`~b24robots.errors.RestError` carrying the wire code,
description and HTTP status; the HTTP layer renders it.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import urlsplit

from b24robots.errors import AccessDenied, MethodError, RestError

from ._util import php_empty, upper_keys
from .model import Portal, Registration

VALIDATION = "ERROR_ACTIVITY_VALIDATION_FAILURE"
_CODE_RE = re.compile(r"^[a-z0-9.\-_]+$", re.IGNORECASE)
_PROPERTY_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$", re.IGNORECASE)
_KEEP_CHILD_CASE = ("PROPERTIES", "RETURN_PROPERTIES", "OPTIONS")

MAX_CODE = 128
MAX_HANDLER = 1000
MAX_SERIALIZED = 65535


def _error(code: str, description: str, status: int = 400) -> RestError:
    return MethodError(code, description, status=status)


def access_denied(message: str = "") -> RestError:
    """``AccessException``: 403 ACCESS_DENIED, ``"Access denied!"`` + optional message."""
    text = "Access denied!" + (f" {message}" if message else "")
    return AccessDenied("ACCESS_DENIED", text, status=403)


def internal_code(client_id: str, code: str) -> str:
    return hashlib.md5(f"{client_id}@{code}".encode()).hexdigest()  # noqa: S324 - Bitrix's identity, not security


def prepare_activity_data(data: Any, keep_case: bool = False) -> Any:
    """``prepareActivityData``: upper-case keys at every level except the direct children of
    PROPERTIES, RETURN_PROPERTIES and OPTIONS (property codes and option keys keep their case)."""
    if isinstance(data, list):
        return [prepare_activity_data(item) if isinstance(item, dict | list) else item for item in data]
    if not isinstance(data, dict):
        return data
    level = dict(data) if keep_case else upper_keys(data)
    out: dict[str, Any] = {}
    for key, value in level.items():
        if isinstance(value, dict | list):
            out[key] = prepare_activity_data(value, key in _KEEP_CHILD_CASE)
        else:
            out[key] = value
    return out


def php_intval(value: Any) -> int:
    """PHP ``(int)`` cast of a request value."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        match = re.match(r"\s*([+-]?\d+)", value)
        return int(match.group(1)) if match else 0
    return 0


def php_string(value: Any) -> str:
    if value is None or value is False:
        return ""
    if value is True:
        return "1"
    return str(value)


def validate_code(code: Any) -> None:
    if php_empty(code):
        raise _error(VALIDATION, "Empty activity code!")
    if not isinstance(code, str) or not _CODE_RE.match(code):
        raise _error(VALIDATION, "Wrong activity code!")


def validate_handler(url: Any) -> None:
    """``HandlerHelper::checkCallback``: host with a dot at position > 0, scheme http or https."""
    if not isinstance(url, str):
        raise _error("ERROR_WRONG_HANDLER_URL", "Wrong handler URL")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        raise _error("ERROR_WRONG_HANDLER_URL", "Wrong handler URL") from None
    if not parts.netloc or host == "" or host.find(".") <= 0:
        raise _error("ERROR_WRONG_HANDLER_URL", "Wrong handler URL")
    raw_scheme = url.split(":", 1)[0]  # PHP compares the scheme case-sensitively
    if raw_scheme not in ("http", "https"):
        raise _error("ERROR_UNSUPPORTED_PROTOCOL", "Unsupported handler protocol")


def validate_properties(properties: Any) -> None:
    if not isinstance(properties, dict | list):
        raise _error(VALIDATION, "Wrong properties array!")
    items = properties.items() if isinstance(properties, dict) else enumerate(properties)
    for key, prop in items:
        key_text = str(key)
        if not _PROPERTY_KEY_RE.match(key_text):
            raise _error(VALIDATION, f"Wrong property key ({key_text})!")
        if not isinstance(prop, dict) or php_empty(prop.get("NAME")):
            raise _error(VALIDATION, f"Empty property NAME ({key_text})!")


_DOCUMENT_ENTITIES: dict[tuple[str, str], re.Pattern[str]] = {
    ("crm", "CCrmDocumentLead"): re.compile(r"^LEAD$"),
    ("crm", "CCrmDocumentDeal"): re.compile(r"^DEAL(_C\d+)?$"),
    ("crm", "CCrmDocumentContact"): re.compile(r"^CONTACT$"),
    ("crm", "CCrmDocumentCompany"): re.compile(r"^COMPANY$"),
    ("crm", "Bitrix\\Crm\\Integration\\BizProc\\Document\\Quote"): re.compile(r"^QUOTE$"),
    ("crm", "Bitrix\\Crm\\Integration\\BizProc\\Document\\SmartInvoice"): re.compile(r"^SMART_INVOICE$"),
    ("crm", "Bitrix\\Crm\\Integration\\BizProc\\Document\\Dynamic"): re.compile(r"^DYNAMIC_\d+$"),
    ("lists", "BizprocDocument"): re.compile(r"^iblock_\d+$"),
    ("lists", "Bitrix\\Lists\\BizprocDocumentLists"): re.compile(r"^iblock_\d+$"),
    ("disk", "Bitrix\\Disk\\BizProcDocument"): re.compile(r"^STORAGE_\d+$"),
    # restservice.php::validateActivityDocumentType asks the document service for the type's field types;
    # tasks lib/integration/bizproc/document/task.php answers them for its types (TASK_PROJECT_<group>, ...)
    ("tasks", "Bitrix\\Tasks\\Integration\\Bizproc\\Document\\Task"): re.compile(
        r"^TASK(_(PROJECT|SCRUM_PROJECT|PLAN|USER)_\d+)?$"
    ),
}


def validate_document_type(document_type: Any) -> list[str]:
    values = list(document_type.values()) if isinstance(document_type, dict) else document_type
    if (
        not isinstance(values, list)
        or len(values) != 3
        or not all(isinstance(v, str) for v in values)
        or (values[0], values[1]) not in _DOCUMENT_ENTITIES
        or not _DOCUMENT_ENTITIES[(values[0], values[1])].match(values[2])
    ):
        raise _error(VALIDATION, "Wrong activity DOCUMENT_TYPE!")
    return [str(v) for v in values]


def validate_filter(value: Any) -> None:
    if not isinstance(value, dict | list):
        raise _error(VALIDATION, "Wrong activity FILTER!")


def _localized(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {"*": php_string(value)}


def _check_context(client_id: str | None, is_admin: bool) -> str:
    if client_id is None:
        raise access_denied("Application context required")
    if not is_admin:
        raise access_denied()
    return client_id


def add(portal: Portal, client_id: str | None, is_admin: bool, is_robot: bool, params: dict[str, Any]) -> bool:
    """``addActivityInternal``: context → admin → normalise → validate → duplicate → placement → insert."""
    client_id = _check_context(client_id, is_admin)
    data = prepare_activity_data(params)
    if php_empty(data):
        raise _error(VALIDATION, "Empty data!")
    validate_code(data.get("CODE"))
    validate_handler(data.get("HANDLER"))
    if php_empty(data.get("NAME")):
        raise _error(VALIDATION, "Empty activity NAME!")
    order = (
        ("PROPERTIES", "DOCUMENT_TYPE", "RETURN_PROPERTIES")
        if is_robot
        else ("PROPERTIES", "RETURN_PROPERTIES", "DOCUMENT_TYPE")
    )
    for key in order:
        if data.get(key) is None:
            continue
        if key == "DOCUMENT_TYPE":
            validate_document_type(data[key])
        else:
            validate_properties(data[key])
    if data.get("FILTER") is not None:
        validate_filter(data["FILTER"])

    code: str = data["CODE"]
    identity = internal_code(client_id, code)
    if identity in portal.registrations:
        raise _error("ERROR_ACTIVITY_ALREADY_INSTALLED", "Activity or Robot already installed!")

    use_placement = "Y" if data.get("USE_PLACEMENT") == "Y" else "N"
    placement_handler = data.get("PLACEMENT_HANDLER")
    if use_placement == "Y":
        validate_handler(placement_handler)
        if (client_id, code) in portal.placements:
            raise _error(
                "ERROR_CORE",
                "Unable to set placement handler: You should use unique placement handler for each CODE!",
            )

    properties = data.get("PROPERTIES") or {}
    return_properties = data.get("RETURN_PROPERTIES") or {}
    if (
        len(code) > MAX_CODE
        or len(data["HANDLER"]) > MAX_HANDLER
        or len(json.dumps(properties)) >= MAX_SERIALIZED
        or len(json.dumps(return_properties)) >= MAX_SERIALIZED
    ):
        raise _error("ERROR_ACTIVITY_ADD_FAILURE", "Activity save error!")

    document_type = data.get("DOCUMENT_TYPE")
    portal.registrations[identity] = Registration(
        client_id=client_id,
        code=code,
        is_robot=is_robot,
        handler=data["HANDLER"],
        auth_user_id=php_intval(data.get("AUTH_USER_ID", 0)),
        use_subscription=php_string(data.get("USE_SUBSCRIPTION")),
        name=_localized(data["NAME"]),
        description=_localized(data["DESCRIPTION"]) if data.get("DESCRIPTION") is not None else None,
        properties=dict(properties) if isinstance(properties, dict) else {},
        return_properties=dict(return_properties) if isinstance(return_properties, dict) else {},
        document_type=validate_document_type(document_type) if document_type is not None else None,
        filter=data.get("FILTER"),
        use_placement=use_placement,
        placement_handler=placement_handler if use_placement == "Y" else None,
        internal_code=identity,
    )
    if use_placement == "Y":
        portal.placements[(client_id, code)] = str(placement_handler)
    return True


def _find(portal: Portal, client_id: str, is_robot: bool, code: str) -> Registration:
    found = portal.registrations.get(internal_code(client_id, code))
    if found is None or found.is_robot != is_robot:
        raise _error("ERROR_ACTIVITY_NOT_FOUND", "Activity or Robot not found!")
    return found


def update(portal: Portal, client_id: str | None, is_admin: bool, is_robot: bool, params: dict[str, Any]) -> bool:
    """Context → normalise → admin → code → existence → fields (whole-field replace)."""
    if client_id is None:
        raise access_denied("Application context required")
    data = prepare_activity_data(params)
    if not is_admin:
        raise access_denied()
    validate_code(data.get("CODE"))
    row = _find(portal, client_id, is_robot, data["CODE"])
    fields = data.get("FIELDS")
    fields = fields if isinstance(fields, dict) else {}

    changes: dict[str, Any] = {}
    if fields.get("HANDLER") is not None:
        validate_handler(fields["HANDLER"])
        changes["handler"] = fields["HANDLER"]
    if fields.get("AUTH_USER_ID") is not None:
        changes["auth_user_id"] = php_intval(fields["AUTH_USER_ID"])
    if fields.get("USE_SUBSCRIPTION") is not None:
        changes["use_subscription"] = php_string(fields["USE_SUBSCRIPTION"])
    if fields.get("USE_PLACEMENT") is not None:
        changes["use_placement"] = "Y" if fields["USE_PLACEMENT"] == "Y" else "N"
    if not php_empty(fields.get("NAME")):
        changes["name"] = _localized(fields["NAME"])
    if fields.get("DESCRIPTION") is not None:
        changes["description"] = _localized(fields["DESCRIPTION"])
    for key, attr in (("PROPERTIES", "properties"), ("RETURN_PROPERTIES", "return_properties")):
        if fields.get(key) is not None:
            validate_properties(fields[key])
            changes[attr] = dict(fields[key]) if isinstance(fields[key], dict) else {}
    if "DOCUMENT_TYPE" in fields:
        value = fields["DOCUMENT_TYPE"]
        changes["document_type"] = None if php_empty(value) else validate_document_type(value)
    if "FILTER" in fields:
        value = fields["FILTER"]
        if php_empty(value):
            changes["filter"] = None
        else:
            validate_filter(value)
            changes["filter"] = value
    if not changes:
        raise _error(VALIDATION, "No fields to update")

    # PLACEMENT_HANDLER is upserted whenever given, whatever USE_PLACEMENT says (updateActivityInternal)
    if fields.get("PLACEMENT_HANDLER") is not None:
        validate_handler(fields["PLACEMENT_HANDLER"])
        changes["placement_handler"] = fields["PLACEMENT_HANDLER"]
        portal.placements[(client_id, row.code)] = str(fields["PLACEMENT_HANDLER"])
    if changes.get("use_placement") == "N":
        changes["placement_handler"] = None
        portal.placements.pop((client_id, row.code), None)
    for attr, value in changes.items():
        setattr(row, attr, value)
    return True


def delete(portal: Portal, client_id: str | None, is_admin: bool, is_robot: bool, params: dict[str, Any]) -> bool:
    """Context → admin → code → existence."""
    client_id = _check_context(client_id, is_admin)
    data = upper_keys(params)
    validate_code(data.get("CODE"))
    row = _find(portal, client_id, is_robot, data["CODE"])
    del portal.registrations[row.internal_code]
    portal.placements.pop((client_id, row.code), None)
    return True


def list_codes(portal: Portal, client_id: str | None, is_admin: bool, is_robot: bool) -> list[str]:
    """Codes of the calling app only, filtered by IS_ROBOT."""
    client_id = _check_context(client_id, is_admin)
    return [r.code for r in portal.registrations.values() if r.client_id == client_id and r.is_robot == is_robot]


def filter_allows(flt: Any, document_type: list[str] | None, edition: str) -> bool:
    """``ActivityFilterChecker::checkActivityFilter`` (bizproc/lib/activity/mixins/activityfilterchecker.php).

    INCLUDE hides unless a rule matches, EXCLUDE hides if one does, MIN_API_VERSION above the engine's
    (``CBPRuntime::ACTIVITY_API_VERSION`` = 1) hides. A value that is not a list, or is an associative
    array, is one rule; a string rule is compared with the edition; a list rule with the document type,
    position by position up to the rule's length (no document type: every list rule matches).
    """
    if not isinstance(flt, dict):
        return True
    for kind, rules in flt.items():
        if kind == "MIN_API_VERSION":
            if php_intval(rules) > ACTIVITY_API_VERSION:
                return False
            continue
        found = _rules_match(rules, document_type, edition)
        if (kind == "INCLUDE" and not found) or (kind == "EXCLUDE" and found):
            return False
    return True


ACTIVITY_API_VERSION = 1


def _rules_match(rules: Any, document_type: list[str] | None, edition: str) -> bool:
    if not isinstance(rules, list):  # a dict (associative array) or a scalar is a single rule
        rules = [rules]
    for rule in rules:
        result = False
        if isinstance(rule, list | dict):
            if not document_type:
                result = True
            else:
                for index, value in enumerate(document_type):
                    given = _at(rule, index)
                    if given is None:  # `!isset($rule[$key])`
                        break
                    result = given == value
                    if not result:
                        break
        else:
            result = php_string(rule) == edition
        if result:
            return True
    return False


def _at(rule: list[Any] | dict[str, Any], index: int) -> Any:
    if isinstance(rule, dict):
        return rule.get(str(index))
    return rule[index] if index < len(rule) else None


def visible_robots(portal: Portal, document_type: list[str] | None, client_id: str | None = None) -> list[Registration]:
    """The robots the portal offers for `document_type` (e.g. in the automation designer), FILTER applied."""
    return [
        r
        for r in portal.registrations.values()
        if r.is_robot and client_id in (None, r.client_id) and filter_allows(r.filter, document_type, portal.edition)
    ]


def wipe_app(portal: Portal, client_id: str) -> int:
    """``onRestAppDelete``/``onRestAppUpdate``: drop every registration and placement of the app."""
    doomed = [key for key, row in portal.registrations.items() if row.client_id == client_id]
    for key in doomed:
        del portal.registrations[key]
    for placement in [k for k in portal.placements if k[0] == client_id]:
        del portal.placements[placement]
    return len(doomed)
