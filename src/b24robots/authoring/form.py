"""The robot editor's form model: a stored robot's document and code as form fields and back.

Shared by the admin UI and the CLI; nothing here renders HTML or reads requests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from b24robots.errors import DeclarationError
from b24robots.fields import INT32_MAX, as_int
from b24robots.robots.params import Param, check_text
from b24robots.robots.spec import CONNECTION_NAME_RE, KINDS, RobotSpec, check_code
from b24robots.robots.types import ParamType
from b24robots.sandbox import SourceProblem, check_source

PARAM_TYPES = tuple(t.value for t in ParamType)
ROW_RE = re.compile(r"^(in|out)\.(\d{1,4})\.([a-z_]+)$")
ROW_FIELDS = ("key", "name", "name_ru", "type", "required", "multiple", "default", "options")

NEW_ROBOT_SOURCE = '''def run(inputs, ctx):
    """inputs: a dict of the input parameters; return a dict of the output parameters."""
    ctx.log("started")
    return {}
'''


# --- the editor's form model ------------------------------------------------------------------


def _split_text(text: Any) -> tuple[str, str, str]:
    """(main, en, ru) fields of a plain or per-language text: English (or the first language) goes into
    the main field, which saves back as "en" when a Russian text is given."""
    if isinstance(text, Mapping):
        main = str(text.get("en") or next(iter(text.values()), ""))
        return main, "", str(text.get("ru", ""))
    return str(text or ""), "", ""


def _param_row(key: str, doc: Mapping[str, Any]) -> dict[str, str]:
    name = doc.get("name", "")
    if isinstance(name, Mapping):
        first = next(iter(name.values()), "")
        plain, ru = str(name.get("en", first)), str(name.get("ru", ""))
    else:
        plain, ru = str(name), ""
    default = doc.get("default", "")
    if isinstance(default, list):
        default = ", ".join(str(d) for d in default)
    options = doc.get("options") or {}
    return {
        "key": key,
        "name": plain,
        "name_ru": ru,
        "type": str(doc.get("type", "string")),
        "required": "Y" if doc.get("required") in (True, "Y") else "",
        "default": str(default or ""),
        "multiple": "Y" if doc.get("multiple") in (True, "Y") else "",
        "options": "; ".join(f"{k}={v}" for k, v in options.items()),
    }


def form_from_document(doc: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The editor's field values for a stored robot document."""
    name, name_en, name_ru = _split_text(doc.get("name"))
    desc, desc_en, desc_ru = _split_text(doc.get("description"))
    us = doc.get("use_subscription", "")
    return {
        "code": doc.get("code", ""),
        "kind": doc.get("kind", "robot"),
        "name": name,
        "name_en": name_en,
        "name_ru": name_ru,
        "description": desc,
        "description_en": desc_en,
        "description_ru": desc_ru,
        "use_subscription": "Y" if us in (True, "Y") else "N" if us in (False, "N") else "",
        "auth_user_id": str(doc.get("auth_user_id", 1)),
        "connections": ", ".join(doc.get("connections") or []),
        "source": source,
        "comment": "",
        "inputs": [_param_row(k, v) for k, v in (doc.get("properties") or {}).items()],
        "outputs": [_param_row(k, v) for k, v in (doc.get("return_properties") or {}).items()],
    }


def empty_form() -> dict[str, Any]:
    return form_from_document({"kind": "robot", "auth_user_id": 1}, NEW_ROBOT_SOURCE)


def form_from_fields(fields: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The editor's field values from a submitted form (rows `in.N.key`, `out.N.name`, ...), as typed."""
    flat: dict[str, str] = {}
    rows: dict[str, dict[int, dict[str, str]]] = {"in": {}, "out": {}}
    for name, value in fields:
        m = ROW_RE.match(name)
        if m:
            if m.group(3) in ROW_FIELDS:
                rows[m.group(1)].setdefault(int(m.group(2)), {})[m.group(3)] = value
        else:
            flat[name] = value
    form = empty_form()
    for key in (
        "code",
        "kind",
        "name",
        "name_en",
        "name_ru",
        "description",
        "description_en",
        "description_ru",
        "use_subscription",
        "auth_user_id",
        "connections",
        "source",
        "comment",
    ):
        form[key] = flat.get(key, "").replace("\r\n", "\n") if key == "source" else flat.get(key, "").strip()
    for group, target in (("in", "inputs"), ("out", "outputs")):
        form[target] = [
            {f: rows[group][i].get(f, "").strip() for f in ROW_FIELDS}
            for i in sorted(rows[group])
            if any(rows[group][i].get(f, "").strip() for f in ("key", "name", "name_ru", "default", "options"))
        ]
    return form


def _text_value(plain: str, en: str, ru: str) -> str | dict[str, str]:
    if en or ru:
        out = {"en": en or plain} if (en or plain) else {}
        if ru:
            out["ru"] = ru
        return out
    return plain


def _options(text: str, where: str) -> dict[str, str] | None:
    if not text.strip():
        return None
    out: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        key, sep, title = part.partition("=")
        if not sep or not key.strip():
            raise DeclarationError(f"{where}: write options as key=Title; key2=Title2")
        out[key.strip()] = title.strip() or key.strip()
    return out


@dataclass
class FormErrors:
    """Problems of a submitted editor form, each attached to the field it concerns."""

    fields: dict[str, str] = field(default_factory=dict)  # "code", "name", "in.2", "source", "general"
    source: list[SourceProblem] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.fields or self.source)

    @property
    def source_list(self) -> list[dict[str, Any]]:
        return [{"line": p.line, "col": p.col, "message": p.message} for p in self.source]


def spec_from_form(
    form: Mapping[str, Any], base: Mapping[str, Any] | None = None
) -> tuple[RobotSpec | None, FormErrors]:
    """Validate the editor form. `base` is the current document (keeps fields the editor does not show)."""
    errors = FormErrors()
    try:
        check_code(form["code"])
    except DeclarationError as exc:
        errors.fields["code"] = str(exc)
    if form["kind"] not in KINDS:
        errors.fields["kind"] = "choose robot or activity"
    name = _text_value(form["name"], form["name_en"], form["name_ru"])
    try:
        check_text(name, "the robot name", required=True)
    except DeclarationError as exc:
        errors.fields["name"] = str(exc)
    description = _text_value(form["description"], form["description_en"], form["description_ru"])
    auth_user_id = form.get("auth_user_id") or "1"
    user_id = as_int(auth_user_id, maximum=INT32_MAX)
    if user_id is None:
        errors.fields["auth_user_id"] = "give a user id (a whole number, 1 is usually the portal admin)"
    connections = [n for n in re.split(r"[,\s]+", form.get("connections") or "") if n]
    bad = [n for n in connections if not CONNECTION_NAME_RE.match(n)]
    if bad:
        errors.fields["connections"] = (
            f"connection name {bad[0]!r} is invalid; use lower-case latin letters, digits, '_' or '-', "
            "separated by commas"
        )
    docs: dict[str, dict[str, Any]] = {"in": {}, "out": {}}
    for group, rows in (("in", form["inputs"]), ("out", form["outputs"])):
        for i, row in enumerate(rows):
            where = f"{group}.{i}"
            key = row["key"]
            try:
                Param._check_key(key)
                if key in docs[group]:
                    raise DeclarationError(f"parameter key {key!r} is used twice")
                ptype = row["type"] or "string"
                pdoc: dict[str, Any] = {
                    "name": _text_value(row["name"], "", row["name_ru"])
                    if not row["name_ru"]
                    else {"en": row["name"] or row["name_ru"], "ru": row["name_ru"]},
                    "type": ptype,
                    "required": row["required"] == "Y",
                    "multiple": row["multiple"] == "Y",
                }
                options = _options(row["options"], f"parameter {key!r}")
                if options:
                    pdoc["options"] = options
                if row["default"]:
                    pdoc["default"] = (
                        [d.strip() for d in row["default"].split(",")] if row["multiple"] == "Y" else row["default"]
                    )
                Param.from_document(key, pdoc)
                docs[group][key] = pdoc
            except DeclarationError as exc:
                errors.fields[where] = str(exc)
    source = form["source"]
    if not source.strip():
        errors.fields["source"] = "the code is empty; define def run(inputs, ctx): ... and return a dict of outputs"
    else:
        errors.source = check_source(source)
    if errors:
        return None, errors
    doc: dict[str, Any] = {
        "code": form["code"],
        "kind": form["kind"],
        "name": name,
        "auth_user_id": user_id,
        "properties": docs["in"],
        "return_properties": docs["out"],
    }
    if description:
        doc["description"] = description
    if form["use_subscription"] in ("Y", "N"):
        doc["use_subscription"] = form["use_subscription"]
    if connections:
        doc["connections"] = connections
    for carried in ("document_type", "filter"):
        if base and base.get(carried):
            doc[carried] = base[carried]
    try:
        return RobotSpec.from_document(doc), errors
    except DeclarationError as exc:
        errors.fields["general"] = str(exc)
        return None, errors
