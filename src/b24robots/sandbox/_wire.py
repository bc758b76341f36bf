"""The wire between the pool and its children: framing and a typed JSON codec.

Stdlib only: this module is loaded into the zygote without importing the rest of the package.

Frames are a 4-byte big-endian length followed by UTF-8 JSON. Nothing is ever unpickled: the child
is untrusted, so whatever it sends is parsed as plain data and validated.

The codec keeps types JSON lacks. A value of a special type becomes ``{"\\u0000": tag, "v": text}``;
a plain dict that happens to own the key ``"\\u0000"`` is wrapped as ``{"\\u0000": "dict", "v": {...}}``
so that decoding is exact.
"""

from __future__ import annotations

# The C accelerator's encoder and scanner are taken at import: stored code in the worker can patch
# the `json` module's Python classes (JSONEncoder, JSONDecoder) but not these, so the worker's
# frames stay well formed whatever the code did to `json` (CPython always has `_json`).
import datetime as _dt
import decimal
import socket
import struct
from _json import encode_basestring as _encode_basestring
from _json import make_encoder as _make_encoder
from _json import make_scanner as _make_scanner
from typing import Any

TAG = "\x00"
_HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 30
#: The run's log, as the worker keeps it and the parent enforces it: at most LOG_ENTRIES entries of
#: LOG_CHARS characters, LOG_CHARS_TOTAL in all, then one final LOG_TRUNCATED entry.
LOG_ENTRIES = 1000
LOG_CHARS = 4000
LOG_CHARS_TOTAL = 256 * 1024
LOG_TRUNCATED = "... log truncated"
#: Worst case of such a log as JSON: a control character is escaped as six bytes.
LOG_FRAME_BYTES = 6 * LOG_CHARS_TOTAL + 8 * (LOG_ENTRIES + 1) + 6 * len(LOG_TRUNCATED)


class WireError(Exception):
    """A frame could not be read, written or decoded; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FrameTooLarge(WireError):
    """The peer announced a frame bigger than the receiver accepts."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"a message of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class PeerClosed(WireError):
    """The other side closed the connection."""


def encode(value: Any) -> Any:
    """Turn `value` into plain JSON data, tagging dates, times and decimals.

    Raises TypeError naming the offending type, ValueError for non-finite floats.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value!r} is not a JSON number")
        return value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"dict keys must be str, not {type(key).__name__}")
            out[key] = encode(item)
        if TAG in out:
            return {TAG: "dict", "v": out}
        return out
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    # datetime is a subclass of date: test it first.
    if isinstance(value, _dt.datetime):
        return {TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, _dt.date):
        return {TAG: "date", "v": value.isoformat()}
    if isinstance(value, _dt.time):
        return {TAG: "time", "v": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {TAG: "decimal", "v": str(value)}
    raise TypeError(f"values of type {type(value).__name__} cannot cross the sandbox boundary")


_DECODERS: dict[str, Any] = {
    "datetime": _dt.datetime.fromisoformat,
    "date": _dt.date.fromisoformat,
    "time": _dt.time.fromisoformat,
    "decimal": decimal.Decimal,
}


def decode(value: Any) -> Any:
    """Inverse of `encode`. Raises WireError on a malformed tag."""
    if isinstance(value, list):
        return [decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    if TAG in value:
        tag, inner = value.get(TAG), value.get("v")
        if tag == "dict" and isinstance(inner, dict):
            return {key: decode(item) for key, item in inner.items()}
        if isinstance(tag, str) and tag in _DECODERS and isinstance(inner, str):
            try:
                return _DECODERS[tag](inner)
            except (ValueError, decimal.InvalidOperation) as exc:
                raise WireError(f"bad {tag} value {inner[:40]!r}") from exc
        raise WireError(f"unknown tagged value {str(tag)[:40]!r}")
    return {key: decode(item) for key, item in value.items()}


def _no_default(value: object) -> Any:
    raise TypeError(f"values of type {type(value).__name__} cannot cross the sandbox boundary")


def dumps(message: dict[str, Any]) -> bytes:
    """Serialize an already-encoded message (no NaN, compact). Raises TypeError/ValueError."""
    encoder = _make_encoder({}, _no_default, _encode_basestring, None, ":", ",", False, False, False)
    return "".join(encoder(message, 0)).encode()


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    """Send one frame holding `message` (already encoded)."""
    payload = dumps(message)
    sock.sendall(_HEADER.pack(len(payload)) + payload)


def send_raw(sock: socket.socket, payload: bytes) -> None:
    """Send one frame holding pre-serialized JSON bytes."""
    sock.sendall(_HEADER.pack(len(payload)) + payload)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            raise PeerClosed("the peer closed the connection")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _refuse_constant(name: str) -> Any:
    # json.loads accepts NaN, Infinity and -Infinity by default; no sender of ours writes them.
    raise ValueError(f"{name} is not valid JSON")


class _ScanSettings:
    """What the C scanner reads when it is made: plain types, NaN/Infinity refused."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_refuse_constant)


_scan = _make_scanner(_ScanSettings())  # type: ignore[arg-type]  # duck-typed settings object


def loads(data: bytes) -> dict[str, Any]:
    """Parse one message strictly: one JSON object and nothing around it, no NaN/Infinity.
    Raises WireError."""
    try:
        text = data.decode("utf-8")
        message, end = _scan(text, 0)
    except StopIteration:
        raise WireError("malformed message: not JSON") from None
    except (ValueError, RecursionError) as exc:  # bad UTF-8, bad JSON, NaN, an int too long to parse
        raise WireError(f"malformed message: {exc}") from exc
    if end != len(text):
        raise WireError("malformed message: data after the JSON value")
    if not isinstance(message, dict):
        raise WireError("malformed message: not an object")
    return message


def recv(sock: socket.socket, limit: int = MAX_FRAME) -> dict[str, Any]:
    """Read one frame; refuse frames above `limit` bytes before reading them."""
    (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    if size > limit:
        raise FrameTooLarge(size, limit)
    return loads(_recv_exact(sock, size))
