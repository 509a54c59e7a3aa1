"""The bubblewrap backend: each run in fresh Linux namespaces with a read-only view of Python only.

Two ways of running, with the same view from inside:
- fork server (the default, ``forkserver.py`` and ``_runner.py``): one bwrap sandbox holds a booted
  interpreter that forks every job into new mount, PID, network, IPC and UTS namespaces of its own
  (run by another user than root, a user namespace too), with its own /tmp, /dev/shm and /proc and its
  own user; a job costs a few milliseconds.
- one sandbox per run (``fork_server=False``): a bwrap started for each run, optionally pre-started
  by a pool; a run costs an interpreter start-up.

What a sandboxed program sees and may do:
- filesystem: read-only ``/usr`` (and the ``/bin``, ``/lib*`` links into it) and the prefix of the
  interpreter running agentgym (found from ``sys.base_prefix``; only that directory is bound, not its
  parents, so with a pyenv under ``/root`` nothing else of ``/root`` is visible); no ``/etc``, no home or
  work directories, no host ``/tmp``. Writable: a private ``/tmp`` (its working directory, a tmpfs of
  ``scratch_mb``) and a small ``/dev/shm``; the root, ``/dev`` and everything bound are read-only.
- namespaces: its own PID (it sees only its own processes in ``/proc``), network (loopback only: no
  route anywhere, not even to the host's loopback or another job's), IPC, UTS and cgroup namespaces.
- user: never root, never a capability. Run by root, bwrap makes no user namespace (sandbox uid 0
  would be host uid 0, and RLIMIT_NPROC is not enforced for host root): the program switches to a
  random unused uid/gid and empties every capability set before it runs (``setpriv`` does it in the
  per-run mode, the job's own process in the fork server). Run by another user, the program is user
  65534 of a user namespace that maps it onto that user.
- limits: rlimits on address space, CPU time, processes, file size and open files; its own session
  (no terminal injection), no new privileges, a seccomp filter (``seccomp.py``), a clean environment
  (only PATH, HOME, LANG).
- lifetime: the program's namespace dies with it: whatever it left running is killed when it exits,
  and a timeout kills the whole namespace.

No cgroups are needed (many machines do not delegate them), so memory is bounded per process:
``memory_mb * max_processes`` plus ``scratch_mb`` and 4 MiB of /dev/shm in the worst case.
"""

from __future__ import annotations

import functools
import logging
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
    ExecResult,
    Limits,
    SandboxError,
    Worker,
    python_executable,
    start_worker,
)
from agentgym.sandbox.forkserver import SHM_BYTES, ForkServer, SetupError
from agentgym.sandbox.pool import PooledBackend, WorkerPool

log = logging.getLogger(__name__)
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
NAMESPACES = (
    "--unshare-ipc",
    "--unshare-pid",
    "--unshare-net",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--new-session",
)
# What a fork server run by root needs: new namespaces and mounts (SYS_ADMIN), loopback up in them
# (NET_ADMIN), killing a finished job's processes (KILL), switching a job to its own user (SETUID,
# SETGID) and emptying its bounding set and locking its securebits (SETPCAP).
FORKSERVER_CAPABILITIES = (
    "CAP_SYS_ADMIN",
    "CAP_NET_ADMIN",
    "CAP_KILL",
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_SETPCAP",
)


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


def _filesystem_and_environment(python: str) -> list[str]:
    """A clean environment; read-only system and interpreter; fresh /proc, /dev, /dev/shm and /tmp."""
    return [
        "--clearenv",
        "--setenv",
        "PATH",
        SANDBOX_PATH,
        "--setenv",
        "HOME",
        "/tmp",
        "--setenv",
        "LANG",
        "C.UTF-8",
        *_system_binds(),
        *_python_binds(python),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--perms",
        "1777",
        "--size",
        str(SHM_BYTES),
        "--tmpfs",
        "/dev/shm",
    ]


def bwrap_command(
    limits: Limits, timeout: float, *, privileged: bool, python: str, seccomp_fd: int | None
) -> list[str]:
    """The full bwrap command line of one single-use worker (see the module docstring)."""
    args = [bwrap_binary() or "bwrap", *NAMESPACES, "--die-with-parent"]
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
            entry = [
                setpriv,
                f"--reuid={uid}",
                f"--regid={gid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
            ]
            uid = gid = -1  # done: the runner need not switch user itself
    else:
        args += ["--unshare-user", "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL"]
    args += _filesystem_and_environment(python)
    args += [
        "--perms",
        "1777",
        "--size",
        str(limits.scratch_mb << 20),
        "--tmpfs",
        "/tmp",
        "--remount-ro",
        "/dev",
        "--remount-ro",
        "/",
        "--chdir",
        "/tmp",
    ]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    args += ["--", *entry, python, *PYTHON_FLAGS, "-c", RUNNER_SOURCE, *limits.runner_args(timeout, uid, gid)]
    return args


def forkserver_command(control_fd: int, *, privileged: bool, python: str) -> list[str]:
    """The bwrap command line of a fork server (``_runner.py``'s second mode) listening on ``control_fd``.

    The server keeps the capabilities it needs to give each job new namespaces and mounts, and the
    job's program drops them all before it runs: run by root, the server is host root limited to
    those capabilities (no user namespace, for the reason in the module docstring); run by another
    user, it is root of a user namespace that maps only that user. The seccomp filter is loaded by
    each job's program, not here, since the server itself must unshare and mount.
    """
    args = [bwrap_binary() or "bwrap", *NAMESPACES]
    if privileged:
        args += ["--cap-drop", "ALL"]
        for capability in FORKSERVER_CAPABILITIES:
            args += ["--cap-add", capability]
    else:
        args += ["--unshare-user", "--uid", "0", "--gid", "0", "--cap-add", "ALL"]
    args += _filesystem_and_environment(python)
    args += [
        "--size",
        str(1 << 20),
        "--tmpfs",
        "/tmp",
        "--remount-ro",
        "/dev",
        "--remount-ro",
        "/",
        "--chdir",
        "/tmp",
    ]
    program = seccomp.filter_program() or b""
    args += [
        "--",
        python,
        *PYTHON_FLAGS,
        "-c",
        RUNNER_SOURCE,
        "forkserver",
        str(control_fd),
        "1" if privileged else "0",
        program.hex(),
    ]
    return args


class BwrapBackend(PooledBackend):
    """Runs code under bubblewrap: from a fork server (the default), or one fresh bwrap per run
    (``fork_server=False``), pre-started by a pool of ``pool_size`` workers."""

    name = "bwrap"
    signal_exit_offset = True  # bwrap exits with 128 + N when the program is killed by signal N

    def __init__(self, limits: Limits, pool_size: int = 2, fork_server: bool = True) -> None:
        if bwrap_binary() is None:
            raise SandboxError("bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)")
        self.privileged = os.geteuid() == 0
        self.python = python_executable()
        self.fork_server: ForkServer | None = None
        self._fallback_pool_size = pool_size
        if fork_server:
            self.fork_server = ForkServer(
                lambda fd: forkserver_command(fd, privileged=self.privileged, python=self.python), self.name
            )
            pool_size = 0
        super().__init__(limits, pool_size)

    def run(self, code: str, stdin: str = "", timeout: float | None = None) -> ExecResult:
        server = self.fork_server
        if server is not None:
            try:
                return server.run(
                    code, stdin, self.limits.timeout if timeout is None else timeout, self.limits
                )
            except SetupError as error:
                if server.proven:
                    raise
                # Some kernels refuse what the fork server does per job (nested mounts or namespaces)
                # while a whole bwrap per run works: fall back to that, and say so.
                log.warning(
                    "agentgym sandbox: bwrap's fork server does not work here (%s); "
                    "starting one sandbox per run instead",
                    error,
                )
                self.fork_server = None
                server.close()
                if self._fallback_pool_size > 0 and self._pool is None:
                    self._pool = WorkerPool(lambda: self.start(self.limits.timeout), self._fallback_pool_size)
        return super().run(code, stdin, timeout)

    def start(self, timeout: float) -> Worker:
        fd = seccomp.filter_fd()
        try:
            argv = bwrap_command(
                self.limits, timeout, privileged=self.privileged, python=self.python, seccomp_fd=fd
            )
            # bwrap gets no environment either: run by a user other than root, it is PID 1 of the
            # sandbox and the same user as the program, which could read its /proc/1/environ.
            return start_worker(argv, env={}, pass_fds=() if fd is None else (fd,))
        finally:
            if fd is not None:
                os.close(fd)

    def close(self) -> None:
        if self.fork_server is not None:
            self.fork_server.close()
        super().close()


_probe_lock = threading.Lock()


@functools.lru_cache(maxsize=2)
def _probe(fork_server: bool) -> str | None:
    """Run a test program in one of the two modes; why it failed, or None."""
    backend = None
    try:
        backend = BwrapBackend(Limits(timeout=20), pool_size=0, fork_server=fork_server)
        if backend.fork_server is not None:  # directly, without run()'s fallback to the other mode
            result = backend.fork_server.run("print(6 * 7)", "", 20, backend.limits)
        else:
            result = backend.run("print(6 * 7)")
    except (SandboxError, OSError) as error:
        return str(error)
    finally:
        if backend is not None:
            backend.close()
    if result.stdout.strip() != "42" or result.exit_code != 0:
        return (
            f"a test program failed in the sandbox: exit {result.exit_code}, stderr {result.stderr[-500:]!r}"
        )
    return None


def unavailable_reason() -> str | None:
    """Why bwrap cannot be used here in either mode (checked once per process by running a program)
    or None."""
    if bwrap_binary() is None:
        return "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    with _probe_lock:
        return None if _probe(True) is None else _probe(False)


def fork_server_problem() -> str | None:
    """Why bwrap's fork server cannot run jobs here (then bwrap starts one sandbox per run), or None."""
    if bwrap_binary() is None:
        return "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    with _probe_lock:
        return _probe(True)


def describe() -> str:
    """How this machine's bwrap sandboxes are set up, for ``agentgym sandbox doctor``."""
    version = subprocess.run(
        [bwrap_binary() or "bwrap", "--version"], capture_output=True, text=True
    ).stdout.strip()
    user = (
        "run as root: no user namespace, the program drops to a random unprivileged uid"
        if os.geteuid() == 0
        else "user namespace, sandbox uid 65534"
    )
    problem = fork_server_problem()
    user += (
        "; jobs forked by a fork server into namespaces of their own"
        if problem is None
        else f"; one sandbox per run (the fork server does not work here: {problem})"
    )
    filt = (
        "seccomp filter on"
        if seccomp.filter_program() is not None
        else "no seccomp filter on this architecture"
    )
    return f"{version}; {user}; {filt}"
