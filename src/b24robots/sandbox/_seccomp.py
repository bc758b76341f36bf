"""A seccomp-BPF filter, assembled by hand and installed with prctl through ctypes.

Stdlib only. Denied calls fail with EPERM (so Python raises PermissionError) instead of killing the
process; a foreign architecture (e.g. 32-bit syscalls on x86_64) kills it. `clone3` answers ENOSYS
so that libc falls back to `clone`, whose flags the filter can inspect (threads are allowed,
new processes are not). Signals (also with a payload) may only be sent to the process itself and
`prlimit64` may only touch itself; SysV IPC, POSIX message queues, `setpriority`, `sched_set*` and
`ioprio_set` are refused outright.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

# Instruction classes and fields from linux/filter.h and linux/seccomp.h.
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_CLONE_THREAD = 0x00010000
_X32_SYSCALL_BIT = 0x40000000

# seccomp_data layout: int nr; u32 arch; u64 instruction_pointer; u64 args[6].
_OFF_NR = 0
_OFF_ARCH = 4
_OFF_ARG0_LOW = 16  # little-endian: the low 32 bits of args[0]

# fmt: off
_ARCHES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (
        0xC000003E,  # AUDIT_ARCH_X86_64
        {
            "socket": 41, "connect": 42, "accept": 43, "bind": 49, "listen": 50, "socketpair": 53,
            "accept4": 288, "clone": 56, "fork": 57, "vfork": 58, "execve": 59, "execveat": 322,
            "clone3": 435, "kill": 62, "tkill": 200, "tgkill": 234, "ptrace": 101,
            "process_vm_readv": 310, "process_vm_writev": 311, "unshare": 272, "setns": 308,
            "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "bpf": 321,
            "userfaultfd": 323, "perf_event_open": 298, "io_uring_setup": 425, "io_uring_enter": 426,
            "io_uring_register": 427, "pidfd_send_signal": 424, "pidfd_open": 434, "pidfd_getfd": 438,
            "open_by_handle_at": 304, "name_to_handle_at": 303, "keyctl": 250, "add_key": 248,
            "request_key": 249, "kexec_load": 246, "kexec_file_load": 320, "init_module": 175,
            "finit_module": 313, "delete_module": 176, "reboot": 169, "mknod": 133, "mknodat": 259,
            "personality": 135, "acct": 163, "swapon": 167, "swapoff": 168, "syslog": 103,
            "quotactl": 179, "vhangup": 153, "settimeofday": 164, "clock_settime": 227,
            "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173, "mbind": 237,
            "migrate_pages": 256, "move_pages": 279,
            # SysV IPC and POSIX message queues: a channel between workers (asm/unistd_64.h).
            "shmget": 29, "shmat": 30, "shmctl": 31, "shmdt": 67, "semget": 64, "semop": 65,
            "semctl": 66, "semtimedop": 220, "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71,
            "mq_open": 240, "mq_unlink": 241, "mq_timedsend": 242, "mq_timedreceive": 243,
            "mq_notify": 244, "mq_getsetattr": 245,
            # Reaching other processes: signals with a payload, limits, priority, affinity.
            "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297, "prlimit64": 302, "setpriority": 141,
            "sched_setparam": 142, "sched_setscheduler": 144, "sched_setaffinity": 203,
            "sched_setattr": 314, "ioprio_set": 251,
        },
    ),
    "aarch64": (
        0xC00000B7,  # AUDIT_ARCH_AARCH64
        {
            "socket": 198, "connect": 203, "accept": 202, "bind": 200, "listen": 201, "socketpair": 199,
            "accept4": 242, "clone": 220, "execve": 221, "execveat": 281, "clone3": 435, "kill": 129,
            "tkill": 130, "tgkill": 131, "ptrace": 117, "process_vm_readv": 270,
            "process_vm_writev": 271, "unshare": 97, "setns": 268, "mount": 40, "umount2": 39,
            "pivot_root": 41, "chroot": 51, "bpf": 280, "userfaultfd": 282, "perf_event_open": 241,
            "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
            "pidfd_send_signal": 424, "pidfd_open": 434, "pidfd_getfd": 438, "open_by_handle_at": 265,
            "name_to_handle_at": 264, "keyctl": 219, "add_key": 217, "request_key": 218,
            "kexec_load": 104, "kexec_file_load": 294, "init_module": 105, "finit_module": 273,
            "delete_module": 106, "reboot": 142, "mknodat": 33, "personality": 92, "acct": 89,
            "swapon": 224, "swapoff": 225, "syslog": 116, "quotactl": 60, "vhangup": 58,
            "settimeofday": 170, "clock_settime": 112, "sethostname": 161, "setdomainname": 162,
            "mbind": 235, "migrate_pages": 238, "move_pages": 239,
            # asm-generic/unistd.h
            "shmget": 194, "shmctl": 195, "shmat": 196, "shmdt": 197, "semget": 190, "semctl": 191,
            "semtimedop": 192, "semop": 193, "msgget": 186, "msgctl": 187, "msgrcv": 188,
            "msgsnd": 189, "mq_open": 180, "mq_unlink": 181, "mq_timedsend": 182,
            "mq_timedreceive": 183, "mq_notify": 184, "mq_getsetattr": 185, "rt_sigqueueinfo": 138,
            "rt_tgsigqueueinfo": 240, "prlimit64": 261, "setpriority": 140, "sched_setparam": 118,
            "sched_setscheduler": 119, "sched_setaffinity": 122, "sched_setattr": 274, "ioprio_set": 30,
        },
    ),
}
# fmt: on

#: Calls handled by dedicated rules rather than a plain deny.
_SPECIAL = frozenset(
    {"clone", "clone3", "kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "prlimit64"}
)


def supported() -> bool:
    """True when this machine's architecture has a syscall table here."""
    return platform.machine() in _ARCHES and hasattr(ctypes, "CDLL")


def build_filter(pid: int, machine: str | None = None) -> list[tuple[int, int, int, int]]:
    """The BPF program as (code, jt, jf, k) tuples for a process whose pid is `pid`."""
    arch, table = _ARCHES[machine or platform.machine()]
    deny = _RET_ERRNO | errno.EPERM
    # Assemble with symbolic jump targets, resolved once the layout is known.
    program: list[tuple[int, object, object, int]] = [
        (_LD_W_ABS, 0, 0, _OFF_ARCH),
        (_JEQ_K, 1, 0, arch),
        (_RET_K, 0, 0, _RET_KILL_PROCESS),
        (_LD_W_ABS, 0, 0, _OFF_NR),
    ]
    if arch == 0xC000003E:
        program.append((_JGE_K, "deny", 0, _X32_SYSCALL_BIT))
    program.append((_JEQ_K, "clone3", 0, table["clone3"]))
    program.append((_JEQ_K, "clone", 0, table["clone"]))
    for name in ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
        program.append((_JEQ_K, "own_pid", 0, table[name]))
    program.append((_JEQ_K, "self_or_zero", 0, table["prlimit64"]))  # glibc's setrlimit is prlimit64(0, ...)
    for name, number in sorted(table.items(), key=lambda item: item[1]):
        if name not in _SPECIAL:
            program.append((_JEQ_K, "deny", 0, number))
    # Every jump must go forward, so the shared returns sit at the very end.
    labels: dict[str, int] = {}
    program.append((_RET_K, 0, 0, _RET_ALLOW))  # not in the deny list
    labels["clone"] = len(program)
    program.append((_LD_W_ABS, 0, 0, _OFF_ARG0_LOW))
    program.append((_JSET_K, "allow", "deny", _CLONE_THREAD))
    labels["own_pid"] = len(program)
    program.append((_LD_W_ABS, 0, 0, _OFF_ARG0_LOW))
    program.append((_JEQ_K, "allow", "deny", pid & 0xFFFFFFFF))
    labels["self_or_zero"] = len(program)
    program.append((_LD_W_ABS, 0, 0, _OFF_ARG0_LOW))
    program.append((_JEQ_K, "allow", 0, 0))
    program.append((_JEQ_K, "allow", "deny", pid & 0xFFFFFFFF))
    labels["clone3"] = len(program)
    program.append((_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS))
    labels["allow"] = len(program)
    program.append((_RET_K, 0, 0, _RET_ALLOW))
    labels["deny"] = len(program)
    program.append((_RET_K, 0, 0, deny))

    def target(index: int, where: object) -> int:
        if isinstance(where, int):
            return where
        offset = labels[str(where)] - index - 1
        if not 0 <= offset <= 255:
            raise ValueError("seccomp jump out of range")
        return offset

    return [(code, target(i, jt), target(i, jf), k) for i, (code, jt, jf, k) in enumerate(program)]


_libc: ctypes.CDLL | None = None
_INSTRUCTION = struct.Struct("=HBBI")
#: The packed program and the indices of the instructions that hold the process's own pid
_template: tuple[bytes, tuple[int, ...]] | None = None


def prepare() -> None:
    """Load libc and assemble the program now, so a forked child installs the filter without
    touching the filesystem and without assembling it again (it only writes in its pid)."""
    global _libc, _template
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
        _libc.prctl.restype = ctypes.c_int
    if _template is None and platform.machine() in _ARCHES:
        one, two = build_filter(1), build_filter(2)
        slots = tuple(i for i, (a, b) in enumerate(zip(one, two, strict=True)) if a != b)
        _template = (b"".join(_INSTRUCTION.pack(*ins) for ins in one), slots)


def syscall_number(name: str) -> int | None:
    """This machine's number for the system call `name` (one of the table's), None when unknown."""
    return _ARCHES.get(platform.machine(), (0, {}))[1].get(name)


def libc() -> ctypes.CDLL | None:
    """The C library `prepare` loaded (None before it ran)."""
    return _libc


def packed_filter(pid: int) -> bytes:
    """The program of `build_filter(pid)`, packed for the kernel."""
    if _template is None:
        return b"".join(_INSTRUCTION.pack(*ins) for ins in build_filter(pid))
    raw, slots = _template
    program = bytearray(raw)
    for index in slots:
        code, jt, jf, _ = _INSTRUCTION.unpack_from(program, index * _INSTRUCTION.size)
        _INSTRUCTION.pack_into(program, index * _INSTRUCTION.size, code, jt, jf, pid & 0xFFFFFFFF)
    return bytes(program)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(pid: int | None = None) -> None:
    """Install the filter on the calling process (all its future threads inherit it).

    Raises OSError when the kernel refuses (no seccomp support, or prctl blocked).
    """
    prepare()
    raw = packed_filter(os.getpid() if pid is None else pid)
    buffer = ctypes.create_string_buffer(raw, len(raw))
    prog = _SockFprog(len(raw) // _INSTRUCTION.size, ctypes.cast(buffer, ctypes.c_void_p))
    assert _libc is not None
    prctl = _libc.prctl
    if prctl(_PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"PR_SET_NO_NEW_PRIVS failed: {os.strerror(code)}")
    if prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"PR_SET_SECCOMP failed: {os.strerror(code)}")
