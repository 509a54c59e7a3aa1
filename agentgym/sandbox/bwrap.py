"""The bubblewrap backend: each run in fresh Linux namespaces with a read-only view of Python only.

What a sandboxed program sees and may do:
- filesystem: read-only ``/usr`` (and the ``/bin``, ``/lib*`` links into it) and the prefix of the
  interpreter running agentgym (found from ``sys.base_prefix``; only that directory is bound, not its
  parents, so with a pyenv under ``/root`` nothing else of ``/root`` is visible); no ``/etc``, no home or
  work directories, no host ``/tmp``. Writable: a private ``/tmp`` (its working directory, a tmpfs of
  ``scratch_mb``) and a small ``/dev/shm``; the root, ``/dev`` and everything bound are read-only.
- namespaces: its own PID (it sees only its own processes in ``/proc``), network (loopback only: no
  route anywhere, not even to the host's loopback), IPC, UTS and cgroup namespaces.
- user: never root. Run by root, bwrap makes no user namespace (sandbox uid 0 would be host uid 0,
  and RLIMIT_NPROC is not enforced for host root); ``setpriv`` (util-linux) switches to a random
  unused uid/gid and empties every capability set before Python starts (without setpriv, the runner
  switches user itself as its first act). Run by another user, bwrap maps the
  sandbox user 65534 onto that user inside a new user namespace.
- limits: rlimits on address space, CPU time, processes, file size and open files (set by the runner);
  ``--new-session`` (no terminal injection), no new privileges, all capabilities dropped, a seccomp
  filter (``seccomp.py``), a clean environment (only PATH, HOME, LANG).
- lifetime: ``--die-with-parent``; bwrap's PID 1 exits when the program does, which kills every
  process left in the namespace; a timeout kills bwrap itself, which takes the namespace with it.

No cgroups are needed (many machines do not delegate them), so memory is bounded per process:
``memory_mb * max_processes`` plus ``scratch_mb`` and 4 MiB of /dev/shm in the worst case.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import subprocess
import sys
import threading

from agentgym.sandbox import seccomp
from agentgym.sandbox.base import (
    PYTHON_FLAGS,
    RUNNER_SOURCE,
    Limits,
    SandboxError,
    Worker,
    python_executable,
    start_worker,
)
from agentgym.sandbox.pool import PooledBackend

SHM_BYTES = 4 << 20
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"


def bwrap_binary() -> str | None:
    return shutil.which("bwrap")


def _system_binds() -> list[str]:
    """``/usr`` read-only, and ``/bin``, ``/sbin``, ``/lib*`` as the links (or binds) the host has."""
    args = ["--ro-bind", "/usr", "/usr"]
    for path in ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"):
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def _python_binds(python: str) -> list[str]:
    """Bind the interpreter's prefix read-only, creating its parent directories world-readable
    (bwrap would copy the host's modes, and ``/root`` is 0700) but binding none of them."""
    directories = {os.path.realpath(sys.base_prefix), os.path.dirname(python)}
    args: list[str] = []
    bound = ["/usr"]
    for directory in sorted(directories):
        if any(directory == b or directory.startswith(b + "/") for b in bound):
            continue
        parent = "/"
        for part in directory.strip("/").split("/")[:-1]:
            parent = os.path.join(parent, part)
            args += ["--perms", "0755", "--dir", parent]
        args += ["--ro-bind", directory, directory]
        bound.append(directory)
    return args


def bwrap_command(limits: Limits, timeout: float, *, privileged: bool, python: str,
                  seccomp_fd: int | None) -> list[str]:
    """The full bwrap command line of one worker (see the module docstring for what each part is for)."""
    args = [bwrap_binary() or "bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session"]
    entry: list[str] = []
    uid = gid = -1
    if privileged:
        uid = gid = 100_000 + secrets.randbelow(2**31 - 200_000)  # an id no host account uses
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        setpriv = shutil.which("setpriv")
        if setpriv:
            # setpriv switches user and empties every capability set (the bounding set too) before
            # Python starts; the exec also leaves the process dumpable, so /proc/self stays its own.
            setpriv = os.path.realpath(setpriv)
            args += ["--cap-add", "CAP_SETPCAP"]
            if not setpriv.startswith("/usr/"):
                args += ["--ro-bind", setpriv, setpriv]
            entry = [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--inh-caps=-all",
                     "--bounding-set=-all", "--"]
            uid = gid = -1  # done: the runner need not switch user itself
    else:
        args += ["--unshare-user", "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL"]
    args += ["--clearenv", "--setenv", "PATH", SANDBOX_PATH, "--setenv", "HOME", "/tmp",
             "--setenv", "LANG", "C.UTF-8"]
    args += _system_binds() + _python_binds(python)
    args += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm",
             "--perms", "1777", "--size", str(limits.scratch_mb << 20), "--tmpfs", "/tmp",
             "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp"]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    args += ["--", *entry, python, *PYTHON_FLAGS, "-c", RUNNER_SOURCE, *limits.runner_args(timeout, uid, gid)]
    return args


class BwrapBackend(PooledBackend):
    """Runs code under bubblewrap; with ``pool_size`` > 0, from pre-started workers."""

    name = "bwrap"
    signal_exit_offset = True  # bwrap exits with 128 + N when the program is killed by signal N

    def __init__(self, limits: Limits, pool_size: int = 2) -> None:
        if bwrap_binary() is None:
            raise SandboxError("bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)")
        self.privileged = os.geteuid() == 0
        self.python = python_executable()
        super().__init__(limits, pool_size)

    def start(self, timeout: float) -> Worker:
        fd = seccomp.filter_fd()
        try:
            argv = bwrap_command(self.limits, timeout, privileged=self.privileged, python=self.python,
                                 seccomp_fd=fd)
            return start_worker(argv, pass_fds=() if fd is None else (fd,))
        finally:
            if fd is not None:
                os.close(fd)


_probe_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _probe() -> str | None:
    try:
        backend = BwrapBackend(Limits(timeout=20), pool_size=0)
        result = backend.run("print(6 * 7)")
    except (SandboxError, OSError) as error:
        return str(error)
    if result.stdout.strip() != "42" or result.exit_code != 0:
        return f"a test program failed in the sandbox: exit {result.exit_code}, stderr {result.stderr[-500:]!r}"
    return None


def unavailable_reason() -> str | None:
    """Why bwrap cannot be used here (checked once per process by running a program), or None."""
    if bwrap_binary() is None:
        return "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    with _probe_lock:
        return _probe()


def describe() -> str:
    """How this machine's bwrap sandboxes are set up, for ``agentgym sandbox doctor``."""
    version = subprocess.run([bwrap_binary() or "bwrap", "--version"], capture_output=True, text=True).stdout.strip()
    user = ("run as root: no user namespace, the program drops to a random unprivileged uid"
            if os.geteuid() == 0 else "user namespace, sandbox uid 65534")
    filt = "seccomp filter on" if seccomp.filter_program() is not None else "no seccomp filter on this architecture"
    return f"{version}; {user}; {filt}"
