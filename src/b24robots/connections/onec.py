"""The `1c` kind: a 1C:Enterprise infobase through its standard OData interface (OData v3).

URL shapes and answers follow the 1C:Enterprise 8.3 Developer Guide, chapter 17.4 "Standard OData
interface" (https://kb.1ci.com/1C_Enterprise_Platform/Guides/Developer_Guides/ ... /17.4._Standard_OData_interface;
in Russian https://its.1c.ru/db/v838doc#bookmark:dev:TI000001358):

* the root is ``http(s)://host/base/odata/standard.odata/``, basic auth with an infobase user;
* entity sets are ``Catalog_<Name>``, ``Document_<Name>``, ``InformationRegister_<Name>``,
  ``AccumulationRegister_<Name>`` ... with the metadata names as written in the configurator (often
  Cyrillic: ``Catalog_Контрагенты``), percent-encoded as UTF-8 in the URL;
* one object is ``Catalog_<Name>(guid'<uuid>')``; a register record has a composite key
  ``InformationRegister_<Name>(Period=datetime'...', Product_Key=guid'...')``;
* ``$format=json``, ``$filter`` (``eq ne gt ge lt le and or not``, ``substringof``), ``$select``,
  ``$top``, ``$skip``, ``$orderby``, ``$expand``; a list answers ``{"odata.metadata": ..., "value": [...]}``;
* create is POST to the entity set, update is PATCH of the object, delete is DELETE;
* a document is posted with POST ``Document_<Name>(guid'...')/Post?PostingModeOperational=false``
  and unposted with ``/Unpost`` (17.4.13 "Performing standard operations");
* errors answer ``{"odata.error": {"code": "<n>", "message": {"lang": "ru", "value": "<text>"}}}``.
"""

from __future__ import annotations

import datetime as _dt
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from b24robots.connections.http import HttpApi, HttpResponse
from b24robots.errors import ConnectionCallError

ENTITY_RE = re.compile(r"^[A-Za-z]+_[^\W\d]\w*(_[^\W\d]\w*)*$", re.UNICODE)
PREFIXES = (
    "Catalog_",
    "Document_",
    "DocumentJournal_",
    "Constant_",
    "ExchangePlan_",
    "ChartOfAccounts_",
    "ChartOfCalculationTypes_",
    "ChartOfCharacteristicTypes_",
    "InformationRegister_",
    "AccumulationRegister_",
    "CalculationRegister_",
    "AccountingRegister_",
    "BusinessProcess_",
    "Task_",
)
_SAFE = "()'=,_:-."


def onec_error_text(response: HttpResponse) -> str:
    """1C's `odata.error` body as one line ("1C error 13: <text>"), or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        err = body.get("odata.error") or body.get("error")
        if isinstance(err, Mapping):
            message = err.get("message")
            text = message.get("value") if isinstance(message, Mapping) else message
            return f"1C error {err.get('code', '?')}: {str(text or '').strip()[:500]}"
    return response.text.strip().replace("\n", " ")[:300]


def literal(value: Any, field: str = "") -> str:
    """An OData v3 literal: text quoted with '' doubled, guid'…' for *_Key fields, datetime'…'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, uuid.UUID):
        return f"guid'{value}'"
    if isinstance(value, _dt.datetime):
        return f"datetime'{value.replace(microsecond=0).isoformat()}'"
    if isinstance(value, _dt.date):
        return f"datetime'{value.isoformat()}T00:00:00'"
    text = str(value)
    if (field.endswith("_Key") or field == "Ref_Key") and _is_guid(text):
        return f"guid'{text}'"
    return "'" + text.replace("'", "''") + "'"


def _is_guid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36


def build_filter(filter: str | Mapping[str, Any] | None) -> str:
    """A raw `$filter` text, or a mapping of field -> value joined with `and` (equality)."""
    if filter is None or filter == "":
        return ""
    if isinstance(filter, str):
        return filter
    if not isinstance(filter, Mapping):
        raise ConnectionCallError("", "filter must be OData text or a mapping of field to value", code="BAD")
    return " and ".join(f"{name} eq {literal(value, str(name))}" for name, value in filter.items())


def key_text(key: str | uuid.UUID | Mapping[str, Any]) -> str:
    """`(guid'…')` for one object, `(Field=literal, …)` for a composite key."""
    if isinstance(key, Mapping):
        return "(" + ", ".join(f"{k}={literal(v, str(k) if _is_guid(str(v)) else '')}" for k, v in key.items()) + ")"
    text = str(key)
    if not _is_guid(text):
        raise ConnectionCallError("", f"{text[:40]!r} is not a GUID (Ref_Key like 3ca886b6-aabd-11e7-…)", code="BAD")
    return f"(guid'{text}')"


class OneCApi:
    """`ctx.onec(name)`: list/get/create/update/delete objects and post documents of a 1C infobase."""

    def __init__(self, http: HttpApi) -> None:
        self._http = http
        self.name = http.name

    def _entity(self, entity: str) -> str:
        if not isinstance(entity, str) or not ENTITY_RE.match(entity) or not entity.startswith(PREFIXES):
            raise ConnectionCallError(
                self.name,
                f"{str(entity)[:60]!r} is not a 1C entity set; use e.g. 'Catalog_Контрагенты' or 'Document_Заказ'",
                code="BAD",
            )
        return quote(entity, safe=_SAFE)

    def _call(self, method: str, path: str, query: Mapping[str, str] | None = None, body: Any = None) -> Any:
        params = {"$format": "json", **(query or {})}
        qs = "&".join(f"{quote(k, safe='$')}={quote(str(v), safe=_SAFE)}" for k, v in params.items())
        response = self._http.request(method, f"{path}?{qs}", json=body, error_text=onec_error_text)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ConnectionCallError(
                self.name, f"1C answered {response.status} with a body that is not JSON"
            ) from None

    def list(
        self,
        entity: str,
        *,
        filter: str | Mapping[str, Any] | None = None,
        select: str | Sequence[str] | None = None,
        top: int | None = None,
        skip: int | None = None,
        orderby: str | None = None,
        expand: str | None = None,
    ) -> list[dict[str, Any]]:
        """The objects of an entity set (`value` of the answer)."""
        query: dict[str, str] = {}
        if (text := build_filter(filter)) != "":
            query["$filter"] = text
        if select:
            query["$select"] = select if isinstance(select, str) else ",".join(select)
        for key, value in (("$top", top), ("$skip", skip)):
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ConnectionCallError(self.name, f"{key[1:]} must be a whole number >= 0", code="BAD")
                query[key] = str(value)
        if orderby:
            query["$orderby"] = orderby
        if expand:
            query["$expand"] = expand
        body = self._call("GET", self._entity(entity), query)
        rows = body.get("value") if isinstance(body, Mapping) else None
        return [dict(r) for r in rows] if isinstance(rows, list) else []

    def first(self, entity: str, **kwargs: Any) -> dict[str, Any] | None:
        """The first object matching, or None."""
        rows = self.list(entity, top=1, **kwargs)
        return rows[0] if rows else None

    def get(self, entity: str, key: str | Mapping[str, Any]) -> dict[str, Any]:
        return _strip(self._call("GET", self._entity(entity) + quote(key_text(key), safe=_SAFE)))

    def create(self, entity: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        return _strip(self._call("POST", self._entity(entity), body=dict(fields)))

    def update(self, entity: str, key: str | Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
        return _strip(self._call("PATCH", self._entity(entity) + quote(key_text(key), safe=_SAFE), body=dict(fields)))

    def delete(self, entity: str, key: str | Mapping[str, Any]) -> None:
        self._call("DELETE", self._entity(entity) + quote(key_text(key), safe=_SAFE))

    def post_document(self, document: str, key: str, *, operational: bool = False) -> None:
        """Post (провести) a document: POST Document_X(guid'…')/Post?PostingModeOperational=…"""
        if not str(document).startswith("Document_"):
            raise ConnectionCallError(self.name, "only Document_* objects can be posted", code="BAD")
        path = self._entity(document) + quote(key_text(key), safe=_SAFE) + "/Post"
        self._call("POST", path, {"PostingModeOperational": "true" if operational else "false"})

    def unpost_document(self, document: str, key: str) -> None:
        if not str(document).startswith("Document_"):
            raise ConnectionCallError(self.name, "only Document_* objects can be unposted", code="BAD")
        self._call("POST", self._entity(document) + quote(key_text(key), safe=_SAFE) + "/Unpost")

    def metadata(self) -> str:
        """The `$metadata` document (XML): what the Test button fetches."""
        return self._http.request("GET", "$metadata", error_text=onec_error_text).text


def _strip(body: Any) -> dict[str, Any]:
    if not isinstance(body, Mapping):
        return {}
    return {k: v for k, v in body.items() if k != "odata.metadata"}
