"""Per-worker isolation as root: a uid of its own, an unwritable root, threads that end with the
run. The cross-worker checks run with seccomp off, so what they show is the identity layer on its
own. The levels reached without root are tested in test_sandbox_not_root.py and
test_sandbox_not_root_files.py."""

from __future__ import annotations

import os
import pwd
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sandbox_support import CAPS, IS_ROOT, assert_serves_normally, os_layer_pool, zygote_children

from b24robots.errors import SandboxError
from b24robots.sandbox import SandboxPool

needs_root = pytest.mark.skipif(not IS_ROOT, reason="a uid per worker needs root; not root, seccomp stands alone")


def robot(body: str) -> str:
    return "def run(inputs, ctx):\n" + textwrap.indent(textwrap.dedent(body), "    ")


@pytest.fixture(scope="module")
def no_seccomp_pool() -> Iterator[SandboxPool]:
    with SandboxPool(2, caps=CAPS, language_hardening=False, seccomp=False) as p:
        yield p


@pytest.fixture(scope="module")
def raw_pool() -> Iterator[SandboxPool]:
    yield from os_layer_pool()


VICTIM = robot(
    """\
import os, time
ctx.call("here", {"pid": os.getpid(), "uid": os.getuid()})
time.sleep(inputs["sleep"])
return {"survived": True, "uid": os.getuid()}"""
)

ATTACKER = robot(
    """\
import ctypes, errno, os, resource, signal
pid = inputs["pid"]
libc = ctypes.CDLL(None, use_errno=True)

def attempt(action):
    try:
        action()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))

def ptrace(target):
    if libc.ptrace(16, target, 0, 0) != 0:  # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), "ptrace")
    libc.ptrace(17, target, 0, 0)  # PTRACE_DETACH

def against(target):
    return {
        "signal-0": attempt(lambda: os.kill(target, 0)),
        "kill": attempt(lambda: os.kill(target, signal.SIGKILL)),
        "prlimit": attempt(lambda: resource.prlimit(target, resource.RLIMIT_AS, (1 << 20, 1 << 20))),
        "setpriority": attempt(lambda: os.setpriority(os.PRIO_PROCESS, target, 19)),
        "ptrace": attempt(lambda: ptrace(target)),
        "proc": attempt(lambda: open(f"/proc/{target}/status").read()),
    }

return {"other": against(pid), "uid": os.getuid()}"""
)


def _victim_and_attacker(pool: SandboxPool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run a victim that reports its pid and sleeps, and meanwhile an attacker aimed at it."""
    seen: dict[str, Any] = {}
    arrived = threading.Event()
    victim: dict[str, Any] = {}

    def on_call(method: str, params: dict[str, Any]) -> Any:
        seen.update(params)
        arrived.set()
        return True

    def run_victim() -> None:
        victim.update(pool.run(VICTIM, {"sleep": 1.5}, context={}, on_call=on_call).outputs)

    thread = threading.Thread(target=run_victim)
    thread.start()
    try:
        assert arrived.wait(10), "the victim never started"
        attacker = pool.run(ATTACKER, {"pid": seen["pid"]}, context={}).outputs
    finally:
        thread.join(10)
    assert victim.get("survived") is True, "the attacker reached the victim"
    return {**victim, "pid": seen["pid"]}, attacker


@needs_root
def test_a_worker_cannot_reach_another_without_seccomp(no_seccomp_pool: SandboxPool) -> None:
    assert "seccomp" not in no_seccomp_pool.isolation_level  # the filter is really off
    victim, attacker = _victim_and_attacker(no_seccomp_pool)
    uids = no_seccomp_pool.identities.uids
    assert victim["uid"] != attacker["uid"]
    assert victim["uid"] in uids and attacker["uid"] in uids
    assert attacker["other"] == {
        "signal-0": "EPERM",
        "kill": "EPERM",
        "prlimit": "EPERM",
        "setpriority": "EPERM",
        "ptrace": "EPERM",
        "proc": "ENOENT",  # no /proc in the worker's root at all
    }


@needs_root
def test_without_seccomp_a_worker_still_acts_on_itself(no_seccomp_pool: SandboxPool) -> None:
    """The control for the test above: the same calls on its own pid succeed, so the refusals
    come from the identity, not from a filter."""
    body = ATTACKER.replace('pid = inputs["pid"]', "pid = os.getpid()").replace(
        '"kill": attempt(lambda: os.kill(target, signal.SIGKILL)),', ""
    )
    outputs = no_seccomp_pool.run(body, {}, context={}).outputs
    assert outputs["other"]["signal-0"] == "ok"
    assert outputs["other"]["prlimit"] == "ok"
    assert outputs["other"]["setpriority"] == "ok"


@needs_root
def test_uids_are_not_shared_by_live_workers(raw_pool: SandboxPool) -> None:
    victim, attacker = _victim_and_attacker(raw_pool)  # with seccomp on, the same refusals
    assert victim["uid"] != attacker["uid"]
    assert set(attacker["other"].values()) <= {"EPERM", "ENOENT"}
    assert raw_pool.health()["isolation_detail"]["uid_per_worker"] is True
    assert raw_pool.isolation_warning is None
    assert_serves_normally(raw_pool)


def test_uid_range_must_fit() -> None:
    with pytest.raises(SandboxError, match="B24R_SANDBOX_UID_BASE"):
        SandboxPool(2, uid_base=65530, uid_count=8)
    with pytest.raises(SandboxError, match="B24R_SANDBOX_UID_BASE"):
        SandboxPool(2, uid_base=0)


@needs_root
def test_pools_on_one_host_never_share_a_uid(raw_pool: SandboxPool) -> None:
    with SandboxPool(1, caps=CAPS, uid_base=raw_pool.identities.base, language_hardening=False) as other:
        assert other.identities.uids and not set(other.identities.uids) & set(raw_pool.identities.uids)
        uid = other.run(robot("import os\nreturn {'uid': os.getuid()}"), {}, context={}).outputs["uid"]
        assert uid in other.identities.uids
    # the top of the range: two uids, then nothing left for a second pool, which says what to change
    with SandboxPool(1, caps=CAPS, uid_base=65532, uid_count=2) as top:
        assert top.identities.uids == (65532, 65533)
        crowded = SandboxPool(1, caps=CAPS, uid_base=65532, uid_count=2)
        with pytest.raises(SandboxError, match=r"only 0 of 2 sandbox uids .* B24R_SANDBOX_UID_BASE"):
            crowded.start()
    again = SandboxPool(1, caps=CAPS, uid_base=65532, uid_count=2)  # released with the pool
    with again:
        assert again.identities.uids == (65532, 65533)
    assert again.identities.uids == ()


@needs_root
def test_uids_of_host_users_are_skipped() -> None:
    users = [u for u in pwd.getpwall() if 1000 <= u.pw_uid < 65533]
    if not users:
        pytest.skip("no host user with a uid in 1000..65532 to collide with")
    taken = users[0].pw_uid
    with SandboxPool(1, caps=CAPS, uid_base=taken, uid_count=1) as pool:
        assert taken not in pool.identities.uids and len(pool.identities.uids) == 1


def _cpu_ticks(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def test_threads_started_by_stored_code_end_with_the_run(raw_pool: SandboxPool) -> None:
    body = """\
import _thread, time
def spin():
    while True:
        pass
for _ in range(2):
    _thread.start_new_thread(spin, ())
time.sleep(0.05)
return {"started": _thread._count()}"""
    assert raw_pool.run(robot(body), {}, context={}).outputs == {"started": 2}
    time.sleep(0.3)  # the spent worker is reaped off the caller's time
    zygote = raw_pool._zygote
    assert zygote is not None
    watched = zygote_children(raw_pool) | {zygote.process.pid}
    before = _cpu_ticks(watched)
    time.sleep(1.0)
    burnt = _cpu_ticks(watched) - before
    ticks = os.sysconf("SC_CLK_TCK")
    assert burnt < ticks * 0.2, f"{burnt} ticks of CPU in a second after the run ended"
    assert_serves_normally(raw_pool)
