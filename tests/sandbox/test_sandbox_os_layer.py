"""The OS layer alone contains hostile code: these run with the in-language layer switched off."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator

import pytest
from sandbox_support import CAPS, IS_ROOT, TIGHT, assert_serves_normally, os_layer_pool

from b24robots.errors import SandboxError, SandboxLimitExceeded, StoredCodeError
from b24robots.sandbox import SandboxLimits, SandboxPool


@pytest.fixture(scope="module")
def raw_pool() -> Iterator[SandboxPool]:
    yield from os_layer_pool()


def robot(body: str) -> str:
    return "def run(inputs, ctx):\n" + textwrap.indent(textwrap.dedent(body), "    ")


def test_isolation_level_is_reported(raw_pool: SandboxPool) -> None:
    detail = raw_pool.health()["isolation_detail"]
    assert detail["seccomp"] is True
    if IS_ROOT:
        assert detail["chroot"] and detail["uid_dropped"]
        assert raw_pool.health()["isolation"] in {"chroot+seccomp", "bwrap+chroot+seccomp"}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("import os\nos.fork()", "PermissionError"),
        ("import os\nos.posix_spawn('/bin/sh', ['sh'], {})", "PermissionError"),
        ("import subprocess\nsubprocess.run(['true'])", "Error"),
        ("import os\nos.execv('/bin/sh', ['sh'])", "PermissionError"),
        ("import socket\nsocket.socket()", "PermissionError"),
        ("import socket\nsocket.create_connection(('127.0.0.1', 9))", "PermissionError"),
        ("import os\nos.kill(os.getppid(), 9)", "PermissionError"),
        ("import os\nos.kill(1, 9)", "PermissionError"),
        ("import os\nos.killpg(0, 9)", "PermissionError"),
    ],
    ids=[
        "fork",
        "posix_spawn",
        "subprocess",
        "exec",
        "socket",
        "connect",
        "kill-parent",
        "kill-init",
        "kill-group",
    ],
)
def test_dangerous_system_calls_are_denied(raw_pool: SandboxPool, body: str, error: str) -> None:
    with pytest.raises(StoredCodeError) as info:
        raw_pool.run(robot(body + "\nreturn {}"), {}, context={})
    assert error in str(info.value)
    assert_serves_normally(raw_pool)


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("unshare", "0x10000000"),
        ("ptrace", "16, 1, 0, 0"),
        ("mount", "b'none', b'/', b'tmpfs', 0, 0"),
        ("chroot", "b'/'"),
        ("setns", "0, 0"),
    ],
)
def test_namespace_and_debug_calls_are_denied(raw_pool: SandboxPool, call: str, args: str) -> None:
    body = f"import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nr = libc.{call}({args})\n"
    body += "return {'r': r, 'errno': ctypes.get_errno()}"
    result = raw_pool.run(robot(body), {}, context={})
    assert result.outputs == {"r": -1, "errno": 1}  # EPERM from the seccomp filter


@pytest.mark.skipif(not IS_ROOT, reason="the chroot needs root")
def test_filesystem_is_out_of_reach(raw_pool: SandboxPool) -> None:
    with pytest.raises(StoredCodeError) as info:
        raw_pool.run(robot("return {'p': open('/etc/passwd').read()}"), {}, context={})
    assert "FileNotFoundError" in str(info.value)
    result = raw_pool.run(robot("import os\nreturn {'ls': os.listdir('/'), 'uid': os.getuid()}"), {}, context={})
    assert result.outputs["ls"] == [] and result.outputs["uid"] in raw_pool.identities.uids


def test_environment_is_empty(raw_pool: SandboxPool) -> None:
    os.environ["B24R_SANDBOX_TEST_SECRET"] = "s3cr3t"
    try:
        result = raw_pool.run(robot("import os\nreturn {'env': dict(os.environ)}"), {}, context={"portal": "p2"})
    finally:
        del os.environ["B24R_SANDBOX_TEST_SECRET"]
    assert result.outputs == {"env": {}}


WRITE_EVERYWHERE = """\
import errno, os
done = {}
for path in ('/big', 'big', '/tmp/big', '/dev/shm/big', '/var/tmp/big', os.path.expanduser('~/big')):
    written = 0
    try:
        with open(path, 'wb') as f:
            for _ in range(50):
                written += f.write(b'x' * 1_000_000)
                f.flush()
        outcome = 'ok'
    except OSError as exc:
        outcome = errno.errorcode.get(exc.errno, str(exc.errno))
    done[path] = [written, outcome]
return {'done': done}"""


def test_large_files_cannot_be_written_anywhere(raw_pool: SandboxPool) -> None:
    """Files are host memory or disk outside RLIMIT_AS: as root the worker's root is read-only and
    empty; not root, RLIMIT_FSIZE (and under bubblewrap a size-limited /tmp) stops each file."""
    done = raw_pool.run(robot(WRITE_EVERYWHERE), {}, context={}, limits=TIGHT).outputs["done"]
    cap = TIGHT.file_size_mb * 1024 * 1024
    for path, (written, outcome) in done.items():
        if IS_ROOT:
            assert written == 0 and outcome in {"EACCES", "ENOENT", "EROFS"}, (path, written, outcome)
        else:
            assert written <= cap and outcome != "ok", (path, written, outcome)
    assert_serves_normally(raw_pool)


@pytest.mark.skipif(IS_ROOT, reason="as root nothing is writable (test_large_files_cannot_be_written_anywhere)")
def test_large_file_hits_file_size(raw_pool: SandboxPool) -> None:
    body = "with open('big', 'wb') as f:\n    for _ in range(50):\n        f.write(b'x' * 1_000_000)\nreturn {}"
    with pytest.raises(SandboxLimitExceeded) as info:
        raw_pool.run(robot(body), {}, context={}, limits=TIGHT)
    assert info.value.limit == "file_size"
    assert_serves_normally(raw_pool)


def test_open_files_limit(raw_pool: SandboxPool) -> None:
    body = "import os\nkeep = [os.dup(0) for i in range(1000)]\nreturn {}"
    limits = SandboxLimits(open_files=16)
    with pytest.raises(SandboxLimitExceeded) as info:
        raw_pool.run(robot(body), {}, context={}, limits=limits)
    assert info.value.limit == "open_files"
    assert_serves_normally(raw_pool)


def test_thread_spam_is_bounded(raw_pool: SandboxPool) -> None:
    body = """\
import _thread, time
def spin():
    while True:
        time.sleep(0.01)
for _ in range(10_000):
    _thread.start_new_thread(spin, ())
return {}"""
    with pytest.raises(SandboxError) as info:
        raw_pool.run(robot(body), {}, context={}, limits=TIGHT)
    assert "can't start new thread" in str(info.value) or getattr(info.value, "limit", "") == "memory"
    assert_serves_normally(raw_pool)


def test_hard_exit_is_a_sandbox_error(raw_pool: SandboxPool) -> None:
    with pytest.raises(SandboxError) as info:
        raw_pool.run(robot("import os\nos._exit(7)"), {}, context={})
    assert "exited unexpectedly (status 7)" in str(info.value)
    assert_serves_normally(raw_pool)


def test_killed_by_signal_is_a_sandbox_error(raw_pool: SandboxPool) -> None:
    with pytest.raises(SandboxError) as info:
        raw_pool.run(robot("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)"), {}, context={})
    assert "SIGSEGV" in str(info.value)
    assert_serves_normally(raw_pool)


def test_cpu_rlimit_kills_code_stuck_in_c(raw_pool: SandboxPool) -> None:
    # The SIGPROF handler cannot interrupt C code; RLIMIT_CPU (SIGXCPU) still ends it.
    # a wide wall limit: on a loaded machine 0.3 s of CPU can take several seconds to accrue
    limits = SandboxLimits(cpu_seconds=0.3, wall_seconds=15.0)
    with pytest.raises(SandboxLimitExceeded) as info:
        raw_pool.run(
            robot("import signal\nsignal.signal(signal.SIGPROF, signal.SIG_IGN)\nx = 7 ** (10 ** 10)"),
            {},
            context={},
            limits=limits,
        )
    assert info.value.limit == "cpu"
    assert_serves_normally(raw_pool)


def test_pool_without_bubblewrap_still_isolates() -> None:
    with SandboxPool(1, caps=CAPS, language_hardening=False, bwrap=False) as plain:
        detail = plain.health()["isolation_detail"]
        assert detail["bwrap"] is False and detail["seccomp"] is True
        with pytest.raises(StoredCodeError, match="PermissionError"):
            plain.run(robot("import os\nos.fork()\nreturn {}"), {}, context={})
        if IS_ROOT:
            result = plain.run(robot("import os\nreturn {'ls': os.listdir('/')}"), {}, context={})
            assert result.outputs == {"ls": []}


CROSS_WORKER = {
    # SysV IPC and POSIX message queues: one worker read another's inputs through a queue.
    "shmget": "libc.shmget(0, 4096, 0o1600)",
    "semget": "libc.semget(0, 1, 0o1600)",
    "msgget": "libc.msgget(0, 0o1600)",
    "mq_open": "libc.syscall(240 if X86 else 180, b'/b24r', 0o102, 0o600, None)",
    # Signals with a payload and calls on another process's limits, priority or affinity.
    "rt_sigqueueinfo": "libc.syscall(129 if X86 else 138, 1, 9, ctypes.create_string_buffer(128))",
    "rt_tgsigqueueinfo": "libc.syscall(297 if X86 else 240, 1, 1, 9, ctypes.create_string_buffer(128))",
    "prlimit64-other-pid": "libc.prlimit(1, 9, None, ctypes.create_string_buffer(16))",
    "setpriority": "libc.setpriority(0, 0, 10)",
    "sched_setaffinity": "libc.sched_setaffinity(0, 8, ctypes.create_string_buffer(b'\\x01' * 8))",
    "sched_setscheduler": "libc.syscall(144 if X86 else 119, 0, 0, ctypes.create_string_buffer(8))",
    "ioprio_set": "libc.syscall(251 if X86 else 30, 1, 0, 0)",
}


@pytest.mark.parametrize("name", sorted(CROSS_WORKER))
def test_calls_reaching_other_workers_are_denied(raw_pool: SandboxPool, name: str) -> None:
    body = (
        "import ctypes, platform\nX86 = platform.machine() == 'x86_64'\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"r = {CROSS_WORKER[name]}\nreturn {{'r': r, 'errno': ctypes.get_errno()}}"
    )
    assert raw_pool.run(robot(body), {}, context={}).outputs == {"r": -1, "errno": 1}  # EPERM


def test_own_limits_still_readable_and_lowerable(raw_pool: SandboxPool) -> None:
    body = """\
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard - 1))
return {'lowered': resource.getrlimit(resource.RLIMIT_NOFILE) == (soft - 1, hard - 1)}"""
    assert raw_pool.run(robot(body), {}, context={}).outputs == {"lowered": True}


def test_hard_limits_equal_soft_and_cannot_be_raised(raw_pool: SandboxPool) -> None:
    body = """\
import resource
names = ('RLIMIT_CPU', 'RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_NOFILE')
limits = {n: list(resource.getrlimit(getattr(resource, n))) for n in names}
raised = []
for n in names:
    soft, hard = resource.getrlimit(getattr(resource, n))
    try:
        resource.setrlimit(getattr(resource, n), (soft + 1, hard + 1))
        raised.append(n)
    except (ValueError, OSError):
        pass
return {'limits': limits, 'raised': raised}"""
    outputs = raw_pool.run(robot(body), {}, context={}, limits=TIGHT).outputs
    assert outputs["raised"] == []
    for name, (soft, hard) in outputs["limits"].items():
        assert soft == hard and soft > 0, name
    assert outputs["limits"]["RLIMIT_AS"][0] == TIGHT.memory_mb * 1024 * 1024
