"""Hostile stored code is contained with a clear error, and the pool keeps serving afterwards.

Every test runs twice: with the in-language layer on (the code is refused or fails cleanly) and
off, where only the operating system stands between the code and the host: then the run may do
what it likes inside its process, but no host secret reaches its outputs and the pool stays healthy.
"""

from __future__ import annotations

import json
import os
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox_support import CAPS, TIGHT, assert_serves_normally

from b24robots.errors import SandboxError, SandboxLimitExceeded, SourceRejected, StoredCodeError
from b24robots.sandbox import SandboxPool

HOST_SECRET = "host-secret-5e0c91"
HOST_FILE = Path(tempfile.gettempdir()) / "b24r-hostile-marker.txt"


@pytest.fixture(scope="module", params=[True, False], ids=["language-on", "language-off"])
def pool(request: pytest.FixtureRequest) -> Iterator[SandboxPool]:
    HOST_FILE.write_text(HOST_SECRET)
    os.environ["B24R_HOSTILE_SECRET"] = HOST_SECRET
    try:
        with SandboxPool(2, caps=CAPS, language_hardening=request.param) as p:
            yield p
    finally:
        del os.environ["B24R_HOSTILE_SECRET"]
        HOST_FILE.unlink(missing_ok=True)


def assert_contained(pool: SandboxPool, source: str) -> None:
    """With only the OS layer: whatever the run does, no host secret comes out and the pool serves."""
    try:
        result = pool.run(source, {}, context={"portal": "evil.example"})
    except SandboxError as exc:
        text = str(exc) + getattr(exc, "traceback", "")
    else:
        text = json.dumps(result.outputs, default=str) + "".join(result.log)
    for secret in (HOST_SECRET, "root:x:0:0"):
        assert secret not in text
    assert_serves_normally(pool)


def robot(body: str, top: str = "") -> str:
    return textwrap.dedent(top) + "\ndef run(inputs, ctx):\n" + textwrap.indent(textwrap.dedent(body), "    ")


LIMIT_CASES = {
    "infinite-loop": (robot("while True:\n    pass"), {"cpu", "timeout"}),
    "loop-swallowing-every-exception": (
        robot("while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass"),
        {"cpu", "timeout"},
    ),
    "top-level-loop": ("while True:\n    pass\n" + robot("return {}"), {"cpu", "timeout"}),
    "bigint-inside-c": (robot("x = 7 ** (10 ** 9)\nreturn {}"), {"cpu", "timeout"}),
    "memory-bomb-at-once": (robot("x = 'a' * (2 ** 31)\nreturn {}"), {"memory"}),
    "memory-bomb-growing": (robot("keep = []\nwhile True:\n    keep.append(bytearray(10 ** 6))"), {"memory"}),
    "recursion-bomb": (robot("def f(n):\n    return f(n + 1)\nreturn {'x': f(0)}"), {"recursion"}),
    "deeply-nested-output": (
        robot("a = []\nfor _ in range(100000):\n    a = [a]\nreturn {'a': a}"),
        {"recursion"},
    ),
    "huge-output": (robot("return {'x': 'a' * 2_000_000}"), {"output"}),
    "many-outputs": (robot("return {str(i): i for i in range(100_000)}"), {"output"}),
    "sleep-beyond-wall": (robot("import time\ntime.sleep(30)\nreturn {}"), {"timeout"}),
    "sleep-swallowing-the-alarm": (
        robot("import time\ntry:\n    time.sleep(30)\nexcept BaseException:\n    time.sleep(30)\nreturn {}"),
        {"timeout"},
    ),
}


@pytest.mark.parametrize("name", sorted(LIMIT_CASES))
def test_limit_is_named_and_pool_survives(pool: SandboxPool, name: str) -> None:
    source, limits = LIMIT_CASES[name]
    with pytest.raises(SandboxLimitExceeded) as info:
        pool.run(source, {}, context={"portal": "evil.example"}, limits=TIGHT)
    assert info.value.limit in limits
    assert info.value.limit in str(info.value)
    assert_serves_normally(pool)


REJECTED_CASES = {
    "import-os": (robot("return {}", "import os"), "module 'os' is not available", 1),
    "import-subprocess": (robot("return {}", "\nimport subprocess"), "'subprocess'", 2),
    "import-ctypes": (robot("return {}", "from ctypes import CDLL"), "'ctypes'", 1),
    "import-socket-inside-run": (robot("import socket\nreturn {}"), "'socket'", 3),
    "import-sys-modules": (robot("import sys\nreturn {'m': list(sys.modules)}"), "'sys'", 3),
    "importlib": (robot("import importlib\nreturn {}"), "'importlib'", 3),
    "threads-spam": (robot("import threading\nreturn {}"), "'threading'", 3),
    "signal-kill": (robot("import signal\nreturn {}"), "'signal'", 3),
    "open-etc-passwd": (robot("return {'p': open('/etc/passwd').read()}"), "'open' is not available", 3),
    "subclasses-escape": (
        robot("return {'c': str(().__class__.__base__.__subclasses__())}"),
        "'__class__' is not allowed",
        3,
    ),
    "format-string-escape": (robot("return {'c': '{0.__class__}'.format(1)}"), "format field", 3),
    "globals-through-function": (robot("return {'g': str(run.__globals__)}"), "'__globals__'", 3),
    "builtins-by-name": (robot("return {'b': str(__builtins__)}"), "'__builtins__'", 3),
    "dunder-import": (robot("return {'o': str(__import__('os'))}"), "'__import__'", 3),
    "eval-string": (robot("return {'x': eval('1 + 1')}"), "'eval' is not available", 3),
    "exec-string": (robot("exec('x = 1')\nreturn {}"), "'exec' is not available", 3),
    "generator-frame-walk": (
        robot("g = (i for i in [1])\nreturn {'f': str(g.gi_frame.f_back.f_globals)}"),
        "'gi_frame'",
        4,
    ),
    "match-class-attribute": (
        robot("match 1:\n    case int(__class__=c):\n        return {'c': str(c)}\nreturn {}"),
        "'__class__'",
        4,
    ),
    "relative-import": (robot("return {}", "from . import secrets"), "relative imports", 1),
    "read-host-file": (robot(f"return {{'p': open({str(HOST_FILE)!r}).read()}}"), "'open' is not available", 3),
    "dunder-from-import": (robot("return {'d': str(d)}", "from json import __dict__ as d"), "'__dict__'", 1),
    # A class pattern reads the attributes __match_args__ names, and a metaclass makes any subject match.
    "match-args-reads-globals": (
        robot(
            "match run:\n    case C(g):\n        return {'b': str(g['__builtins__'])[:80]}\nreturn {}",
            "M = type('M', (type,), {'__instancecheck__': lambda cls, obj: True})\n"
            "C = M('C', (), {'__match_args__': ('__glob' + 'als__',)})\n",
        ),
        "positional patterns",
        6,
    ),
    "format-string-built-at-run-time": (
        robot("return {'c': ('{0.__cla' + 'ss__}').format(1)}"),
        "'format' only on a literal",
        3,
    ),
    "format-map-built-at-run-time": (
        robot("t = inputs.get('t', '{x.__glob' + 'als__}')\nreturn {'g': str(t.format_map({'x': run}))}"),
        "'format_map' only on a literal",
        4,
    ),
}


@pytest.mark.parametrize("name", sorted(REJECTED_CASES))
def test_forbidden_code_is_refused_with_its_line(pool: SandboxPool, name: str) -> None:
    source, fragment, line = REJECTED_CASES[name]
    if not pool.language_hardening:
        assert_contained(pool, source)
        return
    with pytest.raises(SourceRejected) as info:
        pool.run(source, {}, context={"portal": "evil.example"})
    assert fragment in str(info.value)
    assert line in [p.line for p in info.value.problems]
    assert_serves_normally(pool)


RUNTIME_CASES = {
    # Each passes the source check and is stopped while it runs.
    "dynamic-dunder-getattr": (
        robot("c = getattr((), '__cla' + 'ss__')\nreturn {}"),
        "AttributeError: attribute '__class__' is not allowed",
    ),
    "dynamic-globals-getattr": (
        robot("import json\nreturn {'g': getattr(json.loads, '__glob' + 'als__')}"),
        "AttributeError",
    ),
    "sys-through-module-attribute": (robot("import json\nreturn {'s': str(json.sys)}"), "AttributeError"),
    "os-through-private-attribute": (robot("import random\nreturn {'o': str(random._os)}"), "AttributeError"),
    "attrgetter-withheld": (
        robot("import operator\nreturn {'a': str(operator.attrgetter)}"),
        "AttributeError",
    ),
    "formatter-withheld": (
        robot("import string\nreturn {'f': str(string.Formatter().get_field('0', [1], {}))}"),
        "AttributeError",
    ),
    "ctx-is-read-only": (robot("ctx.portal = 'other'\nreturn {}"), "AttributeError: ctx is read-only"),
    "system-exit": (robot("raise SystemExit(0)"), "SystemExit"),
    "hostile-exception-str": (
        robot("raise E()", "class E(Exception):\n    def __str__(self):\n        raise RuntimeError('nope')\n"),
        "E",
    ),
    "call-without-rest-access": (
        robot("return ctx.call('user.current', {})"),
        "ctx.call is not available",
    ),
    "str-subclass-lying-in-startswith": (
        robot(
            "return {'b': str(getattr(run, S('__globals__'))['__builtins__'])[:80]}",
            "class S(str):\n    def startswith(self, *a):\n        return False\n"
            "    def endswith(self, *a):\n        return False\n",
        ),
        "AttributeError: attribute '__globals__' is not allowed",
    ),
    "str-subclass-lying-in-eq-and-hash": (
        robot(
            "return {'b': str(getattr(run, S('__globals__'))['__builtins__'])[:80]}",
            "class S(str):\n    __hash__ = lambda self: hash('__init__')\n    __eq__ = lambda self, other: True\n"
            "    startswith = lambda self, *a: False\n",
        ),
        "AttributeError: attribute '__globals__' is not allowed",
    ),
    "format-looked-up-by-name": (
        robot("f = getattr('{0.__glob' + 'als__}', 'for' + 'mat')\nreturn {'g': str(f(run))[:80]}"),
        "AttributeError: attribute 'format' cannot be looked up by name",
    ),
    "ctx-fields-rewritten": (
        robot("ctx._fields['portal'] = 'other.example'\nreturn {'p': ctx.portal}"),
        "TypeError",
    ),
}


@pytest.mark.parametrize("name", sorted(RUNTIME_CASES))
def test_runtime_escape_attempts_fail_cleanly(pool: SandboxPool, name: str) -> None:
    source, fragment = RUNTIME_CASES[name]
    if not pool.language_hardening:
        assert_contained(pool, source)
        return
    with pytest.raises(StoredCodeError) as info:
        pool.run(source, {}, context={"portal": "evil.example"})
    assert not isinstance(info.value, SourceRejected)
    assert fragment in str(info.value)
    assert_serves_normally(pool)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("return [1, 2]", "must return a dict of outputs, not list"),
        ("return None", "not NoneType"),
        ("return {1: 'x'}", "output names must be str"),
        ("return {'x': object()}", "not JSON-able"),
        ("return {'x': float('nan')}", "not JSON-able"),
        ("return {'x': {1, 2}}", "not JSON-able"),
        ("return {'x': 10 ** 5000}", "not JSON-able"),
    ],
)
def test_bad_return_values_are_sandbox_errors(pool: SandboxPool, body: str, fragment: str) -> None:
    with pytest.raises(SandboxError) as info:
        pool.run(robot(body), {}, context={})
    assert type(info.value) is SandboxError
    assert fragment in str(info.value)
    assert_serves_normally(pool)


def test_exception_traceback_points_at_stored_lines(pool: SandboxPool) -> None:
    source = """\
import json

def helper(x):
    return x['missing']

def run(inputs, ctx):
    ctx.log('before')
    return {'v': helper({})}
"""
    with pytest.raises(StoredCodeError) as info:
        pool.run(source, {}, context={}, filename="<robot deal_sum v3>")
    error = info.value
    assert str(error) == "KeyError: 'missing'"
    assert 'File "<robot deal_sum v3>", line 8, in run' in error.traceback
    assert 'File "<robot deal_sum v3>", line 4, in helper' in error.traceback
    assert "return x['missing']" in error.traceback
    assert "_runtime" not in error.traceback and "sandbox" not in error.traceback
    assert error.log == ("before",)
    assert_serves_normally(pool)


def test_module_level_error_shows_module_frame(pool: SandboxPool) -> None:
    source = "x = 1\ny = x / 0\n\ndef run(inputs, ctx):\n    return {}\n"
    with pytest.raises(StoredCodeError) as info:
        pool.run(source, {}, context={})
    assert 'File "<robot>", line 2, in <module>' in info.value.traceback
    assert "ZeroDivisionError" in str(info.value)


def test_log_spam_is_truncated_not_fatal(pool: SandboxPool) -> None:
    result = pool.run(robot("for i in range(100_000):\n    ctx.log(i)\nreturn {}"), {}, context={})
    assert result.log[:3] == ["0", "1", "2"]
    assert result.log[-1] == "... log truncated"
    assert len(result.log) <= 1001


def test_parent_environment_never_reaches_the_child(pool: SandboxPool) -> None:
    source = robot("import os\nreturn {'env': dict(os.environ)}")
    if pool.language_hardening:
        with pytest.raises(SourceRejected):
            pool.run(source, {}, context={"portal": "new.example"})
    else:
        assert pool.run(source, {}, context={"portal": "new.example"}).outputs == {"env": {}}
