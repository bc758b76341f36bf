"""check_source: what the admin UI shows on save, with line numbers."""

from __future__ import annotations

import pytest

from b24robots.sandbox import ALLOWED_MODULES, SourceProblem, check_source

GOOD = """\
import datetime
import json
from collections import Counter, abc
from decimal import Decimal


class Total:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return f"Total({self.value})"


def run(inputs, ctx):
    counts = Counter(inputs["words"])
    return {"top": counts.most_common(1), "when": datetime.date.today(), "sum": Decimal("1.10") * 2}
"""


def test_good_code_has_no_problems() -> None:
    assert check_source(GOOD) == []


def test_syntax_error_has_line_col_and_message() -> None:
    problems = check_source("def run(inputs, ctx):\n    x = (1 +\n    return x\n")
    assert len(problems) == 1
    problem = problems[0]
    assert problem.kind == "syntax"
    assert problem.line == 2
    assert problem.col > 0
    assert "never closed" in problem.message or "invalid syntax" in problem.message


def test_indentation_error_is_reported() -> None:
    (problem,) = check_source("def run(inputs, ctx):\nreturn {}\n")
    assert (problem.kind, problem.line) == ("syntax", 2)
    assert "indent" in problem.message


@pytest.mark.parametrize(
    ("source", "fragment", "line"),
    [
        ("x = 1\n", "no entry point", 1),
        ("def run(inputs):\n    return {}\n", "two arguments", 1),
        ("\n\nasync def run(inputs, ctx):\n    return {}\n", "plain def", 3),
        ("class A:\n    def run(self, inputs, ctx):\n        return {}\n", "no entry point", 1),
    ],
)
def test_entry_point_is_required(source: str, fragment: str, line: int) -> None:
    problems = [p for p in check_source(source) if p.kind == "entry_point"]
    assert len(problems) == 1
    assert fragment in problems[0].message
    assert problems[0].line == line


def test_each_problem_carries_its_line() -> None:
    source = """\
import json
import os

def run(inputs, ctx):
    from subprocess import run as sh
    data = open("/etc/passwd").read()
    cls = ().__class__
    text = "{0.__globals__}".format(run)
    return {"e": eval("1")}
"""
    problems = check_source(source)
    by_line = {(p.line, p.kind) for p in problems}
    assert (2, "import") in by_line
    assert (5, "import") in by_line
    assert (6, "forbidden") in by_line
    assert (7, "forbidden") in by_line
    assert (8, "forbidden") in by_line
    assert (9, "forbidden") in by_line
    assert all(isinstance(p, SourceProblem) for p in problems)
    assert [p.line for p in problems] == sorted(p.line for p in problems)
    assert str(problems[0]).startswith("line 2:1: module 'os' is not available")


def test_allowed_modules_are_accepted_and_named_in_refusals() -> None:
    imports = "\n".join(f"import {name}" for name in sorted(ALLOWED_MODULES))
    assert check_source(imports + "\ndef run(inputs, ctx):\n    return {}\n") == []
    (problem,) = check_source("import pathlib\ndef run(inputs, ctx):\n    return {}\n")
    assert "json" in problem.message and "pathlib" in problem.message


def test_safe_dunders_are_fine_and_others_are_not() -> None:
    ok = """\
class A:
    def __init__(self):
        super().__init__()

def run(inputs, ctx):
    return {'n': A.__name__}
"""
    assert check_source(ok) == []
    bad = "def run(inputs, ctx):\n    return {'d': inputs.__dict__, 'm': run.__code__}\n"
    assert [p.message for p in check_source(bad)] == [
        "attribute '__dict__' is not allowed in stored code",
        "attribute '__code__' is not allowed in stored code",
    ]


def test_bitrix_expressions_in_strings_are_not_format_fields() -> None:
    source = "def run(inputs, ctx):\n    return {'t': '{=Document:TITLE} {0.name}'}\n"
    assert check_source(source) == []


@pytest.mark.parametrize(
    "source",
    [
        None,
        b"def run(i, c): pass",
        "def run(i, c):\n    return 1\x00\n",
        "(" * 500 + ")" * 500,
        "x = [" * 300000,
    ],
)
def test_garbage_never_raises(source: object) -> None:
    problems = check_source(source)  # type: ignore[arg-type]
    assert problems and problems[0].kind == "syntax"
