"""What stored code may say: the import allow-list and the source check.

Stdlib only (loaded into the zygote too). This is the in-language layer, defence in depth: it
rejects the well-known escapes early and with a line number, while the OS layer (rlimits, chroot,
seccomp) contains whatever slips through.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

#: Modules stored code may import. Kept small on purpose; each is pure computation.
#: typing and dataclasses are absent: both evaluate strings as code internally.
ALLOWED_MODULES: frozenset[str] = frozenset(
    {
        "json",
        "re",
        "math",
        "datetime",
        "decimal",
        "itertools",
        "collections",
        "collections.abc",
        "string",
        "statistics",
        "functools",
        "operator",
        "random",
        "time",
    }
)

#: Public names withheld from allowed modules because they reach objects by attribute name.
WITHHELD: dict[str, frozenset[str]] = {
    "operator": frozenset({"attrgetter", "methodcaller"}),
    "string": frozenset({"Formatter"}),
}

#: Double-underscore names that are harmless protocol hooks; every other dunder is refused.
SAFE_DUNDERS: frozenset[str] = frozenset(
    {
        "__init__",
        "__post_init__",
        "__name__",
        "__qualname__",
        "__doc__",
        "__slots__",
        "__str__",
        "__repr__",
        "__format__",
        "__hash__",
        "__bool__",
        "__len__",
        "__iter__",
        "__next__",
        "__reversed__",
        "__contains__",
        "__getitem__",
        "__setitem__",
        "__delitem__",
        "__missing__",
        "__call__",
        "__enter__",
        "__exit__",
        "__eq__",
        "__ne__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "__add__",
        "__radd__",
        "__sub__",
        "__rsub__",
        "__mul__",
        "__rmul__",
        "__truediv__",
        "__floordiv__",
        "__mod__",
        "__neg__",
        "__abs__",
        "__int__",
        "__float__",
        "__index__",
        "__round__",
    }
)

#: Non-dunder attributes that lead from a value to frames, code or globals.
FORBIDDEN_ATTRS: frozenset[str] = frozenset(
    {
        "gi_frame",
        "gi_code",
        "gi_yieldfrom",
        "cr_frame",
        "cr_code",
        "cr_await",
        "cr_origin",
        "ag_frame",
        "ag_code",
        "ag_await",
        "f_back",
        "f_builtins",
        "f_code",
        "f_globals",
        "f_locals",
        "f_trace",
        "tb_frame",
        "tb_next",
        "co_code",
        "co_consts",
    }
)

#: Builtins stored code does not get; named here so the check can say so with a line number.
FORBIDDEN_NAMES: frozenset[str] = frozenset(
    {
        "open",
        "exec",
        "eval",
        "compile",
        "globals",
        "locals",
        "vars",
        "breakpoint",
        "input",
        "help",
        "exit",
        "quit",
        "memoryview",
    }
)

#: Methods that read attributes named in a string: refused unless the string is a literal (checked).
FORMAT_METHODS: frozenset[str] = frozenset({"format", "format_map"})

#: Classes whose class pattern binds the subject itself (PEP 634 "self-matching"); any other class
#: pattern with positional sub-patterns reads the attributes its ``__match_args__`` names, which
#: stored code can set to anything (``type("C", (), {"__match_args__": ("__globals__",)})``).
SELF_MATCHING: frozenset[str] = frozenset(
    {"bool", "bytearray", "bytes", "dict", "float", "frozenset", "int", "list", "set", "str", "tuple"}
)

_FORMAT_FIELD = re.compile(r"\{([^{}]*)\}")
_FIELD_ATTR = re.compile(r"\.\s*([A-Za-z_]\w*)")


@dataclass(frozen=True)
class SourceProblem:
    """One reason stored code is refused. `line`/`col` are 1-based (col 0 when unknown)."""

    line: int
    col: int
    message: str
    kind: str  # "syntax" | "entry_point" | "import" | "forbidden"

    def __str__(self) -> str:
        return f"line {self.line}:{self.col}: {self.message}"


def attribute_refusal(name: str) -> str | None:
    """Why attribute `name` may not be read or written, or None when it may. `name` must be an
    exact str (a subclass could lie in startswith/__eq__/__hash__): callers pass `exact_str(x)`."""
    if name.startswith("__") and name.endswith("__") and name not in SAFE_DUNDERS:
        return f"attribute {name!r} is not allowed in stored code"
    if name in FORBIDDEN_ATTRS:
        return f"attribute {name!r} is not allowed in stored code"
    return None


def exact_str(value: object) -> str:
    """`value` as a plain str, whatever a str subclass claims; TypeError for anything else."""
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)  # the C slot: an exact copy of the characters, no method lookup
    raise TypeError("attribute and module names must be strings")


def import_refusal(name: str, level: int = 0) -> str | None:
    """Why module `name` may not be imported, or None when it may."""
    if level:
        return "relative imports are not allowed in stored code"
    if name in ALLOWED_MODULES:
        return None
    allowed = ", ".join(sorted(ALLOWED_MODULES))
    return f"module {name!r} is not available to stored code (allowed: {allowed})"


def _bound_names(tree: ast.AST) -> set[str]:
    """Every name the module binds anywhere (assignments, arguments, defs, imports, patterns)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).partition(".")[0])
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.update(node.names)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
    return names


class _Checker(ast.NodeVisitor):
    def __init__(self, bound: set[str] | None = None) -> None:
        self.problems: list[SourceProblem] = []
        self.bound = bound or set()

    def _add(self, node: ast.AST, message: str, kind: str = "forbidden") -> None:
        line = getattr(node, "lineno", 1)
        col = getattr(node, "col_offset", -1) + 1
        self.problems.append(SourceProblem(line, col, message, kind))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            reason = import_refusal(alias.name)
            if reason:
                self._add(node, reason, "import")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        reason = import_refusal(module, node.level)
        if reason:
            self._add(node, reason, "import")
        for alias in node.names:
            reason = attribute_refusal(alias.name)
            if reason:
                self._add(node, reason)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        reason = attribute_refusal(node.attr)
        if reason:
            self._add(node, reason)
        elif node.attr in FORMAT_METHODS and not (
            isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        ):
            # A format string built at run time could name `{0.__globals__}`; literals are checked.
            self._add(node, f"{node.attr!r} only on a literal format string (or use an f-string)")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in FORBIDDEN_NAMES:
            self._add(node, f"{node.id!r} is not available to stored code")
        elif node.id.startswith("__") and node.id.endswith("__") and node.id not in SAFE_DUNDERS:
            self._add(node, f"name {node.id!r} is not allowed in stored code")

    def visit_MatchClass(self, node: ast.MatchClass) -> None:
        # Class patterns read attributes by keyword: `case object(__class__=c)`.
        for attr in node.kwd_attrs:
            reason = attribute_refusal(attr)
            if reason:
                self._add(node, reason)
        if node.patterns:
            cls = node.cls
            if not (isinstance(cls, ast.Name) and cls.id in SELF_MATCHING and cls.id not in self.bound):
                self._add(
                    node,
                    "positional patterns are allowed only in builtin class patterns such as int(x); "
                    "use keyword patterns, e.g. Point(x=x)",
                )
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        # str.format reads attributes named inside the format string: "{0.__class__}".
        if isinstance(node.value, str) and "{" in node.value:
            for field in _FORMAT_FIELD.findall(node.value):
                for attr in _FIELD_ATTR.findall(field):
                    if attribute_refusal(attr) or attr.startswith("_"):
                        self._add(node, f"format field {{{field}}} reads attribute {attr!r}; not allowed")


def _has_entry_point(tree: ast.Module) -> list[SourceProblem]:
    for node in tree.body:
        if isinstance(node, ast.AsyncFunctionDef) and node.name == "run":
            return [
                SourceProblem(node.lineno, node.col_offset + 1, "run must be a plain def, not async", "entry_point")
            ]
        if isinstance(node, ast.FunctionDef) and node.name == "run":
            args = node.args
            positional = len(args.posonlyargs) + len(args.args)
            if positional >= 2 or args.vararg is not None:
                return []
            return [
                SourceProblem(
                    node.lineno,
                    node.col_offset + 1,
                    "run must accept two arguments: def run(inputs, ctx)",
                    "entry_point",
                )
            ]
    return [SourceProblem(1, 0, "no entry point: define `def run(inputs, ctx):` at the top level", "entry_point")]


def check_source(source: str, filename: str = "<robot>") -> list[SourceProblem]:
    """Compile and lint stored code; an empty list means it may be saved and run.

    Reports syntax errors (line/col/message), a missing or malformed ``run(inputs, ctx)``,
    imports outside the allow-list and names or attributes that are refused, each with its line.
    Never raises for bad input.
    """
    if not isinstance(source, str):
        return [SourceProblem(1, 0, "the source must be text", "syntax")]
    try:
        tree = ast.parse(source, filename=filename)
        compile(tree, filename, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return [SourceProblem(exc.lineno or 1, exc.offset or 0, exc.msg or "invalid syntax", "syntax")]
    except (ValueError, RecursionError, MemoryError) as exc:
        return [SourceProblem(1, 0, f"the source cannot be compiled: {exc}", "syntax")]
    try:
        checker = _Checker(_bound_names(tree))
        checker.visit(tree)
    except RecursionError:
        return [SourceProblem(1, 0, "the source is nested too deeply", "syntax")]
    problems = _has_entry_point(tree) + checker.problems
    return sorted(problems, key=lambda p: (p.line, p.col))
