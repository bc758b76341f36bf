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
lossy case besides dicts with keys exactly ``"0".."n-1"``, which come back as lists. Keys that no
form name can carry raise :class:`~b24robots.errors.FormEncodeError`: an empty key, a nested key
containing ``]``, a top-level key starting with ``[`` or containing ``[`` followed by ``]``, and a
top-level key containing ``[`` that holds a container.
"""

from __future__ import annotations

import re
from binascii import a2b_qp
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from b24robots.errors import ConfigError, FormDecodeError, FormEncodeError

__all__ = ["DEFAULT_LIMITS", "FormLimits", "decode_form", "encode_form", "flatten_form"]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class FormLimits:
    """Bounds that :func:`decode_form` enforces; exceeding any one raises ``FormDecodeError``.

    ``max_list_length`` caps the items of a decoded list and the index an ``[]`` append may take;
    an explicit index such as ``a[999999999]`` is just a dict key and allocates nothing extra.
    """

    max_body_bytes: int = 1_048_576  # 1 MiB
    max_depth: int = 8  # bracket groups in one name
    max_keys: int = 5_000  # non-empty key=value pairs
    max_list_length: int = 1_000

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


# A `%` not followed by two hex digits stays a literal `%` (PHP); rewriting it as `%25` first
# leaves only well-formed escapes.
_STRAY_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def _prepare(raw: bytes) -> bytes:
    """Whole-body steps of percent-decoding that cannot change where pairs and names split.

    ``+`` becomes a space, a stray ``%`` becomes ``%25`` and escaped brackets become brackets.
    Each is a pure per-escape mapping that never yields ``&`` or ``=``, so doing it once for the
    body equals doing it per name and value. A ``%5B`` substring is always an escape: no escape's
    hex digits can contain ``%``, so a left-to-right decoder reads it the same way.
    """
    if b"+" in raw:
        raw = raw.replace(b"+", b" ")
    if b"%" in raw:
        raw = _STRAY_PERCENT.sub(b"%25", raw)
        raw = raw.replace(b"%5B", b"[").replace(b"%5D", b"]").replace(b"%5b", b"[").replace(b"%5d", b"]")
    return raw


def _unescape(raw: bytes) -> str:
    """Finish decoding one name or value (after :func:`_prepare`) and read it as UTF-8.

    Raises ``UnicodeDecodeError`` when the decoded bytes are not UTF-8.
    """
    if b"%" in raw:
        # Decoding in C keeps a 1 MiB body of Cyrillic text in the low milliseconds: `%XX` is
        # quoted-printable's `=XX`, once every literal `=` is itself escaped as `=3D` (which also
        # rules out quoted-printable's soft line breaks).
        raw = a2b_qp(raw.replace(b"=", b"=3D").replace(b"%", b"="))
    return raw.decode("utf-8")


# The bracket groups PHP reads: `[...]` runs back to back, each closed by the first `]`.
_GROUPS = re.compile(r"(?:\[[^\]]*\])+")


def _count_groups(name: str) -> int:
    """How many bracket groups PHP reads in ``name`` (for error messages; C-speed on huge names)."""
    found = _GROUPS.match(name, max(name.find("["), 0))
    return found[0].count("]") if found else 0


_INDEX_START = frozenset("-0123456789")


class _Node:
    """A PHP array under construction: ordered keys plus PHP's next free integer index.

    ``items`` holds ``str`` leaves and child nodes; ``_Tree.finish`` swaps each child for its
    ``dict`` or ``list``.
    """

    __slots__ = ("items", "key", "live", "name", "next_index", "parent", "prefix_end")

    def __init__(self, parent: _Node | None, key: str, name: str, prefix_end: int) -> None:
        self.items: dict[str, Any] = {}
        # None mirrors PHP 8.3's "no integer key yet": the first append then takes 0.
        self.next_index: int | None = None
        self.parent = parent
        self.key = key  # where this node sits in its parent
        self.live = True
        self.name = name  # the pair name that created this node; `name[:prefix_end]` is its own name
        self.prefix_end = prefix_end

    def put(self, key: str, value: Any) -> None:
        self.items[key] = value
        if key[:1] in _INDEX_START:  # cheap pre-check: most keys are not integers
            index = _as_index(key)
            if index is not None and (self.next_index is None or index >= self.next_index):
                self.next_index = index + 1


class _Tree:
    """Builds the decoded value pair by pair, as PHP's ``php_register_variable_ex`` does."""

    def __init__(self, limits: FormLimits) -> None:
        self.limits = limits
        self.root = _Node(None, "", "", 0)
        self.nodes: list[_Node] = []  # every container but the root, in creation order
        self.replaced = False  # whether a later pair replaced a container by a scalar

    def assign(self, name: str, value: str) -> None:
        node = self.root
        open_at = name.find("[")
        if open_at <= 0:
            if name and open_at < 0:  # PHP skips a pair with an empty name (`=x`, `[a]=x`)
                self._put_leaf(node, name, value)
            return
        key = name[:open_at]
        pos = open_at  # index of the `[` that opens the next group
        size = len(name)
        depth = 0
        while True:
            close = name.find("]", pos + 1)
            if close < 0:
                if depth == 0:
                    key = name  # `a[b` is a plain key (PHP would write `a_b`)
                break  # an unclosed group after a valid one is dropped, as PHP does
            depth += 1
            if depth > self.limits.max_depth:
                raise FormDecodeError(
                    f"key {_show(name)} is nested {_count_groups(name)} levels deep; "
                    f"the limit is {self.limits.max_depth} (max_depth)"
                )
            child = node.items.get(key)
            if type(child) is not _Node:
                # A scalar here is replaced by a container: the later pair wins, as in PHP.
                child = _Node(node, key, name, pos)
                self.nodes.append(child)
                node.put(key, child)
            node = child
            key = name[pos + 1 : close] or self._append_key(node, name)
            pos = close + 1
            if pos >= size or name[pos] != "[":
                break  # anything after `]` that does not open a new group is ignored, as PHP does
        self._put_leaf(node, key, value)

    def _put_leaf(self, node: _Node, key: str, value: str) -> None:
        if type(node.items.get(key)) is _Node:
            self.replaced = True
        node.put(key, value)

    def _append_key(self, node: _Node, name: str) -> str:
        index = 0 if node.next_index is None else node.next_index
        if index >= self.limits.max_list_length:
            raise FormDecodeError(
                f"key {_show(name)} appends at list index {index}; "
                f"the limit is {self.limits.max_list_length} items (max_list_length)"
            )
        return str(index)

    def finish(self) -> dict[str, Any]:
        """Swap every live node for its dict or list, children first, without recursion."""
        nodes = self.nodes
        if self.replaced:
            # Creation order puts parents before children, so liveness flows down in one pass;
            # a container replaced by a later pair (and all below it) must not trip a limit.
            for node in nodes:
                parent = node.parent
                node.live = parent is not None and parent.live and parent.items.get(node.key) is node
        max_list = self.limits.max_list_length
        for node in reversed(nodes):
            parent = node.parent
            if parent is None or not node.live:
                continue
            items = node.items
            size = len(items)
            if node.next_index == size and _is_run(items):
                if size > max_list:
                    raise FormDecodeError(
                        f"list {_show(node.name[: node.prefix_end])} has {size} items; "
                        f"the limit is {max_list} (max_list_length)"
                    )
                parent.items[node.key] = [items[str(i)] for i in range(size)]
            else:
                parent.items[node.key] = items
        return self.root.items


def _is_run(items: Mapping[str, Any]) -> bool:
    """True when the keys are exactly the canonical integers 0..len-1 (in any order)."""
    size = len(items)
    for key in items:
        index = _as_index(key)
        if index is None or not 0 <= index < size:
            return False
    return True  # keys are distinct, so `size` distinct values in [0, size) cover the whole range


def _to_bytes(body: bytes | str, limits: FormLimits) -> bytes:
    if isinstance(body, str):
        if len(body) > limits.max_body_bytes:
            raise FormDecodeError(
                f"body is {len(body)} characters; the limit is {limits.max_body_bytes} bytes (max_body_bytes)"
            )
        try:
            body = body.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise FormDecodeError(f"body is not valid UTF-8 text (character {exc.start} is a lone surrogate)") from None
    elif isinstance(body, bytearray | memoryview):
        body = bytes(body)
    elif not isinstance(body, bytes):
        raise FormDecodeError(f"body must be bytes or str, not {type(body).__name__}")
    if len(body) > limits.max_body_bytes:
        raise FormDecodeError(f"body is {len(body)} bytes; the limit is {limits.max_body_bytes} (max_body_bytes)")
    return body


def decode_form(body: bytes | str, limits: FormLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Decode a form body as PHP fills ``$_POST`` (see the module docstring for the exact rules).

    Leaves are ``str``; containers are ``dict[str, ...]`` or ``list``. Raises ``FormDecodeError``
    (with ``.reason``) for invalid UTF-8 and for every exceeded limit, and never anything else.
    Runs in time linear in the body size.
    """
    raw = _prepare(_to_bytes(body, limits))
    tree = _Tree(limits)
    pairs = raw.split(b"&")
    count = 0
    for number, pair in enumerate(pairs, 1):
        if not pair:
            continue
        count += 1
        if count > limits.max_keys:
            total = sum(1 for p in pairs if p)
            raise FormDecodeError(f"body has {total} key=value pairs; the limit is {limits.max_keys} (max_keys)")
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
        tree.assign(name, value)
    return tree.finish()


# --- encoding ---------------------------------------------------------------------------------


# PHP `urlencode` per byte: letters, digits and `-_.` stay, space is `+`, every other byte `%XX` (uppercase).
_URLENCODED = tuple(
    chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "-_.") else "+" if b == 0x20 else f"%{b:02X}"
    for b in range(256)
)
_KEPT = re.compile(r"[A-Za-z0-9_.\-]*")


def _quote(text: str) -> str | None:
    """PHP ``urlencode`` of ``text`` (UTF-8), or None when it holds a lone surrogate (no UTF-8 form).

    Most names and values need no escape at all (one C-speed match); the rest map byte by byte through a
    table, without a Python call per byte (``urllib.parse.quote_plus`` made one, and was most of the
    encoder's time)."""
    if _KEPT.fullmatch(text):
        return text
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return "".join(map(_URLENCODED.__getitem__, raw))


def _name(path: tuple[str, ...]) -> str:
    return path[0] + "".join(f"[{p}]" for p in path[1:])


def _key(key: object, path: tuple[str, ...]) -> str:
    if type(key) is str:
        text = key
    elif isinstance(key, bool) or not isinstance(key, str | int):
        raise FormEncodeError(f"key {key!r} under {_show(_name(path)) if path else 'the top level'} must be a str")
    else:
        text = str(key)
    if not path:
        bracket = text.find("[")
        if not text or bracket == 0 or (bracket > 0 and "]" in text[bracket:]):
            raise FormEncodeError(
                f"top-level key {text!r} cannot be written as a form name "
                "(it must be non-empty, not start with '[' and not contain '[' followed by ']')"
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
    kind = type(value)  # the common types first: an ABC's isinstance is slow
    if kind is str:
        return None
    if isinstance(value, dict) or isinstance(value, Mapping):  # noqa: SIM101  (dict first: no ABC check)
        return iter(value.items())
    if isinstance(value, list | tuple):
        return iter(enumerate(value))
    return None


def _leaves(data: Mapping[str, Any]) -> Iterator[tuple[tuple[str, ...], str]]:
    """Yield ``(path, text)`` for every leaf, depth first in insertion order, without recursion."""
    if not isinstance(data, Mapping):
        raise FormEncodeError(f"the top level must be a mapping, not {type(data).__name__}")
    stack: list[tuple[Iterator[tuple[object, object]], tuple[str, ...], int]] = [(iter(data.items()), (), id(data))]
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
            if len(here) > 1 and "[" in here[0]:
                # `a[b` + `[c]` would read back as the group `b[c`.
                raise FormEncodeError(
                    f"top-level key {here[0]!r} contains '[' and holds a container; it cannot be written as a form name"
                )
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
        quoted = [q for q in map(_quote, path) if q is not None]
        value = _quote(text)
        if len(quoted) < len(path) or value is None:
            where = f"key {_show(_name(path))}" if len(quoted) < len(path) else f"the value of {_show(_name(path))}"
            raise FormEncodeError(f"{where} contains a lone surrogate and cannot be UTF-8 encoded")
        name = quoted[0] + "".join(opening + q + closing for q in quoted[1:]) if len(quoted) > 1 else quoted[0]
        parts.append(f"{name}={value}")
    return "&".join(parts).encode("ascii")
