"""Parameter declarations.

A `Param` is one input or output of a robot. It produces its `PROPERTIES` entry, parses the incoming
`properties[key]` value and dumps the outgoing `RETURN_VALUES[key]` value. Module robots declare
parameters as attributes of a `Params` subclass::

    class Inputs(Params):
        phone = String("Phone", required=True)
        channel = Select("Channel", options={"sms": "SMS", "wa": "WhatsApp"}, default="sms")
        tags = String("Tags", multiple=True)

Stored robots carry the same information as plain documents (`Param.from_document`).
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar, Generic, Literal, Protocol, Self, TypeVar, cast, overload

from b24robots.errors import DeclarationError, InputError
from b24robots.fields import as_flag, as_int
from b24robots.robots.dates import UNKNOWN, Culture
from b24robots.robots.types import ParamType, ValueError_, coerce_type, dump_scalar, parse_scalar

# `validateActivityProperties` matches `#^[a-z][a-z0-9_]*$#i` (yuliai/bitrix-modules bizproc/lib/restservice.php)
KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$", re.IGNORECASE)
LANG_RE = re.compile(r"^[a-z]{2}$")

LocalizedText = str | Mapping[str, str]


def check_text(value: object, what: str, *, required: bool) -> LocalizedText | None:
    """Validate a plain or per-language text; return it normalised (lower-case language keys)."""
    if value is None or value == "" or value == {}:
        if required:
            raise DeclarationError(f"{what} is empty; give a plain text or a map like {{'en': ..., 'ru': ...}}")
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for lang, text in value.items():
            if not isinstance(lang, str) or not LANG_RE.match(lang.lower()):
                raise DeclarationError(f"{what}: {lang!r} is not a two-letter language code such as 'en' or 'ru'")
            if not isinstance(text, str) or not text:
                raise DeclarationError(f"{what} for language {lang!r} must be a non-empty text")
            out[lang.lower()] = text
        if required and not out:
            raise DeclarationError(f"{what} is empty")
        return out
    raise DeclarationError(f"{what} must be a text or a map of language code to text, not {type(value).__name__}")


def localize(text: LocalizedText | None, lang: str = "en") -> str:
    """Pick the text for `lang` the way the portal does: lang, ru for ua, en, then any."""
    if text is None:
        return ""
    if isinstance(text, str):
        return text
    lang = lang.lower()
    for candidate in (lang, "ru" if lang == "ua" else "", "en"):
        if candidate and candidate in text:
            return text[candidate]
    return next(iter(text.values()), "")


def _wire_text(text: LocalizedText) -> str | dict[str, str]:
    return text if isinstance(text, str) else dict(text)


T = TypeVar("T")


@dataclass(frozen=True)
class Param(Generic[T]):
    """One robot parameter: the schema, the parser and the dumper of its values.

    `Param` instances are also descriptors, so a `Params` subclass reads naturally and type checkers
    know the attribute types of an instance.
    """

    name: LocalizedText
    type: ParamType = ParamType.STRING
    key: str = ""
    description: LocalizedText | None = None
    required: bool = False
    multiple: bool = False
    default: Any = None
    options: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", coerce_type(self.type))
        what = f"parameter {self.key!r}" if self.key else "parameter"
        object.__setattr__(self, "name", check_text(self.name, f"{what} name", required=True))
        object.__setattr__(self, "description", check_text(self.description, f"{what} description", required=False))
        if self.key:
            self._check_key(self.key)
        if self.type is ParamType.SELECT:
            if not self.options:
                raise DeclarationError(f"{what} is a select; give options={{'key': 'Title', ...}}")
            for k, v in self.options.items():
                if not isinstance(k, str) or not k or not isinstance(v, str):
                    raise DeclarationError(f"{what}: option keys and titles must be non-empty texts, got {k!r}")
            object.__setattr__(self, "options", dict(self.options))
        elif self.options:
            raise DeclarationError(f"{what} has options but is of type {self.type.value}; use type 'select'")
        if self.default is not None:
            try:
                self.dump(self.default)
            except InputError as exc:
                raise DeclarationError(f"{what} default {self.default!r} does not fit: {exc.reason}") from None

    @staticmethod
    def _check_key(key: str) -> None:
        if not KEY_RE.match(key):
            raise DeclarationError(
                f"parameter key {key!r} is invalid; Bitrix24 accepts latin letters, digits and '_', "
                "starting with a letter (for example 'deal_sum' or 'entityTypeId')"
            )

    def with_key(self, key: str) -> Param[T]:
        self._check_key(key)
        return Param(
            name=self.name,
            type=self.type,
            key=key,
            description=self.description,
            required=self.required,
            multiple=self.multiple,
            default=self.default,
            options=self.options,
        )

    # descriptor protocol: `Inputs.phone` is the Param, `inputs.phone` the value
    def __set_name__(self, owner: builtins.type, name: str) -> None:
        # the key is validated by Params.__init_subclass__: errors raised here get wrapped in RuntimeError
        if not self.key:
            object.__setattr__(self, "key", name)

    @overload
    def __get__(self, obj: None, owner: builtins.type) -> Param[T]: ...
    @overload
    def __get__(self, obj: object, owner: builtins.type) -> T: ...
    def __get__(self, obj: object | None, owner: builtins.type) -> Param[T] | T:
        if obj is None:
            return self
        return cast(T, obj.__dict__.get(self.key, self.default_value()))

    def default_value(self) -> Any:
        if self.default is None:
            return [] if self.multiple else None
        if self.multiple and not isinstance(self.default, list | tuple):
            return [self.default]
        return list(self.default) if self.multiple else self.default

    # --- the three faces of one declaration -------------------------------------------------
    def to_property(self) -> dict[str, Any]:
        """The PROPERTIES / RETURN_PROPERTIES entry (protocol §1.3)."""
        prop: dict[str, Any] = {"Name": _wire_text(self.name), "Type": self.type.value}
        if self.description:
            prop["Description"] = _wire_text(self.description)
        prop["Required"] = "Y" if self.required else "N"
        prop["Multiple"] = "Y" if self.multiple else "N"
        if self.default is not None:
            dumped = self.dump(self.default)
            prop["Default"] = dumped
        if self.options:
            prop["Options"] = dict(self.options)
        return prop

    def parse(self, raw: Any, *, culture: Culture = UNKNOWN, warnings: list[str] | None = None) -> Any:
        """Parse the decoded form value of `properties[key]`; '' and absent mean missing.

        Accepts `properties[x]` and `properties[x][0]` for single values and a string or list for
        multiple ones. Missing values give the default; a missing required value is an InputError.
        Dates are read in the portal's `culture`; lenient readings that change a value are added to
        `warnings` (prefixed with the key) when given.
        """
        values = _as_list(raw)
        values = [v for v in values if v != ""]
        if not values:
            if self.required and self.default is None:
                raise InputError(self.key, "is required but the portal sent no value")
            return self.default_value()
        notes: list[str] = []
        try:
            parsed = [parse_scalar(self.type, v, self.options, culture=culture, warnings=notes) for v in values]
        except ValueError_ as exc:
            raise InputError(self.key, str(exc)) from None
        if warnings is not None:
            warnings.extend(f"{self.key}: {note}" for note in notes)
        if self.multiple:
            return parsed
        if len(parsed) > 1:
            raise InputError(self.key, f"expects one value but {len(parsed)} arrived")
        return parsed[0]

    def dump(self, value: Any) -> str | list[str]:
        """Dump a Python value for RETURN_VALUES (lists for multiple parameters)."""
        try:
            if self.multiple:
                items = [] if value is None else value if isinstance(value, list | tuple) else [value]
                return [dump_scalar(self.type, v, self.options) for v in items]
            if isinstance(value, list | tuple):
                raise ValueError_(f"expects one value, got a list of {len(value)}")
            return dump_scalar(self.type, value, self.options)
        except ValueError_ as exc:
            raise InputError(self.key, str(exc)) from None

    # --- documents (export/import, the register) ---------------------------------------------
    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": _wire_text(self.name), "type": self.type.value}
        if self.description:
            doc["description"] = _wire_text(self.description)
        doc["required"] = self.required
        doc["multiple"] = self.multiple
        if self.default is not None:
            doc["default"] = self.dump(self.default)
        if self.options:
            doc["options"] = dict(self.options)
        return doc

    @classmethod
    def from_document(cls, key: str, doc: Mapping[str, Any]) -> Param[Any]:
        if not isinstance(doc, Mapping):
            raise DeclarationError(f"parameter {key!r} must be a mapping with at least 'name' and 'type'")
        known = {"name", "description", "type", "required", "multiple", "default", "options"}
        extra = sorted(set(doc) - known)
        if extra:
            raise DeclarationError(f"parameter {key!r}: unknown field(s) {', '.join(extra)}; known: {sorted(known)}")
        ptype = coerce_type(doc.get("type", "string"))
        multiple = _flag(doc.get("multiple"), f"parameter {key!r} multiple")
        options = doc.get("options")
        probe = cls(name=doc.get("name") or "x", type=ptype, key=key, multiple=multiple, options=options)
        default = doc.get("default")
        if default is not None and default != "" and default != []:
            try:
                default = probe.parse(default)
            except InputError as exc:
                raise DeclarationError(f"parameter {key!r} default does not fit: {exc.reason}") from None
        else:
            default = None
        return cls(
            name=doc.get("name", ""),
            type=ptype,
            key=key,
            description=doc.get("description"),
            required=_flag(doc.get("required"), f"parameter {key!r} required"),
            multiple=multiple,
            default=default,
            options=options,
        )


def _flag(value: Any, what: str) -> bool:
    if value is None or value == "":
        return False
    flag = as_flag(value)
    if flag is not None:
        return flag
    raise DeclarationError(f"{what} must be true/false or 'Y'/'N', got {value!r}")


def _as_list(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list):
        return [v if isinstance(v, str) else "" for v in raw]
    if isinstance(raw, Mapping):
        # `properties[x][5]=...` alone decodes to a dict; keep the values in key order
        return [v if isinstance(v, str) else "" for _, v in sorted(raw.items(), key=lambda kv: _sort_key(kv[0]))]
    return [str(raw)]


def _sort_key(key: str) -> tuple[int, str]:
    # numeric keys in number order, then the rest by name; "²" is not a number (fields.py)
    number = as_int(key)
    return (number, "") if number is not None else (1 << 63, key)


# --- typed factories: `String("Phone")` is a Param[str | None], `String(..., required=True)` a
# Param[str], `String(..., multiple=True)` a Param[list[str]]; an instance attribute reads as that type.

V = TypeVar("V")


class ParamFactory(Protocol[V]):
    """Makes a `Param` of one type; the overloads give the attribute's type on a `Params` instance."""

    @overload
    def __call__(
        self,
        name: LocalizedText,
        *,
        description: LocalizedText | None = None,
        required: bool = False,
        multiple: Literal[True],
        default: Any = None,
        key: str = "",
    ) -> Param[list[V]]: ...
    @overload
    def __call__(
        self,
        name: LocalizedText,
        *,
        description: LocalizedText | None = None,
        required: Literal[True],
        multiple: Literal[False] = False,
        default: Any = None,
        key: str = "",
    ) -> Param[V]: ...
    @overload
    def __call__(
        self,
        name: LocalizedText,
        *,
        description: LocalizedText | None = None,
        required: bool = False,
        multiple: Literal[False] = False,
        default: V,
        key: str = "",
    ) -> Param[V]: ...
    @overload
    def __call__(
        self,
        name: LocalizedText,
        *,
        description: LocalizedText | None = None,
        required: bool = False,
        multiple: bool = False,
        default: Any = None,
        key: str = "",
    ) -> Param[V | None]: ...


def _factory(ptype: ParamType) -> ParamFactory[Any]:
    def make(
        name: LocalizedText,
        *,
        description: LocalizedText | None = None,
        required: bool = False,
        multiple: bool = False,
        default: Any = None,
        key: str = "",
    ) -> Param[Any]:
        return Param(
            name=name,
            type=ptype,
            key=key,
            description=description,
            required=required,
            multiple=multiple,
            default=default,
        )

    return cast(ParamFactory[Any], make)


String: ParamFactory[str] = _factory(ParamType.STRING)
Text: ParamFactory[str] = _factory(ParamType.TEXT)
Int: ParamFactory[int] = _factory(ParamType.INT)
Double: ParamFactory[float] = _factory(ParamType.DOUBLE)
Bool: ParamFactory[bool] = _factory(ParamType.BOOL)
Date: ParamFactory[date] = _factory(ParamType.DATE)
DateTime: ParamFactory[datetime] = _factory(ParamType.DATETIME)
# a user is its id, or a group code such as `group_d5` as text; a file its b_file id, else the text
User: ParamFactory[int | str] = _factory(ParamType.USER)
File: ParamFactory[int | str] = _factory(ParamType.FILE)


@overload
def Select(  # type: ignore[overload-overlap]  # a list for multiple=True, whatever else is passed
    name: LocalizedText,
    *,
    options: Mapping[str, str],
    description: LocalizedText | None = None,
    required: bool = False,
    multiple: Literal[True],
    default: Any = None,
    key: str = "",
) -> Param[list[str]]: ...
@overload
def Select(
    name: LocalizedText,
    *,
    options: Mapping[str, str],
    description: LocalizedText | None = None,
    required: Literal[True],
    multiple: Literal[False] = False,
    default: Any = None,
    key: str = "",
) -> Param[str]: ...
@overload
def Select(
    name: LocalizedText,
    *,
    options: Mapping[str, str],
    description: LocalizedText | None = None,
    required: bool = False,
    multiple: Literal[False] = False,
    default: str,
    key: str = "",
) -> Param[str]: ...
@overload
def Select(
    name: LocalizedText,
    *,
    options: Mapping[str, str],
    description: LocalizedText | None = None,
    required: bool = False,
    multiple: bool = False,
    default: Any = None,
    key: str = "",
) -> Param[str | None]: ...
def Select(
    name: LocalizedText,
    *,
    options: Mapping[str, str],
    description: LocalizedText | None = None,
    required: bool = False,
    multiple: bool = False,
    default: Any = None,
    key: str = "",
) -> Param[Any]:
    return Param(
        name=name,
        type=ParamType.SELECT,
        key=key,
        description=description,
        required=required,
        multiple=multiple,
        default=default,
        options=options,
    )


class Params:
    """Base class of typed input and output declarations.

    Subclass attributes that are `Param` objects declare the parameters, in order. An instance holds
    values: `Inputs(phone="+49...")`; unknown keyword arguments are a TypeError with the known keys.
    """

    __params__: ClassVar[tuple[Param[Any], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, Param[Any]] = {}
        for base in reversed(cls.__mro__[1:]):
            for p in getattr(base, "__params__", ()):
                found[p.key] = p
        for attr, value in list(vars(cls).items()):
            if isinstance(value, Param):
                try:
                    Param._check_key(attr)
                except DeclarationError as exc:
                    raise DeclarationError(f"{cls.__name__}.{attr}: {exc}") from None
                if value.key != attr:
                    raise DeclarationError(
                        f"{cls.__name__}.{attr}: the attribute name is the parameter key; remove key={value.key!r}"
                    )
                found[attr] = value
        cls.__params__ = tuple(found.values())

    def __init__(self, **values: Any) -> None:
        known = {p.key: p for p in self.__params__}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no parameter(s) {unknown}; known: {sorted(known)}")
        for key, value in values.items():
            self.__dict__[key] = value

    @classmethod
    def params(cls) -> tuple[Param[Any], ...]:
        return cls.__params__

    def as_dict(self) -> dict[str, Any]:
        return {p.key: getattr(self, p.key) for p in self.__params__}

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self.as_dict().items())

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.as_dict() == other.as_dict()

    def __hash__(self) -> int:  # values may be lists; identity hash keeps instances usable in sets
        return id(self)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"{type(self).__name__}({inner})"

    @classmethod
    def parse(cls, properties: Mapping[str, Any]) -> Self:
        """Parse decoded `properties[...]`; raises InputError naming the first bad parameter."""
        return cls(**parse_values(cls.__params__, properties))


def parse_values(
    params: Sequence[Param[Any]],
    properties: Mapping[str, Any] | None,
    *,
    culture: Culture = UNKNOWN,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """Parse decoded `properties` against `params`; unknown keys are ignored (the portal may send more).

    `culture` is the installation's (`Installation.date_culture`); `warnings` collects what was read
    leniently, for the run log.
    """
    props = properties or {}
    return {p.key: p.parse(props.get(p.key), culture=culture, warnings=warnings) for p in params}


def dump_values(params: Sequence[Param[Any]], values: Mapping[str, Any]) -> dict[str, str | list[str]]:
    """Dump output values for RETURN_VALUES under their declared keys; keys match case-insensitively, as
    the portal matches them; unknown keys are an InputError, missing ones are skipped."""
    by_key = {p.key.lower(): p for p in params}
    unknown = sorted(k for k in values if k.lower() not in by_key)
    if unknown:
        raise InputError(unknown[0], f"is not a declared output (declared: {sorted(p.key for p in params) or 'none'})")
    out: dict[str, str | list[str]] = {}
    for k, v in values.items():
        p = by_key[k.lower()]
        if v is not None or p.multiple:
            out[p.key] = p.dump(v)
    return out


def default_outputs(params: Sequence[Param[Any]]) -> dict[str, str | list[str]]:
    """The outputs' declared defaults, dumped (sent when a run fails so the workflow is never left hanging)."""
    return {p.key: p.dump(p.default) for p in params if p.default is not None}


def params_from_documents(docs: Mapping[str, Any] | None, what: str) -> tuple[Param[Any], ...]:
    if not docs:
        return ()
    if not isinstance(docs, Mapping):
        raise DeclarationError(f"{what} must be a mapping of parameter key to parameter")
    return tuple(Param.from_document(k, v) for k, v in docs.items())


__all__ = [
    "Bool",
    "Date",
    "DateTime",
    "Double",
    "File",
    "Int",
    "LocalizedText",
    "Param",
    "Params",
    "Select",
    "String",
    "Text",
    "User",
    "default_outputs",
    "dump_values",
    "localize",
    "parse_values",
]
