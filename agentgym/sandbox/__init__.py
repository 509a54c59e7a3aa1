"""Sandboxed execution of untrusted Python code: one interface, three backends.

    from agentgym.sandbox import Sandbox
    with Sandbox() as box:                      # the safest backend that works here
        result = box.run("print(input()[::-1])", stdin="hello", timeout=5)
        result.stdout, result.exit_code, result.timed_out, result.oom, result.duration

Backends (``backend=``):
- ``bwrap``: bubblewrap namespaces, a read-only system, a private /tmp, rlimits, seccomp (``bwrap.py``).
- ``docker``: a container per run from the image of ``sandboxes/Dockerfile`` (``docker_backend.py``).
- ``subprocess``: rlimits and a timeout only; NOT isolation, opt-in, warns (``subprocess_backend.py``).
- ``auto`` (default): ``$AGENTGYM_SANDBOX_BACKEND`` if set, else bwrap if it works here, else docker if
  an engine answers and the image exists, else subprocess with a loud warning.
  ``Sandbox.backend_name`` says which was picked; ``agentgym sandbox doctor`` says why.

Every run ends within its timeout plus about a second, with its whole process tree killed; a run
never raises for anything the code does (only for a broken sandbox: ``SandboxError``). A Sandbox is
safe to share between threads. bwrap runs every job from a fork server (``forkserver.py``): one
sandboxed interpreter, booted once, forks each job into namespaces and a user of its own, so a run
costs a few milliseconds. With ``fork_server=False`` bwrap starts one sandbox per run instead, and,
like subprocess, keeps ``pool_size`` of them pre-started (``pool.py``).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import warnings
import weakref

from agentgym.sandbox.base import ExecResult, Limits, SandboxError

log = logging.getLogger(__name__)
BACKENDS = ("bwrap", "docker", "subprocess")
BACKEND_ENV = "AGENTGYM_SANDBOX_BACKEND"
DEFAULT_POOL_SIZE = 4


def unavailable_reason(backend: str) -> str | None:
    """Why ``backend`` cannot run code on this machine, or None if it can."""
    if backend == "bwrap":
        from agentgym.sandbox import bwrap

        return bwrap.unavailable_reason()
    if backend == "docker":
        from agentgym.sandbox import docker_backend

        return docker_backend.unavailable_reason()
    if backend == "subprocess":
        return None
    raise ValueError(f"unknown sandbox backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")


def choose_backend() -> str:
    """The backend ``auto`` means here (see the module docstring)."""
    forced = os.environ.get(BACKEND_ENV)
    if forced:
        if forced not in BACKENDS:
            raise ValueError(f"{BACKEND_ENV}={forced!r} is not one of {', '.join(BACKENDS)}")
        return forced
    for backend in ("bwrap", "docker"):
        if unavailable_reason(backend) is None:
            return backend
    message = (
        f"no isolating sandbox works on this machine (bwrap: {unavailable_reason('bwrap')}; docker: "
        f"{unavailable_reason('docker')}); falling back to the 'subprocess' backend, which is NOT isolation"
    )
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    log.warning(message)
    return "subprocess"


class Sandbox:
    """Runs untrusted Python code under limits; see the module docstring."""

    def __init__(
        self,
        backend: str = "auto",
        *,
        timeout: float = 10.0,
        memory_mb: int = 512,
        cpu_seconds: int | None = None,
        max_processes: int = 16,
        max_file_mb: int = 16,
        max_output_bytes: int = 1_000_000,
        scratch_mb: int = 64,
        pool_size: int = DEFAULT_POOL_SIZE,
        fork_server: bool = True,
        image: str | None = None,
    ) -> None:
        self.limits = Limits(
            timeout=timeout,
            memory_mb=memory_mb,
            cpu_seconds=cpu_seconds,
            max_processes=max_processes,
            max_file_mb=max_file_mb,
            max_output_bytes=max_output_bytes,
            scratch_mb=scratch_mb,
        )
        self.backend_name = choose_backend() if backend == "auto" else backend
        if self.backend_name not in BACKENDS:
            raise ValueError(f"unknown sandbox backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")
        self.pool_size = pool_size
        self.fork_server = fork_server
        self.image = image
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._backend = self._make_backend()
        self._finalizer = weakref.finalize(self, self._backend.close)
        log.info("agentgym sandbox: using the %s backend", self.backend_name)

    def _make_backend(self):
        if self.backend_name == "bwrap":
            from agentgym.sandbox.bwrap import BwrapBackend

            return BwrapBackend(self.limits, pool_size=self.pool_size, fork_server=self.fork_server)
        if self.backend_name == "docker":
            from agentgym.sandbox.docker_backend import DEFAULT_IMAGE, DockerBackend

            return DockerBackend(self.limits, image=self.image or DEFAULT_IMAGE)
        from agentgym.sandbox.subprocess_backend import SubprocessBackend

        return SubprocessBackend(self.limits, pool_size=self.pool_size)

    def run(self, code: str, stdin: str = "", timeout: float | None = None) -> ExecResult:
        """Run ``code`` (a Python program) with ``stdin``; returns when it ends or ``timeout`` passes."""
        if not isinstance(code, str) or not isinstance(stdin, str):
            raise TypeError("code and stdin must be str")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if os.getpid() != self._pid:  # forked: the parent's pre-started workers are not ours
            with self._lock:
                if os.getpid() != self._pid:
                    self._pid = os.getpid()
                    self._backend = self._make_backend()
                    self._finalizer = weakref.finalize(self, self._backend.close)
        return self._backend.run(code, stdin, timeout)

    def close(self) -> None:
        """Stop the fork server or kill the pre-started workers. The sandbox must not be used afterwards."""
        self._finalizer()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Sandbox(backend={self.backend_name!r}, limits={self.limits})"


_shared: dict[tuple, Sandbox] = {}
_shared_lock = threading.Lock()


def shared_sandbox(backend: str = "auto", **limits) -> Sandbox:
    """One Sandbox per configuration and process, shared by its callers (e.g. many env copies), so
    they share one pool of workers. Closed when the interpreter exits."""
    key = (os.getpid(), backend, tuple(sorted(limits.items())))
    with _shared_lock:
        if key not in _shared:
            _shared[key] = Sandbox(backend, **limits)
        return _shared[key]


@atexit.register
def _close_shared() -> None:
    for sandbox in list(_shared.values()):
        if sandbox._pid == os.getpid():
            sandbox.close()


__all__ = [
    "BACKENDS",
    "ExecResult",
    "Limits",
    "Sandbox",
    "SandboxError",
    "choose_backend",
    "shared_sandbox",
    "unavailable_reason",
]
