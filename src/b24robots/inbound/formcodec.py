"""PHP-style ``application/x-www-form-urlencoded`` codec (``$_POST`` and ``http_build_query``).

Bitrix24 posts robot handler bodies as flat pairs whose keys carry the nesting in brackets
(``properties[tags][0]=vip``). :func:`decode_form` rebuilds the nested value the way PHP fills
``$_POST``; :func:`encode_form` writes a nested value the way ``http_build_query`` does.

Decoding, as PHP does it:

* pairs are split on ``&``; empty pairs (``&&``) and pairs with an empty name are skipped;
  a pair without ``=`` has the value ``""``;
* names and values are percent-decoded (``+`` is a space, an invalid ``%`` escape stays as is) and
  must then be valid UTF-8; brackets may arrive raw or as ``%5B``/``%5D``;
* ``a[b][c]=1`` nests; ``a[]=x`` appends at the next integer index (one above the highest integer
  key so far, as PHP 8.3 counts it); text after a closing bracket that does not open another group
  is ignored (``a[b]x=1`` is ``a[b]=1``) and an unclosed group after a valid one is dropped
  (``a[b][c=1`` is ``a[b]=1``);
* later pairs win: ``a=1&a=2`` gives ``"2"``; a scalar and a container at one key replace each other
  (``a=1&a[b]=2`` gives ``{"a": {"b": "2"}}``, ``a[b]=2&a=1`` gives ``{"a": "1"}``);
* a container whose keys are exactly ``0..n-1`` (in any arrival order) becomes a ``list``, any other
  container a ``dict`` with ``str`` keys (``a[5]=x`` alone is ``{"a": {"5": "x"}}``); the top level
  is always a ``dict``; every leaf is a ``str``.

Deliberate differences from PHP, chosen so that every ``str`` key survives a round trip:
PHP turns ``.`` and space in a top-level name into ``_``, drops leading spaces of a name, turns an
unclosed top-level bracket into ``_`` (``a[b`` becomes ``a_b``), reads ``[ ]`` as ``[]``, and cuts a
name at a NUL byte. This codec does none of that (``a[b=1`` gives the key ``"a[b"``); Bitrix24 keys
never contain such characters. Where PHP silently drops input that exceeds its limits, this codec
raises :class:`~b24robots.errors.FormDecodeError`.

Encoding writes lists as ``a[0]``, ``a[1]`` and dicts as ``a[k]``, percent-encodes like PHP
``urlencode`` (letters, digits and ``-_.`` stay, space is ``+``) and, by default, brackets as
``%5B``/``%5D``. Leaves may be ``str``, ``int``, ``float`` (``str()``), ``bool`` (``"1"``/``"0"``)
or ``None`` (``""``; PHP would drop the pair). Empty lists and dicts vanish, as in PHP — the one
lossy case besides dicts with keys exactly ``"0".."n-1"``, which come back as lists.
"""

from __future__ import annotations

import re
from binascii import unhexlify
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import quote_plus

from b24robots.errors import ConfigError, FormDecodeError, FormEncodeError

__all__ = ["DEFAULT_LIMITS", "FormLimits", "decode_form", "encode_form", "flatten_form"]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class FormLimits:
    """Bounds that :func:`decode_form` enforces; exceeding any one raises ``FormDecodeError``."""

    max_body_bytes: int = 1_048_576  # 1 MiB
    max_depth: int = 8  # bracket groups per name
    max_keys: int = 5_000  # non-empty key=value pairs
    max_list_length: int = 1_000  # items per list; an index an `[]` append may take is below this

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if type(value) is not int or value < 0:
                raise ConfigError(f"FormLimits.{f.name} must be a non-negative int, not {value!r}")


DEFAULT_LIMITS = FormLimits()


def _show(name: str) -> str:
    """Quote a key for an error message, cut short so a hostile name cannot flood the log."""
    return repr(name if len(name) <= 80 else name[:77] + "...")


def _as_index(key: str) -> int | None:
    """The integer PHP would use for this array key, or None when PHP keeps it as a string."""
    digits = key[1:] if key[:1] == "-" else key
    if not digits or len(digits) > 19 or not digits.isascii() or not digits.isdigit():
        return None
    if digits[0] == "0" and (len(key) > 1):  # "01" and "-0" stay strings in PHP
        return None
    value = int(key)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


class _Node:
    """A PHP array under construction: ordered string keys plus PHP's next free integer index."""

    __slots__ = ("end", "items", "name", "next_index", "out")

    def __init__(self, name: str, end: int) -> None:
        self.items: dict[str, _Node | str] = {}
        # None mirrors PHP 8.3's "no integer key yet": the first append then takes 0.
        self.next_index: int | None = None
        self.name = name  # the pair name this container was created by ...
        self.end = end  # ... and where its own prefix of that name ends (for error messages)
        self.out: dict[str, Any] | list[Any] | None = None

    def set(self, key: str, value: _Node | str) -> None:
        self.items[key] = value
        index = _as_index(key)
        if index is not None and (self.next_index is None or index >= self.next_index):
            self.next_index = index + 1

    def append_key(self, name: str, limits: FormLimits) -> str:
        index = 0 if self.next_index is None else self.next_index
        if index >= limits.max_list_length:
            raise FormDecodeError(
                f"key {_show(name)} appends at list index {index}; "
                f"the limit is {limits.max_list_length} items (max_list_length)"
            )
        return str(index)


# A run of escapes (spaces as `+` included) is decoded with one C call: Cyrillic text is one run.
_ESCAPE_RUN = re.compile(rb"(?:%[0-9A-Fa-f]{2}|\+)+")


def _decode_run(match: re.Match[bytes]) -> bytes:
    return unhexlify(match[0].replace(b"+", b"%20").replace(b"%", b""))


def _unescape(raw: bytes) -> str:
    """Percent-decode one name or value and read it as UTF-8 (UnicodeDecodeError on bad bytes).

    ``+`` is a space; a ``%`` not followed by two hex digits stays as it is, as in PHP.
    """
    if b"%" in raw:
        raw = _ESCAPE_RUN.sub(_decode_run, raw)
    elif b"+" in raw:
        raw = raw.replace(b"+", b" ")
    return raw.decode("utf-8")


def _split_name(name: str) -> tuple[str, list[str | None], list[int]] | None:
    """Split ``a[b][]`` into ``("a", ["b", None], [ends])``; None when PHP ignores the pair.

    ``ends[i]`` is the index in ``name`` just past group ``i`` (used to name containers in errors).
    """
    open_at = name.find("[")
    if open_at < 0:
        return name, [], []
    if open_at == 0:
        return None  # empty variable name: PHP skips the pair
    groups: list[str | None] = []
    ends: list[int] = []
    pos = open_at
    size = len(name)
    while True:
        close = name.find("]", pos + 1)
        if close < 0:
            if not groups:
                return name, [], []  # `a[b` is a plain key (PHP would write `a_b`)
            break  # an unclosed group after a valid one is dropped, as PHP does
        groups.append(name[pos + 1 : close] or None)
        ends.append(close + 1)
        pos = close + 1
        if pos >= size or name[pos] != "[":
            break  # anything after `]` that does not open a new group is ignored, as PHP does
    return name[:open_at], groups, ends


def _to_bytes(body: bytes | str, limits: FormLimits) -> bytes:
    if isinstance(body, str):
        if len(body) > limits.max_body_bytes:
            raise FormDecodeError(
                f"body is {len(body)} characters; the limit is {limits.max_body_bytes} bytes (max_body_bytes)"
            )
        try:
            body = body.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise FormDecodeError(
                f"body is not valid UTF-8 text (character {exc.start} is a lone surrogate)"
            ) from None
    elif not isinstance(body, bytes | bytearray | memoryview):
        raise FormDecodeError(f"body must be bytes or str, not {type(body).__name__}")
    else:
        body = bytes(body)
    if len(body) > limits.max_body_bytes:
        raise FormDecodeError(
            f"body is {len(body)} bytes; the limit is {limits.max_body_bytes} (max_body_bytes)"
        )
    return body


def decode_form(body: bytes | str, limits: FormLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Decode a form body as PHP fills ``$_POST`` (see the module docstring for the exact rules).

    Leaves are ``str``; containers are ``dict[str, ...]`` or ``list``. Raises ``FormDecodeError``
    (with ``.reason``) for invalid UTF-8 and for every exceeded limit, and never anything else.
    Runs in time linear in the body size.
    """
    raw = _to_bytes(body, limits)
    root = _Node("", 0)
    pairs = raw.split(b"&")
    count = 0
    for number, pair in enumerate(pairs, 1):
        if not pair:
            continue
        count += 1
        if count > limits.max_keys:
            total = sum(1 for p in pairs if p)
            raise FormDecodeError(
                f"body has {total} key=value pairs; the limit is {limits.max_keys} (max_keys)"
            )
        raw_name, _, raw_value = pair.partition(b"=")
        try:
            name = _unescape(raw_name)
        except UnicodeDecodeError as exc:
            raise FormDecodeError(
                f"the key of pair {number} is not valid UTF-8 (byte {exc.start} after percent-decoding)"
            ) from None
        try:
            value = _unescape(raw_value) if raw_value else ""
        except UnicodeDecodeError as exc:
            raise FormDecodeError(
                f"the value of {_show(name)} is not valid UTF-8 (byte {exc.start} after percent-decoding)"
            ) from None
        _assign(root, name, value, limits)
    return _finish(root, limits)


def _assign(root: _Node, name: str, value: str, limits: FormLimits) -> None:
    split = _split_name(name)
    if split is None:
        return
    top, groups, ends = split
    if len(groups) > limits.max_depth:
        raise FormDecodeError(
            f"key {_show(name)} is nested {len(groups)} levels deep; "
            f"the limit is {limits.max_depth} (max_depth)"
        )
    if not top:
        return
    node = root
    key = top
    prefix_end = len(top)  # `name[:prefix_end]` names the container `key` refers to
    for group, end in zip(groups, ends, strict=True):
        child = node.items.get(key)
        if not isinstance(child, _Node):
            child = _Node(name, prefix_end)
            node.set(key, child)
        node = child
        key = group if group is not None else node.append_key(name, limits)
        prefix_end = end
    node.set(key, value)


def _finish(root: _Node, limits: FormLimits) -> dict[str, Any]:
    """Turn the node tree into dicts and lists, children first, without recursion."""
    order: list[_Node] = []
    stack = [root]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(v for v in node.items.values() if isinstance(v, _Node))
    for node in reversed(order):
        items = {k: (v.out if isinstance(v, _Node) else v) for k, v in node.items.items()}
        size = len(items)
        if node is not root and node.next_index == size and _is_run(items):
            if size > limits.max_list_length:
                raise FormDecodeError(
                    f"list {_show(node.name[: node.end])} has {size} items; "
                    f"the limit is {limits.max_list_length} (max_list_length)"
                )
            node.out = [items[str(i)] for i in range(size)]
        else:
            node.out = items
    result = root.out
    assert isinstance(result, dict)  # the root is never turned into a list
    return result


def _is_run(items: Mapping[str, Any]) -> bool:
    """True when the keys are exactly the canonical integers 0..len-1 (in any order)."""
    size = len(items)
    for key in items:
        index = _as_index(key)
        if index is None or not 0 <= index < size:
            return False
    return True  # keys are distinct, so `size` distinct values in [0, size) cover the whole range


# --- encoding ---------------------------------------------------------------------------------


def _quote(text: str, where: str) -> str:
    """PHP ``urlencode``: keep letters, digits and ``-_.``; space is ``+``; all else ``%XX`` of UTF-8."""
    try:
        # quote_plus also keeps `~`, which PHP escapes; a `~` in its output can only be a literal one.
        return quote_plus(text, safe="").replace("~", "%7E")
    except UnicodeEncodeError:
        raise FormEncodeError(f"{where} contains a lone surrogate and cannot be UTF-8 encoded") from None


def _name(path: tuple[str, ...]) -> str:
    return path[0] + "".join(f"[{p}]" for p in path[1:])


def _key(key: object, path: tuple[str, ...]) -> str:
    if isinstance(key, bool) or not isinstance(key, str | int):
        raise FormEncodeError(
            f"key {key!r} under {_show(_name(path)) if path else 'the top level'} must be a str"
        )
    text = str(key)
    if not path:
        bracket = text.find("[")
        if not text or bracket == 0 or (bracket > 0 and "]" in text[bracket:]):
            raise FormEncodeError(
                f"top-level key {text!r} cannot be written as a form name "
                "(it must be non-empty and not contain '[' followed by ']')"
            )
    elif not text or "]" in text:
        raise FormEncodeError(
            f"key {text!r} under {_show(_name(path))} cannot be written as a form name "
            "(a nested key must be non-empty and not contain ']')"
        )
    return text


def _scalar(value: object, path: tuple[str, ...]) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return ""
    raise FormEncodeError(
        f"value of {_show(_name(path))} is a {type(value).__name__}; "
        "expected str, int, float, bool, None, a mapping or a list"
    )


def _children(value: object) -> Iterator[tuple[object, object]] | None:
    if isinstance(value, Mapping):
        return iter(value.items())
    if isinstance(value, list | tuple):
        return iter(enumerate(value))
    return None


def _leaves(data: Mapping[str, Any]) -> Iterator[tuple[tuple[str, ...], str]]:
    """Yield ``(path, text)`` for every leaf, depth first in insertion order, without recursion."""
    if not isinstance(data, Mapping):
        raise FormEncodeError(f"the top level must be a mapping, not {type(data).__name__}")
    stack: list[tuple[Iterator[tuple[object, object]], tuple[str, ...], int]] = [
        (iter(data.items()), (), id(data))
    ]
    on_path = {id(data)}  # guards against a value that contains itself
    while stack:
        children, path, ident = stack[-1]
        step = next(children, None)
        if step is None:
            stack.pop()
            on_path.discard(ident)
            continue
        key, value = step
        here = (*path, _key(key, path))
        nested = _children(value)
        if nested is None:
            yield here, _scalar(value, here)
        elif id(value) in on_path:
            raise FormEncodeError(f"value of {_show(_name(here))} contains itself")
        else:
            on_path.add(id(value))
            stack.append((nested, here, id(value)))


def flatten_form(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The ``(name, value)`` pairs :func:`encode_form` writes, names with raw brackets (``a[b][0]``).

    Raises ``FormEncodeError`` for keys or values that have no form representation.
    """
    return [(_name(path), text) for path, text in _leaves(data)]


def encode_form(data: Mapping[str, Any], *, encode_brackets: bool = True) -> bytes:
    """Encode like PHP ``http_build_query`` (indexed lists); the inverse of :func:`decode_form`.

    ``decode_form(encode_form(x)) == x`` for every value built from ``dict[str, ...]``, non-empty
    lists and ``str`` without empty containers or dicts keyed exactly ``"0".."n-1"``.
    Raises ``FormEncodeError`` for keys or values that have no form representation.
    """
    opening, closing = ("%5B", "%5D") if encode_brackets else ("[", "]")
    parts: list[str] = []
    for path, text in _leaves(data):
        where = f"key {_show(_name(path))}"
        name = _quote(path[0], where) + "".join(opening + _quote(p, where) + closing for p in path[1:])
        parts.append(name + "=" + _quote(text, f"the value of {_show(_name(path))}"))
    return "&".join(parts).encode("ascii")
