"""What every sandbox backend shares: limits, results, and the exchange with a sandboxed process.

A process backend (bwrap, subprocess) starts ``_runner.py`` in a sandbox as a *worker*: a booted
interpreter that waits on its stdin for one job. ``run_job`` hands it the code, collects its output
(capped, never more than ``max_output_bytes`` per stream) and kills its whole process tree when the
job is done, the deadline passes or the output overflows. A worker serves one job only.
"""

from __future__ import annotations

import math
import os
import select
import selectors
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path

RUNNER_SOURCE = (Path(__file__).with_name("_runner.py")).read_text(encoding="utf-8")
# -I: ignore the environment and user site; -S: no site-packages (stdlib only, and a fast start);
# -B: no .pyc files; -X utf8: UTF-8 I/O whatever the locale.
PYTHON_FLAGS = ("-I", "-S", "-B", "-X", "utf8")
GRACE_SECONDS = 1.0  # how long after its deadline a run may take to be killed and collected
STARTUP_TIMEOUT = 30.0  # a worker that is not up after this long means the sandbox is broken


class SandboxError(RuntimeError):
    """The sandbox itself failed (it could not start, or a backend is missing); not the user's code."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run. Memory and processes are per process (rlimits) in bwrap and
    subprocess, so a run's worst-case memory is ``memory_mb * max_processes`` plus its scratch space."""

    timeout: float = 10.0  # wall-clock seconds
    memory_mb: int = 512  # address space of each process (RLIMIT_AS); docker: the container's memory
    cpu_seconds: int | None = None  # CPU time of each process (RLIMIT_CPU); None: ceil(timeout)
    max_processes: int = 16  # processes and threads (RLIMIT_NPROC); docker: pids_limit
    max_file_mb: int = 16  # largest file a run may write (RLIMIT_FSIZE)
    max_output_bytes: int = 1_000_000  # captured per stream; more stops the program
    scratch_mb: int = 64  # size of the private writable /tmp
    open_files: int = 256  # RLIMIT_NOFILE

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")
        for name in (
            "memory_mb",
            "max_processes",
            "max_file_mb",
            "max_output_bytes",
            "scratch_mb",
            "open_files",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.cpu_seconds is not None and self.cpu_seconds < 1:
            raise ValueError(f"cpu_seconds must be at least 1, got {self.cpu_seconds}")

    def cpu_limit(self, timeout: float) -> int:
        return self.cpu_seconds if self.cpu_seconds is not None else max(1, math.ceil(timeout))

    def runner_args(
        self, timeout: float, uid: int = -1, gid: int = -1, processes: int | None = None
    ) -> list[str]:
        """The integer arguments of ``_runner.py`` (see its docstring); ``processes`` overrides the
        RLIMIT_NPROC value (which counts every process of the user, not only the run's)."""
        values = (
            uid,
            gid,
            self.memory_mb << 20,
            self.max_processes if processes is None else processes,
            self.max_file_mb << 20,
            self.open_files,
            self.cpu_limit(timeout),
        )
        return [str(v) for v in values]


@dataclass
class ExecResult:
    """The outcome of one run.

    ``exit_code`` is the program's exit status, or minus the signal that killed it (-9 for SIGKILL,
    as ``subprocess`` reports it). ``timed_out``: stopped by the wall-clock timeout or the CPU-time
    limit. ``oom``: ended by the memory limit (MemoryError, or the container's OOM kill).
    ``truncated``: the output went past ``max_output_bytes`` and the program was stopped.
    """

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool
    oom: bool
    duration: float
    truncated: bool = False
    backend: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def to_dict(self) -> dict:
        return asdict(self)


class Backend(ABC):
    """One way of running code in isolation."""

    name: str

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    @abstractmethod
    def run(self, code: str, stdin: str = "", timeout: float | None = None) -> ExecResult: ...

    def close(self) -> None:  # noqa: B027 (most backends hold nothing)
        """Free what the backend holds (pre-started workers)."""


def memory_error_in(stderr: str) -> bool:
    """True if the program died of an uncaught MemoryError (or ENOMEM): the address-space limit."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    return bool(lines) and (lines[-1].startswith("MemoryError") or "[Errno 12]" in lines[-1])


@dataclass
class Worker:
    """A sandboxed interpreter started ahead of its job; used once, then killed."""

    process: subprocess.Popen
    cleanup: Path | None = None  # a host scratch directory to delete afterwards (subprocess backend)
    owner_pid: int = 0

    def kill(self) -> None:
        """Kill the worker's whole process group (bwrap: and with it its PID namespace).

        Only while the worker is not reaped: until then its pid, which is also its group's id, cannot
        be handed to another process, so the signal cannot reach anyone else's processes."""
        if self.process.returncode is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        self.kill()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        try:
            self.process.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            pass  # left for subprocess's own reaping of abandoned children
        if self.cleanup is not None:
            _remove_tree(self.cleanup)
            self.cleanup = None


def _remove_tree(path: Path) -> None:
    import shutil

    def make_writable_and_retry(function, failed_path, _):
        try:
            os.chmod(os.path.dirname(failed_path), 0o700)
            function(failed_path)
        except OSError:
            pass

    shutil.rmtree(path, onerror=make_writable_and_retry)


def start_worker(
    argv: list[str],
    *,
    cwd: str | None = None,
    env: dict | None = None,
    pass_fds: tuple[int, ...] = (),
    cleanup: Path | None = None,
) -> Worker:
    """Start a runner process in its own session (so its process group can be killed at once)."""
    process = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        pass_fds=pass_fds,
        start_new_session=True,
        close_fds=True,
    )
    return Worker(process=process, cleanup=cleanup, owner_pid=os.getpid())


def wait_ready(worker: Worker, timeout: float = STARTUP_TIMEOUT) -> None:
    """Wait for the runner's ``R``; raise SandboxError (with the sandbox's own error) if it never comes."""
    assert worker.process.stdout is not None  # started with stdout=PIPE
    fd = worker.process.stdout.fileno()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        if selector.select(timeout):
            byte = os.read(fd, 1)
            if byte == b"R":
                return
        else:
            byte = b""
    worker.kill()
    try:
        _, err = worker.process.communicate(timeout=GRACE_SECONDS)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        err = b""
    why = err.decode("utf-8", "replace").strip()[-2000:] or (
        "no answer" if not byte else f"unexpected {byte!r}"
    )
    raise SandboxError(f"the sandbox did not start: {why}")


def run_job(
    worker: Worker,
    code: str,
    stdin: str,
    timeout: float,
    limits: Limits,
    backend: str,
    signal_exit_offset: bool = False,
) -> ExecResult:
    """Send one job to a ready worker and collect its result; the worker is killed afterwards.

    ``signal_exit_offset``: the worker reports a program killed by signal N as exit status 128 + N
    (bwrap does), which is turned into -N like the other backends.
    """
    payload = code.encode("utf-8", "replace")
    data = b"%016d" % len(payload) + payload + stdin.encode("utf-8", "replace")
    start = time.monotonic()
    deadline = start + timeout
    try:
        out, err, timed_out, truncated = _exchange(worker.process, data, deadline, limits.max_output_bytes)
        if not (timed_out or truncated):  # its output is closed; it may still be running
            timed_out = not _wait_unreaped(worker.process, deadline)
        worker.kill()  # whatever is left of its process group
        try:
            exit_code = worker.process.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            exit_code = -signal.SIGKILL
            timed_out = True
    finally:
        worker.close()
    if signal_exit_offset and 128 < exit_code <= 128 + 64:
        exit_code = -(exit_code - 128)
    return make_result(out, err, exit_code, timed_out, truncated, time.monotonic() - start, backend)


def make_result(
    out: bytes, err: bytes, exit_code: int, timed_out: bool, truncated: bool, duration: float, backend: str
) -> ExecResult:
    """An ExecResult from a run's raw outcome: a CPU-time kill counts as timed out, and a MemoryError
    that ended the program as out of memory."""
    if exit_code == -signal.SIGXCPU:
        timed_out = True
    stderr = err.decode("utf-8", "replace")
    oom = exit_code != 0 and not timed_out and memory_error_in(stderr)
    return ExecResult(
        stdout=out.decode("utf-8", "replace"),
        stderr=stderr,
        exit_code=exit_code,
        timed_out=timed_out,
        oom=oom,
        duration=duration,
        truncated=truncated,
        backend=backend,
    )


def _exchange(
    process: subprocess.Popen, data: bytes, deadline: float, cap: int
) -> tuple[bytes, bytes, bool, bool]:
    """Write ``data`` to the process's stdin while reading its stdout and stderr, until both close,
    the deadline passes (timed out) or a stream exceeds ``cap`` bytes (truncated).

    Reads stop shortly after the process itself has exited, even if a descendant that escaped its
    process group still holds the pipes open (possible only in the subprocess backend).
    """
    stdin, stdout, stderr = process.stdin, process.stdout, process.stderr
    assert stdin is not None and stdout is not None and stderr is not None  # started with PIPEs
    stdin_fd, out_fd, err_fd = stdin.fileno(), stdout.fileno(), stderr.fileno()
    buffers: dict[int, bytearray] = {out_fd: bytearray(), err_fd: bytearray()}
    timed_out = truncated = False
    exited_at: float | None = None
    offset = 0
    with selectors.DefaultSelector() as selector:
        selector.register(out_fd, selectors.EVENT_READ)
        selector.register(err_fd, selectors.EVENT_READ)
        if data:
            os.set_blocking(stdin_fd, False)
            selector.register(stdin_fd, selectors.EVENT_WRITE)
        else:
            stdin.close()
        reading = {out_fd, err_fd}
        while reading:
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            if exited_at is not None and now - exited_at > 0.1:
                break
            events = selector.select(min(deadline - now, 0.05))
            if not events and exited_at is None and _exited(process):
                exited_at = time.monotonic()
            for key, _ in events:
                fd = key.fd
                if fd == stdin_fd:
                    try:
                        offset += os.write(fd, data[offset : offset + 65536])
                    except (BrokenPipeError, OSError):
                        offset = len(data)
                    if offset >= len(data):
                        selector.unregister(fd)
                        stdin.close()
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    selector.unregister(fd)
                    reading.discard(fd)
                    continue
                buffer = buffers[fd]
                buffer += chunk
                if len(buffer) > cap:
                    del buffer[cap:]
                    truncated = True
            if truncated:
                break
    if not stdin.closed:
        try:
            stdin.close()
        except OSError:
            pass
    return bytes(buffers[out_fd]), bytes(buffers[err_fd]), timed_out, truncated


def _exited(process: subprocess.Popen) -> bool:
    """Whether the process has ended, without reaping it (its pid stays reserved until ``wait``)."""
    if process.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _wait_unreaped(process: subprocess.Popen, deadline: float) -> bool:
    """Wait until the process ends (without reaping it) or the deadline passes; True if it ended."""
    try:
        handle = os.pidfd_open(process.pid)  # readable once the process has ended
    except (AttributeError, OSError):
        handle = None
    try:
        while not _exited(process):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if handle is not None:
                select.select([handle], [], [], left)
            else:
                time.sleep(min(left, 0.005))
        return True
    finally:
        if handle is not None:
            os.close(handle)


def python_executable() -> str:
    """The real interpreter behind ``sys.executable`` (a venv's python is a symlink to it)."""
    return os.path.realpath(sys.executable)
