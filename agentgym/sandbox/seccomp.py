"""A small seccomp filter for the bwrap backend, as the classic BPF program bwrap's ``--seccomp FD`` loads.

Why: without it, code in the sandbox could create a user namespace of its own and, holding every
capability there, mount an unlimited tmpfs (memory the rlimits do not see) or reach kernel interfaces
that are otherwise root-only. The filter refuses (EPERM) namespace creation (``unshare``, ``setns``,
``clone`` with a CLONE_NEW* flag), mounting, ``ptrace`` and kernel-level interfaces (modules, kexec,
keyrings, bpf, perf, userfaultfd, io_uring); ``clone3`` answers ENOSYS, so the C library falls back to
``clone``, whose flags the filter can read. Other system calls are allowed. Foreign ABIs (32-bit calls
on x86_64, the x32 ABI) are refused too, so they cannot bypass the table.

Only x86_64 is supported (numbers from the kernel's ``unistd_64.h``); elsewhere ``filter_program``
returns None and the sandbox runs without this extra layer (``agentgym sandbox doctor`` says so).
"""

from __future__ import annotations

import errno
import os
import platform
import struct

# Classic BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h).
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]
_NR_OFFSET, _ARCH_OFFSET, _ARG0_LOW_OFFSET = 0, 4, 16

# CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
# | CLONE_NEWTIME
_CLONE_NAMESPACE_FLAGS = (
    0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x00000080
)

X86_64_CLONE, X86_64_CLONE3 = 56, 435
X86_64_REFUSED = {
    "ptrace": 101,
    "syslog": 103,
    "pivot_root": 155,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "iopl": 172,
    "ioperm": 173,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
}


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def filter_program() -> bytes | None:
    """The filter as bytes of ``struct sock_filter``, or None on an unsupported architecture."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    eperm = _op(_RET_K, _RET_ERRNO | errno.EPERM)
    program = [
        _op(_LD_W_ABS, _ARCH_OFFSET),
        _op(_JEQ_K, _AUDIT_ARCH_X86_64, jt=1),
        eperm,  # another architecture's system call
        _op(_LD_W_ABS, _NR_OFFSET),
        _op(_JGE_K, _X32_SYSCALL_BIT, jf=1),
        eperm,  # the x32 ABI
    ]
    for number in sorted(X86_64_REFUSED.values()):
        program += [_op(_JEQ_K, number, jf=1), eperm]
    program += [
        _op(_JEQ_K, X86_64_CLONE3, jf=1),
        _op(_RET_K, _RET_ERRNO | errno.ENOSYS),
        _op(_JEQ_K, X86_64_CLONE, jf=3),
        _op(_LD_W_ABS, _ARG0_LOW_OFFSET),
        _op(_JSET_K, _CLONE_NAMESPACE_FLAGS, jf=1),
        eperm,
        _op(_RET_K, _RET_ALLOW),
    ]
    return b"".join(program)


def filter_fd() -> int | None:
    """A file descriptor holding the filter (read by bwrap's ``--seccomp``), or None if unsupported.
    The caller passes it to bwrap and closes it afterwards."""
    program = filter_program()
    if program is None:
        return None
    fd = os.memfd_create("agentgym-seccomp", os.MFD_CLOEXEC)  # Popen(pass_fds=...) hands it on
    os.write(fd, program)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
