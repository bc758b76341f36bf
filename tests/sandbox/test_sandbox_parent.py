"""The parent trusts nothing a child sends: any bad frame retires the child, frees its slot and
surfaces as a SandboxError, and the pool goes on serving."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

import pytest
from sandbox_support import CAPS, assert_serves_normally

from b24robots.errors import SandboxError
from b24robots.sandbox import SandboxPool

# Stored code that writes raw frames on the worker's own socket (possible once the language layer
# is off or bypassed): `send(text)` writes one length-prefixed frame; JOB is the running job's id.
RAW = """\
import os, stat, struct, sys

def _socket_fd():
    for fd in range(3, 64):
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                return fd
        except OSError:
            pass

FD = _socket_fd()

def send(text):
    data = text.encode()
    os.write(FD, struct.pack('>I', len(data)) + data)

def job_id():
    frame = sys._getframe(1)
    while frame is not None:
        if 'job' in frame.f_locals and isinstance(frame.f_locals['job'], dict):
            return frame.f_locals['job'].get('j')
        frame = frame.f_back

def run(inputs, ctx):
    JOB = job_id()
"""


def raw_robot(body: str) -> str:
    return RAW + textwrap.indent(textwrap.dedent(body), "    ")


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(2, caps=CAPS) as p:
        yield p


@pytest.fixture(scope="module")
def raw_pool() -> Iterator[SandboxPool]:
    with SandboxPool(2, caps=CAPS, language_hardening=False) as p:
        yield p


def assert_idle_again(pool: SandboxPool) -> None:
    health = pool.health()
    assert health["busy"] == 0
    assert health["children_alive"] <= pool.size


NAN_ENCODER = """\
import json

def run(inputs, ctx):
    json.JSONEncoder.encode = lambda self, o: '{"t": "result", "outputs": {"x": NaN}, "log": []}'
    return {"x": 1, "own": json.dumps({"a": 1}, indent=1)}
"""


def test_a_patched_json_encoder_cannot_touch_the_workers_frames(pool: SandboxPool) -> None:
    # The patch reaches the code's own json.dumps, never the worker's codec; and more runs than
    # slots show each gave its slot back (the raw NaN frames below cover the parent's side).
    for _ in range(pool.size * 2 + 1):
        result = pool.run(NAN_ENCODER, {}, context={"portal": "evil.example"})
        assert result.outputs == {"x": 1, "own": '{"t": "result", "outputs": {"x": NaN}, "log": []}'}
        assert_idle_again(pool)
    assert_serves_normally(pool)


BAD_FRAMES = {
    "nan-in-outputs": 'send(\'{"t": "result", "j": "%s", "outputs": {"x": NaN}, "log": []}\' % JOB)',
    "infinity-in-outputs": 'send(\'{"t": "result", "j": "%s", "outputs": {"x": -Infinity}, "log": []}\' % JOB)',
    "reply-to-a-job-not-sent": 'send(\'{"t": "result", "j": "other", "outputs": {"forged": 1}, "log": []}\')',
    "reply-without-job": 'send(\'{"t": "result", "outputs": {"forged": 1}, "log": []}\')',
    "unexpected-frame": 'send(\'{"t": "ready", "j": "%s"}\' % JOB)',
    "not-an-object": "send('[1, 2, 3]')",
    "not-json": "send('{\"t\": ')",
    "log-of-150000-lines": (
        "import json\nsend(json.dumps({'t': 'result', 'j': JOB, 'outputs': {}, 'log': ['x'] * 150_000}))"
    ),
    "log-line-too-long": (
        "import json\nsend(json.dumps({'t': 'result', 'j': JOB, 'outputs': {}, 'log': ['x' * 5000]}))"
    ),
    "log-of-numbers": "import json\nsend(json.dumps({'t': 'result', 'j': JOB, 'outputs': {}, 'log': [1, 2]}))",
    "error-of-unknown-kind": "import json\nsend(json.dumps({'t': 'error', 'j': JOB, 'kind': 'boom', 'log': []}))",
    "hostile-rejection": (
        "import json\n"
        "send(json.dumps({'t': 'error', 'j': JOB, 'kind': 'rejected', 'problems': [['a', 'b', 1, 2]], 'log': []}))"
    ),
    "call-without-method": "import json\nsend(json.dumps({'t': 'call', 'j': JOB, 'method': 7, 'params': {}}))",
}


@pytest.mark.parametrize("name", sorted(BAD_FRAMES))
def test_bad_frame_retires_the_child_and_keeps_the_pool(raw_pool: SandboxPool, name: str) -> None:
    source = raw_robot(BAD_FRAMES[name] + "\nimport time\ntime.sleep(5)\nreturn {'late': 1}")
    for _ in range(raw_pool.size + 1):
        with pytest.raises(SandboxError) as info:
            raw_pool.run(source, {}, context={"portal": "evil.example"})
        assert "late" not in str(info.value)
        assert_idle_again(raw_pool)
    assert_serves_normally(raw_pool)


def test_frames_queued_for_the_next_job_never_reach_it(raw_pool: SandboxPool) -> None:
    body = """\
import json
forged = {'t': 'result', 'outputs': {'sum': -1.0, 'next': None}, 'log': ['adding']}
send(json.dumps({**forged, 'j': JOB}))
for _ in range(20):
    send(json.dumps(forged))
return {'sum': 0}
"""
    result = raw_pool.run(raw_robot(body), {}, context={"portal": "example.bitrix24.com"})
    assert result.outputs == {"sum": -1.0, "next": None}  # its own answer: the code owns its outputs
    for _ in range(raw_pool.size * 2):
        assert_serves_normally(raw_pool)


def test_a_handler_exception_still_propagates_unchanged(pool: SandboxPool) -> None:
    class Boom(Exception):
        pass

    def on_call(method: str, params: dict[str, object]) -> object:
        raise Boom(method)

    with pytest.raises(Boom):
        pool.run("def run(inputs, ctx):\n    return ctx.call('user.current')\n", {}, context={}, on_call=on_call)
    assert_idle_again(pool)
    assert_serves_normally(pool)
