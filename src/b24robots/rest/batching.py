"""`batch` and paging: commands checked and encoded, a batch answer split back per key, list pages read.

Pure functions over the wire shapes (protocol §5.4: at most 50 commands per request, each
`method?query` with the query built as PHP's `http_build_query`; the answer's `result`,
`result_error`, `result_total` and `result_next` are keyed like the commands, and PHP sends
keys 0..n-1 as a JSON list). No I/O: the client sends what these build.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from b24robots.errors import MethodError, RestError, ServerError
from b24robots.fields import as_int
from b24robots.rest.errormap import map_error
from b24robots.rest.phpquery import http_build_query

BATCH_MAX = 50
"""Commands per `batch` request; the portal refuses the rest (protocol §5.4)."""

Commands = Mapping[str, tuple[str, Mapping[str, Any] | None]] | Sequence[tuple[str, Mapping[str, Any] | None]]
"""Batch commands: `{key: (method, params)}` or `[(method, params), ...]` (keys "0", "1", ...)."""

_METHOD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._]*$")


@dataclass(slots=True)
class BatchResult:
    """Per-command outcome of `RestClient.batch`, keyed like the commands (list input: "0", "1", ...).

    `result(key)` returns the command's result or raises its `RestError`; commands a halted batch
    never ran raise MethodError code `NOT_EXECUTED`.
    """

    keys: list[str]
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, RestError] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    next: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    methods: dict[str, str] = field(default_factory=dict)
    portal: str = ""

    @property
    def ok(self) -> bool:
        """True when every command ran without error."""
        return not self.errors and len(self.results) == len(self.keys)

    def result(self, key: str | int) -> Any:
        k = str(key)
        if k in self.errors:
            raise self.errors[k]
        if k in self.results:
            return self.results[k]
        if k not in self.methods:
            raise KeyError(f"no batch command with key {k!r}")
        raise MethodError(
            "NOT_EXECUTED",
            "the batch halted on an earlier error before this command ran",
            method=self.methods[k],
            portal=self.portal,
        )

    __getitem__ = result


def check_method(portal_key: str, method: object) -> None:
    """MethodError INVALID_METHOD_NAME unless `method` is a REST method name."""
    if not isinstance(method, str) or not _METHOD_RE.match(method):
        raise MethodError(
            "INVALID_METHOD_NAME",
            f"{method!r} is not a REST method name (letters, digits, dots, underscores)",
            method=str(method),
            portal=portal_key,
        )


def batch_items(portal_key: str, commands: Commands) -> list[tuple[str, str, str]]:
    """`(key, method, query)` per command, in order; MethodError INVALID_PARAMS / INVALID_METHOD_NAME
    for a malformed command (nothing is sent then)."""
    pairs: Iterable[tuple[Any, Any]]
    if isinstance(commands, Mapping):
        pairs = commands.items()
    elif isinstance(commands, Sequence) and not isinstance(commands, str | bytes):
        pairs = enumerate(commands)
    else:
        raise MethodError(
            "INVALID_PARAMS", "batch commands must be a mapping or a list", method="batch", portal=portal_key
        )
    items: list[tuple[str, str, str]] = []
    for key, command in pairs:
        if not (isinstance(command, tuple | list) and len(command) == 2):
            raise MethodError(
                "INVALID_PARAMS",
                f"batch command {key!r} must be a (method, params) pair",
                method="batch",
                portal=portal_key,
            )
        method, params = command
        check_method(portal_key, method)
        try:
            query = http_build_query(params or {})
        except TypeError as exc:
            raise MethodError("INVALID_PARAMS", str(exc), method=method, portal=portal_key) from None
        items.append((str(key), method, query))
    return items


def chunk_command(chunk: Sequence[tuple[str, str, str]]) -> dict[str, str]:
    """The `cmd` parameter of one batch request."""
    return {k: f"{m}?{q}" if q else m for k, m, q in chunk}


def read_chunk(out: BatchResult, body: Mapping[str, Any], chunk: Sequence[tuple[str, str, str]], domain: str) -> None:
    """Record one batch answer's per-command results, errors, totals and nexts in `out`.

    ServerError ERROR_UNEXPECTED_ANSWER when the answer has no result object."""
    inner = body.get("result")
    if not isinstance(inner, Mapping):
        raise ServerError("ERROR_UNEXPECTED_ANSWER", "batch answer has no result object", method="batch", portal=domain)
    results = keyed(inner.get("result"))
    failures = keyed(inner.get("result_error"))
    totals = keyed(inner.get("result_total"))
    nexts = keyed(inner.get("result_next"))
    for key, method, _ in chunk:
        if key in failures:
            err = failures[key]
            code, desc = (err.get("error"), err.get("error_description")) if isinstance(err, Mapping) else (err, "")
            out.errors[key] = map_error(
                None, str(code or "ERROR_UNKNOWN"), str(desc or ""), method=method, portal=domain
            )
        elif key in results:
            out.results[key] = results[key]
        if (n := as_int(totals.get(key))) is not None:
            out.total[key] = n
        if (n := as_int(nexts.get(key))) is not None:
            out.next[key] = n


def keyed(group: Any) -> dict[str, Any]:
    """A per-command group of a batch answer by string key (PHP writes keys 0..n-1 as a list, empty as [])."""
    if isinstance(group, Mapping):
        return {str(k): v for k, v in group.items()}
    if isinstance(group, list):
        return {str(i): v for i, v in enumerate(group)}
    return {}


def page_items(result: Any) -> list[Any]:
    """The items of one page of a list method: a list, or the one list newer methods wrap it in
    (`{"items": [...]}` of crm.item.list, `{"tasks": [...]}`); anything else is one item."""
    if isinstance(result, list):
        return result
    if isinstance(result, Mapping) and len(result) == 1:
        (only,) = result.values()
        if isinstance(only, list):
            return only
    return [result]
